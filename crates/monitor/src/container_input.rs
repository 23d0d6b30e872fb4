//! Input for a container (attach) or an exec'd process (interactive exec): its
//! stdin and its pty. Writes never block: what the process does not take yet waits
//! here, and the caller stops reading its clients until [`ContainerInput::flush`]
//! has written it.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, BorrowedFd};

/// The process's end of client input: its stdin and its pty.
pub struct ContainerInput {
    /// The container's stdin (a pipe's write end, or the pty master); `None` when
    /// the container has no stdin, or no more (stdin_once, or its reader is gone).
    stdin: Option<File>,
    /// Close the stdin when the first client's stdin ends (stdin_once without a tty).
    close_after_first_session: bool,
    /// Stdin bytes the container has not taken yet; no client is read meanwhile.
    pending: Vec<u8>,
    /// The pty master (tty containers), for window size changes.
    pty: Option<File>,
}

impl ContainerInput {
    /// `stdin_once`: the first [`Self::client_stdin_ended`] closes the stdin, unless
    /// there is a pty (as containerd: a tty's stdin cannot be closed on its own).
    pub fn new(stdin: Option<File>, pty: Option<File>, stdin_once: bool) -> ContainerInput {
        ContainerInput {
            close_after_first_session: stdin_once && pty.is_none(),
            stdin,
            pending: Vec::new(),
            pty,
        }
    }

    /// The stdin is still open.
    #[cfg(test)]
    pub fn has_stdin(&self) -> bool {
        self.stdin.is_some()
    }

    /// Stdin is full: clients wait until [`Self::flush`] empties it.
    pub fn blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The fd to poll for POLLOUT while blocked.
    pub fn blocked_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stdin
            .as_ref()
            .filter(|_| self.blocked())
            .map(|f| f.as_fd())
    }

    /// Write client input; what the container does not take now is kept.
    pub fn write(&mut self, data: &[u8]) {
        if self.stdin.is_none() || data.is_empty() {
            return;
        }
        self.pending.extend_from_slice(data);
        self.flush();
    }

    /// Write what is pending, as far as the container takes it.
    pub fn flush(&mut self) {
        let Some(stdin) = &mut self.stdin else {
            self.pending = Vec::new();
            return;
        };
        while !self.pending.is_empty() {
            match stdin.write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EPIPE: the container closed its stdin or exited. Nobody reads
                    // stdin any more; what clients send is dropped from now on.
                    if e.kind() != ErrorKind::BrokenPipe {
                        crate::report(format_args!("write container stdin: {e}"));
                    }
                    self.stdin = None;
                    self.pending = Vec::new();
                    return;
                }
            }
        }
        // A paste can grow this once; it should not stay that big.
        self.pending = Vec::new();
    }

    /// A client's stdin ended (the end of its attach session, for stdin_once).
    /// What it wrote before is written first, as far as the process takes it now.
    pub fn client_stdin_ended(&mut self) {
        if self.close_after_first_session {
            self.flush();
            self.stdin = None;
            self.pending = Vec::new();
            self.close_after_first_session = false;
        }
    }

    pub fn resize(&self, width: u16, height: u16) {
        if let Some(pty) = &self.pty {
            if let Err(e) = crate::sys::set_window_size(pty.as_fd(), width, height) {
                crate::report(format_args!("resize the pty to {width}x{height}: {e}"));
            }
        }
    }
}
