//! RemoveContainer: kills a running container, deletes it from the executor,
//! unmounts and releases its rootfs and forgets it. kubelet's log file stays.
//! Idempotent: an unknown id is success, as the CRI requires.

use std::time::Duration;

use crate::events::ContainerEventKind;
use crate::model::ContainerState;
use crate::store::StoreError;
use crate::{Runtime, RuntimeError};

impl Runtime {
    pub async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let Ok(container) = self.existing_container(id) else {
            return Ok(());
        };
        if container.state != ContainerState::Exited {
            self.stop_container(id, Duration::ZERO).await?;
        }
        let guard = match self.containers.lock(id).await {
            Ok(guard) => guard,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        self.remove_container_resources(id).await?;
        let request = self
            .containers
            .get(id)
            .map(|c| crate::model::ContainerRequest {
                pod_id: c.pod_id.clone(),
                spec: c.spec.clone(),
            });
        self.containers.remove(guard).await?;
        self.events
            .publish(ContainerEventKind::Deleted, id, &container.pod_id);
        self.exits.forget(id);
        if let Some(request) = request {
            self.container_names.release(id, &request);
        }
        Ok(())
    }

    /// Everything a container owns outside its record. Idempotent, so it also serves
    /// the rollback of a failed CreateContainer and recovery after a crash.
    pub(crate) async fn remove_container_resources(&self, id: &str) -> Result<(), RuntimeError> {
        let oci_root = self.dirs.oci_root();
        let rootfs = self.dirs.container_bundle(id).join("rootfs");
        let container_dir = self.dirs.container_dir(id);
        let images = self.images.clone();
        let container_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            delete_from_executor(&oci_root, &container_id)?;
            let rootfs_err = |source| RuntimeError::Rootfs {
                id: container_id.clone(),
                source: Box::new(source),
            };
            coracle_image::unmount_overlay(&rootfs).map_err(rootfs_err)?;
            images.release_rootfs(&container_id).map_err(rootfs_err)?;
            match std::fs::remove_dir_all(&container_dir) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(RuntimeError::RemoveDir {
                    path: container_dir,
                    source,
                }),
            }
        })
        .await?
    }

    /// Undoes a CreateContainer that failed midway: resources, then the record.
    pub(crate) async fn roll_back_container(&self, id: &str) {
        if let Err(err) = self.remove_container_resources(id).await {
            tracing::warn!(container = %id, error = %err, "rollback left resources behind; the next start retries");
            return;
        }
        self.exits.forget(id);
        match self.containers.lock(id).await {
            Ok(guard) => {
                if let Err(err) = self.containers.remove(guard).await {
                    tracing::warn!(container = %id, error = %err, "rollback could not remove the record");
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(err) => {
                tracing::warn!(container = %id, error = %err, "rollback could not lock the record")
            }
        }
    }
}

/// Kills what is left of the container and removes its executor state and cgroup;
/// a container the executor does not know is fine.
fn delete_from_executor(oci_root: &std::path::Path, id: &str) -> Result<(), RuntimeError> {
    let container = match coracle_oci::Container::load(oci_root, id) {
        Ok(container) => container,
        Err(coracle_oci::ContainerError::State(coracle_oci::state::StateError::NotFound(_))) => {
            return Ok(());
        }
        Err(source) => {
            return Err(RuntimeError::Oci {
                op: "load",
                id: id.to_owned(),
                source: Box::new(source),
            });
        }
    };
    container.delete(true).map_err(|source| RuntimeError::Oci {
        op: "delete",
        id: id.to_owned(),
        source: Box::new(source),
    })
}
