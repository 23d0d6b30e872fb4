//! The seam between the streaming protocols and the container runtime. The server
//! negotiates transports and streams, then hands plain async byte streams to a
//! [`StreamingRuntime`]; it never knows how a process is started.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::error::StreamingError;

/// A boxed, sendable future: the trait stays object safe (`Arc<dyn StreamingRuntime>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A terminal size as the clients send it on the resize stream: JSON
/// `{"Width":80,"Height":24}` (Go's `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A byte stream in both directions, for port forwarding.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncReadWrite for T {}

/// The client's side of a process's stdio.
pub struct ProcessIo {
    /// `None` when the client asked for no stdin. Reads end (EOF) when the client
    /// closes stdin: SPDY half-close, WebSocket v5 close signal, or connection end.
    pub stdin: Option<Pin<Box<dyn AsyncRead + Send>>>,
    /// `None` when the client asked for no stdout.
    pub stdout: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// `None` when the client asked for no stderr, and always with a tty (the pty
    /// merges stderr into stdout).
    pub stderr: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// The client asked for a terminal: run the process on a pty.
    pub tty: bool,
    /// Terminal resize events, with a tty when the protocol carries them. When the
    /// consumer falls behind, intermediate sizes are dropped and the newest is kept.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// What the streaming server needs from the container runtime.
///
/// The futures are driven by the server's connection task. When the client's
/// connection goes away before a future completes, the future is dropped:
/// implementations must clean up on drop (kill an exec'd process, detach from a
/// container), as kubelet's runtimes do when the request context is cancelled.
pub trait StreamingRuntime: Send + Sync + 'static {
    /// Runs `cmd` in the container and returns its exit code (128+signal if it was
    /// killed). A non-zero code is reported to the client as `NonZeroExitCode`; an
    /// `Err` means the command could not be run and is reported as an internal error.
    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        io: ProcessIo,
    ) -> BoxFuture<'static, Result<i32, StreamingError>>;

    /// Attaches to the container's main process stdio until it exits or the client
    /// goes away.
    fn attach(
        &self,
        container_id: String,
        io: ProcessIo,
    ) -> BoxFuture<'static, Result<(), StreamingError>>;

    /// Connects to `port` inside the pod's network namespace and copies both ways
    /// until either side closes. Shutting down the stream's write side tells the
    /// client the pod's side closed.
    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
        stream: Box<dyn AsyncReadWrite>,
    ) -> BoxFuture<'static, Result<(), StreamingError>>;
}
