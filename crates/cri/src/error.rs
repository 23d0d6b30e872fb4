//! Domain errors of the CRI layer and the one place they become gRPC codes.

use coracle_runtime::RuntimeError;
use coracle_runtime::store::StoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("{rpc} is not implemented yet by coracle")]
    Unimplemented { rpc: &'static str },
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{what} is not supported yet")]
    Unsupported { what: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Image(Box<coracle_image::ImageError>),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl CriError {
    pub fn unimplemented(rpc: &'static str) -> Self {
        Self::Unimplemented { rpc }
    }

    fn code(&self) -> Code {
        match self {
            Self::Unimplemented { .. } | Self::Unsupported { .. } => Code::Unimplemented,
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::Store(store) => store_code(store),
            Self::Runtime(runtime) => runtime_code(runtime),
            Self::Image(image) => image_code(image),
            Self::Task(_) => Code::Internal,
        }
    }
}

fn store_code(err: &StoreError) -> Code {
    match err {
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::AlreadyExists { .. } => Code::AlreadyExists,
        StoreError::InvalidId { .. } => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

fn image_code(err: &coracle_image::ImageError) -> Code {
    use coracle_image::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::DataLoss => Code::DataLoss,
        _ => Code::Internal,
    }
}

fn runtime_code(err: &RuntimeError) -> Code {
    match err {
        RuntimeError::InvalidArgument { .. } => Code::InvalidArgument,
        RuntimeError::NameReserved { .. } | RuntimeError::ContainerNameReserved { .. } => {
            Code::AlreadyExists
        }
        RuntimeError::NotFound { .. } | RuntimeError::ImageNotFound(_) => Code::NotFound,
        RuntimeError::FailedPrecondition(_) => Code::FailedPrecondition,
        RuntimeError::PodCidr { source, .. } if source.is_precondition() => {
            Code::FailedPrecondition
        }
        RuntimeError::ExecTimeout { .. } => Code::DeadlineExceeded,
        RuntimeError::Spec { source, .. } if source.is_invalid_argument() => Code::InvalidArgument,
        RuntimeError::Unsupported(_) => Code::Unimplemented,
        RuntimeError::Store(store) => store_code(store),
        _ => Code::Internal,
    }
}

impl From<CriError> for Status {
    fn from(err: CriError) -> Self {
        Status::new(err.code(), cause_chain(&err))
    }
}

/// `outer: inner: innermost`, skipping a source whose text the outer message already
/// holds (thiserror's `transparent` and `{source}` both repeat it).
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_names_the_rpc() {
        let status = Status::from(CriError::unimplemented("RunPodSandbox"));
        assert_eq!(status.code(), Code::Unimplemented);
        assert!(status.message().contains("RunPodSandbox"));
    }

    #[test]
    fn store_errors_map_to_their_codes() {
        let not_found = CriError::from(StoreError::NotFound {
            kind: "pod",
            id: "abc".into(),
        });
        assert_eq!(Status::from(not_found).code(), Code::NotFound);
        let invalid = CriError::from(StoreError::InvalidId {
            kind: "pod",
            id: "../x".into(),
            reason: "bad",
        });
        assert_eq!(Status::from(invalid).code(), Code::InvalidArgument);
    }

    #[test]
    fn cause_chain_joins_sources_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(cause_chain(&err), "outer: disk on fire");
    }
}
