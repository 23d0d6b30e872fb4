//! What the daemon and the monitor say to each other. JSON, so a record written by
//! one version is read by the next (new fields carry `#[serde(default)]`).
//!
//! `coracle-monitor run`: the daemon writes one [`MonitorConfig`] as JSON on the
//! monitor's stdin and closes it; the monitor answers one [`Handshake`] as a JSON line
//! on its stdout, then the process the daemon spawned exits (the real monitor is its
//! child, in a session of its own, reparented away from the daemon).
//!
//! Files in [`MonitorConfig::dir`] (created 0700 if missing; the monitor's cwd):
//! [`EXIT_FILE`] ([`ExitRecord`], written atomically before the monitor exits; a monitor
//! that exits without one died abnormally), [`CONTROL_SOCKET`] (a unix stream socket,
//! removed when the monitor exits; a client writes one [`ControlRequest`] JSON line and
//! reads one [`ControlResponse`] line), [`ATTACH_SOCKET`] (see Attach below; removed
//! when the monitor exits), [`MONITOR_LOG`] (the monitor's own errors), and
//! briefly `console.sock` for a tty container. The monitor binds its sockets by
//! relative name, so a long dir does not hit sun_path's 108 bytes; a client with a long
//! path can connect through `/proc/self/fd/<fd of the dir>/control.sock`.
//!
//! Relative paths in a [`MonitorConfig`] are resolved against the spawned process's
//! working directory. Output goes to [`MonitorConfig::log_path`] in the CRI format
//! kubelet reads, a line longer than 16 KiB cut into `P` records.
//!
//! `coracle-monitor exec`: the daemon passes one [`ExecConfig`] as JSON on stdin; the
//! exec'd process gets /dev/null as stdin and the helper's stdout and stderr; the
//! helper exits with the process's exit code (128 + signal when killed), 137 with
//! `coracle-monitor: exec timed out after <N>ms` on stderr at the deadline, or 255 with
//! a message on stderr when it could not start it. It waits for the process, not for
//! its stdout to close: a reader should stop at the helper's exit.
//!
//! Interactive exec ([`ExecConfig::interactive`] set; CRI `Exec`): the helper's stdout
//! must be a `SOCK_SEQPACKET` socket, over which the helper speaks the attach frames
//! below for the one process: it forwards the process's output, takes stdin, stdin
//! EOF and resize frames, and ends with an [`Frame::Exit`] frame after the last output,
//! then exits with the same code. There is no deadline. If the socket's peer goes away
//! first, nobody can learn the outcome any more: the process group is killed.
//!
//! Attach ([`ATTACH_SOCKET`], `SOCK_SEQPACKET`, served by `run`): every message is one
//! [`Frame`], a kind byte then the payload, at most [`MAX_FRAME`] bytes. The monitor
//! sends each client the container's output from the moment it connected
//! ([`Frame::Stdout`], [`Frame::Stderr`]; a tty's output is all stdout), and one
//! [`Frame::Exit`] when the container has exited and its output is drained, then closes
//! the connection. A client that falls [`ATTACH_BACKLOG`] bytes behind is disconnected:
//! neither the container nor the log ever waits for a client. Client stdin frames are
//! written to the container's stdin (when the container has one), in order, while a
//! client with a full stdin is not read further. A client that sent any stdin frame
//! (an empty one announces it) has a stdin; its [`Frame::StdinEof`], or its disconnect,
//! ends that stdin, and with `stdin_once` (without a tty) the first such end closes the
//! container's stdin for good, as CRI asks. [`Frame::Resize`] sets the window size of a
//! tty container's pty.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the exit record in the container's monitor dir.
pub const EXIT_FILE: &str = "exit.json";
/// Name of the monitor's control socket in the container's monitor dir.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Name of the monitor's own error log in the container's monitor dir.
pub const MONITOR_LOG: &str = "monitor.log";
/// Name of the monitor's attach socket (`SOCK_SEQPACKET`) in the container's monitor dir.
pub const ATTACH_SOCKET: &str = "attach.sock";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub container_id: String,
    /// Holds `config.json`; the spec's root.path is the mounted rootfs.
    pub bundle: PathBuf,
    /// The `coracle-oci` state root (`Container::create`'s `state_root`).
    pub oci_state_root: PathBuf,
    /// The monitor's own dir: exit file and control socket.
    pub dir: PathBuf,
    /// The CRI log file; `None`: output is read and dropped.
    pub log_path: Option<PathBuf>,
    /// The container's process has a terminal (a pty, through a console socket).
    pub tty: bool,
    /// Keep a stdin for the container (for attach); without it, stdin is /dev/null.
    pub stdin: bool,
    /// Close the container's stdin after the first attach ends.
    pub stdin_once: bool,
}

/// The monitor's one-line answer to `run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Handshake {
    /// The container is created (its init waits for `start`).
    Created {
        monitor_pid: i32,
        /// Field 22 of /proc/<monitor_pid>/stat.
        monitor_start_time: u64,
        container_pid: i32,
    },
    Failed {
        message: String,
    },
}

/// How the container's init ended, as the monitor saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit status, or 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// Nanoseconds since the Unix epoch.
    pub finished_at: i64,
    /// The kernel's OOM killer killed a process of the container's cgroup.
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum ControlRequest {
    /// Close and reopen the log file at its path (after kubelet rotated it).
    ReopenLog,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum ControlResponse {
    Ok,
    Error { message: String },
}

/// What `coracle-monitor exec` runs (ExecSync).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecConfig {
    pub container_id: String,
    pub oci_state_root: PathBuf,
    /// The OCI `process` to run: the container's own with args replaced.
    pub process: serde_json::Value,
    /// At the deadline the process and its process group are killed with SIGKILL
    /// and the helper exits with 137. `None` or 0 (CRI's "no timeout"): no deadline.
    /// Interactive execs have none.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// An interactive exec (CRI `Exec`): the helper's stdout is a `SOCK_SEQPACKET`
    /// socket carrying attach frames. `None`: ExecSync.
    #[serde(default)]
    pub interactive: Option<InteractiveExec>,
}

/// How an interactive exec's process is wired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractiveExec {
    /// The process gets a stdin fed by stdin frames (else /dev/null).
    pub stdin: bool,
    /// The process gets a pty (its output is all stdout; resize frames apply).
    pub tty: bool,
}

/// Longest message on an attach connection: the kind byte and the payload.
pub const MAX_FRAME: usize = 1 + MAX_FRAME_PAYLOAD;
/// Longest payload of one frame.
pub const MAX_FRAME_PAYLOAD: usize = 16 * 1024;
/// Output bytes an attach client may fall behind before the monitor drops it.
pub const ATTACH_BACKLOG: usize = 1 << 20;

/// One message on an attach connection (or an interactive exec's socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Client to monitor: bytes for the container's stdin (empty: "I have a stdin").
    Stdin(&'a [u8]),
    /// Monitor to client: output.
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    /// Client to monitor: the client's stdin ended.
    StdinEof,
    /// Client to monitor: the terminal's new size, in character cells.
    Resize {
        width: u16,
        height: u16,
    },
    /// Monitor to client: the process exited with this code (128 + signal when
    /// killed); no output follows.
    Exit(i32),
}

/// The kind byte of each frame.
pub mod frame_kind {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const STDIN_EOF: u8 = 3;
    pub const RESIZE: u8 = 4;
    pub const EXIT: u8 = 5;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of kind {kind} has a {len}-byte payload")]
    BadLength { kind: u8, len: usize },
}

impl<'a> Frame<'a> {
    /// Parse one received message.
    pub fn parse(message: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        use frame_kind::*;
        let (&kind, payload) = message.split_first().ok_or(FrameError::Empty)?;
        let bad_length = || FrameError::BadLength {
            kind,
            len: payload.len(),
        };
        Ok(match kind {
            STDIN => Frame::Stdin(payload),
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            STDIN_EOF if payload.is_empty() => Frame::StdinEof,
            RESIZE => {
                let b: [u8; 4] = payload.try_into().map_err(|_| bad_length())?;
                Frame::Resize {
                    width: u16::from_be_bytes([b[0], b[1]]),
                    height: u16::from_be_bytes([b[2], b[3]]),
                }
            }
            EXIT => {
                let b: [u8; 4] = payload.try_into().map_err(|_| bad_length())?;
                Frame::Exit(i32::from_be_bytes(b))
            }
            STDIN_EOF => return Err(bad_length()),
            other => return Err(FrameError::UnknownKind(other)),
        })
    }

    /// The message for this frame (data frames copy their payload: a sender that
    /// has its data in a buffer already can put the kind byte before it instead).
    pub fn encode(&self) -> Vec<u8> {
        use frame_kind::*;
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match *self {
            Frame::Stdin(d) => (STDIN, d.into()),
            Frame::Stdout(d) => (STDOUT, d.into()),
            Frame::Stderr(d) => (STDERR, d.into()),
            Frame::StdinEof => (STDIN_EOF, (&[][..]).into()),
            Frame::Resize { width, height } => {
                let mut b = width.to_be_bytes().to_vec();
                b.extend_from_slice(&height.to_be_bytes());
                (RESIZE, b.into())
            }
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
        };
        let mut message = Vec::with_capacity(1 + payload.len());
        message.push(kind);
        message.extend_from_slice(&payload);
        message
    }
}

/// What `coracle-monitor pod-init` needs: the pod's pinned namespaces to join before
/// it unshares the PID namespace. Its handshake is a [`Handshake`] whose pids are the
/// init's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInitConfig {
    pub namespaces: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_a_round_trip() {
        let frames = [
            Frame::Stdin(b"abc"),
            Frame::Stdin(b""),
            Frame::Stdout(b"out"),
            Frame::Stderr(b"err"),
            Frame::StdinEof,
            Frame::Resize {
                width: 80,
                height: 24,
            },
            Frame::Exit(-1),
            Frame::Exit(137),
        ];
        for f in frames {
            let message = f.encode();
            assert_eq!(Frame::parse(&message), Ok(f));
        }
        assert_eq!(
            Frame::Resize {
                width: 0x0102,
                height: 0x0304
            }
            .encode(),
            [4, 1, 2, 3, 4]
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        assert_eq!(Frame::parse(b""), Err(FrameError::Empty));
        assert_eq!(Frame::parse(&[9]), Err(FrameError::UnknownKind(9)));
        assert!(matches!(
            Frame::parse(&[frame_kind::RESIZE, 0, 80]),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            Frame::parse(&[frame_kind::EXIT, 0, 0, 0, 0, 0]),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            Frame::parse(&[frame_kind::STDIN_EOF, 1]),
            Err(FrameError::BadLength { .. })
        ));
    }
}
