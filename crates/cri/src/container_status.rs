//! `ContainerStatus`: a container record as the CRI reports it, with containerd's
//! verbose `info` layout so that `crictl inspect` finds `.info.pid` and
//! `.info.runtimeSpec` where it looks for them.

use coracle_runtime::model::{
    ContainerRecord, ContainerState, MountSpec, ResolvedUser, ResourcesSpec,
};
use k8s_cri::v1;

use crate::container_create::propagation_to_cri;
use crate::container_list::{container_state_to_cri, image_spec_to_cri};

/// What a status needs beyond the record: live state the caller reads from the
/// monitor, the bundle and the runtime's locks. The sandbox id is the record's
/// `pod_id`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StatusExtras {
    /// Host pid of the container's init while it runs; 0 otherwise.
    pub pid: i32,
    /// The OCI runtime spec the container was created with (its bundle's
    /// `config.json`), when it can still be read.
    pub runtime_spec: Option<serde_json::Value>,
    /// RemoveContainer is under way.
    pub removing: bool,
}

impl StatusExtras {
    /// The extras every status can have without asking anyone: the recorded pid
    /// while the record says running.
    pub(crate) fn from_record(record: &ContainerRecord) -> Self {
        let pid = if record.state == ContainerState::Running {
            record.pid
        } else {
            0
        };
        Self {
            pid,
            ..Self::default()
        }
    }
}

pub(crate) fn container_status_to_cri(
    record: &ContainerRecord,
    verbose: bool,
    extra: &StatusExtras,
) -> v1::ContainerStatusResponse {
    let mut info = std::collections::HashMap::new();
    if verbose {
        info.insert("info".to_owned(), verbose_info(record, extra).to_string());
    }
    v1::ContainerStatusResponse {
        status: Some(status(record)),
        info,
    }
}

pub(crate) fn status(record: &ContainerRecord) -> v1::ContainerStatus {
    // Like containerd: a created container has not started, and only a finished (or
    // lost) one has an end.
    let started_at = match record.state {
        ContainerState::Created => 0,
        _ => record.started_at,
    };
    let finished = matches!(
        record.state,
        ContainerState::Exited | ContainerState::Unknown
    );
    let exit = record.exit.as_ref().filter(|_| finished);
    let reason = match exit {
        Some(exit) if exit.reason.is_empty() && record.state == ContainerState::Exited => {
            coracle_runtime::exit_reason(exit.exit_code, false).to_owned()
        }
        Some(exit) => exit.reason.clone(),
        None => String::new(),
    };
    v1::ContainerStatus {
        id: record.id.clone(),
        metadata: Some(v1::ContainerMetadata {
            name: record.metadata.name.clone(),
            attempt: record.metadata.attempt,
        }),
        state: container_state_to_cri(record.state) as i32,
        created_at: record.created_at,
        started_at,
        finished_at: exit.map_or(0, |e| e.finished_at),
        exit_code: exit.map_or(0, |e| e.exit_code),
        image: Some(image_spec_to_cri(record)),
        image_ref: record.image_ref.clone(),
        reason,
        message: exit.map(|e| e.message.clone()).unwrap_or_default(),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        mounts: record.spec.mounts.iter().map(mount_to_cri).collect(),
        log_path: record.log_path.clone(),
        resources: Some(v1::ContainerResources {
            linux: Some(linux_resources_to_cri(&record.spec.resources)),
            windows: None,
        }),
        image_id: record.image_id.clone(),
        user: record.user.as_ref().map(user_to_cri),
    }
}

fn mount_to_cri(mount: &MountSpec) -> v1::Mount {
    v1::Mount {
        container_path: mount.container_path.clone(),
        host_path: mount.host_path.clone(),
        readonly: mount.readonly,
        selinux_relabel: mount.selinux_relabel,
        propagation: propagation_to_cri(mount.propagation) as i32,
        uid_mappings: Vec::new(),
        gid_mappings: Vec::new(),
        recursive_read_only: mount.recursive_read_only,
        image: None,
    }
}

pub(crate) fn linux_resources_to_cri(r: &ResourcesSpec) -> v1::LinuxContainerResources {
    v1::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| v1::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

fn user_to_cri(user: &ResolvedUser) -> v1::ContainerUser {
    v1::ContainerUser {
        linux: Some(v1::LinuxContainerUser {
            uid: i64::from(user.uid),
            gid: i64::from(user.gid),
            supplemental_groups: user.additional_gids.iter().map(|&g| i64::from(g)).collect(),
        }),
    }
}

/// containerd's `ContainerInfo` layout (internal/cri/server/container_status.go), which
/// crictl and people's scripts read; `config` is the request as the runtime keeps it.
fn verbose_info(record: &ContainerRecord, extra: &StatusExtras) -> serde_json::Value {
    serde_json::json!({
        "sandboxID": record.pod_id,
        "pid": extra.pid,
        "removing": extra.removing,
        "snapshotKey": record.id,
        "snapshotter": "overlayfs",
        "runtimeType": "coracle",
        "runtimeOptions": null,
        "config": record.spec,
        "runtimeSpec": extra.runtime_spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_runtime::model::{
        ContainerExit, ContainerMetadata, ContainerSpec, HugepageLimit, Propagation,
    };

    fn record(state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            id: "c1".into(),
            pod_id: "p1".into(),
            metadata: ContainerMetadata {
                name: "web".into(),
                attempt: 2,
            },
            state,
            image: "sha256:img".into(),
            image_ref: "docker.io/library/busybox@sha256:abc".into(),
            image_id: "sha256:img".into(),
            created_at: 10,
            started_at: 20,
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("note".to_string(), "x".to_string())].into(),
            spec: ContainerSpec {
                mounts: vec![MountSpec {
                    container_path: "/data".into(),
                    host_path: "/srv/data".into(),
                    readonly: true,
                    recursive_read_only: true,
                    propagation: Propagation::Bidirectional,
                    selinux_relabel: true,
                }],
                resources: ResourcesSpec {
                    cpu_shares: 256,
                    memory_limit_in_bytes: 1 << 30,
                    hugepage_limits: vec![HugepageLimit {
                        page_size: "2MB".into(),
                        limit: 1 << 21,
                    }],
                    unified: [("memory.high".to_string(), "100".to_string())].into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            log_path: "/var/log/pods/ns_pod_uid/web/2.log".into(),
            stop_signal: String::new(),
            user: Some(ResolvedUser {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![1001, 5],
            }),
            monitor: None,
            pid: 4242,
            exit: None,
            creating: false,
        }
    }

    fn exited(exit_code: i32, reason: &str) -> ContainerRecord {
        ContainerRecord {
            exit: Some(ContainerExit {
                exit_code,
                finished_at: 30,
                reason: reason.into(),
                message: "bye".into(),
            }),
            ..record(ContainerState::Exited)
        }
    }

    fn status_of(record: &ContainerRecord) -> v1::ContainerStatus {
        container_status_to_cri(record, false, &StatusExtras::from_record(record))
            .status
            .unwrap()
    }

    #[test]
    fn exit_reason_prefers_oom_then_exit_code() {
        use coracle_runtime::exit_reason;
        assert_eq!(exit_reason(137, true), "OOMKilled");
        assert_eq!(exit_reason(0, true), "OOMKilled");
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(1, false), "Error");
    }

    #[test]
    fn states_map_to_cri_states() {
        for (state, cri) in [
            (
                ContainerState::Created,
                v1::ContainerState::ContainerCreated,
            ),
            (
                ContainerState::Running,
                v1::ContainerState::ContainerRunning,
            ),
            (ContainerState::Exited, v1::ContainerState::ContainerExited),
            (
                ContainerState::Unknown,
                v1::ContainerState::ContainerUnknown,
            ),
        ] {
            assert_eq!(status_of(&record(state)).state, cri as i32);
        }
    }

    #[test]
    fn created_container_has_no_start_or_finish() {
        let status = status_of(&record(ContainerState::Created));
        assert_eq!(status.created_at, 10);
        assert_eq!((status.started_at, status.finished_at), (0, 0));
        assert_eq!(status.reason, "");
    }

    #[test]
    fn running_container_has_start_but_no_finish() {
        let status = status_of(&record(ContainerState::Running));
        assert_eq!((status.started_at, status.finished_at), (20, 0));
        assert_eq!(status.exit_code, 0);
    }

    #[test]
    fn exited_container_reports_exit() {
        let status = status_of(&exited(3, "Error"));
        assert_eq!((status.started_at, status.finished_at), (20, 30));
        assert_eq!(status.exit_code, 3);
        assert_eq!(status.reason, "Error");
        assert_eq!(status.message, "bye");
    }

    #[test]
    fn oom_reason_from_the_record_is_kept() {
        assert_eq!(status_of(&exited(137, "OOMKilled")).reason, "OOMKilled");
    }

    #[test]
    fn exited_without_reason_gets_completed_or_error() {
        assert_eq!(status_of(&exited(0, "")).reason, "Completed");
        assert_eq!(status_of(&exited(2, "")).reason, "Error");
    }

    #[test]
    fn unknown_container_keeps_its_recorded_exit() {
        let lost = ContainerRecord {
            state: ContainerState::Unknown,
            ..exited(255, "Unknown")
        };
        let status = status_of(&lost);
        assert_eq!((status.finished_at, status.exit_code), (30, 255));
        assert_eq!(status.reason, "Unknown");
    }

    #[test]
    fn image_fields_are_reported() {
        let status = status_of(&record(ContainerState::Running));
        assert_eq!(status.image.unwrap().image, "sha256:img");
        assert_eq!(status.image_ref, "docker.io/library/busybox@sha256:abc");
        assert_eq!(status.image_id, "sha256:img");
    }

    #[test]
    fn labels_annotations_and_log_path_are_reported() {
        let status = status_of(&record(ContainerState::Running));
        assert_eq!(status.labels["app"], "web");
        assert_eq!(status.annotations["note"], "x");
        assert_eq!(status.log_path, "/var/log/pods/ns_pod_uid/web/2.log");
        assert_eq!(status.metadata.unwrap().attempt, 2);
        assert_eq!(status.id, "c1");
    }

    #[test]
    fn mounts_are_reported_with_their_propagation() {
        let status = status_of(&record(ContainerState::Running));
        assert_eq!(
            status.mounts,
            [v1::Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                readonly: true,
                selinux_relabel: true,
                propagation: v1::MountPropagation::PropagationBidirectional as i32,
                recursive_read_only: true,
                ..Default::default()
            }]
        );
    }

    #[test]
    fn resources_are_reported_as_linux_resources() {
        let linux = status_of(&record(ContainerState::Running))
            .resources
            .unwrap()
            .linux
            .unwrap();
        assert_eq!(linux.cpu_shares, 256);
        assert_eq!(linux.memory_limit_in_bytes, 1 << 30);
        assert_eq!(linux.hugepage_limits[0].page_size, "2MB");
        assert_eq!(linux.unified["memory.high"], "100");
    }

    #[test]
    fn resources_round_trip_through_cri() {
        let model = record(ContainerState::Running).spec.resources;
        let back =
            crate::container_create::linux_resources_from_cri(&linux_resources_to_cri(&model))
                .unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn resolved_user_is_reported() {
        let user = status_of(&record(ContainerState::Running))
            .user
            .unwrap()
            .linux
            .unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
        assert_eq!(user.supplemental_groups, [1001, 5]);
        let unresolved = ContainerRecord {
            user: None,
            ..record(ContainerState::Created)
        };
        assert_eq!(status_of(&unresolved).user, None);
    }

    #[test]
    fn pid_is_zero_unless_running() {
        assert_eq!(
            StatusExtras::from_record(&record(ContainerState::Running)).pid,
            4242
        );
        assert_eq!(StatusExtras::from_record(&exited(0, "")).pid, 0);
        assert_eq!(
            StatusExtras::from_record(&record(ContainerState::Created)).pid,
            0
        );
    }

    #[test]
    fn status_without_verbose_has_no_info() {
        let running = record(ContainerState::Running);
        let response = container_status_to_cri(&running, false, &StatusExtras::default());
        assert!(response.info.is_empty());
    }

    #[test]
    fn verbose_status_info_has_pid_and_runtime_spec() {
        let running = record(ContainerState::Running);
        let extras = StatusExtras {
            runtime_spec: Some(serde_json::json!({"ociVersion": "1.2.0"})),
            ..StatusExtras::from_record(&running)
        };
        let response = container_status_to_cri(&running, true, &extras);
        let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
        assert_eq!(info["pid"], 4242);
        assert_eq!(info["runtimeSpec"]["ociVersion"], "1.2.0");
        assert_eq!(info["sandboxID"], "p1");
        assert_eq!(info["removing"], false);
        assert_eq!(info["snapshotKey"], "c1");
        assert_eq!(info["snapshotter"], "overlayfs");
        assert_eq!(info["runtimeType"], "coracle");
        assert!(info["runtimeOptions"].is_null());
        assert_eq!(info["config"]["mounts"][0]["container_path"], "/data");
    }

    #[test]
    fn verbose_info_without_runtime_spec_has_null() {
        let created = record(ContainerState::Created);
        let response = container_status_to_cri(&created, true, &StatusExtras::default());
        let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
        assert!(info["runtimeSpec"].is_null());
        assert_eq!(info["pid"], 0);
    }
}
