//! The runtime's own model of pods and containers, independent of any CRI version.
//! Records are persisted as JSON; new fields must carry `#[serde(default)]` so that
//! records written by an older coracled still load.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Record;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// RunPodSandbox is still setting it up; never listed. A record left in this
    /// state by a crash is rolled back at the next start.
    Creating,
    Ready,
    #[default]
    NotReady,
}

/// Which namespace a pod's processes use, as the CRI's NamespaceMode says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceMode {
    /// One namespace for the whole pod.
    #[default]
    Pod,
    /// Each container its own (PID only).
    Container,
    /// The node's namespace.
    Node,
    /// Another container's namespace (PID only).
    Target,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    pub network: NamespaceMode,
    pub ipc: NamespaceMode,
    pub pid: NamespaceMode,
    #[serde(default)]
    pub target_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSpec {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

/// Everything a RunPodSandbox request asked for, kept so that a repeat of the same
/// request can be recognized and every Status can answer from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub metadata: PodMetadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<DnsSpec>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub namespaces: PodNamespaces,
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
}

impl PodSpec {
    /// The key a pod name is reserved under: kubelet's identity of a sandbox.
    pub fn reservation_key(&self) -> String {
        let m = &self.metadata;
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub spec: PodSpec,
    pub state: PodState,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    /// Directory holding the pinned namespaces (`net`, `ipc`, `uts` files), if any.
    #[serde(default)]
    pub namespace_dir: Option<std::path::PathBuf>,
    /// Which namespaces are pinned there.
    #[serde(default)]
    pub pinned: Vec<String>,
    /// The pod cgroup (`cgroup_parent`), when one was asked for.
    #[serde(default)]
    pub cgroup: Option<coracle_oci::cgroups::ContainerCgroup>,
    /// Whether Coracle made the pod cgroup (then it removes it too); kubelet's
    /// cgroupfs driver usually makes it first and removes it itself.
    #[serde(default)]
    pub cgroup_created: bool,
    /// The pod's addresses on the built-in network, while it has them.
    #[serde(default)]
    pub network: Option<PodNetworkRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetworkRecord {
    /// IPv4 first, then IPv6 when dual stack.
    pub ips: Vec<std::net::IpAddr>,
    pub host_veth: String,
}

impl Record for PodRecord {
    const KIND: &'static str = "pod";

    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub metadata: ContainerMetadata,
    pub state: ContainerState,
    /// The image as the request named it.
    pub image: String,
    /// The resolved image (`repo@sha256:...` or image id).
    #[serde(default)]
    pub image_ref: String,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Record for ContainerRecord {
    const KIND: &'static str = "container";

    fn id(&self) -> &str {
        &self.id
    }
}
