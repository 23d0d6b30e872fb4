//! StopPodSandbox: idempotent. Takes the pod off the network (freeing its addresses)
//! and releases its namespaces (and, as they land, its containers); the record
//! stays, NotReady, until RemovePodSandbox.

use crate::model::PodState;
use crate::{Runtime, RuntimeError};

impl Runtime {
    pub async fn stop_pod(&self, id: &str) -> Result<(), RuntimeError> {
        let guard = self.pods.lock(id).await?;
        // The record says whether the pod is on the network; a repeated stop (kubelet
        // sends several) then costs no netlink or nft work.
        if self.pods.get(id).is_some_and(|pod| pod.network.is_some()) {
            self.detach_pod_network(id).await?;
        }
        self.release_pod_namespaces(id).await?;
        self.pods
            .update(&guard, |pod| {
                pod.state = PodState::NotReady;
                pod.pinned.clear();
                pod.network = None;
            })
            .await?;
        Ok(())
    }

    /// Unpins whatever is pinned for `id`; nothing pinned is not an error.
    pub(crate) async fn release_pod_namespaces(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dirs.pod_namespace_dir(id);
        let pod_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            coracle_net::unpin_namespaces(&dir)
                .map_err(|source| RuntimeError::Unpin { id: pod_id, source })
        })
        .await?
    }
}
