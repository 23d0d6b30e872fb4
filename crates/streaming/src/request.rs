//! The requests behind a streaming URL, validated as kubelet's streaming server does
//! before it hands out a token.

use crate::error::StreamingError;

/// A CRI `ExecRequest` as the streaming server needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A CRI `AttachRequest` as the streaming server needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A CRI `PortForwardRequest`. `port` may be empty: SPDY clients name the port per
/// stream. WebSocket clients use the `port` query parameter or, without one, these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub port: Vec<i32>,
}

/// Which stdio streams a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StdioOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecRequest {
    pub(crate) fn validate(&self) -> Result<(), StreamingError> {
        require_container_id(&self.container_id)?;
        if self.cmd.is_empty() {
            return Err(StreamingError::InvalidArgument(
                "cmd must not be empty".into(),
            ));
        }
        validate_stdio(self.stdio())
    }

    pub(crate) fn stdio(&self) -> StdioOptions {
        StdioOptions {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
        }
    }
}

impl AttachRequest {
    pub(crate) fn validate(&self) -> Result<(), StreamingError> {
        require_container_id(&self.container_id)?;
        validate_stdio(self.stdio())
    }

    pub(crate) fn stdio(&self) -> StdioOptions {
        StdioOptions {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            tty: self.tty,
        }
    }
}

impl PortForwardRequest {
    pub(crate) fn validate(&self) -> Result<Vec<u16>, StreamingError> {
        if self.pod_sandbox_id.is_empty() {
            return Err(StreamingError::InvalidArgument(
                "missing required pod_sandbox_id".into(),
            ));
        }
        self.port.iter().map(|&port| valid_port(port)).collect()
    }
}

fn require_container_id(container_id: &str) -> Result<(), StreamingError> {
    if container_id.is_empty() {
        return Err(StreamingError::InvalidArgument(
            "missing required container_id".into(),
        ));
    }
    Ok(())
}

fn validate_stdio(stdio: StdioOptions) -> Result<(), StreamingError> {
    if stdio.tty && stdio.stderr {
        // A pty has one output: stdout and stderr cannot be told apart.
        return Err(StreamingError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !stdio.stdin && !stdio.stdout && !stdio.stderr {
        return Err(StreamingError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(())
}

fn valid_port(port: i32) -> Result<u16, StreamingError> {
    u16::try_from(port)
        .ok()
        .filter(|&port| port > 0)
        .ok_or_else(|| {
            StreamingError::InvalidArgument(format!("invalid port {port}: must be 1 to 65535"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> ExecRequest {
        ExecRequest {
            container_id: "c1".into(),
            cmd: vec!["true".into()],
            tty,
            stdin,
            stdout,
            stderr,
        }
    }

    #[test]
    fn tty_with_stderr_is_rejected() {
        assert!(exec(true, false, true, true).validate().is_err());
        assert!(exec(true, true, true, false).validate().is_ok());
    }

    #[test]
    fn no_stream_at_all_is_rejected() {
        assert!(exec(false, false, false, false).validate().is_err());
    }

    #[test]
    fn empty_container_id_and_cmd_are_rejected() {
        let mut request = exec(false, false, true, false);
        request.cmd.clear();
        assert!(request.validate().is_err());
        request.cmd = vec!["ls".into()];
        request.container_id.clear();
        assert!(request.validate().is_err());
    }

    #[test]
    fn port_forward_ports_must_fit_u16_and_be_positive() {
        let request = |port: Vec<i32>| PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port,
        };
        assert_eq!(
            request(vec![80, 65535]).validate().ok(),
            Some(vec![80, 65535])
        );
        assert!(request(vec![0]).validate().is_err());
        assert!(request(vec![65536]).validate().is_err());
        assert!(request(vec![-1]).validate().is_err());
        assert_eq!(request(vec![]).validate().ok(), Some(vec![]));
    }
}
