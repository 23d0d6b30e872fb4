//! `PodSandboxStatus`: what the record says, answered without waiting on operations.

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodSandboxNetworkStatus, PodSandboxStatus,
    PodSandboxStatusResponse,
};

use coracle_runtime::model::{PodNetworkRecord, PodRecord};
use k8s_cri::v1::PodIp;

use crate::error::CriError;
use crate::service::CriService;
use crate::translate::{namespaces_to_cri, pod_metadata_to_cri, pod_state_to_cri};

impl CriService {
    pub(crate) fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        let pod = self
            .runtime
            .pods()
            .get(id)
            .ok_or_else(|| CriError::NotFound {
                kind: "pod sandbox",
                id: id.to_owned(),
            })?;
        let status = pod_status_to_cri(&pod);
        let mut info = std::collections::HashMap::new();
        if verbose {
            let details = serde_json::json!({
                "network": pod.network,
                "namespaceDir": pod.namespace_dir,
                "pinnedNamespaces": pod.pinned,
                // The init of a shared PID namespace (PID mode POD); 0 without one.
                "pid": pod.init.map_or(0, |init| init.pid),
                "podFilesDir": self.runtime.dirs().pod_files_dir(&pod.id),
                "config": pod.spec,
            });
            info.insert("info".to_owned(), details.to_string());
        }
        Ok(PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: coracle_runtime::now_nanos(),
        })
    }
}

/// The record as the CRI's PodSandboxStatus (also sent with container events).
pub(crate) fn pod_status_to_cri(pod: &PodRecord) -> PodSandboxStatus {
    PodSandboxStatus {
        id: pod.id.clone(),
        metadata: Some(pod_metadata_to_cri(&pod.spec.metadata)),
        state: pod_state_to_cri(pod.state) as i32,
        created_at: pod.created_at,
        network: Some(network_status(pod.network.as_ref())),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(namespaces_to_cri(&pod.spec.namespaces)),
            }),
        }),
        labels: pod.spec.labels.clone().into_iter().collect(),
        annotations: pod.spec.annotations.clone().into_iter().collect(),
        runtime_handler: pod.spec.runtime_handler.clone(),
    }
}

/// The first address (IPv4 on a dual-stack pod) and the others, as kubelet reads them.
fn network_status(network: Option<&PodNetworkRecord>) -> PodSandboxNetworkStatus {
    let mut ips = network
        .map(|n| n.ips.iter().map(ToString::to_string).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter();
    PodSandboxNetworkStatus {
        ip: ips.next().unwrap_or_default(),
        additional_ips: ips.map(|ip| PodIp { ip }).collect(),
    }
}
