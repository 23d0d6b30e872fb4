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
