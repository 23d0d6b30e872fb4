//! The OCI runtime spec of a container, built from the CRI request, the image config and
//! the pod, as containerd's CRI plugin builds it (`internal/cri/server/container_create*.go`,
//! `internal/cri/opts/spec_linux_opts.go`, `pkg/oci/spec_opts.go`).
//!
//! One call, [`build_spec`]. It reads (never writes) the host for what it must know
//! (mount sources, device nodes, `/proc/self/mountinfo` for propagation checks), reads
//! `/etc/passwd` and `/etc/group` inside the rootfs with pathrs, and writes only two
//! kinds of things: missing CRI mount sources on the host (created as directories, as
//! containerd does) and the image's volume directories inside the rootfs.

mod devices;
mod image_config;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod security;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, Root as OciRoot, Spec};

use crate::model::{ContainerSpec, PodRecord, ResolvedUser};

pub use image_config::ImageRuntimeConfig;
pub use mounts::{MountinfoEntry, check_propagation_source, parse_mountinfo};
pub use namespaces::{NamespacePaths, NamespaceSource};
pub use security::{CAPABILITIES, all_capabilities_up_to};

/// `runtime-spec` version written into the spec.
const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The request (or the image config) asks for something that cannot be built.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// A host path the spec depends on could not be read or made.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path inside the container rootfs could not be resolved or made.
    #[error("{op} {path} in rootfs {rootfs}: {source}")]
    Rootfs {
        op: &'static str,
        rootfs: PathBuf,
        path: PathBuf,
        #[source]
        source: pathrs::error::Error,
    },
    /// A propagation mode needs a shared (or slave) host mount and the source is not on one.
    #[error("mount propagation {wanted} for {path}: it is on mount {mount_point}, which is not {needs}")]
    PropagationUnavailable {
        wanted: &'static str,
        path: PathBuf,
        mount_point: PathBuf,
        needs: &'static str,
    },
    /// The image config JSON does not parse.
    #[error("image config: {0}")]
    ImageConfig(#[source] serde_json::Error),
    /// A localhost seccomp profile does not parse.
    #[error("seccomp profile {path}: {source}")]
    Seccomp {
        path: PathBuf,
        #[source]
        source: coracle_oci::seccomp::SeccompError,
    },
    /// oci-spec refused a value (a builder error).
    #[error("build the spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }

    /// Whether the request itself is at fault (gRPC InvalidArgument).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            Self::InvalidArgument { .. } | Self::ImageConfig(_) | Self::Seccomp { .. }
        )
    }
}

/// Host paths of the pod's files; a file that does not exist is not mounted.
#[derive(Clone, Debug, Default)]
pub struct PodFilePaths {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

impl PodFilePaths {
    /// The files `pod_files::write_pod_files` wrote into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            hostname: dir.join(crate::pod_files::HOSTNAME_FILE),
            hosts: dir.join(crate::pod_files::HOSTS_FILE),
            resolv_conf: dir.join(crate::pod_files::RESOLV_CONF_FILE),
        }
    }
}

/// What the spec depends on about the node and this process.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// The lowest oom_score_adj this process may give a child (containerd's
    /// `restrict_oom_score_adj`): -1000 with CAP_SYS_RESOURCE, else its own value.
    pub min_oom_score_adj: i32,
    /// Every capability the kernel knows (`CAP_*` names), for privileged and `ALL`.
    pub all_capabilities: Vec<String>,
    /// The node's hostname: `HOSTNAME` when the pod names none (containerd).
    pub hostname: String,
    /// Pure cgroup v2: containers get a cgroup namespace (unless privileged).
    pub cgroup2_unified: bool,
    /// A memory+swap limit can be set (v1 `memory.memsw.*` or v2 `memory.swap.max`).
    pub swap_controller: bool,
}

impl HostFacts {
    /// Reads the facts of this host and process.
    pub fn probe() -> Result<Self, SpecError> {
        Ok(Self {
            min_oom_score_adj: resources::probe_min_oom_score_adj()?,
            all_capabilities: security::probe_all_capabilities()?,
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .map_err(|e| SpecError::io("gethostname", "/proc/sys/kernel/hostname")(e.into()))?,
            cgroup2_unified: resources::probe_cgroup2_unified(),
            swap_controller: resources::probe_swap_controller(),
        })
    }
}

/// Everything [`build_spec`] reads.
pub struct SpecInputs<'a> {
    pub container_id: &'a str,
    pub spec: &'a ContainerSpec,
    pub image: &'a ImageRuntimeConfig,
    pub pod: &'a PodRecord,
    /// The mounted rootfs (becomes `root.path`).
    pub rootfs: &'a Path,
    pub pod_files: PodFilePaths,
    /// The pod's /dev/shm to bind; `None` (host IPC) binds the host's /dev/shm.
    pub pod_shm: Option<&'a Path>,
    pub namespaces: NamespacePaths,
    pub cgroups_path: String,
    pub host: HostFacts,
}

/// The built spec and what the runtime keeps of it.
#[derive(Debug)]
pub struct BuiltSpec {
    pub spec: Spec,
    /// uid, gid and groups the process runs with.
    pub user: ResolvedUser,
    /// The image's STOPSIGNAL as given (a name or number), empty for the default.
    pub stop_signal: String,
    /// Things the request asked for that were adjusted or ignored, for the log.
    pub warnings: Vec<String>,
}

/// Builds the OCI spec of a container.
pub fn build_spec(inputs: &SpecInputs<'_>) -> Result<BuiltSpec, SpecError> {
    let spec = inputs.spec;
    let security = &spec.security;
    let mut warnings = Vec::new();
    namespaces::check_modes(&security.namespaces, &inputs.namespaces)?;

    let root = open_rootfs(inputs.rootfs)?;
    let user = user::resolve_user(&root, inputs.rootfs, security, &inputs.image.user)?;
    let hostname = pod_hostname(&inputs.pod.spec, &inputs.host.hostname);
    let cap_names =
        security::capabilities(security, &inputs.host.all_capabilities, &mut warnings)?;
    let caps = security::oci_capabilities(&cap_names)?;
    let oom_score_adj = resources::oom_score_adj(
        spec.resources.oom_score_adj,
        inputs.host.min_oom_score_adj,
        &mut warnings,
    )?;
    let process = process::build_process(&process::ProcessParts {
        spec,
        image: inputs.image,
        user: &user,
        hostname: &hostname,
        capabilities: &caps,
        oom_score_adj,
    })?;

    let mount_plan = mounts::build_mounts(&mounts::MountInputs {
        spec,
        pod_files: &inputs.pod_files,
        pod_shm: inputs.pod_shm,
        mountinfo: &mounts::ProcMountinfo,
    })?;
    mounts::create_image_volumes(&root, inputs.rootfs, &inputs.image.volumes, &mount_plan.mounts)?;

    let devices = devices::build_devices(&spec.devices, security.privileged)?;
    let mut resources = resources::build_resources(&spec.resources, &inputs.host, &mut warnings)?;
    resources.set_devices(Some(devices.rules));

    let mut linux = Linux::default();
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(&inputs.cgroups_path)));
    linux.set_namespaces(Some(namespaces::build_namespaces(
        &inputs.namespaces,
        security.privileged,
        inputs.host.cgroup2_unified,
    )?));
    linux.set_devices(Some(devices.devices));
    linux.set_rootfs_propagation(mount_plan.rootfs_propagation);
    let (masked, readonly) = security::masked_and_readonly_paths(security);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_seccomp(security::seccomp(security, &cap_names)?);
    linux.set_sysctl(None);
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);

    let mut root_spec = OciRoot::default();
    root_spec.set_path(inputs.rootfs.to_path_buf());
    root_spec.set_readonly(Some(security.readonly_rootfs));

    let mut oci = Spec::default();
    oci.set_version(OCI_VERSION.to_string());
    oci.set_process(Some(process));
    oci.set_root(Some(root_spec));
    oci.set_hostname(namespaces::hostname_for(&inputs.namespaces, &hostname));
    oci.set_domainname(None);
    oci.set_mounts(Some(mount_plan.mounts));
    oci.set_annotations(Some(annotations(inputs)));
    oci.set_linux(Some(linux));
    oci.set_hooks(None);

    Ok(BuiltSpec {
        spec: oci,
        user: user.resolved,
        stop_signal: inputs.image.stop_signal.clone(),
        warnings,
    })
}

fn open_rootfs(rootfs: &Path) -> Result<pathrs::Root, SpecError> {
    if !rootfs.is_absolute() {
        return Err(SpecError::invalid(
            "rootfs",
            format!("{} is not absolute", rootfs.display()),
        ));
    }
    pathrs::Root::open(rootfs).map_err(|source| SpecError::Rootfs {
        op: "open",
        rootfs: rootfs.to_path_buf(),
        path: PathBuf::from("/"),
        source,
    })
}

/// The hostname the pod's UTS namespace has (see `sandbox_run`): the node's with host
/// network, else the pod's, else the pod name cut to 63 characters.
pub(crate) fn pod_hostname(pod: &crate::model::PodSpec, node_hostname: &str) -> String {
    if pod.namespaces.network == crate::model::NamespaceMode::Node && !node_hostname.is_empty() {
        return node_hostname.to_string();
    }
    if pod.hostname.is_empty() {
        pod.metadata.name.chars().take(63).collect()
    } else {
        pod.hostname.clone()
    }
}

/// The CRI annotations, then containerd's own (`internal/cri/annotations`), which win.
fn annotations(inputs: &SpecInputs<'_>) -> HashMap<String, String> {
    let pod = &inputs.pod.spec.metadata;
    let mut out: HashMap<String, String> = inputs
        .spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.sandbox-id", inputs.pod.id.as_str()),
        ("io.kubernetes.cri.sandbox-name", pod.name.as_str()),
        ("io.kubernetes.cri.sandbox-namespace", pod.namespace.as_str()),
        ("io.kubernetes.cri.sandbox-uid", pod.uid.as_str()),
        (
            "io.kubernetes.cri.container-name",
            inputs.spec.metadata.name.as_str(),
        ),
        ("io.kubernetes.cri.image-name", inputs.spec.image.as_str()),
    ] {
        out.insert(k.to_string(), v.to_string());
    }
    out
}

