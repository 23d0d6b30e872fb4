//! The streams of an Exec or Attach session, as the streaming server hands them over.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

/// A terminal size in character cells (a remotecommand resize event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// A client's side of an Exec or Attach. The writers are flushed after each write and
/// never shut down here: their owner closes them once the call returned.
pub struct StreamIo {
    /// `None`: the client sends no stdin. Its EOF is the client closing stdin.
    pub stdin: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub stdout: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    /// `None` with a tty (a terminal has one output stream).
    pub stderr: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub tty: bool,
    /// Resize events for a tty.
    pub resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .field("resize", &self.resize.is_some())
            .finish()
    }
}
