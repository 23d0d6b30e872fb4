//! `start`: release the init held on the exec fifo, then run poststart hooks.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Container, ContainerError, io_err};
use crate::hooks;
use crate::state::{EXEC_FIFO, Status, process_alive};

impl Container {
    pub fn start(&mut self) -> Result<(), ContainerError> {
        self.require("start", &[Status::Created], "created")?;
        let path = self.dir().join(EXEC_FIFO);
        // O_NONBLOCK: opening does not wait for the writer; we poll instead, checking
        // the init is still alive, so a dead init cannot hang start.
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err("open exec fifo", &path))?;
        loop {
            let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::Error::EINTR) => {}
                Ok(_) => {
                    let mut b = [0u8; 1];
                    match fifo.read(&mut b) {
                        Ok(1) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(io_err("read exec fifo", &path)(e)),
                    }
                }
                Err(source) => {
                    return Err(ContainerError::Sys {
                        op: "poll exec fifo",
                        source,
                    });
                }
            }
            if !process_alive(self.state.pid, self.state.pid_start_time) {
                return Err(ContainerError::InitGone {
                    id: self.state.id.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::fs::remove_file(&path).map_err(io_err("remove exec fifo", &path))?;
        let state = self.oci_state();
        if let Err(e) = hooks::run_hooks(
            "poststart",
            self.state
                .config
                .hooks()
                .as_ref()
                .and_then(|h| h.poststart().as_ref()),
            &state,
        ) {
            // Runtime spec: a poststart failure is logged and the operation continues.
            tracing::warn!(id = %self.state.id, error = %e, "poststart hook failed");
            eprintln!("coracle-oci: warning: {e}");
        }
        Ok(())
    }
}
