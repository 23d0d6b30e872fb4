//! Pod and container name reservation, with kubelet's retries in mind.
//!
//! kubelet gives up on a RunPodSandbox after its runtime request timeout (2 minutes)
//! and sends the same request again. containerd then answers "name is reserved"
//! until the first attempt ends, and often forever after (its most reported CRI
//! complaint). Here a repeat of the *same* request waits for the first attempt and
//! gets its pod; a *different* request for a taken name is refused. If the first
//! attempt failed, the repeat makes the pod itself. (CRI-O's resourcestore does the
//! same job.)

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// A request whose name must be unique: equal requests are repeats of each other.
pub trait Reservable: Clone + PartialEq {
    fn reservation_key(&self) -> String;
}

impl Reservable for crate::model::PodSpec {
    fn reservation_key(&self) -> String {
        crate::model::PodSpec::reservation_key(self)
    }
}

/// How a reservation attempt turned out.
pub enum Reservation {
    /// The name is ours: make the pod under this id, then call `finish`.
    Reserved,
    /// The same request already made this pod.
    Existing(String),
    /// The same request is making it right now: wait on this.
    InProgress(watch::Receiver<Option<Outcome>>),
    /// A different request holds the name.
    Conflict { holder_id: String },
}

/// What the attempt holding a name ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Made(String),
    Failed,
}

enum Entry<S> {
    Making {
        id: String,
        spec: S,
        done: watch::Sender<Option<Outcome>>,
    },
    Made {
        id: String,
        spec: S,
    },
}

pub struct NameRegistry<S> {
    entries: Mutex<HashMap<String, Entry<S>>>,
}

impl<S> Default for NameRegistry<S> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Reservable> NameRegistry<S> {
    /// Records a pod that exists already (at start, from the store).
    pub fn insert_existing(&self, id: &str, spec: &S) {
        self.lock().insert(
            spec.reservation_key(),
            Entry::Made {
                id: id.to_owned(),
                spec: spec.clone(),
            },
        );
    }

    /// Tries to reserve the name of `spec` for a new pod `id`.
    pub fn reserve(&self, id: &str, spec: &S) -> Reservation {
        let mut entries = self.lock();
        let key = spec.reservation_key();
        match entries.get(&key) {
            None => {
                let (done, _) = watch::channel(None);
                entries.insert(
                    key,
                    Entry::Making {
                        id: id.to_owned(),
                        spec: spec.clone(),
                        done,
                    },
                );
                Reservation::Reserved
            }
            Some(Entry::Made { id, spec: held }) if held == spec => {
                Reservation::Existing(id.clone())
            }
            Some(Entry::Making {
                spec: held, done, ..
            }) if held == spec => Reservation::InProgress(done.subscribe()),
            Some(Entry::Made { id, .. } | Entry::Making { id, .. }) => Reservation::Conflict {
                holder_id: id.clone(),
            },
        }
    }

    /// Ends the attempt on `spec`'s name: keeps the name for the pod it made, or frees
    /// it after a failure; either way wakes the repeats waiting on it.
    pub fn finish(&self, spec: &S, made: Option<&str>) {
        let mut entries = self.lock();
        let key = spec.reservation_key();
        let Some(Entry::Making { id, done, .. }) = entries.remove(&key) else {
            return;
        };
        let outcome = match made {
            Some(made_id) => {
                entries.insert(
                    key,
                    Entry::Made {
                        id: made_id.to_owned(),
                        spec: spec.clone(),
                    },
                );
                Outcome::Made(id)
            }
            None => Outcome::Failed,
        };
        done.send_replace(Some(outcome));
    }

    /// Frees the name of a removed pod.
    pub fn release(&self, id: &str, spec: &S) {
        let mut entries = self.lock();
        let key = spec.reservation_key();
        if matches!(entries.get(&key), Some(Entry::Made { id: held, .. }) if held == id) {
            entries.remove(&key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<S>>> {
        // Every critical section is a single map operation; a poisoned lock still
        // holds a consistent map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Waits for the attempt a repeat found in progress.
pub async fn wait_for(mut receiver: watch::Receiver<Option<Outcome>>) -> Outcome {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Outcome::Failed),
        // The sender was dropped without an outcome: the attempt is gone.
        Err(_) => Outcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodMetadata, PodSpec};

    fn spec(name: &str, hostname: &str) -> PodSpec {
        PodSpec {
            metadata: PodMetadata {
                name: name.into(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            },
            hostname: hostname.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn repeat_during_the_first_attempt_gets_its_pod() {
        let names = NameRegistry::default();
        let first = spec("web", "h");
        assert!(matches!(
            names.reserve("id1", &first),
            Reservation::Reserved
        ));
        let Reservation::InProgress(waiter) = names.reserve("id2", &first) else {
            panic!("repeat was not told to wait");
        };
        names.finish(&first, Some("id1"));
        assert_eq!(wait_for(waiter).await, Outcome::Made("id1".into()));
        assert!(matches!(names.reserve("id3", &first), Reservation::Existing(id) if id == "id1"));
    }

    #[tokio::test]
    async fn repeat_after_a_failed_attempt_may_make_the_pod() {
        let names = NameRegistry::default();
        let first = spec("web", "h");
        assert!(matches!(
            names.reserve("id1", &first),
            Reservation::Reserved
        ));
        let Reservation::InProgress(waiter) = names.reserve("id2", &first) else {
            panic!("repeat was not told to wait");
        };
        names.finish(&first, None);
        assert_eq!(wait_for(waiter).await, Outcome::Failed);
        assert!(matches!(
            names.reserve("id2", &first),
            Reservation::Reserved
        ));
    }

    #[test]
    fn different_request_for_a_taken_name_conflicts() {
        let names = NameRegistry::default();
        assert!(matches!(
            names.reserve("id1", &spec("web", "a")),
            Reservation::Reserved
        ));
        assert!(matches!(
            names.reserve("id2", &spec("web", "b")),
            Reservation::Conflict { holder_id } if holder_id == "id1"
        ));
        assert!(matches!(
            names.reserve("id3", &spec("db", "a")),
            Reservation::Reserved
        ));
    }

    #[test]
    fn released_name_can_be_taken_again() {
        let names = NameRegistry::default();
        let web = spec("web", "a");
        names.insert_existing("id1", &web);
        assert!(matches!(
            names.reserve("id2", &web),
            Reservation::Existing(_)
        ));
        names.release("id1", &web);
        assert!(matches!(names.reserve("id2", &web), Reservation::Reserved));
    }
}
