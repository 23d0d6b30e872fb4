//! `delete`: remove a stopped container (or, with force, kill it first), run poststop
//! hooks, remove its cgroup and state.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use super::{Container, ContainerError, io_err};
use crate::hooks;
use crate::state::{Status, process_alive};

impl Container {
    pub fn delete(self, force: bool) -> Result<(), ContainerError> {
        let status = self.status();
        if status != Status::Stopped && status != Status::Created && !force {
            return Err(ContainerError::WrongStatus {
                id: self.state.id.clone(),
                op: "delete",
                status,
                want: "stopped (or use force)",
            });
        }
        if status != Status::Stopped {
            // A created container may be deleted without force (runc does so too).
            self.kill(Signal::SIGKILL, true)?;
            self.wait_gone(Duration::from_secs(10));
        }
        // Never forget a live init: without its state nothing could stop it any more.
        if process_alive(self.state.pid, self.state.pid_start_time) {
            return Err(ContainerError::StillAlive {
                id: self.state.id.clone(),
                pid: self.state.pid,
            });
        }
        // Reap it if it is our child (library callers); ECHILD otherwise.
        let _ = waitpid(Pid::from_raw(self.state.pid), Some(WaitPidFlag::WNOHANG));
        let mut st = self.oci_state();
        st.status = Status::Stopped;
        if let Err(e) = hooks::run_hooks(
            "poststop",
            self.state
                .config
                .hooks()
                .as_ref()
                .and_then(|h| h.poststop().as_ref()),
            &st,
        ) {
            tracing::warn!(id = %self.state.id, error = %e, "poststop hook failed");
            eprintln!("coracle-oci: warning: {e}");
        }
        if let Some(cg) = self.cgroup()? {
            cg.delete()?;
        }
        let dir = self.dir();
        std::fs::remove_dir_all(&dir).map_err(io_err("remove state", &dir))
    }

    fn wait_gone(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while process_alive(self.state.pid, self.state.pid_start_time) && Instant::now() < deadline
        {
            // Our own child would stay a zombie (which counts as gone) until reaped.
            let _ = waitpid(Pid::from_raw(self.state.pid), Some(WaitPidFlag::WNOHANG));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
