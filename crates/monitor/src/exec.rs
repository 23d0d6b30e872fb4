//! `coracle-monitor exec` (ExecSync): run one process in a running container with the
//! helper's stdout and stderr and /dev/null as stdin, wait for it with a deadline, exit
//! with its code. An interactive exec (CRI `Exec`) goes on in `exec_session`.
//!
//! The process leads a process group of its own (`ExecOptions::new_process_group`,
//! set in the child before execve), so at the deadline the whole group is killed.
//! The helper waits for the process only, never for its stdout to close: a child it
//! left in the background may hold that open for as long as it likes.
//!
//! The helper is made non-dumpable first. It never enters the container itself (the
//! executor's intermediate process does, and makes itself non-dumpable before joining
//! any namespace); this is defense in depth for a helper visible from a container
//! sharing the host's PID namespace.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use coracle_monitor::protocol::ExecConfig;
use coracle_oci::{Container, ExecOptions, Stdio};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::chain;
use crate::sys;

/// The helper's exit code when the process could not be started.
pub const START_FAILED: i32 = 255;
/// The helper's exit code at the deadline (128 + SIGKILL).
pub const TIMED_OUT: i32 = 137;

pub fn main() -> i32 {
    let outcome = read_config().and_then(|cfg| match cfg.interactive {
        Some(mode) => crate::exec_session::start(cfg, mode).map(Outcome::Session),
        None => start(cfg).map(|(pid, timeout)| Outcome::Sync(pid, timeout)),
    });
    match outcome {
        Ok(Outcome::Sync(pid, timeout)) => wait(pid, timeout),
        Ok(Outcome::Session(session)) => session.run(),
        Err(message) => start_failed(&message),
    }
}

enum Outcome {
    Sync(i32, Option<Duration>),
    Session(crate::exec_session::Session),
}

/// Say why the process could not be started; the helper's exit code for that.
pub fn start_failed(message: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "coracle-monitor: exec: {message}");
    START_FAILED
}

fn read_config() -> Result<ExecConfig, String> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("PR_SET_DUMPABLE: {e}"))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read config from stdin: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parse config from stdin: {e}"))
}

/// The process to run and the container to run it in.
pub fn load(cfg: &ExecConfig) -> Result<(oci_spec::runtime::Process, Container), String> {
    let process: oci_spec::runtime::Process =
        serde_json::from_value(cfg.process.clone()).map_err(|e| format!("parse process: {e}"))?;
    let container =
        Container::load(&cfg.oci_state_root, &cfg.container_id).map_err(|e| chain(&e))?;
    Ok((process, container))
}

fn start(cfg: ExecConfig) -> Result<(i32, Option<Duration>), String> {
    let (process, container) = load(&cfg)?;
    let stdio = stdio().map_err(|e| format!("stdio: {e}"))?;
    let opts = ExecOptions {
        stdio,
        new_process_group: true,
        ..ExecOptions::default()
    };
    let proc = container.exec(process, opts).map_err(|e| chain(&e))?;
    // CRI's ExecSync: a timeout of 0 means none.
    let timeout = cfg
        .timeout_ms
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    Ok((proc.pid, timeout))
}

/// /dev/null, and copies of our own stdout and stderr.
fn stdio() -> std::io::Result<Stdio> {
    let null: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let out = std::io::stdout().as_fd().try_clone_to_owned()?;
    let err = std::io::stderr().as_fd().try_clone_to_owned()?;
    Ok(Stdio::Fds([null, out, err]))
}

fn wait(pid: i32, timeout: Option<Duration>) -> i32 {
    let exited = match timeout {
        None => true,
        Some(t) => exits_within(pid, t),
    };
    if !exited {
        // The group first, so nothing it spawned survives the process.
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = reap(pid);
        let ms = timeout.map_or(0, |t| t.as_millis());
        let _ = writeln!(
            std::io::stderr(),
            "coracle-monitor: exec timed out after {ms}ms"
        );
        return TIMED_OUT;
    }
    reap(pid).unwrap_or(START_FAILED)
}

/// Whether process `pid` (our child, not reaped yet) exits within `timeout`.
fn exits_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pidfd = sys::pidfd_open(pid).ok();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match &pidfd {
            Some(fd) => {
                let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                ) {
                    Ok(n) if n > 0 => return true,
                    Ok(_) => return false,
                    Err(Errno::EINTR) => continue,
                    Err(_) => pidfd = None,
                }
            }
            None => {
                // No pidfd (kernel < 5.3): peek without reaping, in short sleeps.
                let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT | WaitPidFlag::WEXITED;
                let id = nix::sys::wait::Id::Pid(Pid::from_raw(pid));
                if matches!(nix::sys::wait::waitid(id, flags), Ok(s) if s != WaitStatus::StillAlive)
                {
                    return true;
                }
                if left.is_zero() {
                    return false;
                }
                std::thread::sleep(left.min(Duration::from_millis(10)));
            }
        }
    }
}

/// Reap `pid`: its exit code, 128 + signal when killed.
fn reap(pid: i32) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}
