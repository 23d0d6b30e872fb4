//! RemovePodSandbox: idempotent; an unknown id is success, as the CRI requires.

use std::io;
use std::path::Path;

use crate::store::StoreError;
use crate::{Runtime, RuntimeError};

impl Runtime {
    pub async fn remove_pod(&self, id: &str) -> Result<(), RuntimeError> {
        for container in self.containers_of_pod(id) {
            self.remove_container(&container).await?;
        }
        let guard = match self.pods.lock(id).await {
            Ok(guard) => guard,
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        let pod = self.pods.get(id);
        // Stop already took a stopped pod off the network.
        let attached = pod.as_ref().is_some_and(|pod| pod.network.is_some());
        self.remove_pod_resources(id, attached).await?;
        let spec = pod.map(|pod| pod.spec.clone());
        self.pods.remove(guard).await?;
        if let Some(spec) = spec {
            self.names.release(id, &spec);
        }
        Ok(())
    }

    /// Everything a pod owns outside its record. Idempotent, so it also serves the
    /// rollback of a failed RunPodSandbox and recovery after a crash, which pass
    /// `detach_network` always: their record may not know the pod was attached.
    pub(crate) async fn remove_pod_resources(
        &self,
        id: &str,
        detach_network: bool,
    ) -> Result<(), RuntimeError> {
        if detach_network {
            self.detach_pod_network(id).await?;
        }
        crate::sandbox_stop::kill_pod_init(self.pods.get(id).and_then(|pod| pod.init));
        self.release_pod_namespaces(id).await?;
        self.release_pod_shm(id).await?;
        if let Some(pod) = self.pods.get(id) {
            let pod_id = id.to_owned();
            tokio::task::spawn_blocking(move || {
                crate::pod_cgroup::remove_pod_cgroup(
                    &pod_id,
                    pod.cgroup.as_ref(),
                    pod.cgroup_created,
                )
            })
            .await??;
        }
        remove_dir_all_if_present(&self.dirs.pod_state_dir(id))?;
        remove_dir_all_if_present(&self.dirs.pod_files_dir(id))
    }

    /// Undoes a RunPodSandbox that failed midway: resources, then the record.
    pub(crate) async fn roll_back_pod(&self, id: &str) {
        if let Err(err) = self.remove_pod_resources(id, true).await {
            tracing::warn!(pod = %id, error = %err, "rollback left resources behind; the next start retries");
            return;
        }
        match self.pods.lock(id).await {
            Ok(guard) => {
                if let Err(err) = self.pods.remove(guard).await {
                    tracing::warn!(pod = %id, error = %err, "rollback could not remove the record");
                }
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(err) => {
                tracing::warn!(pod = %id, error = %err, "rollback could not lock the record")
            }
        }
    }
}

fn remove_dir_all_if_present(path: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RuntimeError::RemoveDir {
            path: path.to_owned(),
            source,
        }),
    }
}
