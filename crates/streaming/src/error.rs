//! The crate's error type. [`StreamingError::kind`] is what callers map to gRPC codes
//! (the CRI layer) or to HTTP statuses; the variants carry the id, path or address
//! that failed.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What went wrong, in the coarse classes the CRI layer turns into gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed request: `InvalidArgument`.
    InvalidArgument,
    /// An unknown container, sandbox or process: `NotFound`.
    NotFound,
    /// The object exists but is in the wrong state (e.g. a stopped container): `FailedPrecondition`.
    FailedPrecondition,
    /// Too many requests in flight: `ResourceExhausted`.
    ResourceExhausted,
    /// Everything else: `Internal`.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("maximum number of in-flight requests exceeded")]
    TooManyInFlight,
    #[error("bind streaming server to {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("tls {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    #[error("generate request token: {0}")]
    Token(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A runtime failure with its own message (the runtime implementation's words).
    #[error("{0}")]
    Runtime(String),
}

impl StreamingError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::TooManyInFlight => ErrorKind::ResourceExhausted,
            Self::Bind { .. }
            | Self::Tls { .. }
            | Self::Token(_)
            | Self::Io { .. }
            | Self::Runtime(_) => ErrorKind::Internal,
        }
    }

    /// The I/O error kind underneath, if any: port forwarding keeps the connection
    /// open after a broken pipe or a reset, as kubelet does.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } | Self::Bind { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}
