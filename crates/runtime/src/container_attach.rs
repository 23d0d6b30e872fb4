//! Attach: a client's streams to a running container's stdio, through the attach
//! socket of its monitor. Several clients may attach at once; each sees the output
//! from the moment it attached, as the CRI log gets it.

use crate::monitor_client::MonitorError;
use crate::monitor_session::{SessionRules, connect_attach, run_session};
use crate::streaming_io::StreamIo;
use crate::{Runtime, RuntimeError};

impl Runtime {
    /// Copies the container's output to `io.stdout`/`io.stderr` and `io.stdin` to the
    /// container's stdin (when it was created with stdin), resize events to its pty,
    /// until the container exits or the client goes away. As containerd: the end of
    /// the client's stdin ends the attach, except with stdin_once and no tty, where it
    /// closes the container's stdin and the attach lasts until the container exits.
    pub async fn attach(&self, container_id: &str, io: StreamIo) -> Result<(), RuntimeError> {
        let container = self.running_container(container_id)?;
        let monitor_err = |source| RuntimeError::Monitor {
            id: container_id.to_owned(),
            source,
        };
        let socket = match connect_attach(&self.dirs.container_dir(container_id)).await {
            Ok(socket) => socket,
            Err(MonitorError::Attach { source, .. }) if monitor_gone(&source) => {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "container {container_id} is not running (its monitor serves no attach socket)"
                )));
            }
            Err(err) => return Err(monitor_err(err)),
        };
        let spec = &container.spec;
        // Then the monitor closes the container's stdin, and the client watches on.
        let stdin_once_closes_stdin = spec.stdin_once && !spec.tty;
        let rules = SessionRules {
            forward_stdin: spec.stdin,
            end_with_stdin: !stdin_once_closes_stdin,
            end_when_output_fails: true,
        };
        run_session(&socket, io, rules)
            .await
            .map_err(|err| monitor_err(err.into()))?;
        Ok(())
    }
}

/// The socket is gone (the monitor exited) or nobody listens on it.
fn monitor_gone(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}
