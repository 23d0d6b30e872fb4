//! Container lifecycle events for CRI `GetContainerEvents` (kubelet's evented PLEG).
//!
//! Each event carries a snapshot, taken when it happened, of the pod's record and its
//! containers' records, so a subscriber converting it later still reports the state
//! the event was about. Events are published while the container's operation lock is
//! held, right after the record changed: one container's events are in order
//! (CREATED, STARTED, STOPPED, DELETED) for every subscriber.
//!
//! Delivery is a bounded broadcast: publishing never waits. A subscriber that falls
//! more than [`EVENT_BUFFER`] events behind loses its place and is told so, and the
//! CRI layer then ends its stream (kubelet falls back to relisting and subscribes
//! again).

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::{ContainerRecord, PodRecord};
use crate::now_nanos;
use crate::store::RecordStore;

/// Events a subscriber may lag behind before it is dropped.
pub const EVENT_BUFFER: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerEventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Clone, Debug)]
pub struct ContainerEvent {
    pub kind: ContainerEventKind,
    pub container_id: String,
    pub pod_id: String,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    /// The pod's record when the event happened (`None` if it is gone).
    pub pod: Option<Arc<PodRecord>>,
    /// The records of the pod's containers when the event happened; a deleted
    /// container is no longer among them.
    pub containers: Vec<Arc<ContainerRecord>>,
}

/// Publishes container events to every subscriber.
pub(crate) struct EventBus {
    sender: broadcast::Sender<Arc<ContainerEvent>>,
    pods: Arc<RecordStore<PodRecord>>,
    containers: Arc<RecordStore<ContainerRecord>>,
}

impl EventBus {
    pub(crate) fn new(
        pods: Arc<RecordStore<PodRecord>>,
        containers: Arc<RecordStore<ContainerRecord>>,
    ) -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            sender,
            pods,
            containers,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<ContainerEvent>> {
        self.sender.subscribe()
    }

    /// Publishes `kind` for the container, with snapshots of its pod; call it with the
    /// container's lock held, after its record changed.
    pub(crate) fn publish(&self, kind: ContainerEventKind, container_id: &str, pod_id: &str) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let containers = self
            .containers
            .list()
            .into_iter()
            .filter(|c| c.pod_id == pod_id && !c.creating)
            .collect();
        let event = ContainerEvent {
            kind,
            container_id: container_id.to_owned(),
            pod_id: pod_id.to_owned(),
            created_at: now_nanos(),
            pod: self.pods.get(pod_id),
            containers,
        };
        // An error only means every subscriber left meanwhile.
        let _ = self.sender.send(Arc::new(event));
    }
}

impl crate::Runtime {
    /// A new subscription to container events, starting now.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<ContainerEvent>> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> (EventBus, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let (pods, _) = RecordStore::open(&dir.path().join("pods")).unwrap();
        let (containers, _) = RecordStore::open(&dir.path().join("containers")).unwrap();
        (EventBus::new(Arc::new(pods), Arc::new(containers)), dir)
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let (bus, _dir) = bus();
        let mut first = bus.subscribe();
        let mut second = bus.subscribe();
        bus.publish(ContainerEventKind::Created, "c1", "p1");
        bus.publish(ContainerEventKind::Started, "c1", "p1");
        for receiver in [&mut first, &mut second] {
            let a = receiver.recv().await.unwrap();
            let b = receiver.recv().await.unwrap();
            assert_eq!(
                (a.kind, b.kind),
                (ContainerEventKind::Created, ContainerEventKind::Started)
            );
            assert_eq!(a.container_id, "c1");
            assert!(a.pod.is_none(), "no such pod record in this store");
            assert!(b.created_at >= a.created_at);
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_never_reads_does_not_block_publishing_and_is_told_it_lagged() {
        let (bus, _dir) = bus();
        let mut stalled = bus.subscribe();
        // Publishing far past the buffer returns at once: nothing waits for readers.
        for i in 0..EVENT_BUFFER * 3 {
            bus.publish(ContainerEventKind::Created, &format!("c{i}"), "p1");
        }
        match stalled.recv().await {
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                assert_eq!(missed as usize, EVENT_BUFFER * 2)
            }
            other => panic!("expected a lag report, got {other:?}"),
        }
        // A new subscriber starts from now, unaffected.
        let mut fresh = bus.subscribe();
        bus.publish(ContainerEventKind::Deleted, "c0", "p1");
        assert_eq!(
            fresh.recv().await.unwrap().kind,
            ContainerEventKind::Deleted
        );
    }
}
