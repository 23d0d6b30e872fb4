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
    /// The init process holding the pod's shared PID namespace (PID mode POD).
    #[serde(default)]
    pub init: Option<ProcessIdentity>,
}

impl PodRecord {
    /// The pod's own pinned network namespace; `None` when it has none (the host's
    /// network, or not pinned yet).
    pub fn network_namespace_path(&self) -> Option<std::path::PathBuf> {
        let dir = self.namespace_dir.as_ref()?;
        self.pinned
            .iter()
            .any(|kind| kind == "net")
            .then(|| dir.join("net"))
    }

    /// The pod's shared PID namespace, while its init runs.
    pub fn pid_namespace_path(&self) -> Option<std::path::PathBuf> {
        self.init
            .map(|init| std::path::PathBuf::from(format!("/proc/{}/ns/pid", init.pid)))
    }
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

/// Mount propagation as the CRI names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// rprivate.
    #[default]
    Private,
    /// rslave: mounts made on the host later appear in the container.
    HostToContainer,
    /// rshared both ways.
    Bidirectional,
}

/// A host path bound into the container (CRI `Mount`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    /// Read-only all the way down (`MOUNT_ATTR_RDONLY` with `AT_RECURSIVE`).
    pub recursive_read_only: bool,
    pub propagation: Propagation,
    pub selinux_relabel: bool,
}

/// A host device made available in the container (CRI `Device`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub container_path: String,
    pub host_path: String,
    /// cgroup permissions: some of `r`, `w`, `m`.
    pub permissions: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepageLimit {
    /// As the kernel names it: `2MB`, `1GB`.
    pub page_size: String,
    pub limit: u64,
}

/// CRI `LinuxContainerResources`; 0 / empty means "not set".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcesSpec {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub memory_swap_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    /// cgroup v2 files by name (`memory.high`, ...).
    pub unified: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "path")]
pub enum SeccompProfile {
    /// containerd's default profile.
    RuntimeDefault,
    #[default]
    Unconfined,
    /// A profile file on the node (absolute path, `localhost/` prefix stripped).
    Localhost(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplementalGroupsPolicy {
    /// The image's groups of the user plus the requested ones.
    #[default]
    Merge,
    /// Only the requested ones (and the primary group).
    Strict,
}

/// CRI `LinuxContainerSecurityContext`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecuritySpec {
    pub privileged: bool,
    /// Capability names as the CRI gives them (`NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`).
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    pub ambient_capabilities_add: Vec<String>,
    /// The container's namespaces (network and ipc follow the pod; pid may differ).
    pub namespaces: PodNamespaces,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub no_new_privs: bool,
    /// Empty means the runtime's defaults (unless privileged, which gets none).
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: SeccompProfile,
}

/// Everything a CreateContainer request asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub metadata: ContainerMetadata,
    /// The image as the request named it (kubelet sends the image id).
    pub image: String,
    /// The image as the pod spec named it (kubelet's `user_specified_image`).
    #[serde(default)]
    pub user_specified_image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    /// In request order; later entries override earlier ones and the image's.
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<MountSpec>,
    pub devices: Vec<DeviceSpec>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Relative to the pod's log_directory; empty means no log file.
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: ResourcesSpec,
    pub security: SecuritySpec,
}

/// The monitor process of a container, identified beyond pid reuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub pid: i32,
    /// Field 22 of /proc/<pid>/stat (clock ticks since boot).
    pub start_time: u64,
}

/// How a container ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExit {
    /// Exit status, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// Nanoseconds since the Unix epoch.
    pub finished_at: i64,
    /// CRI reason: `Completed`, `Error`, `OOMKilled`, `Unknown`.
    pub reason: String,
    pub message: String,
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
    /// The image id (`sha256:...` of its config).
    #[serde(default)]
    pub image_id: String,
    /// Nanoseconds since the Unix epoch.
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The request, kept for status and for a restart.
    #[serde(default)]
    pub spec: ContainerSpec,
    /// Absolute path of the CRI log file, empty when none.
    #[serde(default)]
    pub log_path: String,
    /// The image's STOPSIGNAL (a name or number), empty for SIGTERM.
    #[serde(default)]
    pub stop_signal: String,
    /// uid, gid and groups the container's process runs with.
    #[serde(default)]
    pub user: Option<ResolvedUser>,
    /// The monitor, while the container has one.
    #[serde(default)]
    pub monitor: Option<ProcessIdentity>,
    /// Host pid of the container's init, once created.
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub exit: Option<ContainerExit>,
    /// CreateContainer is still setting it up; never listed. A record left so by a
    /// crash is rolled back at the next start.
    #[serde(default)]
    pub creating: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl Record for ContainerRecord {
    const KIND: &'static str = "container";

    fn id(&self) -> &str {
        &self.id
    }
}

/// A CreateContainer request: the spec and the pod it is for. kubelet names a
/// container uniquely within its pod and attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRequest {
    pub pod_id: String,
    pub spec: ContainerSpec,
}

impl crate::names::Reservable for ContainerRequest {
    fn reservation_key(&self) -> String {
        let m = &self.spec.metadata;
        format!("{}_{}_{}", m.name, self.pod_id, m.attempt)
    }
}
