//! `coracle-monitor run`, the process the daemon spawns: read the config, fork the
//! real monitor (see `supervisor`), relay its handshake line and exit, so the daemon
//! reaps a short-lived child and the monitor is reparented away from it (a double
//! fork, as conmon does).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use coracle_monitor::protocol::{Handshake, MonitorConfig};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::supervisor;

/// Longest handshake line relayed.
const MAX_HANDSHAKE: u64 = 64 * 1024;

pub fn main() -> i32 {
    let cfg = match read_config().and_then(absolute_paths) {
        Ok(c) => c,
        Err(message) => return answer(&Handshake::Failed { message }),
    };
    fork_and_relay("the monitor", |handshake| supervisor::main(cfg, handshake))
}

/// Forks a child that runs `work` with the write end of a socket on which it sends
/// its handshake line; this process relays that line as its own answer and exits
/// with it, so the daemon reaps a short-lived child and the child lives on.
pub fn fork_and_relay(what: &str, work: impl FnOnce(OwnedFd) -> i32) -> i32 {
    let (ours, theirs) = match socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(pair) => pair,
        Err(e) => {
            return answer(&Handshake::Failed {
                message: format!("socketpair for the handshake: {e}"),
            });
        }
    };
    // SAFETY: this process is single-threaded (nothing here starts a thread), so the
    // child may allocate and run arbitrary code.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(ours);
            work(theirs)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            relay(ours, child, what)
        }
        Err(e) => answer(&Handshake::Failed {
            message: format!("fork {what}: {e}"),
        }),
    }
}

/// The one JSON config the daemon writes on stdin.
pub fn read_config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read config from stdin: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parse config from stdin: {e}"))
}

/// The monitor changes into its dir: resolve every path of the config against the
/// directory the daemon started us in first.
fn absolute_paths(mut cfg: MonitorConfig) -> Result<MonitorConfig, String> {
    let abs = |p: &std::path::Path| {
        std::path::absolute(p).map_err(|e| format!("resolve {}: {e}", p.display()))
    };
    cfg.bundle = abs(&cfg.bundle)?;
    cfg.oci_state_root = abs(&cfg.oci_state_root)?;
    cfg.dir = abs(&cfg.dir)?;
    cfg.log_path = cfg.log_path.as_deref().map(abs).transpose()?;
    Ok(cfg)
}

/// Wait for the monitor's handshake line and print it as ours.
fn relay(from: OwnedFd, child: Pid, what: &str) -> i32 {
    let mut line = Vec::new();
    let mut reader = std::fs::File::from(from).take(MAX_HANDSHAKE);
    let mut byte = [0u8; 512];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => break,
            Ok(n) => {
                line.extend_from_slice(&byte[..n]);
                if line.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let first = line.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<Handshake>(first) {
        Ok(h) => answer(&h),
        Err(_) => answer(&Handshake::Failed {
            message: format!(
                "{what} ended before its handshake ({})",
                describe_exit(child)
            ),
        }),
    }
}

fn describe_exit(pid: Pid) -> String {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => format!("exit status {code}"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        _ => "still running".to_string(),
    }
}

/// Print the handshake as one line; exit code 0 for Created, 1 for Failed.
pub fn answer(h: &Handshake) -> i32 {
    let mut line = serde_json::to_vec(h).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line).and_then(|()| out.flush());
    match h {
        Handshake::Created { .. } => 0,
        Handshake::Failed { .. } => 1,
    }
}
