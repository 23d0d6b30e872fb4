//! remotecommand: exec and attach over SPDY or WebSocket. Both transports end in a
//! [`Session`]: the client's stdio as async streams plus the error stream on which
//! the outcome is reported.

pub(crate) mod resize;
pub(crate) mod spdy;
pub mod status;
pub(crate) mod websocket;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::runtime::{ProcessIo, StreamingRuntime};
use status::Status;

/// Versions of the remotecommand stream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    /// `channel.k8s.io`, or no negotiation at all.
    V1,
    V2,
    /// Adds the resize stream.
    V3,
    /// The error stream carries a JSON `Status` with the exit code.
    V4,
    /// WebSocket only: the client can close stdin with `[255, 0]`.
    V5,
}

impl Version {
    pub(crate) fn supports_resize(self) -> bool {
        self >= Self::V3
    }

    pub(crate) fn json_status(self) -> bool {
        self >= Self::V4
    }
}

/// What the client asked the container to do.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

type Reader = Pin<Box<dyn AsyncRead + Send>>;
type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The client's streams once the transport has set them up.
pub(crate) struct Session {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub resize: Option<Reader>,
    pub error: Option<Writer>,
    pub tty: bool,
    pub version: Version,
}

/// Runs the action against the runtime, then reports the outcome on the error
/// stream. If `client_gone` fires first the runtime's future is dropped (see
/// [`StreamingRuntime`]) and nothing is reported.
pub(crate) async fn run(
    session: Session,
    action: Action,
    runtime: &Arc<dyn StreamingRuntime>,
    client_gone: impl Future<Output = ()>,
) {
    let resize = match (session.resize, session.tty) {
        (Some(source), true) => {
            let (tx, rx) = mpsc::channel(resize::RESIZE_QUEUE);
            tokio::spawn(resize::forward_resize_events(source, tx));
            Some(rx)
        }
        _ => None,
    };
    let io = ProcessIo {
        stdin: session.stdin,
        stdout: session.stdout,
        stderr: session.stderr,
        tty: session.tty,
        resize,
    };
    let status = tokio::select! {
        status = outcome(runtime, action, io) => status,
        () = client_gone => {
            debug!("remotecommand: client went away before the process finished");
            return;
        }
    };
    if let Some(mut error) = session.error {
        let bytes = status.to_error_stream(session.version.json_status());
        let written = async {
            if !bytes.is_empty() {
                error.write_all(&bytes).await?;
            }
            error.shutdown().await
        };
        if let Err(err) = written.await {
            debug!(%err, "remotecommand: could not write the status");
        }
    }
}

async fn outcome(runtime: &Arc<dyn StreamingRuntime>, action: Action, io: ProcessIo) -> Status {
    match action {
        Action::Exec { container_id, cmd } => {
            match runtime.exec(container_id, cmd.clone(), io).await {
                Ok(0) => Status::success(),
                Ok(exit_code) => Status::non_zero_exit(&cmd, exit_code),
                Err(err) => {
                    Status::internal_error(&format!("error executing command in container: {err}"))
                }
            }
        }
        Action::Attach { container_id } => match runtime.attach(container_id, io).await {
            Ok(()) => Status::success(),
            Err(err) => Status::internal_error(&format!("error attaching to container: {err}")),
        },
    }
}
