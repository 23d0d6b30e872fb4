//! Reaping. The monitor is a child subreaper, so besides the container init it may
//! inherit orphans from the container (with a shared PID namespace); all are reaped,
//! only the init's status is kept. SIGCHLD arrives through a signalfd, so the event
//! loop sees it as one more readable fd.
//!
//! SIGCHLD is blocked only after `Container::create` has forked: a blocked mask is
//! inherited across fork and execve and must not reach the container process.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How the init ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitExit {
    /// Exit status, or 128 + signal.
    pub code: i32,
    pub signal: Option<i32>,
    /// When it was reaped, ns since the epoch.
    pub finished_at: i64,
}

impl InitExit {
    pub fn from_status(status: WaitStatus, finished_at: i64) -> Option<InitExit> {
        match status {
            WaitStatus::Exited(_, code) => Some(InitExit {
                code,
                signal: None,
                finished_at,
            }),
            WaitStatus::Signaled(_, sig, _) => Some(InitExit {
                code: 128 + sig as i32,
                signal: Some(sig as i32),
                finished_at,
            }),
            _ => None,
        }
    }
}

pub struct Reaper {
    init: Pid,
    sigfd: SignalFd,
}

impl Reaper {
    /// Block SIGCHLD and open the signalfd. Children that died before this are
    /// still zombies: the first [`Reaper::reap`] finds them.
    pub fn new(init_pid: i32) -> nix::Result<Reaper> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Reaper {
            init: Pid::from_raw(init_pid),
            sigfd,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sigfd.as_fd()
    }

    /// Consume pending SIGCHLDs and reap every exited child; returns the init's exit
    /// if it was among them. Call it when the signalfd is readable (and once at start).
    pub fn reap(&self) -> Option<InitExit> {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        let mut init_exit = None;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    crate::report(format_args!("waitpid: {e}"));
                    break;
                }
                Ok(status) => {
                    if status.pid() == Some(self.init) {
                        init_exit = InitExit::from_status(status, crate::timestamp::now_ns());
                    }
                }
            }
        }
        init_exit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let p = Pid::from_raw(10);
        assert_eq!(
            InitExit::from_status(WaitStatus::Exited(p, 3), 5),
            Some(InitExit {
                code: 3,
                signal: None,
                finished_at: 5
            })
        );
        assert_eq!(
            InitExit::from_status(WaitStatus::Signaled(p, Signal::SIGKILL, false), 5),
            Some(InitExit {
                code: 137,
                signal: Some(9),
                finished_at: 5
            })
        );
        assert_eq!(
            InitExit::from_status(WaitStatus::Stopped(p, Signal::SIGSTOP), 5),
            None
        );
    }
}
