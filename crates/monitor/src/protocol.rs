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
//! reads one [`ControlResponse`] line), [`MONITOR_LOG`] (the monitor's own errors), and
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

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Name of the exit record in the container's monitor dir.
pub const EXIT_FILE: &str = "exit.json";
/// Name of the monitor's control socket in the container's monitor dir.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Name of the monitor's own error log in the container's monitor dir.
pub const MONITOR_LOG: &str = "monitor.log";

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
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// What `coracle-monitor pod-init` needs: the pod's pinned namespaces to join before
/// it unshares the PID namespace. Its handshake is a [`Handshake`] whose pids are the
/// init's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInitConfig {
    pub namespaces: Vec<PathBuf>,
}
