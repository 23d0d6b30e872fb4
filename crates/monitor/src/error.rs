//! The monitor's errors, and the one-line form the daemon gets in a handshake.

use std::error::Error;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
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
    #[error("console: {0}")]
    Console(String),
    #[error("create container {id}: {source}")]
    Create {
        id: String,
        source: coracle_oci::ContainerError,
    },
}

pub fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> MonitorError + 'a {
    move |source| MonitorError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub fn sys_err(op: &'static str) -> impl FnOnce(nix::Error) -> MonitorError {
    move |source| MonitorError::Sys { op, source }
}

/// The error and its causes on one line, like anyhow's `{:#}`: each cause is added
/// unless the message so far already says it (many variants print their source).
pub fn chain(err: &dyn Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("outer")]
        Silent(#[source] Inner),
        #[error("outer: {0}")]
        Loud(#[source] Inner),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn chain_adds_only_what_is_not_said_yet() {
        let io = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let silent = chain(&Outer::Silent(Inner(io())));
        assert!(
            silent.starts_with("outer: inner: No such file or directory"),
            "{silent}"
        );
        let loud = chain(&Outer::Loud(Inner(io())));
        assert!(
            loud.starts_with("outer: inner: No such file or directory"),
            "{loud}"
        );
        assert_eq!(loud.matches("inner").count(), 1);
    }
}
