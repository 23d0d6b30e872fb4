//! Learning of a container's exit without polling: a task per running container
//! awaits a pidfd on its monitor; when the monitor exits (after writing the exit
//! record) the task moves the record to Exited and wakes whoever waits (StopContainer).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coracle_monitor::protocol::ExitRecord;
use tokio::sync::watch;

use crate::events::{ContainerEventKind, EventBus};
use crate::model::{ContainerExit, ContainerRecord, ContainerState, ProcessIdentity};
use crate::monitor_client::{open_monitor_pidfd, read_exit_record, wait_for_exit};
use crate::store::RecordStore;
use crate::{Runtime, now_nanos};

/// Per container: a receiver that turns `true` once its exit is recorded.
#[derive(Default)]
pub(crate) struct ExitWatchers {
    exited: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

impl ExitWatchers {
    fn insert(&self, id: &str, receiver: watch::Receiver<bool>) {
        self.lock().insert(id.to_owned(), receiver);
    }

    fn get(&self, id: &str) -> Option<watch::Receiver<bool>> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        // Single map operations only: a poisoned lock still holds a consistent map.
        self.exited.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The CRI reason of a finished container: `OOMKilled` must be reported for the cgroup
/// OOM killer's victims (api.proto, ContainerStatus.reason); the other two are what
/// containerd and CRI-O report.
pub fn exit_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn exit_from_record(record: Option<ExitRecord>) -> ContainerExit {
    match record {
        Some(exit) => ContainerExit {
            exit_code: exit.exit_code,
            finished_at: exit.finished_at,
            reason: exit_reason(exit.exit_code, exit.oom_killed).to_owned(),
            message: match exit.signal {
                Some(signal) => format!("killed by signal {signal}"),
                None => String::new(),
            },
        },
        // The monitor died without a record (killed, or the node rebooted).
        None => ContainerExit {
            exit_code: 255,
            finished_at: now_nanos(),
            reason: "Unknown".to_owned(),
            message: "the container's monitor exited without recording an exit status".to_owned(),
        },
    }
}

/// Moves the record to Exited from what the monitor left in `monitor_dir`.
pub(crate) async fn record_exit(
    containers: &RecordStore<ContainerRecord>,
    events: &EventBus,
    id: &str,
    monitor_dir: PathBuf,
) {
    let exit_record =
        match tokio::task::spawn_blocking(move || read_exit_record(&monitor_dir)).await {
            Ok(Ok(record)) => record,
            Ok(Err(err)) => {
                tracing::warn!(container = %id, error = %err, "unreadable exit record");
                None
            }
            Err(err) => {
                tracing::warn!(container = %id, error = %err, "reading the exit record failed");
                None
            }
        };
    let exit = exit_from_record(exit_record);
    let Ok(guard) = containers.lock(id).await else {
        return; // Removed meanwhile.
    };
    let mut stopped_now = false;
    let update = containers
        .update(&guard, |record| {
            if record.state != ContainerState::Exited {
                record.state = ContainerState::Exited;
                record.exit = Some(exit);
                stopped_now = true;
            }
            record.monitor = None;
        })
        .await;
    match update {
        Ok(record) => {
            tracing::info!(
                container = %id,
                exit_code = record.exit.as_ref().map_or(-1, |e| e.exit_code),
                "container exited"
            );
            if stopped_now {
                events.publish(ContainerEventKind::Stopped, id, &record.pod_id);
            }
        }
        Err(err) => tracing::warn!(container = %id, error = %err, "could not record the exit"),
    }
}

impl Runtime {
    /// Starts the task that records the exit of a container whose monitor runs.
    pub(crate) fn watch_container_exit(&self, id: &str, monitor: ProcessIdentity) {
        let pidfd = open_monitor_pidfd(monitor).unwrap_or_else(|err| {
            tracing::warn!(container = %id, error = %err, "pidfd_open on the monitor failed");
            None
        });
        self.watch_monitor_pidfd(id, pidfd);
    }

    /// Records the exit once `pidfd` (the monitor's) turns readable; at once when
    /// there is none (the monitor is gone).
    pub(crate) fn watch_monitor_pidfd(&self, id: &str, pidfd: Option<OwnedFd>) {
        let (sender, receiver) = watch::channel(false);
        self.exits.insert(id, receiver);
        let containers = Arc::clone(&self.containers);
        let events = Arc::clone(&self.events);
        let monitor_dir = self.dirs.container_dir(id);
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Some(pidfd) = pidfd {
                if let Err(err) = wait_for_exit(pidfd).await {
                    tracing::warn!(container = %id, error = %err, "waiting on the monitor's pidfd failed");
                }
            }
            record_exit(&containers, &events, &id, monitor_dir).await;
            sender.send_replace(true);
        });
    }

    /// Waits up to `timeout` for the container's exit to be recorded; true if it was.
    pub(crate) async fn wait_container_exit(&self, id: &str, timeout: Duration) -> bool {
        let exited = |runtime: &Self| {
            runtime
                .containers
                .get(id)
                .is_none_or(|c| c.state == ContainerState::Exited)
        };
        let Some(mut receiver) = self.exits.get(id) else {
            return exited(self);
        };
        let waited = tokio::time::timeout(timeout, receiver.wait_for(|done| *done)).await;
        matches!(waited, Ok(Ok(_))) || exited(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_kubelet() {
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(3, false), "Error");
        assert_eq!(exit_reason(137, true), "OOMKilled");
    }

    #[test]
    fn a_missing_exit_record_is_unknown_not_success() {
        let exit = exit_from_record(None);
        assert_eq!(exit.reason, "Unknown");
        assert_ne!(exit.exit_code, 0);
    }

    #[test]
    fn a_signal_is_named_in_the_message() {
        let exit = exit_from_record(Some(ExitRecord {
            exit_code: 137,
            signal: Some(9),
            finished_at: 5,
            oom_killed: false,
        }));
        assert_eq!(exit.reason, "Error");
        assert!(exit.message.contains("signal 9"), "{}", exit.message);
        assert_eq!(exit.finished_at, 5);
    }
}
