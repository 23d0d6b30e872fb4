//! StartContainer: release the init held on the executor's exec fifo.

use crate::events::ContainerEventKind;
use crate::model::ContainerState;
use crate::{Runtime, RuntimeError, now_nanos};

impl Runtime {
    pub async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let guard = self.lock_container(id).await?;
        let container = self.existing_container(id)?;
        if container.state != ContainerState::Created {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is {:?}, StartContainer needs it created",
                container.state
            )));
        }
        let oci_root = self.dirs.oci_root();
        let container_id = id.to_owned();
        let started = tokio::task::spawn_blocking(move || {
            coracle_oci::Container::load(&oci_root, &container_id)
                .and_then(|mut container| container.start())
        })
        .await?;
        if let Err(source) = started {
            return Err(RuntimeError::Oci {
                op: "start",
                id: id.to_owned(),
                source: Box::new(source),
            });
        }
        self.containers
            .update(&guard, |record| {
                // The exit watcher may have recorded a fast exit already.
                if record.state == ContainerState::Created {
                    record.state = ContainerState::Running;
                }
                record.started_at = now_nanos();
            })
            .await?;
        self.events
            .publish(ContainerEventKind::Started, id, &container.pod_id);
        Ok(())
    }

    /// The container's operation lock; NotFound for an unknown (or half-made) one.
    pub(crate) async fn lock_container(
        &self,
        id: &str,
    ) -> Result<crate::store::ObjectGuard, RuntimeError> {
        self.existing_container(id)?;
        self.containers.lock(id).await.map_err(|err| match err {
            crate::store::StoreError::NotFound { .. } => not_found(id),
            other => other.into(),
        })
    }

    /// The record of a running container: NotFound, or FailedPrecondition when it is
    /// not running.
    /// The record of a running container; FailedPrecondition otherwise.
    pub fn running_container(
        &self,
        id: &str,
    ) -> Result<std::sync::Arc<crate::model::ContainerRecord>, RuntimeError> {
        let container = self.existing_container(id)?;
        if container.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(container)
    }

    /// The record of a container that CreateContainer has finished making.
    pub fn existing_container(
        &self,
        id: &str,
    ) -> Result<std::sync::Arc<crate::model::ContainerRecord>, RuntimeError> {
        self.containers
            .get(id)
            .filter(|c| !c.creating)
            .ok_or_else(|| not_found(id))
    }
}

pub(crate) fn not_found(id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        kind: "container",
        id: id.to_owned(),
    }
}
