//! The one error type of the cgroups module.

use std::path::PathBuf;

/// What can go wrong creating, configuring, joining, freezing or removing a container cgroup.
///
/// Every variant names the file, directory, field or key involved, so a caller can show
/// the message to a user as is.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },

    /// A write done through cgroups-rs failed; `path` is the file we asked it to write.
    #[error("write {value:?} to {path} (cgroups-rs): {source}")]
    Controller {
        path: PathBuf,
        value: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },

    #[error("create cgroup directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("remove cgroup directory {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("move pid {pid} into {path}: {source}")]
    AddTask {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("no cgroup filesystem is mounted (read {mountinfo})")]
    NoCgroupMounts { mountinfo: PathBuf },

    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("invalid container id {id:?} for a cgroup name: {reason}")]
    InvalidContainerId { id: String, reason: String },

    #[error("invalid {field} {value:?}: {reason}")]
    InvalidResource {
        field: String,
        value: String,
        reason: String,
    },

    #[error(
        "{field} needs the {controller} cgroup controller, which is not available on this host"
    )]
    ControllerUnavailable { controller: String, field: String },

    #[error("{what} is not supported on a {layout} cgroup layout: {reason}")]
    Unsupported {
        what: String,
        layout: String,
        reason: String,
    },

    #[error(
        "unified key {key:?} has no file on the cgroup v2 hierarchy ({dir}): unknown key, or its controller is not on cgroup v2 here"
    )]
    UnknownUnifiedKey { key: String, dir: PathBuf },

    #[error("unified key {key:?} is refused: {reason}")]
    RefusedUnifiedKey { key: String, reason: String },

    #[error(
        "unified keys need a cgroup v2 hierarchy, and this host has only cgroup v1 (key {key:?})"
    )]
    UnifiedOnV1 { key: String },

    #[error(
        "memory limit {limit} for {path} is below what the cgroup uses now ({usage} bytes) and the kernel could not reclaim enough"
    )]
    MemoryBelowUsage {
        path: PathBuf,
        limit: i64,
        usage: u64,
    },

    #[error("cgroup {path} already has processes {pids:?}; refusing to put a new container in it")]
    NotEmpty { path: PathBuf, pids: Vec<i32> },

    #[error("cgroup {path} still has processes {pids:?}; kill them before deleting it")]
    TasksRemain { path: PathBuf, pids: Vec<i32> },

    #[error("cgroup {path} did not reach the frozen state (last state {state:?}); thawed it again")]
    FreezeTimeout { path: PathBuf, state: String },
}
