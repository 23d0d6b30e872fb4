//! `GetContainerEvents`: the runtime's container events as a gRPC stream, each with
//! the pod's status and its containers' statuses as they were when it happened.
//!
//! Every subscriber has its own place in a bounded broadcast; one that falls too far
//! behind is dropped with a warning and its stream ends with RESOURCE_EXHAUSTED, so a
//! slow client never holds back the runtime or the other subscribers.

use std::pin::Pin;
use std::sync::Arc;

use coracle_runtime::events::{ContainerEvent, ContainerEventKind};
use k8s_cri::v1;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::container_status::status as container_status_to_cri;
use crate::sandbox_status::pod_status_to_cri;

pub(crate) type EventStream =
    Pin<Box<dyn Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>>;

/// The subscriber's stream. It ends when the client goes away (tonic drops it), and
/// after the error item of a subscriber that lagged (tonic ends a response at its
/// first error).
pub(crate) fn event_stream(
    receiver: tokio::sync::broadcast::Receiver<Arc<ContainerEvent>>,
) -> EventStream {
    Box::pin(BroadcastStream::new(receiver).map(|item| match item {
        Ok(event) => Ok(event_to_cri(&event)),
        Err(BroadcastStreamRecvError::Lagged(missed)) => {
            tracing::warn!(missed, "container events subscriber fell behind: dropped");
            Err(Status::resource_exhausted(format!(
                "container events subscriber fell {missed} events behind and was dropped; subscribe again"
            )))
        }
    }))
}

pub(crate) fn event_to_cri(event: &ContainerEvent) -> v1::ContainerEventResponse {
    v1::ContainerEventResponse {
        container_id: event.container_id.clone(),
        container_event_type: kind_to_cri(event.kind) as i32,
        created_at: event.created_at,
        pod_sandbox_status: event.pod.as_deref().map(pod_status_to_cri),
        containers_statuses: event
            .containers
            .iter()
            .map(|c| container_status_to_cri(c))
            .collect(),
    }
}

fn kind_to_cri(kind: ContainerEventKind) -> v1::ContainerEventType {
    match kind {
        ContainerEventKind::Created => v1::ContainerEventType::ContainerCreatedEvent,
        ContainerEventKind::Started => v1::ContainerEventType::ContainerStartedEvent,
        ContainerEventKind::Stopped => v1::ContainerEventType::ContainerStoppedEvent,
        ContainerEventKind::Deleted => v1::ContainerEventType::ContainerDeletedEvent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: ContainerEventKind) -> Arc<ContainerEvent> {
        Arc::new(ContainerEvent {
            kind,
            container_id: "c1".into(),
            pod_id: "p1".into(),
            created_at: 7,
            pod: None,
            containers: Vec::new(),
        })
    }

    #[tokio::test]
    async fn events_become_cri_responses() {
        let (sender, receiver) = tokio::sync::broadcast::channel(4);
        let mut stream = event_stream(receiver);
        sender.send(event(ContainerEventKind::Stopped)).unwrap();
        let response = stream.next().await.unwrap().unwrap();
        assert_eq!(response.container_id, "c1");
        assert_eq!(response.created_at, 7);
        assert_eq!(
            response.container_event_type,
            v1::ContainerEventType::ContainerStoppedEvent as i32
        );
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_resource_exhausted() {
        let (sender, receiver) = tokio::sync::broadcast::channel(2);
        let mut stream = event_stream(receiver);
        for _ in 0..5 {
            sender.send(event(ContainerEventKind::Created)).unwrap();
        }
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("3 events behind"),
            "{}",
            status.message()
        );
    }
}
