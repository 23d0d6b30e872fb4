//! The Kubernetes `metav1.Status` that v4 and v5 write on the error stream, and the
//! plain text v1–v3 write instead (kubelet's `remotecommand/httpstream.go`,
//! `exec.go`, `attach.go`). Field order and omissions follow Go's `encoding/json`
//! of `metav1.Status`, so the bytes match kubelet's.

use serde::{Deserialize, Serialize};

pub const STATUS_SUCCESS: &str = "Success";
pub const STATUS_FAILURE: &str = "Failure";
/// `remotecommand.NonZeroExitCodeReason`.
pub const REASON_NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
/// `remotecommand.ExitCodeCauseType`.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";
pub const REASON_INTERNAL_ERROR: &str = "InternalError";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// `metav1.ListMeta`: Go always writes it, as `{}`.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(rename = "retryAfterSeconds", default, skip_serializing_if = "is_zero")]
    pub retry_after_seconds: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// Go's `StatusCause.Type`, serialized as `reason`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

impl Status {
    pub fn success() -> Self {
        Self {
            status: STATUS_SUCCESS.into(),
            ..Self::default()
        }
    }

    /// A command that ran and exited with `exit_code` != 0. The message is what
    /// kubelet writes for containerd's `CodeExitError`, with the command printed the
    /// way Go prints a `[]string`.
    pub fn non_zero_exit(cmd: &[String], exit_code: i32) -> Self {
        Self {
            status: STATUS_FAILURE.into(),
            message: format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {exit_code}",
                cmd.join(" ")
            ),
            reason: REASON_NON_ZERO_EXIT_CODE.into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: CAUSE_EXIT_CODE.into(),
                    message: exit_code.to_string(),
                    ..StatusCause::default()
                }],
                ..StatusDetails::default()
            }),
            ..Self::default()
        }
    }

    /// `apierrors.NewInternalError(err)`.
    pub fn internal_error(error: &str) -> Self {
        Self {
            status: STATUS_FAILURE.into(),
            message: format!("Internal error occurred: {error}"),
            reason: REASON_INTERNAL_ERROR.into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    message: error.into(),
                    ..StatusCause::default()
                }],
                ..StatusDetails::default()
            }),
            code: 500,
            ..Self::default()
        }
    }

    pub fn is_success(&self) -> bool {
        self.status == STATUS_SUCCESS
    }

    /// The command's exit code as client-go's v4 decoder reads it: 0 on success,
    /// the `ExitCode` cause of a `NonZeroExitCode` failure, `None` for other errors.
    pub fn exit_code(&self) -> Option<i32> {
        if self.is_success() {
            return Some(0);
        }
        if self.reason != REASON_NON_ZERO_EXIT_CODE {
            return None;
        }
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|cause| cause.reason == CAUSE_EXIT_CODE)?
            .message
            .parse()
            .ok()
    }

    /// The bytes for the error stream: JSON for v4/v5; for v1–v3 the message of a
    /// failure and nothing at all on success.
    pub(crate) fn to_error_stream(&self, json: bool) -> Vec<u8> {
        if json {
            // Serializing plain strings, integers and maps cannot fail.
            serde_json::to_vec(self).unwrap_or_default()
        } else if self.is_success() {
            Vec::new()
        } else {
            self.message.clone().into_bytes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_matches_kubelet_bytes() {
        assert_eq!(
            String::from_utf8(Status::success().to_error_stream(true)).expect("utf-8"),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert!(Status::success().to_error_stream(false).is_empty());
    }

    #[test]
    fn non_zero_exit_matches_kubelet_bytes() {
        let cmd = ["sh".to_string(), "-c".into(), "exit 7".into()];
        let status = Status::non_zero_exit(&cmd, 7);
        assert_eq!(
            String::from_utf8(status.to_error_stream(true)).expect("utf-8"),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#
        );
        assert_eq!(
            String::from_utf8(status.to_error_stream(false)).expect("utf-8"),
            "command terminated with non-zero exit code: error executing command [sh -c exit 7], exit code 7"
        );
        assert_eq!(status.exit_code(), Some(7));
    }

    #[test]
    fn internal_error_matches_new_internal_error() {
        let status = Status::internal_error("error executing command in container: boom");
        assert_eq!(
            String::from_utf8(status.to_error_stream(true)).expect("utf-8"),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: boom","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: boom"}]},"code":500}"#
        );
        assert_eq!(status.exit_code(), None);
    }

    #[test]
    fn parses_what_go_writes() {
        let status: Status = serde_json::from_str(
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42"}]}}"#,
        )
        .expect("parse");
        assert_eq!(status.exit_code(), Some(42));
    }
}
