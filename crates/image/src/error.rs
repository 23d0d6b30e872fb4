//! The image store's error type: each variant names the reference, digest or path
//! that failed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;
use crate::manifest::ManifestError;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;
use crate::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("pull {reference}: {source}")]
    Registry {
        reference: String,
        source: Box<RegistryError>,
    },
    #[error("registry client setup: {0}")]
    Client(Box<RegistryError>),
    #[error("pull {reference}: no endpoint to try (upstream fallback disabled and no mirror)")]
    NoEndpoint { reference: String },
    #[error("pull {reference}: {source}")]
    Manifest {
        reference: String,
        source: ManifestError,
    },
    #[error("pull {reference}: {what} {expected}: content digest is {actual}")]
    DigestMismatch {
        reference: String,
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("pull {reference}: {what} {digest}: {actual} bytes, descriptor says {expected}")]
    SizeMismatch {
        reference: String,
        what: &'static str,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error(
        "pull {reference}: layer {digest}: uncompressed digest {actual} is not the config's diff id {expected}"
    )]
    DiffIdMismatch {
        reference: String,
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("pull {reference}: layer {digest}: {source}")]
    Unpack {
        reference: String,
        digest: Digest,
        source: UnpackError,
    },
    #[error("pull {reference}: layer {digest}: decompress: {source}")]
    Decompress {
        reference: String,
        digest: Digest,
        source: io::Error,
    },
    #[error("pull {reference}: layer {digest}: unpack task: {reason}")]
    Task {
        reference: String,
        digest: Digest,
        reason: String,
    },
    #[error("pull {reference}: no progress for {timeout:?}, cancelled")]
    ProgressTimeout {
        reference: String,
        timeout: Duration,
    },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image {0:?} is ambiguous (several images match)")]
    Ambiguous(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("image record {path}: {source}")]
    Record {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("container id {0:?}: must be a plain name ([A-Za-z0-9_.-], no leading dot)")]
    BadContainerId(String),
    #[error("mount overlay on {target}: {source}")]
    Mount { target: PathBuf, source: nix::Error },
    #[error("overlay path {0}: contains ',' or ':', which overlayfs options cannot carry")]
    OverlayPath(PathBuf),
    #[error("unmount {target}: {source}")]
    Unmount { target: PathBuf, source: nix::Error },
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}

/// What kind of failure, for the CRI layer's one mapping to gRPC codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A malformed reference, id or container id; an ambiguous short id.
    InvalidArgument,
    /// No such image here, or the registry has no such image or platform.
    NotFound,
    /// The registry refused the credentials (or wanted some).
    Unauthenticated,
    /// The registry could not be reached or broke off.
    Unavailable,
    /// The pull made no progress for `progress_timeout`.
    DeadlineExceeded,
    /// Content did not match its digest or size.
    DataLoss,
    Internal,
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        use crate::manifest::ManifestError;
        match self {
            Self::Reference(_) | Self::BadContainerId(_) | Self::Ambiguous(_) => {
                ErrorKind::InvalidArgument
            }
            Self::NotFound(_)
            | Self::Manifest {
                source: ManifestError::NoMatchingPlatform { .. },
                ..
            } => ErrorKind::NotFound,
            Self::Registry { source, .. } => match source.as_ref() {
                RegistryError::NotFound { .. } => ErrorKind::NotFound,
                RegistryError::Unauthorized { .. } => ErrorKind::Unauthenticated,
                RegistryError::Http { .. }
                | RegistryError::Body { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::Status { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Self::ProgressTimeout { .. } => ErrorKind::DeadlineExceeded,
            Self::DigestMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::DiffIdMismatch { .. } => ErrorKind::DataLoss,
            _ => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_failure() {
        let bad =
            ImageError::from(crate::reference::ImageRef::parse("UPPER").expect_err("invalid"));
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
        assert_eq!(ImageError::NotFound("x".into()).kind(), ErrorKind::NotFound);
        let denied = ImageError::Registry {
            reference: "r".into(),
            source: Box::new(RegistryError::Unauthorized {
                url: "u".into(),
                hint: String::new(),
            }),
        };
        assert_eq!(denied.kind(), ErrorKind::Unauthenticated);
        let stalled = ImageError::ProgressTimeout {
            reference: "r".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(stalled.kind(), ErrorKind::DeadlineExceeded);
    }
}
