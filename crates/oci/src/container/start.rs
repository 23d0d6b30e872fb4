//! `start`: release the init held on the exec fifo, then run poststart hooks.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

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
        // First the byte (the init passed its startContainer hooks), then EOF (the
        // write end is close-on-exec: the user's process has been exec'd).
        let mut got_byte = false;
        loop {
            let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::Error::EINTR) => {}
                Ok(_) => {
                    let mut b = [0u8; 1];
                    match fifo.read(&mut b) {
                        Ok(1) => got_byte = true,
                        // EOF before any writer came is impossible here (poll reports
                        // POLLHUP only after a writer has been and gone).
                        Ok(_) => break,
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
            if !got_byte && !process_alive(self.state.pid, self.state.pid_start_time) {
                return Err(ContainerError::InitGone {
                    id: self.state.id.clone(),
                });
            }
        }
        if !got_byte {
            return Err(ContainerError::InitGone {
                id: self.state.id.clone(),
            });
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
