//! Clients for the streaming protocols, written from client-go
//! (`tools/remotecommand` v1–v5, `tools/portforward`) rather than from this crate's
//! server, so tests here and e2e tests against the real daemon exercise the server
//! the way kubectl and crictl do.
//!
//! They are test clients: output is collected into memory, and there is no terminal
//! handling.

mod portforward;
mod remotecommand;
mod transport;

use std::pin::Pin;

use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::remotecommand::status::Status;
use crate::runtime::TerminalSize;
use crate::spdy::SpdyError;

pub use portforward::{
    ForwardedConnection, SpdyPortForward, WebSocketForwardedPort, WebSocketPortForward,
};
pub use remotecommand::{exec_spdy, exec_websocket};
pub use transport::{ClientTls, dial_spdy, dial_websocket};

/// What the remotecommand clients send and ask for.
#[derive(Default)]
pub struct ExecOptions {
    /// Sent on stdin, then closed (SPDY half-close; v5 close signal; older WebSocket
    /// protocols cannot close stdin).
    pub stdin: Option<Pin<Box<dyn AsyncRead + Send>>>,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Sizes to send on the resize stream (tty only, v3 and later).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// Everything the server sent back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteCommandOutput {
    /// The negotiated subprotocol (`""` if the server named none).
    pub protocol: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The raw error stream: JSON `Status` from v4 on, text before.
    pub error: Vec<u8>,
}

impl RemoteCommandOutput {
    /// The error stream as a `Status` (v4 and v5).
    pub fn status(&self) -> Option<Status> {
        serde_json::from_slice(&self.error).ok()
    }

    /// The exit code as client-go reports it: v4/v5 read the `Status`; older
    /// protocols only know success (empty error stream) or an error message.
    pub fn exit_code(&self) -> Result<i32, String> {
        let text = String::from_utf8_lossy(&self.error).into_owned();
        match self.status() {
            Some(status) => status.exit_code().ok_or(status.message),
            None if self.error.is_empty() => Ok(0),
            None => Err(text),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("http: {0}")]
    Http(String),
    /// The server answered the upgrade request with something else than 101.
    #[error("server refused the upgrade: {status} {body}")]
    Refused { status: u16, body: String },
    #[error(transparent)]
    Spdy(#[from] SpdyError),
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
    #[error("protocol: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of a refused upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}
