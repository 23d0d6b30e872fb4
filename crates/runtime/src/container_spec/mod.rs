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
mod executable;
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

pub use executable::check_executable;
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
    #[error(
        "mount propagation {wanted} for {path}: it is on mount {mount_point}, which is not {needs}"
    )]
    PropagationUnavailable {
        wanted: &'static str,
        path: PathBuf,
        mount_point: PathBuf,
        needs: &'static str,
    },
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
        matches!(self, Self::InvalidArgument { .. } | Self::Seccomp { .. })
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
    /// These facts, with the hostname read again (it is the only one that changes
    /// while the daemon runs).
    pub fn current(&self) -> Self {
        let mut facts = self.clone();
        if let Ok(name) = nix::unistd::gethostname() {
            facts.hostname = name.to_string_lossy().into_owned();
        }
        facts
    }

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
    /// Things the request asked for that were adjusted or ignored, for the log.
    pub warnings: Vec<String>,
}

/// The `linux.resources` of `r` for this host (UpdateContainerResources); the
/// adjustments made are logged.
pub fn linux_resources(
    r: &crate::model::ResourcesSpec,
    host: &HostFacts,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let mut warnings = Vec::new();
    let resources = resources::build_resources(r, host, &mut warnings)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(resources)
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
    let cap_names = security::capabilities(security, &inputs.host.all_capabilities, &mut warnings)?;
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
    mounts::create_image_volumes(
        &root,
        inputs.rootfs,
        &inputs.image.volumes,
        &mount_plan.mounts,
    )?;

    let linux = linux_section(
        inputs,
        &cap_names,
        mount_plan.rootfs_propagation,
        &mut warnings,
    )?;

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
        warnings,
    })
}

/// `linux`: resources with the device rules, cgroups path, namespaces, devices,
/// propagation, masked and read-only paths, seccomp.
fn linux_section(
    inputs: &SpecInputs<'_>,
    cap_names: &[String],
    rootfs_propagation: Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Linux, SpecError> {
    let security = &inputs.spec.security;
    let devices = devices::build_devices(&inputs.spec.devices, security.privileged)?;
    let mut resources = resources::build_resources(&inputs.spec.resources, &inputs.host, warnings)?;
    resources.set_devices(Some(devices.rules));

    let mut linux = Linux::default();
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(
        Some(PathBuf::from(&inputs.cgroups_path)).filter(|p| !p.as_os_str().is_empty()),
    );
    linux.set_namespaces(Some(namespaces::build_namespaces(
        &inputs.namespaces,
        security.privileged,
        inputs.host.cgroup2_unified,
    )?));
    linux.set_devices(Some(devices.devices));
    linux.set_rootfs_propagation(rootfs_propagation);
    let (masked, readonly) = security::masked_and_readonly_paths(security);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_seccomp(security::seccomp(security, cap_names)?);
    linux.set_sysctl(None);
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    Ok(linux)
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
        (
            "io.kubernetes.cri.sandbox-namespace",
            pod.namespace.as_str(),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ContainerMetadata, NamespaceMode, PodMetadata, PodSpec, PodState, SeccompProfile,
    };
    use oci_spec::runtime::LinuxNamespaceType;

    struct Fixture {
        _dir: tempfile::TempDir,
        rootfs: PathBuf,
        files: PathBuf,
        shm: PathBuf,
        pod: PodRecord,
        image: ImageRuntimeConfig,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwheel:x:10:app\n",
        )
        .unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(files.join(f), "x\n").unwrap();
        }
        let shm = dir.path().join("shm");
        std::fs::create_dir_all(&shm).unwrap();
        let pod = PodRecord {
            id: "pod-id".into(),
            spec: PodSpec {
                metadata: PodMetadata {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "uid-1".into(),
                    attempt: 0,
                },
                hostname: "web-0".into(),
                ..Default::default()
            },
            state: PodState::Ready,
            created_at: 0,
            namespace_dir: None,
            pinned: Vec::new(),
            cgroup: None,
            cgroup_created: false,
            network: None,
            init: None,
        };
        let image = ImageRuntimeConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/usr/bin:/bin".into(), "LANG=C".into()],
            user: "app".into(),
            volumes: vec!["/var/lib/data".into()],
            ..Default::default()
        };
        Fixture {
            rootfs,
            files,
            shm,
            pod,
            image,
            _dir: dir,
        }
    }

    fn container() -> ContainerSpec {
        let mut spec = ContainerSpec {
            metadata: ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            },
            image: "registry.local/app:1".into(),
            ..Default::default()
        };
        spec.security.namespaces.pid = NamespaceMode::Container;
        spec.annotations.insert("a".into(), "b".into());
        spec
    }

    fn host() -> HostFacts {
        HostFacts {
            min_oom_score_adj: -1000,
            all_capabilities: all_capabilities_up_to(40),
            hostname: "node-1".into(),
            cgroup2_unified: false,
            swap_controller: true,
        }
    }

    fn pinned(f: &Fixture, kind: &str) -> NamespaceSource {
        NamespaceSource::Path(f.rootfs.join("../ns").join(kind))
    }

    fn build(f: &Fixture, spec: &ContainerSpec) -> Result<BuiltSpec, SpecError> {
        build_spec(&SpecInputs {
            container_id: "ctr-id",
            spec,
            image: &f.image,
            pod: &f.pod,
            rootfs: &f.rootfs,
            pod_files: PodFilePaths::in_dir(&f.files),
            pod_shm: Some(&f.shm),
            namespaces: NamespacePaths {
                network: pinned(f, "net"),
                ipc: pinned(f, "ipc"),
                uts: pinned(f, "uts"),
                pid: NamespaceSource::New,
            },
            cgroups_path: "/kubepods/pod-uid/ctr-id".into(),
            host: host(),
        })
    }

    #[test]
    fn a_plain_container_spec_is_complete() {
        let f = fixture();
        let built = build(&f, &container()).unwrap();
        let spec = &built.spec;
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process.args().as_deref(),
            Some(&["/entry".to_string(), "serve".into()][..])
        );
        let env = process.env().clone().unwrap();
        assert_eq!(
            env,
            vec![
                "PATH=/usr/bin:/bin",
                "HOSTNAME=web-0",
                "LANG=C",
                "HOME=/home/app"
            ]
        );
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(process.terminal(), Some(false));
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[10, 1000][..])
        );
        assert_eq!(process.no_new_privileges(), Some(false));
        assert_eq!(process.oom_score_adj(), Some(0));
        assert!(process.rlimits().is_none());
        assert_eq!(
            built.user,
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 1000]
            }
        );
        assert!(built.warnings.is_empty(), "{:?}", built.warnings);

        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), &f.rootfs);
        assert_eq!(root.readonly(), Some(false));
        // The pod's UTS namespace is joined: it already has the hostname.
        assert!(spec.hostname().is_none());

        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/kubepods/pod-uid/ctr-id"))
        );
        let ns: Vec<_> = linux
            .namespaces()
            .iter()
            .flatten()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            ns,
            vec![
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Pid,
            ]
        );
        assert!(linux.seccomp().is_none());
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(11));
        assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(5));
        let rules = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .unwrap();
        assert!(!rules[0].allow());

        let annotations = spec.annotations().as_ref().unwrap();
        for (k, v) in [
            ("a", "b"),
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-id", "pod-id"),
            ("io.kubernetes.cri.sandbox-name", "web"),
            ("io.kubernetes.cri.sandbox-namespace", "default"),
            ("io.kubernetes.cri.sandbox-uid", "uid-1"),
            ("io.kubernetes.cri.container-name", "app"),
            ("io.kubernetes.cri.image-name", "registry.local/app:1"),
        ] {
            assert_eq!(annotations.get(k).map(String::as_str), Some(v), "{k}");
        }
        // The image volume was made inside the rootfs.
        assert!(f.rootfs.join("var/lib/data").is_dir());
        // The spec serializes (what the monitor writes as config.json).
        serde_json::to_string(spec).unwrap();
    }

    #[test]
    fn privileged_container_gets_everything_and_no_confinement() {
        let f = fixture();
        let mut spec = container();
        spec.security.privileged = true;
        spec.security.capabilities_drop = vec!["ALL".into()];
        spec.security.seccomp = SeccompProfile::RuntimeDefault;
        let built = build(&f, &spec).unwrap();
        let process = built.spec.process().as_ref().unwrap();
        let caps = process.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().map(|b| b.len()), Some(41));
        let linux = built.spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(0));
        assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(0));
        let rules = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rules[0].allow());
        assert!(
            linux
                .devices()
                .iter()
                .flatten()
                .any(|d| d.path() == Path::new("/dev/null"))
        );
    }

    #[test]
    fn runtime_default_seccomp_and_security_flags_are_applied() {
        let f = fixture();
        let mut spec = container();
        spec.security.seccomp = SeccompProfile::RuntimeDefault;
        spec.security.no_new_privs = true;
        spec.security.readonly_rootfs = true;
        spec.tty = true;
        spec.resources.oom_score_adj = 500;
        let built = build(&f, &spec).unwrap();
        let process = built.spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.oom_score_adj(), Some(500));
        assert_eq!(built.spec.root().as_ref().unwrap().readonly(), Some(true));
        assert!(built.spec.linux().as_ref().unwrap().seccomp().is_some());
    }

    #[test]
    fn new_uts_namespace_gets_the_pod_hostname_and_host_uts_none() {
        let f = fixture();
        let spec = container();
        let mut inputs = SpecInputs {
            container_id: "c",
            spec: &spec,
            image: &f.image,
            pod: &f.pod,
            rootfs: &f.rootfs,
            pod_files: PodFilePaths::in_dir(&f.files),
            pod_shm: Some(&f.shm),
            namespaces: NamespacePaths {
                network: pinned(&f, "net"),
                ipc: pinned(&f, "ipc"),
                uts: NamespaceSource::New,
                pid: NamespaceSource::New,
            },
            cgroups_path: String::new(),
            host: host(),
        };
        let built = build_spec(&inputs).unwrap();
        assert_eq!(built.spec.hostname().as_deref(), Some("web-0"));
        inputs.namespaces.uts = NamespaceSource::Host;
        let built = build_spec(&inputs).unwrap();
        assert!(built.spec.hostname().is_none());
    }

    #[test]
    fn mismatched_namespace_sources_are_refused() {
        let f = fixture();
        let mut spec = container();
        spec.security.namespaces.pid = NamespaceMode::Node;
        let err = build(&f, &spec).unwrap_err();
        assert!(err.to_string().contains("namespaces.pid"), "{err}");
    }

    #[test]
    fn oom_score_adj_below_what_we_may_set_is_raised_with_a_warning() {
        let f = fixture();
        let mut spec = container();
        spec.resources.oom_score_adj = -999;
        let mut inputs_host = host();
        inputs_host.min_oom_score_adj = -500;
        let built = build_spec(&SpecInputs {
            container_id: "c",
            spec: &spec,
            image: &f.image,
            pod: &f.pod,
            rootfs: &f.rootfs,
            pod_files: PodFilePaths::in_dir(&f.files),
            pod_shm: Some(&f.shm),
            namespaces: NamespacePaths {
                network: pinned(&f, "net"),
                ipc: pinned(&f, "ipc"),
                uts: pinned(&f, "uts"),
                pid: NamespaceSource::New,
            },
            cgroups_path: String::new(),
            host: inputs_host,
        })
        .unwrap();
        let process = built.spec.process().as_ref().unwrap();
        assert_eq!(process.oom_score_adj(), Some(-500));
        assert_eq!(built.warnings.len(), 1, "{:?}", built.warnings);
    }

    #[test]
    fn missing_rootfs_is_an_error_with_its_path() {
        let mut f = fixture();
        f.rootfs = f.rootfs.join("nope");
        let err = build(&f, &container()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn hostname_env_follows_the_pod() {
        let mut pod = PodSpec {
            hostname: "h".into(),
            ..Default::default()
        };
        pod.metadata.name = "n".repeat(70);
        assert_eq!(pod_hostname(&pod, "node"), "h");
        pod.hostname.clear();
        assert_eq!(pod_hostname(&pod, "node"), "n".repeat(63));
        pod.namespaces.network = NamespaceMode::Node;
        assert_eq!(pod_hostname(&pod, "node"), "node");
    }

    #[test]
    fn host_facts_probe_reads_this_host() {
        let h = HostFacts::probe().unwrap();
        assert!(h.all_capabilities.len() >= 38, "{:?}", h.all_capabilities);
        assert!((-1000..=1000).contains(&h.min_oom_score_adj));
        assert!(!h.hostname.is_empty());
    }
}
