//! Converging at start after a crash or a reboot: pods caught mid-creation are rolled
//! back; ready pods whose pinned namespaces vanished (the state dir is tmpfs, so a
//! reboot clears it) are marked NotReady so kubelet makes them anew.

use std::path::Path;

use crate::Runtime;
use crate::model::PodState;

impl Runtime {
    pub(crate) async fn recover(&self) {
        for pod in self.pods.list() {
            match pod.state {
                PodState::Creating => {
                    tracing::info!(pod = %pod.id, "rolling back a pod left half-made by a crash");
                    self.roll_back_pod(&pod.id).await;
                }
                PodState::Ready
                    if !namespaces_still_pinned(pod.namespace_dir.as_deref(), &pod.pinned) =>
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

fn namespaces_still_pinned(dir: Option<&Path>, pinned: &[String]) -> bool {
    let Some(dir) = dir else {
        return true;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    pinned.iter().all(|name| {
        let path = dir.join(name);
        let path = path.to_string_lossy();
        mountinfo
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(path.as_ref()))
    })
}
