//! `process.terminal`: a pty allocated inside the container (from its own devpts
//! instance), the slave made the process's stdio and controlling terminal, the master
//! sent to the `--console-socket` listener with SCM_RIGHTS, as runc does.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    #[error("open /dev/pts/ptmx: {0}")]
    OpenPtmx(std::io::Error),
    #[error("open pty peer: {0}")]
    Peer(std::io::Error),
    #[error("send pty master on console socket: {0}")]
    Send(nix::Error),
    #[error("make pty the stdio: {0}")]
    Dup(nix::Error),
    #[error("set controlling terminal: {0}")]
    Ctty(std::io::Error),
}

/// Allocate the pty, send the master, make the slave fds 0/1/2 and the controlling tty.
pub fn setup_console(console_socket: &OwnedFd, size: Option<(u16, u16)>) -> Result<(), TtyError> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/pts/ptmx")
        .map_err(TtyError::OpenPtmx)?
        .into();
    let slave = crate::sys::open_pty_peer(master.as_fd()).map_err(TtyError::Peer)?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the valid pointer.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    let fds = [master.as_raw_fd()];
    let payload = b"/dev/ptmx";
    sendmsg::<()>(
        console_socket.as_raw_fd(),
        &[IoSlice::new(payload)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(TtyError::Send)?;
    drop(master);
    for target in 0..3 {
        crate::sys::dup2_onto(slave.as_fd(), target).map_err(|e| {
            TtyError::Dup(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        })?;
    }
    // Only a session leader can take a controlling terminal; the init already is one
    // (EPERM then), an exec'd process becomes one here.
    let _ = nix::unistd::setsid();
    crate::sys::set_controlling_terminal(0).map_err(TtyError::Ctty)
}
