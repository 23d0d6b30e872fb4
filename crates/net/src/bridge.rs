//! The built-in pod network: one Linux bridge holding the gateway address of
//! each pod subnet, one veth pair per pod, addresses from [`crate::ipam`], and
//! masquerade and hostPort rules in Coracle's own nftables table.
//!
//! The pod subnets come from the config until kubelet sets the node's pod CIDR
//! ([`BridgeNetwork::set_pod_subnets`], persisted). Pods of an earlier subnet keep
//! their addresses, gateway and masquerade until the last of them is gone.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use netlink_packet_route::link::InfoKind;
use tokio::sync::{Mutex, RwLock};

use crate::error::NetError;
use crate::ipam::Ipam;
use crate::netlink::{Link, Netlink, open_netns};
use crate::nft::{HostPort, NftTable};
use crate::subnet::{PodSubnets, Subnet};

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// In the IPAM dir: the pod subnets kubelet set, as it sent them.
const POD_CIDR_FILE: &str = "pod-cidr";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    pub bridge: String,
    /// The IPv4 pod range; with `subnet_v6` too, dual stack. At least one is set.
    pub subnet_v4: Option<String>,
    /// The IPv6 pod range.
    pub subnet_v6: Option<String>,
    pub mtu: u32,
    /// Masquerade traffic from the pod subnets to anywhere else.
    pub masquerade: bool,
    /// Turn on the node's IPv4 (and, with a v6 subnet, IPv6) forwarding. Pods
    /// reach each other over the bridge without it, but not the outside.
    pub enable_ip_forward: bool,
    /// Coracle's nftables table, `table inet <nft_table>`.
    pub nft_table: String,
}

impl BridgeConfig {
    /// Checks what [`BridgeNetwork::new`] would refuse (the bridge name, each
    /// subnet and its family, the MTU for the families, the table name) and
    /// returns the subnets.
    pub fn validate(&self) -> Result<PodSubnets, NetError> {
        validate_ifname("bridge", &self.bridge)?;
        let subnets = config_subnets(self)?;
        check_mtu(self.mtu, &subnets)?;
        NftTable::new(&self.nft_table)?;
        Ok(subnets)
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            bridge: "coracle0".into(),
            subnet_v4: Some("10.88.0.0/16".into()),
            subnet_v6: None,
            mtu: 1500,
            masquerade: true,
            enable_ip_forward: true,
            nft_table: "coracle".into(),
        }
    }
}

/// What a pod got from [`BridgeNetwork::attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// IPv4 first, then IPv6 when dual stack.
    pub ips: Vec<IpAddr>,
    pub gateway_v4: Option<Ipv4Addr>,
    pub gateway_v6: Option<Ipv6Addr>,
    pub host_veth: String,
}

/// Where the pod subnets in use came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodSubnetsSource {
    Config,
    /// `UpdateRuntimeConfig`: the node's pod CIDR.
    Kubelet,
}

/// The pod subnets new addresses come from, and their IPAM.
#[derive(Debug)]
struct Allocation {
    subnets: PodSubnets,
    source: PodSubnetsSource,
    ipam: Ipam,
}

impl Allocation {
    fn gateway_v4(&self) -> Option<Ipv4Addr> {
        match self.subnets.ipv4()?.gateway() {
            IpAddr::V4(gateway) => Some(gateway),
            IpAddr::V6(_) => None,
        }
    }

    fn gateway_v6(&self) -> Option<Ipv6Addr> {
        match self.subnets.ipv6()?.gateway() {
            IpAddr::V6(gateway) => Some(gateway),
            IpAddr::V4(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct BridgeNetwork {
    config: BridgeConfig,
    ipam_dir: PathBuf,
    nft: NftTable,
    /// Read for the whole of an attach and while converging; written only to
    /// change the pod subnets, so no attach allocates from a subnet being retired.
    allocation: RwLock<Allocation>,
    /// One converge at a time: two could otherwise interleave, one re-adding the
    /// gateway of a subnet the other just retired.
    converging: Mutex<()>,
    /// Whether the last converge succeeded and nothing was found broken since.
    converged: AtomicBool,
}

/// The names one attach works with.
struct PodIface<'a> {
    pod_id: &'a str,
    host_veth: &'a str,
    netns_path: &'a Path,
    ifname: &'a str,
}

/// What a failed attach made and must undo.
#[derive(Default)]
struct Made {
    veth: Option<String>,
    ips: bool,
}

impl BridgeNetwork {
    /// Loads IPAM state from `ipam_dir` (persisted: an address is never handed
    /// out twice, even across restarts) and checks the config. The pod subnets
    /// kubelet set, when it did, win over the config's.
    pub fn new(config: BridgeConfig, ipam_dir: &Path) -> Result<Self, NetError> {
        let configured = config.validate()?;
        let nft = NftTable::new(&config.nft_table)?;
        let (subnets, source) = match read_pod_cidr(ipam_dir, config.mtu) {
            Some(from_kubelet) => {
                if from_kubelet != configured {
                    tracing::info!(
                        pod_cidr = %from_kubelet,
                        config = %configured,
                        "pod subnets: the pod CIDR kubelet set, not the config's"
                    );
                }
                (from_kubelet, PodSubnetsSource::Kubelet)
            }
            None => (configured, PodSubnetsSource::Config),
        };
        let ipam = Ipam::open(ipam_dir, subnets.as_slice())?;
        Ok(Self {
            config,
            ipam_dir: ipam_dir.to_owned(),
            nft,
            allocation: RwLock::new(Allocation {
                subnets,
                source,
                ipam,
            }),
            converging: Mutex::new(()),
            converged: AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// The subnets new pods get addresses from, and where they came from.
    pub async fn pod_subnets(&self) -> (PodSubnets, PodSubnetsSource) {
        let allocation = self.allocation.read().await;
        (allocation.subnets.clone(), allocation.source)
    }

    /// Makes `subnets` (kubelet's pod CIDR) the ones new pods get addresses from,
    /// persisted so a restart keeps them, and converges the bridge: its gateway
    /// addresses and the masquerade rules follow. Pods holding addresses of the
    /// earlier subnets keep them, with their gateway, until they are gone.
    /// Returns whether the subnets changed; the same subnets again are a no-op.
    pub async fn set_pod_subnets(&self, subnets: PodSubnets) -> Result<bool, NetError> {
        check_mtu(self.config.mtu, &subnets)?;
        let mut allocation = self.allocation.write().await;
        if allocation.subnets == subnets {
            if allocation.source != PodSubnetsSource::Kubelet {
                write_pod_cidr(&self.ipam_dir, &subnets)?;
                allocation.source = PodSubnetsSource::Kubelet;
            }
            // A repeat after a change whose converge failed or was cancelled.
            if !self.converged.load(Ordering::Acquire) {
                self.converge(&allocation).await?;
            }
            return Ok(false);
        }
        check_gateways_free(&allocation.ipam, &subnets)?;
        let ipam = Ipam::open(&self.ipam_dir, subnets.as_slice())?;
        write_pod_cidr(&self.ipam_dir, &subnets)?;
        tracing::info!(from = %allocation.subnets, to = %subnets, "pod subnets changed");
        // Not converged until the bridge follows, even if this call is cancelled.
        self.converged.store(false, Ordering::Release);
        *allocation = Allocation {
            subnets,
            source: PodSubnetsSource::Kubelet,
            ipam,
        };
        self.converge(&allocation).await?;
        Ok(true)
    }

    /// Creates the bridge if missing (the first host of each subnet as its
    /// address, up), sets up Coracle's nftables table (with masquerade when
    /// configured), turns on forwarding when configured, and retires earlier
    /// pod subnets no pod uses any more. Idempotent.
    pub async fn ensure_ready(&self) -> Result<(), NetError> {
        let allocation = self.allocation.read().await;
        self.converge(&allocation).await
    }

    /// [`Self::ensure_ready`] unless the last one succeeded and nothing has been
    /// found broken since (by [`Self::health`], a failed converge, a change of
    /// the pod subnets): the check each attach makes.
    pub async fn ensure_ready_if_needed(&self) -> Result<(), NetError> {
        if self.converged.load(Ordering::Acquire) {
            return Ok(());
        }
        self.ensure_ready().await
    }

    async fn converge(&self, allocation: &Allocation) -> Result<(), NetError> {
        let _one_at_a_time = self.converging.lock().await;
        let result = self.converge_now(allocation).await;
        self.converged.store(result.is_ok(), Ordering::Release);
        result
    }

    async fn converge_now(&self, allocation: &Allocation) -> Result<(), NetError> {
        let netlink = Netlink::connect()?;
        let bridge = self.ensure_bridge(&netlink).await?;
        // Otherwise the bridge takes the lowest MAC of its ports, and detaching that
        // pod changes the gateway's MAC under every other pod: their neighbour
        // entries point at a MAC that is gone until they expire (seconds to minutes
        // without a route out). Docker pins its bridge's MAC for the same reason.
        netlink.pin_mac(&bridge).await?;
        // Earlier subnets first: an unused one's gateway goes before the current
        // ones are (re)added, in case the two share an address.
        let in_use = self
            .retire_unused_subnets(&netlink, &bridge, allocation)
            .await?;
        let mut subnets = allocation.subnets.as_slice().to_vec();
        subnets.extend(in_use);
        for subnet in &subnets {
            netlink
                .add_address(&bridge, subnet.gateway(), subnet.prefix())
                .await?;
        }
        netlink.set_up(&bridge).await?;
        let masquerade = if self.config.masquerade {
            subnets.clone()
        } else {
            Vec::new()
        };
        self.nft.ensure(&masquerade).await?;
        if self.config.enable_ip_forward {
            enable_ip_forwarding(
                subnets.iter().any(Subnet::is_ipv4),
                subnets.iter().any(|subnet| !subnet.is_ipv4()),
            )?;
        }
        Ok(())
    }

    /// Removes the pools, and the bridge addresses, of earlier subnets no pod
    /// holds an address in; returns the earlier subnets still in use.
    async fn retire_unused_subnets(
        &self,
        netlink: &Netlink,
        bridge: &Link,
        allocation: &Allocation,
    ) -> Result<Vec<Subnet>, NetError> {
        let mut in_use = Vec::new();
        for pool in allocation.ipam.earlier_pools()? {
            let subnet = pool.subnet();
            if !pool.is_unused()? {
                in_use.push(subnet);
                continue;
            }
            netlink
                .delete_address(bridge, subnet.gateway(), subnet.prefix())
                .await?;
            pool.remove()?;
            tracing::info!(%subnet, "earlier pod subnet retired: no pod holds an address in it");
        }
        Ok(in_use)
    }

    async fn ensure_bridge(&self, netlink: &Netlink) -> Result<Link, NetError> {
        let name = &self.config.bridge;
        if let Some(link) = netlink.link_by_name(name).await? {
            if link.kind != Some(InfoKind::Bridge) {
                return Err(NetError::LinkNotOfKind {
                    name: name.clone(),
                    expected: "bridge",
                });
            }
            return Ok(link);
        }
        match netlink.create_bridge(name, self.config.mtu).await {
            Ok(()) => {}
            // Created meanwhile by a concurrent ensure_ready.
            Err(NetError::Netlink { source, .. })
                if crate::netlink::errno_of(&source) == Some(nix::errno::Errno::EEXIST as i32) => {}
            Err(err) => return Err(err),
        }
        netlink.require_link(name).await
    }

    /// Why the network is not usable (for the NetworkReady condition), or
    /// `None` when it is.
    pub async fn health(&self) -> Option<String> {
        let problem = match self.check_health().await {
            Ok(problem) => problem,
            Err(err) => Some(err.to_string()),
        };
        if problem.is_some() {
            self.converged.store(false, Ordering::Release);
        }
        problem
    }

    async fn check_health(&self) -> Result<Option<String>, NetError> {
        let netlink = Netlink::connect()?;
        let name = &self.config.bridge;
        let Some(bridge) = netlink.link_by_name(name).await? else {
            return Ok(Some(format!("bridge {name} is missing")));
        };
        if !bridge.up {
            return Ok(Some(format!("bridge {name} is down")));
        }
        let addresses = netlink.addresses_of(&bridge).await?;
        let subnets = self.allocation.read().await.subnets.clone();
        for subnet in subnets.as_slice() {
            if !addresses.contains(&subnet.gateway()) {
                return Ok(Some(format!(
                    "bridge {name} lacks its gateway address {}",
                    subnet.gateway()
                )));
            }
        }
        if let Some(sysctl) = self
            .config
            .enable_ip_forward
            .then(|| forwarding_off(&subnets))
            .flatten()
        {
            return Ok(Some(format!(
                "ip forwarding is off ({sysctl}): pods cannot reach beyond the node"
            )));
        }
        if self.nft.list_table().await?.is_none() {
            return Ok(Some(format!(
                "nftables table inet {} is missing",
                self.nft.name()
            )));
        }
        Ok(None)
    }

    /// Wires a pod into the bridge: a veth pair (host side named from the pod
    /// id, the peer created inside the namespace at `netns_path` as `ifname`),
    /// addresses, lo and `ifname` up, default routes via the gateways. On error
    /// everything it made is undone (veth deleted, addresses released).
    pub async fn attach(
        &self,
        pod_id: &str,
        netns_path: &Path,
        ifname: &str,
    ) -> Result<PodNetwork, NetError> {
        validate_pod_id(pod_id)?;
        validate_ifname("ifname", ifname)?;
        let host_veth = veth_name(pod_id);
        let netlink = Netlink::connect()?;
        let allocation = self.allocation.read().await;
        let mut made = Made::default();
        let iface = PodIface {
            pod_id,
            host_veth: &host_veth,
            netns_path,
            ifname,
        };
        match self
            .wire_pod(&netlink, &allocation, &mut made, &iface)
            .await
        {
            Ok(ips) => Ok(PodNetwork {
                ips,
                gateway_v4: allocation.gateway_v4(),
                gateway_v6: allocation.gateway_v6(),
                host_veth,
            }),
            Err(err) => {
                self.roll_back(&netlink, &allocation, made, pod_id).await;
                Err(err)
            }
        }
    }

    async fn wire_pod(
        &self,
        netlink: &Netlink,
        allocation: &Allocation,
        made: &mut Made,
        iface: &PodIface<'_>,
    ) -> Result<Vec<IpAddr>, NetError> {
        let PodIface {
            pod_id,
            host_veth,
            netns_path,
            ifname,
        } = *iface;
        let netns = open_netns(netns_path)?;
        let bridge = netlink.require_link(&self.config.bridge).await?;
        remove_stale_veth(netlink, host_veth, pod_id).await?;
        // A retried attach (after a crash or a timeout) starts from a clean slate.
        allocation.ipam.release(pod_id)?;
        made.ips = true;
        let ips = allocation.ipam.allocate(pod_id)?;
        netlink
            .create_veth_into_netns(host_veth, ifname, &netns, self.config.mtu)
            .await
            .map_err(|err| with_netns_context(err, netns_path, ifname))?;
        made.veth = Some(host_veth.to_owned());
        let veth = netlink.require_link(host_veth).await?;
        // First thing after creation: the alias marks the veth as this pod's
        // (the kernel ignores IFLA_IFALIAS in RTM_NEWLINK, so it takes this call).
        netlink.attach_to_bridge(&veth, &bridge, pod_id).await?;
        configure_inside_pod(&allocation.subnets, &netns, netns_path, ifname, &ips).await?;
        Ok(ips)
    }

    /// Best effort: the attach error is what the caller needs to see.
    async fn roll_back(
        &self,
        netlink: &Netlink,
        allocation: &Allocation,
        made: Made,
        pod_id: &str,
    ) {
        if let Some(name) = made.veth {
            let deleted = match netlink.link_by_name(&name).await {
                Ok(Some(link)) => netlink.delete_link(&link).await,
                Ok(None) => Ok(()),
                Err(err) => Err(err),
            };
            if let Err(err) = deleted {
                tracing::warn!(pod_id, veth = name, %err, "roll back a failed attach");
            }
        }
        if made.ips {
            if let Err(err) = allocation.ipam.release(pod_id) {
                tracing::warn!(pod_id, %err, "roll back a failed attach");
            }
        }
    }

    /// Unwires a pod: deletes its host veth (the peer goes with it), releases
    /// its addresses and removes its hostPort rules. Idempotent, and fine when
    /// the pod's namespace is already gone.
    pub async fn detach(&self, pod_id: &str) -> Result<(), NetError> {
        self.detach_pod(pod_id, true).await
    }

    /// [`Self::detach`] for a caller that knows whether the pod had hostPorts: a pod
    /// without them (most pods) costs no `nft` process on its way out.
    pub async fn detach_pod(&self, pod_id: &str, had_host_ports: bool) -> Result<(), NetError> {
        validate_pod_id(pod_id)?;
        let netlink = Netlink::connect()?;
        let host_veth = veth_name(pod_id);
        if let Some(link) = netlink.link_by_name(&host_veth).await? {
            if owned_by(&link, pod_id) {
                netlink.delete_link(&link).await?;
            } else {
                tracing::warn!(pod_id, veth = host_veth, owner = ?link.alias, "veth of another pod left alone");
            }
        }
        if had_host_ports {
            self.nft.remove_pod_rules(pod_id).await?;
        }
        let allocation = self.allocation.read().await;
        let freed = allocation.ipam.release_by_subnet(pod_id)?;
        // The last pod of an earlier subnet takes its gateway and masquerade along.
        // A failure leaves the network marked unconverged: the next attach retries.
        if freed
            .iter()
            .any(|&(subnet, _)| !allocation.ipam.allocates_from(subnet))
        {
            if let Err(err) = self.converge(&allocation).await {
                tracing::warn!(pod_id, %err, "retire an earlier pod subnet");
            }
        }
        Ok(())
    }

    /// Publishes pod ports on the node as DNAT rules in Coracle's table, for
    /// each of the pod's addresses (IPv4 and IPv6 on dual stack); `detach`
    /// removes them.
    pub async fn add_port_mappings(
        &self,
        pod_id: &str,
        pod_ips: &[IpAddr],
        mappings: &[HostPort],
    ) -> Result<(), NetError> {
        validate_pod_id(pod_id)?;
        self.nft.add_port_mappings(pod_id, pod_ips, mappings).await
    }

    /// Addresses the pod holds, from the persisted IPAM state (for recovery).
    pub async fn addresses_of(&self, pod_id: &str) -> Result<Vec<IpAddr>, NetError> {
        self.allocation.read().await.ipam.addresses_of(pod_id)
    }

    /// Pods that hold an address here or a veth on this bridge, for recovery after a
    /// restart: the daemon detaches those it has no record of, so a crash at
    /// any point leaks neither addresses nor veths.
    pub async fn known_pods(&self) -> Result<Vec<String>, NetError> {
        let pools = self.allocation.read().await.ipam.all_pools()?;
        let mut pods: Vec<String> = pools
            .iter()
            .map(|pool| pool.leases())
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .map(|(_, pod_id)| pod_id)
            .filter(|pod_id| validate_pod_id(pod_id).is_ok())
            .collect();
        let netlink = Netlink::connect()?;
        if let Some(bridge) = netlink.link_by_name(&self.config.bridge).await? {
            for link in netlink.all_links().await? {
                let ours =
                    link.controller == Some(bridge.index) && link.kind == Some(InfoKind::Veth);
                if let Some(alias) = link
                    .alias
                    .filter(|alias| ours && veth_name(alias) == link.name)
                {
                    pods.push(alias);
                }
            }
        }
        pods.sort();
        pods.dedup();
        Ok(pods)
    }

    /// Removes the bridge and Coracle's nftables table (uninstall, tests). Pods
    /// still attached lose their network but keep their veths until detached.
    pub async fn remove(&self) -> Result<(), NetError> {
        self.converged.store(false, Ordering::Release);
        let netlink = Netlink::connect()?;
        if let Some(bridge) = netlink.link_by_name(&self.config.bridge).await? {
            netlink.delete_link(&bridge).await?;
        }
        self.nft.delete().await
    }
}

async fn configure_inside_pod(
    subnets: &PodSubnets,
    netns: &fs::File,
    netns_path: &Path,
    ifname: &str,
    ips: &[IpAddr],
) -> Result<(), NetError> {
    let pod = Netlink::connect_in_netns(netns, netns_path).await?;
    let lo = pod.require_link("lo").await?;
    pod.set_up(&lo).await?;
    let eth = pod.require_link(ifname).await?;
    // The IPAM hands out one address per subnet, in the subnets' order.
    for (&ip, subnet) in ips.iter().zip(subnets.as_slice()) {
        pod.add_address(&eth, ip, subnet.prefix()).await?;
    }
    pod.set_up(&eth).await?;
    for subnet in subnets.as_slice() {
        match subnet.gateway() {
            IpAddr::V4(gateway) => pod.add_default_route_v4(&eth, gateway).await?,
            IpAddr::V6(gateway) => pod.add_default_route_v6(&eth, gateway).await?,
        }
    }
    Ok(())
}

/// The config's subnets, checked: each of its family, at least one.
fn config_subnets(config: &BridgeConfig) -> Result<PodSubnets, NetError> {
    let mut subnets = Vec::new();
    if let Some(text) = &config.subnet_v4 {
        let subnet: Subnet = text.parse()?;
        if !subnet.is_ipv4() {
            return Err(invalid_config("subnet_v4", "not an IPv4 subnet"));
        }
        subnets.push(subnet);
    }
    if let Some(text) = &config.subnet_v6 {
        let subnet: Subnet = text.parse()?;
        if subnet.is_ipv4() {
            return Err(invalid_config("subnet_v6", "not an IPv6 subnet"));
        }
        subnets.push(subnet);
    }
    if subnets.is_empty() {
        return Err(invalid_config(
            "subnet_v4",
            "no pod subnet: set subnet_v4, subnet_v6 or both",
        ));
    }
    Ok(PodSubnets::new(subnets)?)
}

fn check_mtu(mtu: u32, subnets: &PodSubnets) -> Result<(), NetError> {
    // 68 is IPv4's minimum; IPv6 needs 1280.
    let min_mtu = if subnets.ipv6().is_some() { 1280 } else { 68 };
    if !(min_mtu..=65535).contains(&mtu) {
        return Err(invalid_config(
            "mtu",
            &format!("{mtu} is out of range for pod subnets {subnets}"),
        ));
    }
    Ok(())
}

/// A new subnet's gateway must not be an address a pod of an earlier subnet holds.
fn check_gateways_free(ipam: &Ipam, subnets: &PodSubnets) -> Result<(), NetError> {
    for pool in ipam.all_pools()? {
        for (addr, pod_id) in pool.leases()? {
            if let Some(&subnet) = subnets.as_slice().iter().find(|s| s.gateway() == addr) {
                return Err(NetError::GatewayHeldByPod {
                    subnet,
                    gateway: addr,
                    pod_id,
                });
            }
        }
    }
    Ok(())
}

/// The pod subnets kubelet set, if it did and the file is sound.
fn read_pod_cidr(ipam_dir: &Path, mtu: u32) -> Option<PodSubnets> {
    let path = ipam_dir.join(POD_CIDR_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "pod CIDR from kubelet unreadable: using the config's subnets");
            return None;
        }
    };
    let parsed = text
        .trim()
        .parse::<PodSubnets>()
        .map_err(NetError::from)
        .and_then(|subnets| check_mtu(mtu, &subnets).map(|()| subnets));
    match parsed {
        Ok(subnets) => Some(subnets),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "pod CIDR from kubelet unusable: using the config's subnets");
            None
        }
    }
}

/// Written to a temp file and renamed, so a crash leaves the old or the new.
fn write_pod_cidr(ipam_dir: &Path, subnets: &PodSubnets) -> Result<(), NetError> {
    let path = ipam_dir.join(POD_CIDR_FILE);
    let temp = ipam_dir.join(format!(".{POD_CIDR_FILE}.tmp"));
    let write = || -> io::Result<()> {
        fs::create_dir_all(ipam_dir)?;
        fs::write(&temp, format!("{subnets}\n"))?;
        fs::File::open(&temp)?.sync_all()?;
        fs::rename(&temp, &path)?;
        fs::File::open(ipam_dir)?.sync_all()
    };
    write().map_err(|source| NetError::Ipam { path, source })
}

/// The host-side veth name: "cor" + 11 hex digits of a stable hash of the pod
/// id. Stable across daemon versions (a restarted daemon must find the veths of
/// running pods), so a fixed FNV-1a rather than std's unspecified hasher.
pub fn veth_name(pod_id: &str) -> String {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = pod_id.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    format!("cor{:011x}", hash >> 20)
}

/// The pod id travels into an interface alias and an nft comment: keep it to
/// characters that mean nothing to either.
fn validate_pod_id(pod_id: &str) -> Result<(), NetError> {
    let reason = if pod_id.is_empty() {
        Some("empty")
    } else if pod_id.len() > 128 {
        Some("longer than 128 bytes")
    } else if !pod_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::InvalidPodId {
            pod_id: pod_id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn validate_ifname(field: &'static str, name: &str) -> Result<(), NetError> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid_config(
            field,
            &format!("{name:?} is not an interface name"),
        ));
    }
    Ok(())
}

fn invalid_config(field: &'static str, reason: &str) -> NetError {
    NetError::InvalidConfig {
        field,
        reason: reason.to_owned(),
    }
}

/// The attach that made a veth labels it with the pod id (its alias), so a
/// hash collision can never make one pod delete another's veth. No alias means
/// an attach crashed between creating and labelling it; the name is this pod's.
fn owned_by(link: &Link, pod_id: &str) -> bool {
    link.kind == Some(InfoKind::Veth) && link.alias.as_deref().is_none_or(|alias| alias == pod_id)
}

/// A veth of this pod's name left by an attach that crashed midway is removed;
/// one of another pod is an error.
async fn remove_stale_veth(netlink: &Netlink, name: &str, pod_id: &str) -> Result<(), NetError> {
    let Some(link) = netlink.link_by_name(name).await? else {
        return Ok(());
    };
    if owned_by(&link, pod_id) {
        tracing::info!(
            pod_id,
            veth = name,
            "removing a veth left by an earlier attach"
        );
        return netlink.delete_link(&link).await;
    }
    Err(NetError::VethNameTaken {
        name: name.to_owned(),
        pod_id: pod_id.to_owned(),
        owner: link.alias,
    })
}

fn with_netns_context(err: NetError, netns_path: &Path, ifname: &str) -> NetError {
    match err {
        NetError::Netlink { op, target, source } => NetError::Netlink {
            op,
            target: format!("{target} (peer {ifname} in {})", netns_path.display()),
            source,
        },
        other => other,
    }
}

/// The forwarding sysctl that is off for a family the pod subnets use, if any.
fn forwarding_off(subnets: &PodSubnets) -> Option<&'static str> {
    let is_on = |path: &str| fs::read_to_string(path).is_ok_and(|value| value.trim() == "1");
    if subnets.ipv4().is_some() && !is_on("/proc/sys/net/ipv4/ip_forward") {
        return Some("net.ipv4.ip_forward");
    }
    if subnets.ipv6().is_some() && !is_on("/proc/sys/net/ipv6/conf/all/forwarding") {
        return Some("net.ipv6.conf.all.forwarding");
    }
    None
}

fn enable_ip_forwarding(ipv4: bool, ipv6: bool) -> Result<(), NetError> {
    let paths = [
        (ipv4, "/proc/sys/net/ipv4/ip_forward"),
        (ipv6, "/proc/sys/net/ipv6/conf/all/forwarding"),
    ];
    for (_, path) in paths.into_iter().filter(|(wanted, _)| *wanted) {
        fs::write(path, "1").map_err(|source| NetError::Sysctl {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_name_is_stable_short_and_distinct() {
        let name = veth_name("0123456789abcdef");
        assert_eq!(name.len(), 14);
        assert!(name.starts_with("cor"));
        assert_eq!(name, veth_name("0123456789abcdef"));
        assert_ne!(name, veth_name("0123456789abcdee"));
        // Pinned: changing the hash would orphan the veths of running pods.
        assert_eq!(veth_name("pod"), veth_name("pod"));
        assert_eq!(veth_name(""), "corcbf29ce4842");
    }

    #[test]
    fn pod_ids_that_could_inject_are_refused() {
        assert!(validate_pod_id("a1b2-c3_d4.e5").is_ok());
        for bad in ["", "a\"b", "a b", "a\nb", &"x".repeat(129)] {
            assert!(validate_pod_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pod_cidr_kubelet_set_wins_over_the_config_unless_unusable() {
        let temp = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let subnets_of = |dir: &Path, config: BridgeConfig| {
            let network = BridgeNetwork::new(config, dir).unwrap();
            runtime.block_on(network.pod_subnets())
        };
        let (subnets, source) = subnets_of(temp.path(), BridgeConfig::default());
        assert_eq!(subnets.to_string(), "10.88.0.0/16");
        assert_eq!(source, PodSubnetsSource::Config);

        fs::write(
            temp.path().join(POD_CIDR_FILE),
            "10.244.1.0/24,fd00:244:1::/64\n",
        )
        .unwrap();
        let (subnets, source) = subnets_of(temp.path(), BridgeConfig::default());
        assert_eq!(subnets.to_string(), "10.244.1.0/24,fd00:244:1::/64");
        assert_eq!(source, PodSubnetsSource::Kubelet);

        // IPv6 needs an MTU of 1280: with a smaller one the config's range is used.
        let small_mtu = BridgeConfig {
            mtu: 1200,
            ..Default::default()
        };
        let (subnets, source) = subnets_of(temp.path(), small_mtu);
        assert_eq!(
            (subnets.to_string(), source),
            ("10.88.0.0/16".to_owned(), PodSubnetsSource::Config)
        );

        fs::write(temp.path().join(POD_CIDR_FILE), "garbage").unwrap();
        let (subnets, source) = subnets_of(temp.path(), BridgeConfig::default());
        assert_eq!(
            (subnets.to_string(), source),
            ("10.88.0.0/16".to_owned(), PodSubnetsSource::Config)
        );
    }

    #[test]
    fn a_pod_cidr_whose_gateway_a_pod_holds_is_refused_and_changes_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let network = BridgeNetwork::new(BridgeConfig::default(), temp.path()).unwrap();
        fs::write(temp.path().join("10.88.0.0_16/10.88.4.1"), "old-pod").unwrap();
        let err = runtime
            .block_on(network.set_pod_subnets("10.88.4.0/24".parse().unwrap()))
            .unwrap_err();
        assert!(matches!(err, NetError::GatewayHeldByPod { .. }), "{err}");
        assert!(err.to_string().contains("held by pod old-pod"), "{err}");
        let (subnets, source) = runtime.block_on(network.pod_subnets());
        assert_eq!(subnets.to_string(), "10.88.0.0/16");
        assert_eq!(source, PodSubnetsSource::Config);
        assert!(!temp.path().join(POD_CIDR_FILE).exists());
        assert!(!temp.path().join("10.88.4.0_24").exists());

        let mtu_too_small = BridgeNetwork::new(
            BridgeConfig {
                mtu: 1200,
                ..Default::default()
            },
            temp.path(),
        )
        .unwrap();
        let err = runtime
            .block_on(mtu_too_small.set_pod_subnets("10.88.0.0/16,fd00::/64".parse().unwrap()))
            .unwrap_err();
        assert!(err.to_string().contains("mtu"), "{err}");
    }

    #[test]
    fn config_is_checked() {
        let temp = tempfile::tempdir().unwrap();
        let check = |config: BridgeConfig| BridgeNetwork::new(config, temp.path());
        assert!(check(BridgeConfig::default()).is_ok());
        let cases = [
            BridgeConfig {
                bridge: "a-name-far-too-long".into(),
                ..Default::default()
            },
            BridgeConfig {
                subnet_v4: Some("fd00::/64".into()),
                ..Default::default()
            },
            BridgeConfig {
                subnet_v4: None,
                subnet_v6: None,
                ..Default::default()
            },
            BridgeConfig {
                subnet_v6: Some("10.0.0.0/8".into()),
                ..Default::default()
            },
            BridgeConfig {
                subnet_v4: Some("10.88.0.1/16".into()),
                ..Default::default()
            },
            BridgeConfig {
                mtu: 0,
                ..Default::default()
            },
            BridgeConfig {
                mtu: 1000,
                subnet_v6: Some("fd00::/64".into()),
                ..Default::default()
            },
            BridgeConfig {
                nft_table: "x y".into(),
                ..Default::default()
            },
        ];
        for config in cases {
            assert!(check(config.clone()).is_err(), "{config:?}");
        }
    }
}
