//! `ListContainers`: the containers in the store, filtered as the CRI defines.

use coracle_runtime::model::{ContainerRecord, ContainerState as State};
use k8s_cri::v1::{Container, ContainerFilter, ContainerMetadata, ContainerState, ImageSpec};

use crate::sandbox_list::{id_matches, labels_match};
use crate::service::CriService;

impl CriService {
    pub(crate) fn list_containers(&self, filter: Option<&ContainerFilter>) -> Vec<Container> {
        let mut containers: Vec<Container> = self
            .runtime
            .containers()
            .list()
            .iter()
            .filter(|c| !c.creating && filter.is_none_or(|f| container_matches(c, f)))
            .map(|c| container_to_cri(c))
            .collect();
        containers.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        containers
    }
}

pub(crate) fn container_state_to_cri(state: State) -> ContainerState {
    match state {
        State::Created => ContainerState::ContainerCreated,
        State::Running => ContainerState::ContainerRunning,
        State::Exited => ContainerState::ContainerExited,
        State::Unknown => ContainerState::ContainerUnknown,
    }
}

fn container_matches(container: &ContainerRecord, filter: &ContainerFilter) -> bool {
    id_matches(&container.id, &filter.id)
        && id_matches(&container.pod_id, &filter.pod_sandbox_id)
        && filter
            .state
            .as_ref()
            .is_none_or(|s| s.state == container_state_to_cri(container.state) as i32)
        && labels_match(&container.labels, &filter.label_selector)
}

fn container_to_cri(container: &ContainerRecord) -> Container {
    Container {
        id: container.id.clone(),
        pod_sandbox_id: container.pod_id.clone(),
        metadata: Some(ContainerMetadata {
            name: container.metadata.name.clone(),
            attempt: container.metadata.attempt,
        }),
        image: Some(image_spec_to_cri(container)),
        image_ref: container.image_ref.clone(),
        state: container_state_to_cri(container.state) as i32,
        created_at: container.created_at,
        labels: container.labels.clone().into_iter().collect(),
        annotations: container.annotations.clone().into_iter().collect(),
        image_id: container.image_id.clone(),
    }
}

/// The image as CreateContainer named it (kubelet sends the image id it pulled).
/// `user_specified_image` (what the pod spec said, `busybox:latest`) stays empty: the
/// model does not keep it yet, and an id in its place would mislead kubelet.
pub(crate) fn image_spec_to_cri(container: &ContainerRecord) -> ImageSpec {
    ImageSpec {
        image: container.image.clone(),
        user_specified_image: container.spec.user_specified_image.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_runtime::model::ContainerMetadata as Metadata;
    use k8s_cri::v1::ContainerStateValue;

    fn container(id: &str, pod_id: &str, state: State) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            pod_id: pod_id.into(),
            metadata: Metadata {
                name: "web".into(),
                attempt: 1,
            },
            state,
            image: "sha256:img".into(),
            image_ref: "docker.io/library/busybox@sha256:abc".into(),
            image_id: "sha256:img".into(),
            created_at: 5,
            started_at: 0,
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("note".to_string(), "x".to_string())].into(),
            spec: Default::default(),
            log_path: String::new(),
            stop_signal: String::new(),
            user: None,
            monitor: None,
            pid: 0,
            exit: None,
            creating: false,
        }
    }

    #[test]
    fn listed_container_carries_image_ref_and_id() {
        let listed = container_to_cri(&container("c1", "p1", State::Running));
        assert_eq!(listed.image.unwrap().image, "sha256:img");
        assert_eq!(listed.image_ref, "docker.io/library/busybox@sha256:abc");
        assert_eq!(listed.image_id, "sha256:img");
        assert_eq!(listed.pod_sandbox_id, "p1");
        assert_eq!(listed.state, ContainerState::ContainerRunning as i32);
        assert_eq!(listed.metadata.unwrap().name, "web");
        assert_eq!(listed.annotations["note"], "x");
    }

    #[test]
    fn filter_by_id_prefix_pod_state_and_labels() {
        let running = container("abc123", "pod1", State::Running);
        assert!(container_matches(&running, &ContainerFilter::default()));
        let by_prefix = ContainerFilter {
            id: "abc".into(),
            ..Default::default()
        };
        assert!(container_matches(&running, &by_prefix));
        let by_pod_prefix = ContainerFilter {
            pod_sandbox_id: "pod".into(),
            ..Default::default()
        };
        assert!(container_matches(&running, &by_pod_prefix));
        let other_pod = ContainerFilter {
            pod_sandbox_id: "pod2".into(),
            ..Default::default()
        };
        assert!(!container_matches(&running, &other_pod));
        let exited = ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerExited as i32,
            }),
            ..Default::default()
        };
        assert!(!container_matches(&running, &exited));
        let db = ContainerFilter {
            label_selector: [("app".to_string(), "db".to_string())].into(),
            ..Default::default()
        };
        assert!(!container_matches(&running, &db));
    }
}
