//! The pod network as the runtime uses it: the built-in bridge (crates/net), made
//! ready at start and again whenever it was found broken.

use std::net::IpAddr;
use std::path::Path;

use coracle_net::{
    BridgeConfig, BridgeNetwork, CniNetwork, CniPodInfo, CniPortMapping, HostPort, PodSubnets,
    PodSubnetsSource, Proto,
};

use crate::model::{PodNetworkRecord, PodSpec, Protocol};
use crate::{Runtime, RuntimeError};

/// Which pod network the node uses.
#[derive(Clone, Debug)]
pub enum NetworkSetup {
    /// Coracle's own bridge network.
    Bridge(BridgeConfig),
    /// CNI plugins: configs from `conf_dir`, plugins from `bin_dirs`.
    Cni {
        conf_dir: std::path::PathBuf,
        bin_dirs: Vec<std::path::PathBuf>,
    },
}

pub(crate) enum Network {
    /// Boxed: one per daemon, and much larger than the CNI variant.
    Bridge(Box<BridgeNetwork>),
    Cni(CniNetwork),
}

impl Network {
    pub(crate) async fn open(setup: NetworkSetup, root: &Path) -> Result<Self, RuntimeError> {
        match setup {
            NetworkSetup::Bridge(config) => {
                Ok(Self::Bridge(Box::new(open_bridge(config, root).await?)))
            }
            NetworkSetup::Cni { conf_dir, bin_dirs } => Ok(Self::Cni(CniNetwork::new(
                conf_dir,
                bin_dirs,
                root.join("network/cni-cache"),
            ))),
        }
    }
}

async fn open_bridge(config: BridgeConfig, root: &Path) -> Result<BridgeNetwork, RuntimeError> {
    let ipam_dir = root.join("network/ipam");
    let bridge = BridgeNetwork::new(config, &ipam_dir)
        .map_err(|err| RuntimeError::NetworkSetup(Box::new(err)))?;
    // A broken network must not keep the daemon down: NetworkReady reports it and
    // the next RunPodSandbox tries again.
    if let Err(err) = bridge.ensure_ready().await {
        tracing::warn!(error = %err, "the pod network is not ready");
    }
    Ok(bridge)
}

/// The pod network as `Status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodNetworkSummary {
    Bridge {
        bridge: String,
        /// What new pods get addresses from.
        pod_subnets: PodSubnets,
        source: PodSubnetsSource,
    },
    Cni {
        conf_dir: std::path::PathBuf,
    },
}

impl Runtime {
    /// kubelet's pod CIDR (`UpdateRuntimeConfig`): the built-in network hands out
    /// addresses from these subnets from now on, and after restarts; pods running
    /// keep theirs. In CNI mode the CNI config decides pod addresses, so they are
    /// only logged (as containerd without a config template, and CRI-O, do).
    pub async fn update_pod_subnets(&self, subnets: PodSubnets) -> Result<(), RuntimeError> {
        let bridge = match &self.network {
            Network::Bridge(bridge) => bridge,
            Network::Cni(_) => {
                tracing::info!(pod_cidr = %subnets, "pod CIDR from kubelet: the CNI config decides pod addresses; nothing to change");
                return Ok(());
            }
        };
        bridge
            .set_pod_subnets(subnets.clone())
            .await
            .map(drop)
            .map_err(|source| RuntimeError::PodCidr {
                subnets,
                source: Box::new(source),
            })
    }

    /// The pod network's mode and, for the built-in one, its current pod subnets.
    pub async fn pod_network_summary(&self) -> PodNetworkSummary {
        match &self.network {
            Network::Bridge(bridge) => {
                let (pod_subnets, source) = bridge.pod_subnets().await;
                PodNetworkSummary::Bridge {
                    bridge: bridge.config().bridge.clone(),
                    pod_subnets,
                    source,
                }
            }
            Network::Cni(cni) => PodNetworkSummary::Cni {
                conf_dir: cni.conf_dir().to_owned(),
            },
        }
    }

    /// Why pods cannot get a network right now, for the NetworkReady condition.
    pub async fn network_problem(&self) -> Option<String> {
        match &self.network {
            Network::Cni(cni) => cni.problem(),
            Network::Bridge(bridge) => bridge.health().await,
        }
    }

    /// Puts the pod on the pod network through its pinned network namespace.
    pub(crate) async fn attach_pod_network(
        &self,
        id: &str,
        spec: &PodSpec,
        netns: &Path,
    ) -> Result<Option<PodNetworkRecord>, RuntimeError> {
        let network = match &self.network {
            Network::Bridge(bridge) => bridge,
            Network::Cni(cni) => {
                let ips = cni
                    .add(
                        id,
                        netns,
                        "eth0",
                        &cni_pod_info(spec),
                        &cni_port_mappings(spec),
                    )
                    .await
                    .map_err(|err| RuntimeError::Cni {
                        id: id.to_owned(),
                        source: Box::new(err),
                    })?;
                return Ok(Some(PodNetworkRecord {
                    ips,
                    host_veth: String::new(),
                }));
            }
        };
        let failed = |err| RuntimeError::PodNetwork {
            id: id.to_owned(),
            source: Box::new(err),
        };
        network
            .ensure_ready_if_needed()
            .await
            .map_err(|err| RuntimeError::NetworkSetup(Box::new(err)))?;
        let attached = network.attach(id, netns, "eth0").await.map_err(failed)?;
        let host_ports = host_ports(spec);
        if !host_ports.is_empty() {
            network
                .add_port_mappings(id, &attached.ips, &host_ports)
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
        let network = match &self.network {
            Network::Bridge(bridge) => bridge,
            Network::Cni(cni) => {
                let spec = self
                    .pods
                    .get(id)
                    .map(|pod| pod.spec.clone())
                    .unwrap_or_default();
                // DEL gets the namespace if it still exists; plugins must cope without.
                let netns = self.dirs.pod_namespace_dir(id).join("net");
                return cni
                    .del(id, Some(&netns), "eth0", &cni_pod_info(&spec))
                    .await
                    .map_err(|err| RuntimeError::Cni {
                        id: id.to_owned(),
                        source: Box::new(err),
                    });
            }
        };
        // Without a record (an orphan), assume the worst: look for hostPort rules.
        let had_host_ports = self
            .pods
            .get(id)
            .is_none_or(|pod| has_host_ports(&pod.spec));
        network
            .detach_pod(id, had_host_ports)
            .await
            .map_err(|err| RuntimeError::PodNetwork {
                id: id.to_owned(),
                source: Box::new(err),
            })
    }

    /// Addresses and veths held for pods that have no record (a crash between
    /// attach and the record write): released at start.
    pub(crate) async fn release_orphaned_networks(&self) {
        let Network::Bridge(network) = &self.network else {
            return;
        };
        let known = match network.known_pods().await {
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

/// Whether the built-in network published ports of the pod: [`host_ports`]
/// without its warnings, which attach already logged.
fn has_host_ports(spec: &PodSpec) -> bool {
    spec.port_mappings
        .iter()
        .any(|mapping| mapping.host_port > 0 && mapping.protocol != Protocol::Sctp)
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

fn cni_pod_info(spec: &PodSpec) -> CniPodInfo {
    CniPodInfo {
        name: spec.metadata.name.clone(),
        namespace: spec.metadata.namespace.clone(),
        uid: spec.metadata.uid.clone(),
    }
}

fn cni_port_mappings(spec: &PodSpec) -> Vec<CniPortMapping> {
    spec.port_mappings
        .iter()
        .filter(|m| m.host_port > 0)
        .filter_map(|m| {
            Some(CniPortMapping {
                host_port: u16::try_from(m.host_port).ok()?,
                container_port: u16::try_from(m.container_port).ok()?,
                protocol: match m.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                    Protocol::Sctp => "sctp",
                }
                .to_owned(),
                host_ip: m.host_ip.clone(),
            })
        })
        .collect()
}
