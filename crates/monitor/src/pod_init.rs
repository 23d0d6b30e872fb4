//! `coracle-monitor pod-init`: the tiny init of a pod that shares one PID namespace
//! (PID mode POD). It joins the pod's pinned namespaces, unshares PID, and forks the
//! process that becomes pid 1 there: it only reaps orphans and ends on SIGTERM or
//! SIGINT (SIGKILL from the daemon ends it, and with it every process of the pod).
//! Containers of the pod join `/proc/<its pid>/ns/pid`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use coracle_monitor::protocol::{Handshake, PodInitConfig};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};

use crate::spawn::{answer, fork_and_relay, read_config};

pub fn main() -> i32 {
    let config: PodInitConfig = match read_config() {
        Ok(config) => config,
        Err(message) => return answer(&Handshake::Failed { message }),
    };
    fork_and_relay("the pod init", |handshake| {
        let answer =
            enter_and_fork_init(&config).unwrap_or_else(|message| Handshake::Failed { message });
        send(handshake, &answer);
        0
    })
}

/// In the intermediate: its own session, the pod's namespaces, a new PID namespace,
/// then the fork whose child is pid 1 there.
fn enter_and_fork_init(config: &PodInitConfig) -> Result<Handshake, String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    for path in &config.namespaces {
        let file = std::fs::File::open(path)
            .map_err(|e| format!("open namespace {}: {e}", path.display()))?;
        setns(file, CloneFlags::empty())
            .map_err(|e| format!("join namespace {}: {e}", path.display()))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare PID namespace: {e}"))?;
    // SAFETY: still single-threaded; the child never returns from `init_loop`.
    match unsafe { fork() }.map_err(|e| format!("fork the init: {e}"))? {
        ForkResult::Child => init_loop(),
        ForkResult::Parent { child } => {
            let start_time = coracle_oci::state::proc_stat(child.as_raw())
                .map(|stat| stat.start_time)
                .ok_or_else(|| format!("read the start time of {child}"))?;
            Ok(Handshake::Created {
                monitor_pid: child.as_raw(),
                monitor_start_time: start_time,
                container_pid: child.as_raw(),
            })
        }
    }
}

/// pid 1 of the pod's PID namespace: reap, and end on SIGTERM or SIGINT.
fn init_loop() -> ! {
    // Nothing of the spawner's may stay open here: the handshake socket would never
    // see EOF, and the daemon's descriptors do not belong in the pod.
    // SAFETY: close_range takes plain integers; closing fds we do not use is harmless.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let null = OwnedFd::from(null);
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target) };
        }
    }
    let _ = std::env::set_current_dir("/");
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    let _ = signals.thread_block();
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_all(),
            Ok(Signal::SIGTERM | Signal::SIGINT) => std::process::exit(0),
            _ => {}
        }
    }
}

fn reap_all() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

fn send(socket: OwnedFd, handshake: &Handshake) {
    let mut stream = UnixStream::from(socket);
    if let Ok(mut line) = serde_json::to_vec(handshake) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}
