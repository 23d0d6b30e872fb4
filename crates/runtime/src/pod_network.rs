//! The pod network as the runtime uses it: the built-in bridge (crates/net), made
//! ready at start and again whenever it was found broken.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use coracle_net::{BridgeConfig, BridgeNetwork, HostPort, Proto};

use crate::model::{PodNetworkRecord, PodSpec, Protocol};
use crate::{Runtime, RuntimeError};

pub(crate) struct Network {
    bridge: BridgeNetwork,
    /// Whether `ensure_ready` succeeded since the last failure.
    ready: AtomicBool,
}

impl Network {
    pub(crate) async fn open(config: BridgeConfig, root: &Path) -> Result<Self, RuntimeError> {
        let ipam_dir = root.join("network/ipam");
        let bridge = BridgeNetwork::new(config, &ipam_dir)
            .map_err(|err| RuntimeError::NetworkSetup(Box::new(err)))?;
        let network = Self {
            bridge,
            ready: AtomicBool::new(false),
        };
        // A broken network must not keep the daemon down: NetworkReady reports it and
        // the next RunPodSandbox tries again.
        if let Err(err) = network.ensure_ready().await {
            tracing::warn!(error = %err, "the pod network is not ready");
        }
        Ok(network)
    }

    async fn ensure_ready(&self) -> Result<(), RuntimeError> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.bridge
            .ensure_ready()
            .await
            .map_err(|err| RuntimeError::NetworkSetup(Box::new(err)))?;
        self.ready.store(true, Ordering::Release);
        Ok(())
    }
}

impl Runtime {
    /// Why pods cannot get a network right now, for the NetworkReady condition.
    pub async fn network_problem(&self) -> Option<String> {
        let network = self.network.as_ref()?;
        let problem = network.bridge.health().await;
        if problem.is_some() {
            network.ready.store(false, Ordering::Release);
        }
        problem
    }

    /// Puts the pod on the built-in network through its pinned network namespace.
    pub(crate) async fn attach_pod_network(
        &self,
        id: &str,
        spec: &PodSpec,
        netns: &Path,
    ) -> Result<Option<PodNetworkRecord>, RuntimeError> {
        let Some(network) = &self.network else {
            return Ok(None);
        };
        let failed = |err| RuntimeError::PodNetwork {
            id: id.to_owned(),
            source: Box::new(err),
        };
        network.ensure_ready().await?;
        let attached = network
            .bridge
            .attach(id, netns, "eth0")
            .await
            .map_err(failed)?;
        let host_ports = host_ports(spec);
        if let (Some(ip), false) = (attached.ips.first(), host_ports.is_empty()) {
            network
                .bridge
                .add_port_mappings(id, *ip, &host_ports)
                .await
                .map_err(failed)?;
        }
        Ok(Some(PodNetworkRecord {
            ips: attached.ips,
            host_veth: attached.host_veth,
        }))
    }

    /// Takes the pod off the network and frees its addresses. Idempotent.
    pub(crate) async fn detach_pod_network(&self, id: &str) -> Result<(), RuntimeError> {
        let Some(network) = &self.network else {
            return Ok(());
        };
        network
            .bridge
            .detach(id)
            .await
            .map_err(|err| RuntimeError::PodNetwork {
                id: id.to_owned(),
                source: Box::new(err),
            })
    }

    /// Addresses and veths held for pods that have no record (a crash between
    /// attach and the record write): released at start.
    pub(crate) async fn release_orphaned_networks(&self) {
        let Some(network) = &self.network else {
            return;
        };
        let known = match network.bridge.known_pods().await {
            Ok(known) => known,
            Err(err) => {
                tracing::warn!(error = %err, "could not list the pods on the network");
                return;
            }
        };
        for pod in known {
            if self.pods.get(&pod).is_none() {
                tracing::info!(pod = %pod, "releasing the network of a pod with no record");
                if let Err(err) = self.detach_pod_network(&pod).await {
                    tracing::warn!(pod = %pod, error = %err, "could not release an orphaned network");
                }
            }
        }
    }
}

/// The hostPort mappings of a pod (a mapping without a host port only documents the
/// container port). SCTP is not supported by the built-in network and is skipped.
fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    spec.port_mappings
        .iter()
        .filter(|mapping| mapping.host_port > 0)
        .filter_map(|mapping| {
            let protocol = match mapping.protocol {
                Protocol::Tcp => Proto::Tcp,
                Protocol::Udp => Proto::Udp,
                Protocol::Sctp => {
                    tracing::warn!(
                        port = mapping.host_port,
                        "SCTP hostPort is not supported; skipped"
                    );
                    return None;
                }
            };
            Some(HostPort {
                protocol,
                container_port: u16::try_from(mapping.container_port).ok()?,
                host_port: u16::try_from(mapping.host_port).ok()?,
                host_ip: mapping.host_ip.parse::<IpAddr>().ok(),
            })
        })
        .collect()
}
