//! RunPodSandbox: validate, reserve the name, pin namespaces, write the pod's files,
//! and only then mark the pod ready. Any failure rolls back everything made.

use coracle_net::{NamespaceKind, PinSetup};

use crate::model::{NamespaceMode, PodRecord, PodSpec, PodState};
use crate::names::{Outcome, Reservation, wait_for};
use crate::{RUNTIME_HANDLERS, Runtime, RuntimeError, new_id, now_nanos};

impl Runtime {
    /// Makes a ready pod for `spec` and returns its id. A repeat of a request whose
    /// pod exists or is being made returns that pod.
    pub async fn run_pod(&self, spec: PodSpec) -> Result<String, RuntimeError> {
        validate_pod_spec(&spec)?;
        loop {
            let id = new_id()?;
            match self.names.reserve(&id, &spec) {
                Reservation::Reserved => return self.make_reserved_pod(id, spec).await,
                Reservation::Existing(existing) => {
                    tracing::info!(pod = %existing, key = %spec.reservation_key(), "repeated RunPodSandbox: returning the pod already made");
                    return Ok(existing);
                }
                Reservation::InProgress(waiter) => {
                    tracing::info!(key = %spec.reservation_key(), "repeated RunPodSandbox: waiting for the attempt in progress");
                    if let Outcome::Made(existing) = wait_for(waiter).await {
                        return Ok(existing);
                    }
                    // The first attempt failed and freed the name: try ourselves.
                }
                Reservation::Conflict { holder_id } => {
                    return Err(RuntimeError::NameReserved {
                        key: spec.reservation_key(),
                        holder_id,
                    });
                }
            }
        }
    }

    async fn make_reserved_pod(&self, id: String, spec: PodSpec) -> Result<String, RuntimeError> {
        let result = self.make_pod(&id, &spec).await;
        match &result {
            Ok(()) => self.names.finish(&spec, Some(&id)),
            Err(err) => {
                tracing::warn!(pod = %id, error = %err, "RunPodSandbox failed; rolling back");
                self.roll_back_pod(&id).await;
                self.names.finish(&spec, None);
            }
        }
        result.map(|()| id)
    }

    async fn make_pod(&self, id: &str, spec: &PodSpec) -> Result<(), RuntimeError> {
        let kinds = namespaces_to_pin(spec);
        let namespace_dir = (!kinds.is_empty()).then(|| self.dirs.pod_namespace_dir(id));
        let record = PodRecord {
            id: id.to_owned(),
            spec: spec.clone(),
            state: PodState::Creating,
            created_at: now_nanos(),
            namespace_dir: namespace_dir.clone(),
            pinned: kinds.iter().map(|k| k.name().to_owned()).collect(),
            cgroup: None,
            cgroup_created: false,
            network: None,
            init: None,
        };
        // Persisted first, as Creating: a crash from here on is rolled back at start.
        let guard = self.pods.insert(record).await?;
        let hostname = effective_hostname(spec);
        if let Some(dir) = namespace_dir.clone() {
            let setup = PinSetup {
                hostname: Some(hostname.clone()),
                sysctls: spec.sysctls.clone().into_iter().collect(),
            };
            let pod_id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                coracle_net::pin_namespaces(&dir, &kinds, &setup)
                    .map_err(|source| RuntimeError::Pin { id: pod_id, source })
            })
            .await??;
        }
        if spec.namespaces.ipc != NamespaceMode::Node {
            let shm = self.dirs.pod_shm_dir(id);
            let pod_id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                crate::pod_shm::mount_pod_shm(&shm)
                    .map_err(|source| RuntimeError::PodShm { id: pod_id, source })
            })
            .await??;
        }
        let network = match &namespace_dir {
            Some(dir) if spec.namespaces.network != NamespaceMode::Node => {
                self.attach_pod_network(id, spec, &dir.join("net")).await?
            }
            _ => None,
        };
        let files_dir = self.dirs.pod_files_dir(id);
        let host_network = spec.namespaces.network == NamespaceMode::Node;
        let files_spec = spec.clone();
        let pod_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            crate::pod_files::write_pod_files(&files_dir, &files_spec, &hostname, host_network)
                .map_err(|source| RuntimeError::PodFiles { id: pod_id, source })
        })
        .await??;
        let pod_id = id.to_owned();
        let parent = spec.cgroup_parent.clone();
        let pod_cgroup = tokio::task::spawn_blocking(move || {
            crate::pod_cgroup::ensure_pod_cgroup(&pod_id, &parent)
        })
        .await??;
        let (cgroup, created) = match pod_cgroup {
            Some(made) => (Some(made.cgroup), made.created),
            None => (None, false),
        };
        let init = match spec.namespaces.pid {
            NamespaceMode::Pod => {
                let started = self
                    .start_pod_init(
                        id,
                        namespace_dir.as_deref(),
                        &kinds_pinned(spec),
                        cgroup.as_ref(),
                    )
                    .await;
                match started {
                    Ok(init) => Some(init),
                    Err(err) => {
                        // The record does not know the cgroup yet: the rollback cannot remove it.
                        if let Err(cleanup) = remove_unrecorded_cgroup(id, cgroup, created).await {
                            tracing::warn!(pod = id, error = %cleanup, "remove the cgroup of a pod whose init failed");
                        }
                        return Err(err);
                    }
                }
            }
            _ => None,
        };
        let recorded = cgroup.clone();
        let marked_ready = self
            .pods
            .update(&guard, move |pod| {
                pod.cgroup = recorded;
                pod.cgroup_created = created;
                pod.network = network;
                pod.init = init;
                pod.state = PodState::Ready;
            })
            .await;
        if let Err(err) = marked_ready {
            // The record knows neither the init nor the cgroup, so the rollback cannot
            // end or remove them.
            crate::sandbox_stop::kill_pod_init(init);
            remove_unrecorded_cgroup(id, cgroup, created).await?;
            return Err(err.into());
        }
        Ok(())
    }
}

/// Removes a pod cgroup made by a RunPodSandbox that then failed, on a blocking
/// thread: the delete waits for the cgroup's processes to be gone.
async fn remove_unrecorded_cgroup(
    id: &str,
    cgroup: Option<coracle_oci::cgroups::ContainerCgroup>,
    created: bool,
) -> Result<(), RuntimeError> {
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        crate::pod_cgroup::remove_pod_cgroup(&id, cgroup.as_ref(), created)
    })
    .await?
}

impl Runtime {
    /// Starts the init of the pod's shared PID namespace, inside its other
    /// namespaces and its cgroup.
    async fn start_pod_init(
        &self,
        id: &str,
        namespace_dir: Option<&std::path::Path>,
        pinned: &[String],
        cgroup: Option<&coracle_oci::cgroups::ContainerCgroup>,
    ) -> Result<crate::model::ProcessIdentity, RuntimeError> {
        let config = coracle_monitor::protocol::PodInitConfig {
            namespaces: namespace_dir
                .map(|dir| pinned.iter().map(|name| dir.join(name)).collect())
                .unwrap_or_default(),
        };
        let init = crate::monitor_client::spawn_pod_init(&self.monitor_path, &config)
            .await
            .map_err(|source| RuntimeError::Monitor {
                id: id.to_owned(),
                source,
            })?;
        if let Some(cgroup) = cgroup {
            if let Err(err) = cgroup.add_task(init.pid) {
                crate::sandbox_stop::kill_pod_init(Some(init));
                return Err(RuntimeError::PodCgroup {
                    id: id.to_owned(),
                    source: Box::new(err),
                });
            }
        }
        Ok(init)
    }
}

/// Names of the namespaces pinned for `spec` (the files in the namespace dir).
fn kinds_pinned(spec: &PodSpec) -> Vec<String> {
    namespaces_to_pin(spec)
        .iter()
        .map(|k| k.name().to_owned())
        .collect()
}

/// The namespaces a pod gets new copies of. UTS follows the network: a host-network
/// pod has the node's hostname, as in Kubernetes.
fn namespaces_to_pin(spec: &PodSpec) -> Vec<NamespaceKind> {
    let mut kinds = Vec::new();
    if spec.namespaces.network != NamespaceMode::Node {
        kinds.push(NamespaceKind::Net);
        kinds.push(NamespaceKind::Uts);
    }
    if spec.namespaces.ipc != NamespaceMode::Node {
        kinds.push(NamespaceKind::Ipc);
    }
    kinds
}

fn effective_hostname(spec: &PodSpec) -> String {
    let node = if spec.namespaces.network == NamespaceMode::Node {
        nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    crate::container_spec::pod_hostname(spec, &node)
}

fn validate_pod_spec(spec: &PodSpec) -> Result<(), RuntimeError> {
    let metadata = &spec.metadata;
    for (field, value) in [
        ("metadata.name", &metadata.name),
        ("metadata.namespace", &metadata.namespace),
        ("metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(RuntimeError::invalid(field, "must not be empty"));
        }
    }
    if !RUNTIME_HANDLERS.contains(&spec.runtime_handler.as_str()) {
        return Err(RuntimeError::invalid(
            "runtime_handler",
            format!(
                "unknown runtime handler {:?}; this node serves {:?}",
                spec.runtime_handler, RUNTIME_HANDLERS
            ),
        ));
    }
    validate_hostname(&spec.hostname)?;
    validate_namespace_modes(spec)?;
    let kinds = namespaces_to_pin(spec);
    for (key, value) in &spec.sysctls {
        coracle_net::validate_sysctl(key, value, &kinds)
            .map_err(|err| RuntimeError::invalid("linux.sysctls", err.to_string()))?;
    }
    Ok(())
}

fn validate_hostname(hostname: &str) -> Result<(), RuntimeError> {
    let valid = hostname.len() <= 64
        && hostname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(RuntimeError::invalid(
            "hostname",
            format!(
                "{hostname:?} is not a valid hostname (at most 64 letters, digits, '-' and '.')"
            ),
        ))
    }
}

fn validate_namespace_modes(spec: &PodSpec) -> Result<(), RuntimeError> {
    let ns = &spec.namespaces;
    for (field, mode) in [
        ("namespace_options.network", ns.network),
        ("namespace_options.ipc", ns.ipc),
    ] {
        if matches!(mode, NamespaceMode::Container | NamespaceMode::Target) {
            return Err(RuntimeError::invalid(
                field,
                "only POD and NODE are valid for a pod's network and IPC namespaces",
            ));
        }
    }
    // A POD pid mode gets an init process holding the shared namespace.
    if ns.pid == NamespaceMode::Target {
        return Err(RuntimeError::invalid(
            "namespace_options.pid",
            "TARGET is valid for containers only, not for a pod",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodMetadata, PodNamespaces};

    fn spec() -> PodSpec {
        PodSpec {
            metadata: PodMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            },
            hostname: "web".into(),
            namespaces: PodNamespaces {
                pid: NamespaceMode::Container,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn valid_spec_passes() {
        validate_pod_spec(&spec()).unwrap();
    }

    #[test]
    fn missing_metadata_is_named() {
        let mut s = spec();
        s.metadata.uid.clear();
        let err = validate_pod_spec(&s).unwrap_err().to_string();
        assert!(err.contains("metadata.uid"), "{err}");
    }

    #[test]
    fn unknown_runtime_handler_is_refused() {
        let mut s = spec();
        s.runtime_handler = "kata".into();
        let err = validate_pod_spec(&s).unwrap_err().to_string();
        assert!(err.contains("kata"), "{err}");
    }

    #[test]
    fn bad_hostname_is_refused() {
        let mut s = spec();
        s.hostname = "a/b".into();
        assert!(validate_pod_spec(&s).is_err());
    }

    #[test]
    fn net_sysctl_on_a_host_network_pod_is_refused() {
        let mut s = spec();
        s.namespaces.network = NamespaceMode::Node;
        s.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        let err = validate_pod_spec(&s).unwrap_err().to_string();
        assert!(err.contains("linux.sysctls"), "{err}");
    }

    #[test]
    fn host_network_pod_pins_only_ipc() {
        let mut s = spec();
        s.namespaces.network = NamespaceMode::Node;
        assert_eq!(namespaces_to_pin(&s), vec![NamespaceKind::Ipc]);
        s.namespaces.ipc = NamespaceMode::Node;
        assert!(namespaces_to_pin(&s).is_empty());
    }
}
