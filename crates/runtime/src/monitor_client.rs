//! The daemon's side of the monitor protocol (`coracle_monitor::protocol`): spawn a
//! monitor and read its handshake, watch it through a pidfd, read its exit record,
//! talk to its control socket, and run the ExecSync helper.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use coracle_monitor::protocol::{
    CONTROL_SOCKET, ControlRequest, ControlResponse, EXIT_FILE, ExecConfig, ExitRecord, Handshake,
    MonitorConfig,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::model::ProcessIdentity;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("spawn monitor {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("talk to the monitor: {0}")]
    Io(#[from] io::Error),
    #[error("monitor handshake {line:?}: {source}")]
    Handshake {
        line: String,
        source: serde_json::Error,
    },
    #[error("monitor gave no handshake within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("create container: {0}")]
    CreateFailed(String),
    #[error("monitor control socket {path}: {source}")]
    Control { path: PathBuf, source: io::Error },
    #[error("monitor attach socket {path}: {source}")]
    Attach { path: PathBuf, source: io::Error },
    #[error("monitor refused {request}: {message}")]
    Refused { request: String, message: String },
    #[error("exit record {path}: {source}")]
    ExitRecord {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What a monitor told us when the container was created.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MonitorStarted {
    pub monitor: ProcessIdentity,
    pub container_pid: i32,
}

/// The longest a create may take: the executor's own per-step timeout bounds it;
/// this only guards against a monitor that never answers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(150);

/// Spawns `coracle-monitor run` and waits for its handshake. The spawned process
/// exits right after the handshake; the monitor lives on, detached.
pub(crate) async fn spawn_monitor(
    binary: &Path,
    config: &MonitorConfig,
) -> Result<MonitorStarted, MonitorError> {
    spawn_detached(binary, "run", config).await
}

/// Spawns `coracle-monitor pod-init`: the init of a pod's shared PID namespace.
pub(crate) async fn spawn_pod_init(
    binary: &Path,
    config: &coracle_monitor::protocol::PodInitConfig,
) -> Result<ProcessIdentity, MonitorError> {
    Ok(spawn_detached(binary, "pod-init", config).await?.monitor)
}

/// Runs a subcommand that answers one handshake line and leaves a detached process.
async fn spawn_detached<C: serde::Serialize>(
    binary: &Path,
    subcommand: &str,
    config: &C,
) -> Result<MonitorStarted, MonitorError> {
    let mut child = tokio::process::Command::new(binary)
        .arg(subcommand)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| MonitorError::Spawn {
            path: binary.to_owned(),
            source,
        })?;
    let request = serde_json::to_vec(config).map_err(io::Error::other)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&request).await?;
        // Dropping stdin closes it: the monitor reads to EOF.
    }
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        // One line, not to EOF: the detached monitor may still hold the pipe.
        let mut reader = BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
            .await
            .map_err(|_| MonitorError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;
    }
    // The relay exits right after the handshake; reap it.
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let handshake: Handshake =
        serde_json::from_str(line.trim()).map_err(|source| MonitorError::Handshake {
            line: line.clone(),
            source,
        })?;
    match handshake {
        Handshake::Created {
            monitor_pid,
            monitor_start_time,
            container_pid,
        } => Ok(MonitorStarted {
            monitor: ProcessIdentity {
                pid: monitor_pid,
                start_time: monitor_start_time,
            },
            container_pid,
        }),
        Handshake::Failed { message } => Err(MonitorError::CreateFailed(message)),
    }
}

/// A pidfd on the monitor if it is still the process we recorded; `None` when it
/// is gone (or its pid now belongs to another process).
pub(crate) fn open_monitor_pidfd(monitor: ProcessIdentity) -> io::Result<Option<OwnedFd>> {
    let fd = match pidfd_open(monitor.pid) {
        Ok(fd) => fd,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(err) => return Err(err),
    };
    // Checked after opening: if the start time matches now, the pidfd refers to
    // our monitor and cannot be recycled.
    Ok(coracle_oci::state::process_alive(monitor.pid, monitor.start_time).then_some(fd))
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
    // memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(ret).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Resolves when the process behind `pidfd` has exited (the pidfd polls readable).
pub(crate) async fn wait_for_exit(pidfd: OwnedFd) -> io::Result<()> {
    // SAFETY: `pidfd` is an OwnedFd moved into the AsyncFd: it stays open and is
    // the same fd for the AsyncFd's whole life.
    let fd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| io::Error::other(err.to_string()))?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// The exit record the monitor wrote, if it wrote one.
pub(crate) fn read_exit_record(monitor_dir: &Path) -> Result<Option<ExitRecord>, MonitorError> {
    let path = monitor_dir.join(EXIT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| MonitorError::ExitRecord { path, source })
}

/// Sends one control request and returns when the monitor has carried it out.
pub(crate) async fn control(
    monitor_dir: &Path,
    request: &ControlRequest,
) -> Result<(), MonitorError> {
    let path = monitor_dir.join(CONTROL_SOCKET);
    let control_err = |source| MonitorError::Control {
        path: path.clone(),
        source,
    };
    // A socket path may be at most 107 bytes; the monitor dir's may be longer (a
    // 64-digit id under a deep state dir): connect through a dir fd instead.
    let dir = std::fs::File::open(monitor_dir).map_err(control_err)?;
    let short = PathBuf::from(format!(
        "/proc/self/fd/{}/{CONTROL_SOCKET}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    let mut stream = tokio::net::UnixStream::connect(&short)
        .await
        .map_err(control_err)?;
    drop(dir);
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await.map_err(control_err)?;
    let mut answer = String::new();
    let mut reader = BufReader::new(&mut stream);
    let read = reader.read_line(&mut answer);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| control_err(io::ErrorKind::TimedOut.into()))?
        .map_err(control_err)?;
    match serde_json::from_str::<ControlResponse>(answer.trim()) {
        Ok(ControlResponse::Ok) => Ok(()),
        Ok(ControlResponse::Error { message }) => Err(MonitorError::Refused {
            request: format!("{request:?}"),
            message,
        }),
        Err(source) => Err(MonitorError::Handshake {
            line: answer,
            source,
        }),
    }
}

/// The result of an ExecSync.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

/// At most this much of each of stdout and stderr is kept; the rest is read and dropped.
pub const EXEC_OUTPUT_CAP: usize = 16 << 20;

/// After the process exits, output still buffered in the pipes is read for this
/// long at most: a background child holding stdout open must not hang the call.
const EXEC_DRAIN: Duration = Duration::from_millis(100);

/// Exit code of the exec helper when it could not start the process.
pub(crate) const EXEC_HELPER_FAILED: i32 = 255;

/// Runs `coracle-monitor exec` and collects its output.
pub(crate) async fn exec_sync(
    binary: &Path,
    config: &ExecConfig,
) -> Result<ExecOutput, MonitorError> {
    let mut child = tokio::process::Command::new(binary)
        .arg("exec")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| MonitorError::Spawn {
            path: binary.to_owned(),
            source,
        })?;
    let request = serde_json::to_vec(config).map_err(io::Error::other)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&request).await?;
    }
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (out_tx, out_rx) = tokio::sync::oneshot::channel();
    let (err_tx, err_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(collect(stdout, stop_rx.clone(), out_tx));
    tokio::spawn(collect(stderr, stop_rx, err_tx));
    // The helper enforces the timeout itself; this is a backstop for a stuck helper.
    let backstop = config
        .timeout_ms
        .map(|ms| Duration::from_millis(ms) + Duration::from_secs(10));
    let status = match backstop {
        Some(limit) => match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                child.kill().await?;
                child.wait().await?
            }
        },
        None => child.wait().await?,
    };
    let (stdout, mut stderr) = drain_output(out_rx, err_rx, stop_tx).await;
    let exit_code = exit_code_of(status);
    let timed_out = config.timeout_ms.is_some() && exit_code == 137 && ends_with_timeout(&stderr);
    if timed_out {
        strip_timeout_notice(&mut stderr);
    }
    if exit_code == EXEC_HELPER_FAILED && stdout.is_empty() {
        if let Some(message) = helper_failure(&stderr) {
            return Err(MonitorError::CreateFailed(message));
        }
    }
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code,
        timed_out,
    })
}

/// The helper's own message on why it could not start the process, if `stderr` is one.
pub(crate) fn helper_failure(stderr: &[u8]) -> Option<String> {
    let message = String::from_utf8_lossy(stderr).trim().to_owned();
    message.starts_with("coracle-monitor").then_some(message)
}

const TIMEOUT_NOTICE: &str = "coracle-monitor: exec timed out";

fn ends_with_timeout(stderr: &[u8]) -> bool {
    last_line(stderr).starts_with(TIMEOUT_NOTICE.as_bytes())
}

fn strip_timeout_notice(stderr: &mut Vec<u8>) {
    let keep = stderr.len() - last_line(stderr).len();
    stderr.truncate(keep);
}

/// The last line of `bytes` with its final newline, if any.
fn last_line(bytes: &[u8]) -> &[u8] {
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    match trimmed.iter().rposition(|b| *b == b'\n') {
        Some(pos) => &bytes[pos + 1..],
        None => bytes,
    }
}

pub(crate) fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXEC_HELPER_FAILED,
    }
}

/// Reads a pipe until EOF or until told to stop, keeping at most EXEC_OUTPUT_CAP bytes.
/// The collected stdout and stderr: once both pipes reach EOF, or after
/// [`EXEC_DRAIN`] when a background child still holds one open.
async fn drain_output(
    stdout: tokio::sync::oneshot::Receiver<Vec<u8>>,
    stderr: tokio::sync::oneshot::Receiver<Vec<u8>>,
    stop: tokio::sync::watch::Sender<bool>,
) -> (Vec<u8>, Vec<u8>) {
    let mut both = std::pin::pin!(async {
        (
            stdout.await.unwrap_or_default(),
            stderr.await.unwrap_or_default(),
        )
    });
    if let Ok(output) = tokio::time::timeout(EXEC_DRAIN, &mut both).await {
        return output;
    }
    let _ = stop.send(true);
    both.await
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<R>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::oneshot::Sender<Vec<u8>>,
) {
    let mut kept = Vec::new();
    if let Some(mut reader) = reader {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = EXEC_OUTPUT_CAP.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                },
                _ = stop.changed() => break,
            }
        }
    }
    let _ = done.send(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_finds_the_notice_after_output() {
        let stderr = b"some error\ncoracle-monitor: exec timed out after 300ms\n";
        assert!(ends_with_timeout(stderr));
        let mut owned = stderr.to_vec();
        strip_timeout_notice(&mut owned);
        assert_eq!(owned, b"some error\n");
    }

    #[test]
    fn output_of_the_process_is_not_taken_for_the_notice() {
        assert!(!ends_with_timeout(b"hello\n"));
        assert!(!ends_with_timeout(b""));
    }
}
