//! Converging at start after a crash or a reboot: pods caught mid-creation are rolled
//! back; ready pods whose pinned namespaces vanished (the state dir is tmpfs, so a
//! reboot clears it) are marked NotReady so kubelet makes them anew.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::Runtime;
use crate::model::{ContainerState, PodState};

impl Runtime {
    pub(crate) async fn recover(&self) {
        self.recover_containers().await;
        let mount_points = mount_points();
        for pod in self.pods.list() {
            match pod.state {
                PodState::Creating => {
                    tracing::info!(pod = %pod.id, "rolling back a pod left half-made by a crash");
                    self.roll_back_pod(&pod.id).await;
                }
                PodState::Ready
                    if !namespaces_still_pinned(
                        &mount_points,
                        pod.namespace_dir.as_deref(),
                        &pod.pinned,
                    ) =>
                {
                    tracing::warn!(pod = %pod.id, "pinned namespaces are gone (reboot?): marking the pod NotReady");
                    self.names.insert_existing(&pod.id, &pod.spec);
                    if let Err(err) = self.stop_pod(&pod.id).await {
                        tracing::warn!(pod = %pod.id, error = %err, "could not mark the pod NotReady");
                    }
                }
                PodState::Ready | PodState::NotReady => {
                    self.names.insert_existing(&pod.id, &pod.spec);
                }
            }
        }
        self.release_orphaned_networks().await;
    }
}

impl Runtime {
    /// Containers caught mid-creation are rolled back; live ones get their exit
    /// watcher back; those whose monitor ended while the daemon was away get the
    /// exit the monitor recorded.
    async fn recover_containers(&self) {
        for container in self.containers.list() {
            if container.creating {
                tracing::info!(container = %container.id, "rolling back a container left half-made by a crash");
                self.roll_back_container(&container.id).await;
                continue;
            }
            self.container_names.insert_existing(
                &container.id,
                &crate::model::ContainerRequest {
                    pod_id: container.pod_id.clone(),
                    spec: container.spec.clone(),
                },
            );
            if container.state == ContainerState::Exited {
                continue;
            }
            let pidfd = container
                .monitor
                .and_then(|monitor| crate::monitor_client::open_monitor_pidfd(monitor).ok())
                .flatten();
            match pidfd {
                Some(pidfd) => self.watch_monitor_pidfd(&container.id, Some(pidfd)),
                // Exits that happened while the daemon was away are recorded before
                // the first request is served.
                None => {
                    let dir = self.dirs.container_dir(&container.id);
                    crate::container_exit::record_exit(
                        &self.containers,
                        &self.events,
                        &container.id,
                        dir,
                    )
                    .await;
                }
            }
        }
    }
}

/// Every mount point of this mount namespace, read once for all pods.
fn mount_points() -> HashSet<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .collect()
}

fn namespaces_still_pinned(
    mount_points: &HashSet<PathBuf>,
    dir: Option<&Path>,
    pinned: &[String],
) -> bool {
    let Some(dir) = dir else {
        return true;
    };
    pinned
        .iter()
        .all(|name| mount_points.contains(&dir.join(name)))
}
