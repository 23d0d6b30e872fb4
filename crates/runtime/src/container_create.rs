//! CreateContainer: reserve the name, mount the rootfs from the image's snapshots,
//! build the OCI spec, and have a new monitor create the container (its init then
//! waits for StartContainer). The record is persisted first as `creating`; any
//! failure rolls back everything made.

use std::path::{Path, PathBuf};

use coracle_monitor::protocol::MonitorConfig;

use crate::container_spec::{
    BuiltSpec, HostFacts, ImageRuntimeConfig, NamespacePaths, NamespaceSource, PodFilePaths,
    SpecInputs,
};
use crate::events::ContainerEventKind;
use crate::model::{
    ContainerRecord, ContainerRequest, ContainerSpec, ContainerState, NamespaceMode, PodRecord,
};
use crate::names::{Outcome, Reservation, wait_for};
use crate::{Runtime, RuntimeError, new_id, now_nanos};

impl Runtime {
    /// Creates a container in pod `pod_id` and returns its id. A repeat of a request
    /// whose container exists or is being made returns that container.
    pub async fn create_container(
        &self,
        pod_id: &str,
        spec: ContainerSpec,
    ) -> Result<String, RuntimeError> {
        let pod = self.ready_pod(pod_id)?;
        let request = ContainerRequest {
            pod_id: pod_id.to_owned(),
            spec,
        };
        loop {
            let id = new_id()?;
            match self.container_names.reserve(&id, &request) {
                Reservation::Reserved => {
                    return self.make_reserved_container(id, &pod, &request).await;
                }
                Reservation::Existing(existing) => return Ok(existing),
                Reservation::InProgress(waiter) => {
                    if let Outcome::Made(existing) = wait_for(waiter).await {
                        return Ok(existing);
                    }
                }
                Reservation::Conflict { holder_id } => {
                    return Err(RuntimeError::ContainerNameReserved {
                        key: crate::names::Reservable::reservation_key(&request),
                        holder_id,
                    });
                }
            }
        }
    }

    async fn make_reserved_container(
        &self,
        id: String,
        pod: &PodRecord,
        request: &ContainerRequest,
    ) -> Result<String, RuntimeError> {
        let result = self.make_container(&id, pod, &request.spec).await;
        match &result {
            Ok(()) => self.container_names.finish(request, Some(&id)),
            Err(err) => {
                tracing::warn!(container = %id, error = %err, "CreateContainer failed; rolling back");
                self.roll_back_container(&id).await;
                self.container_names.finish(request, None);
            }
        }
        result.map(|()| id)
    }

    async fn make_container(
        &self,
        id: &str,
        pod: &PodRecord,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        let image = self
            .images
            .status(&spec.image)
            .ok_or_else(|| RuntimeError::ImageNotFound(spec.image.clone()))?;
        let record = ContainerRecord {
            id: id.to_owned(),
            pod_id: pod.id.clone(),
            metadata: spec.metadata.clone(),
            state: ContainerState::Created,
            image: spec.image.clone(),
            image_ref: image_ref(&image),
            image_id: image.id.to_string(),
            created_at: now_nanos(),
            started_at: 0,
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
            spec: spec.clone(),
            log_path: log_path(pod, spec),
            stop_signal: image.config.stop_signal.clone().unwrap_or_default(),
            user: None,
            monitor: None,
            pid: 0,
            exit: None,
            creating: true,
        };
        // Persisted first, as creating: a crash from here on is rolled back at start.
        let guard = self.containers.insert(record.clone()).await?;
        let bundle = self.dirs.container_bundle(id);
        let rootfs = bundle.join("rootfs");
        self.mount_container_rootfs(id, &image.id.to_string(), &rootfs)
            .await?;
        let built = self
            .build_container_spec(id, pod, spec, &image, &rootfs)
            .await?;
        write_bundle(id, &bundle, &built.spec).await?;
        let monitor_config = MonitorConfig {
            container_id: id.to_owned(),
            bundle: bundle.clone(),
            oci_state_root: self.dirs.oci_root(),
            dir: self.dirs.container_dir(id),
            log_path: (!record.log_path.is_empty()).then(|| PathBuf::from(&record.log_path)),
            tty: spec.tty,
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
        };
        let started = crate::monitor_client::spawn_monitor(&self.monitor_path, &monitor_config)
            .await
            .map_err(|source| RuntimeError::Monitor {
                id: id.to_owned(),
                source,
            })?;
        let user = built.user.clone();
        let persisted = self
            .containers
            .update(&guard, move |record| {
                record.user = Some(user);
                record.monitor = Some(started.monitor);
                record.pid = started.container_pid;
                record.creating = false;
            })
            .await;
        if let Err(err) = persisted {
            // The rollback finds the container by id in the executor's state.
            return Err(err.into());
        }
        self.events
            .publish(ContainerEventKind::Created, id, &pod.id);
        self.watch_container_exit(id, started.monitor);
        for warning in &built.warnings {
            tracing::warn!(container = %id, "{warning}");
        }
        Ok(())
    }

    async fn mount_container_rootfs(
        &self,
        id: &str,
        image_id: &str,
        rootfs: &Path,
    ) -> Result<(), RuntimeError> {
        let images = self.images.clone();
        let (id, image_id, rootfs) = (id.to_owned(), image_id.to_owned(), rootfs.to_owned());
        tokio::task::spawn_blocking(move || {
            let rootfs_err = |source| RuntimeError::Rootfs {
                id: id.clone(),
                source: Box::new(source),
            };
            let layers = images.prepare_rootfs(&image_id, &id).map_err(rootfs_err)?;
            std::fs::create_dir_all(&rootfs).map_err(|source| RuntimeError::Bundle {
                id: id.clone(),
                source,
            })?;
            coracle_image::mount_overlay(&layers, &rootfs).map_err(rootfs_err)
        })
        .await?
    }

    async fn build_container_spec(
        &self,
        id: &str,
        pod: &PodRecord,
        spec: &ContainerSpec,
        image: &coracle_image::Image,
        rootfs: &Path,
    ) -> Result<BuiltSpec, RuntimeError> {
        let pid = self.pid_namespace_for(pod, spec)?;
        let inputs = OwnedSpecInputs {
            container_id: id.to_owned(),
            spec: spec.clone(),
            image: ImageRuntimeConfig::from(&image.config),
            pod: pod.clone(),
            rootfs: rootfs.to_owned(),
            pod_files: PodFilePaths::in_dir(&self.dirs.pod_files_dir(&pod.id)),
            pod_shm: (pod.spec.namespaces.ipc != NamespaceMode::Node)
                .then(|| self.dirs.pod_shm_dir(&pod.id)),
            namespaces: NamespacePaths {
                network: pinned_or_host(pod, "net"),
                ipc: pinned_or_host(pod, "ipc"),
                uts: pinned_or_host(pod, "uts"),
                pid,
            },
            cgroups_path: cgroups_path(pod, id),
        };
        let container_id = id.to_owned();
        let host = self.host_facts.current();
        tokio::task::spawn_blocking(move || {
            let spec_err = |source| RuntimeError::Spec {
                id: container_id.clone(),
                source,
            };
            let built =
                crate::container_spec::build_spec(&inputs.borrowed(host)).map_err(spec_err)?;
            // As runc at create: a command the container cannot exec fails here.
            crate::container_spec::check_executable(&inputs.rootfs, &built.spec)
                .map_err(spec_err)?;
            Ok(built)
        })
        .await?
    }

    fn pid_namespace_for(
        &self,
        pod: &PodRecord,
        spec: &ContainerSpec,
    ) -> Result<NamespaceSource, RuntimeError> {
        let mode = spec.security.namespaces.pid;
        match mode {
            NamespaceMode::Node => Ok(NamespaceSource::Host),
            NamespaceMode::Container => Ok(NamespaceSource::New),
            // The pod's shared PID namespace is its init's.
            // A pod that shares no PID namespace (its own mode is CONTAINER) gives
            // each container one of its own, as containerd's pause container does.
            NamespaceMode::Pod => match pod.pid_namespace_path() {
                Some(path) => Ok(NamespaceSource::Path(path)),
                None if pod.spec.namespaces.pid == NamespaceMode::Pod => {
                    Err(RuntimeError::FailedPrecondition(format!(
                        "pod {} shares a PID namespace but its init process is gone",
                        pod.id
                    )))
                }
                None => Ok(NamespaceSource::New),
            },
            NamespaceMode::Target => {
                let target_id = &spec.security.namespaces.target_id;
                let target = self
                    .containers
                    .get(target_id)
                    .filter(|c| c.pod_id == pod.id && c.state == ContainerState::Running)
                    .ok_or_else(|| {
                        RuntimeError::invalid(
                            "linux.security_context.namespace_options.target_id",
                            format!("{target_id:?} is not a running container of this pod"),
                        )
                    })?;
                Ok(NamespaceSource::Path(PathBuf::from(format!(
                    "/proc/{}/ns/pid",
                    target.pid
                ))))
            }
        }
    }
}

/// SpecInputs borrow; this owns what a blocking task needs to build them.
struct OwnedSpecInputs {
    container_id: String,
    spec: ContainerSpec,
    image: ImageRuntimeConfig,
    pod: PodRecord,
    rootfs: PathBuf,
    pod_files: PodFilePaths,
    pod_shm: Option<PathBuf>,
    namespaces: NamespacePaths,
    cgroups_path: String,
}

impl OwnedSpecInputs {
    fn borrowed(&self, host: HostFacts) -> SpecInputs<'_> {
        SpecInputs {
            container_id: &self.container_id,
            spec: &self.spec,
            image: &self.image,
            pod: &self.pod,
            rootfs: &self.rootfs,
            pod_files: self.pod_files.clone(),
            pod_shm: self.pod_shm.as_deref(),
            namespaces: self.namespaces.clone(),
            cgroups_path: self.cgroups_path.clone(),
            host,
        }
    }
}

fn pinned_or_host(pod: &PodRecord, name: &str) -> NamespaceSource {
    match &pod.namespace_dir {
        Some(dir) if pod.pinned.iter().any(|p| p == name) => NamespaceSource::Path(dir.join(name)),
        _ => NamespaceSource::Host,
    }
}

/// kubelet's cgroupfs layout: the container's cgroup below the pod's. A pod without
/// a cgroup parent (crictl) has no cgroup: its containers' are flat under /coracle,
/// so removing a container leaves no directory behind.
fn cgroups_path(pod: &PodRecord, id: &str) -> String {
    let parent = pod.spec.cgroup_parent.trim_end_matches('/');
    if parent.is_empty() {
        format!("/coracle/{id}")
    } else {
        format!("{parent}/{id}")
    }
}

/// The CRI log file: `log_path` below the pod's `log_directory`; none when either
/// is empty.
fn log_path(pod: &PodRecord, spec: &ContainerSpec) -> String {
    if pod.spec.log_directory.is_empty() || spec.log_path.is_empty() {
        return String::new();
    }
    Path::new(&pod.spec.log_directory)
        .join(&spec.log_path)
        .to_string_lossy()
        .into_owned()
}

/// What `image_ref` reports: the digest reference when the image has one.
fn image_ref(image: &coracle_image::Image) -> String {
    image
        .repo_digests
        .first()
        .cloned()
        .unwrap_or_else(|| image.id.to_string())
}

async fn write_bundle(
    id: &str,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
) -> Result<(), RuntimeError> {
    let bytes = serde_json::to_vec(spec).map_err(|err| RuntimeError::Bundle {
        id: id.to_owned(),
        source: std::io::Error::other(err),
    })?;
    let (id, bundle) = (id.to_owned(), bundle.to_owned());
    tokio::task::spawn_blocking(move || {
        crate::store::write_atomic(&bundle, "config.json", &bytes).map_err(|err| {
            RuntimeError::Bundle {
                id,
                source: std::io::Error::other(err),
            }
        })
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodSpec, PodState};

    fn pod(cgroup_parent: &str, log_directory: &str) -> PodRecord {
        PodRecord {
            id: "p1".into(),
            spec: PodSpec {
                cgroup_parent: cgroup_parent.into(),
                log_directory: log_directory.into(),
                ..Default::default()
            },
            state: PodState::Ready,
            created_at: 0,
            namespace_dir: Some("/run/x/ns".into()),
            pinned: vec!["net".into()],
            cgroup: None,
            cgroup_created: false,
            network: None,
            init: None,
        }
    }

    #[test]
    fn container_cgroup_is_below_the_pod_cgroup() {
        assert_eq!(
            cgroups_path(&pod("/kubepods/besteffort/podu1", ""), "c1"),
            "/kubepods/besteffort/podu1/c1"
        );
        assert_eq!(cgroups_path(&pod("", ""), "c1"), "/coracle/c1");
    }

    #[test]
    fn log_path_is_below_the_pod_log_directory() {
        let spec = ContainerSpec {
            log_path: "web/0.log".into(),
            ..Default::default()
        };
        assert_eq!(
            log_path(&pod("", "/var/log/pods/ns_web_u1"), &spec),
            "/var/log/pods/ns_web_u1/web/0.log"
        );
        assert_eq!(log_path(&pod("", ""), &spec), "");
    }

    #[test]
    fn unpinned_namespaces_are_the_hosts() {
        let pod = pod("", "");
        assert_eq!(
            pinned_or_host(&pod, "net"),
            NamespaceSource::Path("/run/x/ns/net".into())
        );
        assert_eq!(pinned_or_host(&pod, "ipc"), NamespaceSource::Host);
    }
}
