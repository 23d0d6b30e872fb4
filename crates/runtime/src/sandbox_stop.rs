//! StopPodSandbox: idempotent. Takes the pod off the network (freeing its addresses)
//! after killing every container of the pod, and releases its namespaces and shm;
//! the record stays, NotReady, until RemovePodSandbox.

use crate::model::PodState;
use crate::{Runtime, RuntimeError};

impl Runtime {
    pub async fn stop_pod(&self, id: &str) -> Result<(), RuntimeError> {
        let guard = self.pods.lock(id).await?;
        for container in self.containers_of_pod(id) {
            self.stop_container(&container, std::time::Duration::ZERO)
                .await?;
        }
        // The record says whether the pod is on the network; a repeated stop (kubelet
        // sends several) then costs no netlink or nft work.
        if self.pods.get(id).is_some_and(|pod| pod.network.is_some()) {
            self.detach_pod_network(id).await?;
        }
        kill_pod_init(self.pods.get(id).and_then(|pod| pod.init));
        self.release_pod_namespaces(id).await?;
        self.release_pod_shm(id).await?;
        self.pods
            .update(&guard, |pod| {
                pod.init = None;
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

impl Runtime {
    /// Ids of the containers of pod `id` (made ones; half-made ones roll back on their own).
    pub(crate) fn containers_of_pod(&self, id: &str) -> Vec<String> {
        self.containers
            .list()
            .into_iter()
            .filter(|c| c.pod_id == id && !c.creating)
            .map(|c| c.id.clone())
            .collect()
    }

    /// Unmounts the pod's shm; none mounted is not an error.
    pub(crate) async fn release_pod_shm(&self, id: &str) -> Result<(), RuntimeError> {
        let shm = self.dirs.pod_shm_dir(id);
        let pod_id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            crate::pod_shm::unmount_pod_shm(&shm)
                .map_err(|source| RuntimeError::PodShm { id: pod_id, source })
        })
        .await?
    }
}

/// SIGKILLs the pod's init if it is still the process recorded; with it the kernel
/// kills whatever else is left in the pod's PID namespace.
pub(crate) fn kill_pod_init(init: Option<crate::model::ProcessIdentity>) {
    let Some(init) = init else {
        return;
    };
    if coracle_oci::state::process_alive(init.pid, init.start_time) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(init.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
