//! `ListPodSandbox`: the pods in the store, filtered as the CRI defines.

use std::collections::HashMap;

use coracle_runtime::model::{PodRecord, PodState};
use k8s_cri::v1::{PodSandbox, PodSandboxFilter};

use crate::service::CriService;
use crate::translate::{pod_metadata_to_cri, pod_state_to_cri};

impl CriService {
    pub(crate) fn list_pod_sandboxes(&self, filter: Option<&PodSandboxFilter>) -> Vec<PodSandbox> {
        let mut pods: Vec<PodSandbox> = self
            .runtime
            .pods()
            .list()
            .iter()
            .filter(|pod| pod.state != PodState::Creating)
            .filter(|pod| filter.is_none_or(|f| pod_matches(pod, f)))
            .map(|pod| pod_to_cri(pod))
            .collect();
        pods.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        pods
    }
}

/// An id filter matches a whole id or a prefix of one, as crictl's short ids need.
pub(crate) fn id_matches(id: &str, wanted: &str) -> bool {
    wanted.is_empty() || id.starts_with(wanted)
}

pub(crate) fn labels_match(
    labels: &std::collections::BTreeMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

fn pod_matches(pod: &PodRecord, filter: &PodSandboxFilter) -> bool {
    id_matches(&pod.id, &filter.id)
        && filter
            .state
            .as_ref()
            .is_none_or(|s| s.state == pod_state_to_cri(pod.state) as i32)
        && labels_match(&pod.spec.labels, &filter.label_selector)
}

fn pod_to_cri(pod: &PodRecord) -> PodSandbox {
    PodSandbox {
        id: pod.id.clone(),
        metadata: Some(pod_metadata_to_cri(&pod.spec.metadata)),
        state: pod_state_to_cri(pod.state) as i32,
        created_at: pod.created_at,
        labels: pod.spec.labels.clone().into_iter().collect(),
        annotations: pod.spec.annotations.clone().into_iter().collect(),
        runtime_handler: pod.spec.runtime_handler.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_runtime::model::{PodMetadata, PodSpec};
    use k8s_cri::v1::{PodSandboxState, PodSandboxStateValue};

    fn pod(id: &str, state: PodState, app: &str) -> PodRecord {
        PodRecord {
            id: id.into(),
            spec: PodSpec {
                metadata: PodMetadata {
                    name: "n".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                    attempt: 0,
                },
                labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            },
            state,
            created_at: 1,
            namespace_dir: None,
            pinned: Vec::new(),
            cgroup: None,
            cgroup_created: false,
            network: None,
            init: None,
        }
    }

    #[test]
    fn filter_by_id_prefix_state_and_labels() {
        let ready_web = pod("abc123", PodState::Ready, "web");
        let empty = PodSandboxFilter::default();
        assert!(pod_matches(&ready_web, &empty));
        let by_prefix = PodSandboxFilter {
            id: "abc".into(),
            ..Default::default()
        };
        assert!(pod_matches(&ready_web, &by_prefix));
        let other_id = PodSandboxFilter {
            id: "abd".into(),
            ..Default::default()
        };
        assert!(!pod_matches(&ready_web, &other_id));
        let not_ready = PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        };
        assert!(!pod_matches(&ready_web, &not_ready));
        assert!(pod_matches(
            &pod("x", PodState::NotReady, "web"),
            &not_ready
        ));
        let db_label = PodSandboxFilter {
            label_selector: [("app".to_string(), "db".to_string())].into(),
            ..Default::default()
        };
        assert!(!pod_matches(&ready_web, &db_label));
    }
}
