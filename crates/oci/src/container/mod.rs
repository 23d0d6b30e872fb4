//! The container lifecycle, one file per operation (youki's `container/` layout).

mod create;
mod delete;
mod exec;
mod kill;
mod oom;
mod pause;
mod ps;
mod start;
mod state;
mod update;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use create::CreateOptions;
pub use exec::{ExecOptions, ExecProcess};
pub use kill::parse_signal;

use crate::hooks::HookError;
use crate::process::channel::ChannelError;
use crate::process::namespaces::NamespaceError;
use crate::process::resources::{Cgroup, ResourceError};
use crate::state::{PersistedState, StateError, Status};

/// How long the parent waits for each message from the container process before
/// giving up (hooks run between two messages, so this bounds a hook too).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {id} is {status}, {op} needs it {want}")]
    WrongStatus {
        id: String,
        op: &'static str,
        status: Status,
        want: &'static str,
    },
    #[error("load spec {path}: {msg}")]
    Spec { path: PathBuf, msg: String },
    #[error("spec: {0}")]
    InvalidSpec(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        source: nix::Error,
    },
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("container process: {0}")]
    Child(String),
    #[error("container {id}: init process exited before start")]
    InitGone { id: String },
    #[error("container {id}: init {pid} still alive after SIGKILL; state kept")]
    StillAlive { id: String, pid: i32 },
    #[error("console socket {path}: {source}")]
    Console {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A container known by its persisted state.
#[derive(Debug)]
pub struct Container {
    state_root: PathBuf,
    state: PersistedState,
}

impl Container {
    /// Load a container created by this or another process.
    pub fn load(state_root: &Path, id: &str) -> Result<Self, ContainerError> {
        let state = PersistedState::load(state_root, id)?;
        Ok(Container {
            state_root: state_root.to_path_buf(),
            state,
        })
    }

    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Host pid of the container init.
    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    pub fn bundle(&self) -> &Path {
        &self.state.bundle
    }

    fn dir(&self) -> PathBuf {
        crate::state::container_dir(&self.state_root, &self.state.id)
    }

    fn cgroup(&self) -> Result<Option<Cgroup>, ContainerError> {
        match &self.state.cgroup {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => Ok(Some(Cgroup::from_state(v)?)),
        }
    }

    fn require(
        &self,
        op: &'static str,
        ok: &[Status],
        want: &'static str,
    ) -> Result<Status, ContainerError> {
        let status = self.status();
        if ok.contains(&status) {
            Ok(status)
        } else {
            Err(ContainerError::WrongStatus {
                id: self.state.id.clone(),
                op,
                status,
                want,
            })
        }
    }
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ContainerError + 'a {
    move |source| ContainerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Container {
    /// The spec the container was created from.
    pub fn config(&self) -> &oci_spec::runtime::Spec {
        &self.state.config
    }
}
