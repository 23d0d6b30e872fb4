//! Pods and containers: lifecycle, the persisted store, name reservation, and the
//! locks that keep one daemon per root directory.

mod container_attach;
mod container_create;
mod container_exec;
mod container_exit;
mod container_remove;
pub mod container_spec;
mod container_start;
mod container_stop;
pub mod events;
pub mod lock_file;
pub mod model;
pub mod monitor_client;
mod monitor_session;
pub mod names;
mod netns_thread;
mod pod_cgroup;
pub mod pod_files;
mod pod_network;
mod pod_shm;
mod recover;
mod sandbox_port_forward;
mod sandbox_remove;
mod sandbox_run;
pub(crate) mod sandbox_stop;
pub mod stats;
pub mod store;
mod streaming_io;

use std::path::{Path, PathBuf};

use model::{ContainerRecord, PodRecord, PodSpec};
use names::NameRegistry;
use store::{LoadReport, RecordStore, StoreError};

pub use container_exit::exit_reason;
pub use coracle_net::subnet::SubnetError;
pub use coracle_net::{PodSubnets, PodSubnetsSource};
pub use lock_file::{LockFile, LockFileError};
pub use pod_network::{NetworkSetup, PodNetworkSummary};
pub use streaming_io::{StreamIo, TerminalSize};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("one daemon per root dir: {0}")]
    LockFile(#[from] LockFileError),
    #[error("open the {kind} store: {source}")]
    OpenStore {
        kind: &'static str,
        source: StoreError,
    },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("pod name {key} is reserved for pod {holder_id} with a different config")]
    NameReserved { key: String, holder_id: String },
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pin namespaces of pod {id}: {source}")]
    Pin {
        id: String,
        source: coracle_net::PinError,
    },
    #[error("unpin namespaces of pod {id}: {source}")]
    Unpin {
        id: String,
        source: coracle_net::PinError,
    },
    #[error("write the files of pod {id}: {source}")]
    PodFiles {
        id: String,
        source: pod_files::PodFilesError,
    },
    #[error("cgroup of pod {id}: {source}")]
    PodCgroup {
        id: String,
        source: Box<coracle_oci::cgroups::CgroupError>,
    },
    #[error("network of pod {id}: {source}")]
    PodNetwork {
        id: String,
        source: Box<coracle_net::NetError>,
    },
    #[error("CNI network of pod {id}: {source}")]
    Cni {
        id: String,
        source: Box<coracle_net::CniError>,
    },
    #[error("set up the pod network: {0}")]
    NetworkSetup(Box<coracle_net::NetError>),
    #[error("pod CIDR {subnets}: {source}")]
    PodCidr {
        subnets: coracle_net::PodSubnets,
        source: Box<coracle_net::NetError>,
    },
    #[error("open the image store: {0}")]
    ImageStore(Box<coracle_image::ImageError>),
    #[error("remove {path}: {source}")]
    RemoveDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shm of pod {id}: {source}")]
    PodShm { id: String, source: std::io::Error },
    #[error("generate an id: {0}")]
    Id(std::io::Error),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("network stats in {netns}: {source}")]
    NetworkStats {
        netns: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("container name {key} is reserved for container {holder_id} with a different config")]
    ContainerNameReserved { key: String, holder_id: String },
    #[error("image {0:?} not found: pull it first")]
    ImageNotFound(String),
    #[error("rootfs of container {id}: {source}")]
    Rootfs {
        id: String,
        source: Box<coracle_image::ImageError>,
    },
    #[error("spec of container {id}: {source}")]
    Spec {
        id: String,
        source: container_spec::SpecError,
    },
    #[error("read what container specs need of this node: {0}")]
    HostFacts(container_spec::SpecError),
    #[error("write the bundle of container {id}: {source}")]
    Bundle { id: String, source: std::io::Error },
    #[error("monitor of container {id}: {source}")]
    Monitor {
        id: String,
        source: monitor_client::MonitorError,
    },
    #[error("{op} container {id}: {source}")]
    Oci {
        op: &'static str,
        id: String,
        source: Box<coracle_oci::ContainerError>,
    },
    #[error("port-forward to port {port} of pod {id}: {source}")]
    PortForward {
        id: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("exec in container {id} timed out after {timeout:?}; its process group was killed")]
    ExecTimeout {
        id: String,
        timeout: std::time::Duration,
        output: Box<monitor_client::ExecOutput>,
    },
}

impl RuntimeError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

/// The directories a runtime works in.
#[derive(Clone, Debug)]
pub struct RuntimeDirs {
    /// Persistent: records, pod files, content store, snapshots.
    pub root: PathBuf,
    /// Volatile (tmpfs): pinned namespaces, exit files.
    pub state: PathBuf,
}

impl RuntimeDirs {
    /// Pinned namespaces of a pod.
    pub fn pod_namespace_dir(&self, id: &str) -> PathBuf {
        self.state.join("pods").join(id).join("ns")
    }

    /// Volatile per-pod dir (parent of the namespace dir).
    pub fn pod_state_dir(&self, id: &str) -> PathBuf {
        self.state.join("pods").join(id)
    }

    /// hostname, hosts, resolv.conf of a pod.
    pub fn pod_files_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    /// The pod's /dev/shm (a tmpfs shared by its containers).
    pub fn pod_shm_dir(&self, id: &str) -> PathBuf {
        self.pod_state_dir(id).join("shm")
    }

    /// Volatile per-container dir: the monitor's exit file and control socket, and
    /// the bundle.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.state.join("containers").join(id)
    }

    /// The OCI bundle of a container: `config.json` and the `rootfs` mount point.
    pub fn container_bundle(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("bundle")
    }

    /// The executor's state root, shared by all containers.
    pub fn oci_root(&self) -> PathBuf {
        self.state.join("oci")
    }
}

/// Runtime handlers (RuntimeClass names) this node serves; "" is the default.
pub const RUNTIME_HANDLERS: [&str; 2] = ["", "coracle"];

/// The runtime's state: every pod and container record, loaded at start.
pub struct Runtime {
    dirs: RuntimeDirs,
    pods: std::sync::Arc<RecordStore<PodRecord>>,
    containers: std::sync::Arc<RecordStore<ContainerRecord>>,
    names: NameRegistry<PodSpec>,
    container_names: NameRegistry<model::ContainerRequest>,
    /// The pod network: the built-in bridge or CNI.
    network: pod_network::Network,
    images: std::sync::Arc<coracle_image::ImageStore>,
    /// The `coracle-monitor` binary.
    monitor_path: PathBuf,
    /// What container specs depend on about this node, read once at start.
    host_facts: container_spec::HostFacts,
    exits: container_exit::ExitWatchers,
    events: std::sync::Arc<events::EventBus>,
    cpu_samples: stats::CpuSamples,
    _root_lock: LockFile,
}

impl Runtime {
    /// Takes the root directory's lock (one daemon per root dir), loads every record
    /// and converges what a crash left half-done.
    pub async fn open(
        dirs: RuntimeDirs,
        network: NetworkSetup,
        image_config: coracle_image::ImageConfig,
        monitor_path: PathBuf,
    ) -> Result<Self, RuntimeError> {
        let root_lock = LockFile::acquire(&dirs.root.join("coracle.lock"))?;
        store::create_private_dir(&dirs.state).map_err(|source| RuntimeError::OpenStore {
            kind: "state",
            source,
        })?;
        let pods = std::sync::Arc::new(open_store::<PodRecord>(&dirs.root.join("pods"))?);
        let containers = std::sync::Arc::new(open_store::<ContainerRecord>(
            &dirs.root.join("containers"),
        )?);
        let network = pod_network::Network::open(network, &dirs.root).await?;
        let host_facts = container_spec::HostFacts::probe().map_err(RuntimeError::HostFacts)?;
        let image_root = dirs.root.join("images");
        let images = tokio::task::spawn_blocking(move || {
            coracle_image::ImageStore::open(&image_root, image_config)
        })
        .await?
        .map_err(|err| RuntimeError::ImageStore(Box::new(err)))?;
        let runtime = Self {
            dirs,
            pods: std::sync::Arc::clone(&pods),
            containers: std::sync::Arc::clone(&containers),
            names: NameRegistry::default(),
            container_names: NameRegistry::default(),
            network,
            images: std::sync::Arc::new(images),
            monitor_path,
            host_facts,
            exits: container_exit::ExitWatchers::default(),
            events: std::sync::Arc::new(events::EventBus::new(
                std::sync::Arc::clone(&pods),
                std::sync::Arc::clone(&containers),
            )),
            cpu_samples: stats::CpuSamples::default(),
            _root_lock: root_lock,
        };
        runtime.recover().await;
        Ok(runtime)
    }

    pub fn dirs(&self) -> &RuntimeDirs {
        &self.dirs
    }

    pub fn pods(&self) -> &RecordStore<PodRecord> {
        &self.pods
    }

    /// A pod's record; NotFound for an unknown id.
    pub fn existing_pod(&self, id: &str) -> Result<std::sync::Arc<PodRecord>, RuntimeError> {
        self.pods.get(id).ok_or_else(|| RuntimeError::NotFound {
            kind: "pod sandbox",
            id: id.to_owned(),
        })
    }

    /// A pod that can take containers and connections; FailedPrecondition while it
    /// is being made or after it stopped.
    pub fn ready_pod(&self, id: &str) -> Result<std::sync::Arc<PodRecord>, RuntimeError> {
        let pod = self.existing_pod(id)?;
        if pod.state != model::PodState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {id} is not ready"
            )));
        }
        Ok(pod)
    }

    pub fn containers(&self) -> &RecordStore<ContainerRecord> {
        &self.containers
    }

    /// The image store (pull, list, remove, rootfs layers).
    pub fn images(&self) -> &std::sync::Arc<coracle_image::ImageStore> {
        &self.images
    }
}

fn open_store<R: store::Record>(dir: &Path) -> Result<RecordStore<R>, RuntimeError> {
    let (store, report) = RecordStore::open(dir).map_err(|source| RuntimeError::OpenStore {
        kind: R::KIND,
        source,
    })?;
    log_load_report::<R>(&report);
    Ok(store)
}

fn log_load_report<R: store::Record>(report: &LoadReport) {
    tracing::info!(
        kind = R::KIND,
        loaded = report.loaded,
        temp_files_removed = report.removed_temp_files.len(),
        quarantined = report.quarantined.len(),
        "records loaded"
    );
}

/// Nanoseconds since the Unix epoch, as the CRI reports times.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// 64 random hex digits, like containerd's and CRI-O's ids.
pub(crate) fn new_id() -> Result<String, RuntimeError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(RuntimeError::Id)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
