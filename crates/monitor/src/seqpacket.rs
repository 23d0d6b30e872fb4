//! `SOCK_SEQPACKET` sockets for attach frames: a message is sent whole or not at all,
//! so a non-blocking sender never has half a frame to remember. Nothing here blocks
//! unless asked to, and nothing raises SIGPIPE.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept4, bind, listen, recv,
    send, socket,
};

/// Connections waiting for accept.
const LISTEN_BACKLOG: i32 = 16;

/// What became of a non-blocking send.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Done,
    /// The socket buffer is full: try again when the socket polls writable.
    WouldBlock,
    /// The peer is gone (or the socket failed): drop it.
    PeerGone,
}

/// What a non-blocking receive found.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A message of this many bytes is at the start of the buffer.
    Message(usize),
    WouldBlock,
    /// The peer closed the connection (or it failed).
    Closed,
    /// A message longer than the buffer (the protocol's maximum): a broken peer.
    Oversized,
}

/// Bind a non-blocking listening socket at `path` (relative to the cwd), replacing a
/// stale socket file.
pub fn listen_at(path: &Path) -> io::Result<OwnedFd> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(LISTEN_BACKLOG)?)?;
    Ok(fd)
}

/// Accept one pending connection, non-blocking and close-on-exec; `None` when there
/// is none (or accept failed: the listener stays usable either way).
pub fn accept(listener: BorrowedFd<'_>) -> Option<OwnedFd> {
    loop {
        match accept4(
            listener.as_raw_fd(),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        ) {
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            Ok(fd) => return Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return None,
            Err(e) => {
                // ECONNABORTED and the like: that client is gone, not the listener.
                crate::report(format_args!("attach socket accept: {e}"));
                return None;
            }
        }
    }
}

pub fn try_send(fd: BorrowedFd<'_>, message: &[u8]) -> Sent {
    loop {
        match send(
            fd.as_raw_fd(),
            message,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => return Sent::Done,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Sent::WouldBlock,
            Err(_) => return Sent::PeerGone,
        }
    }
}

/// Send, waiting for room until `deadline` (`None`: as long as it takes). Returns
/// whether the message was sent.
pub fn send_waiting(fd: BorrowedFd<'_>, message: &[u8], deadline: Option<Instant>) -> bool {
    loop {
        match try_send(fd, message) {
            Sent::Done => return true,
            Sent::PeerGone => return false,
            Sent::WouldBlock => {
                if !wait_writable(fd, deadline) {
                    return false;
                }
            }
        }
    }
}

/// Wait until `fd` polls writable (or hung up); false at the deadline.
fn wait_writable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> bool {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, timeout) {
            Ok(0) => {}
            Ok(_) => return true,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Receive one message into `buf`, which must be able to hold the longest one.
pub fn try_recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Received {
    loop {
        // MSG_TRUNC: the return value is the message's real length, so an oversized
        // message is noticed instead of silently cut.
        match recv(
            fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        ) {
            Ok(0) => return Received::Closed,
            Ok(n) if n > buf.len() => return Received::Oversized,
            Ok(n) => return Received::Message(n),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Received::WouldBlock,
            Err(_) => return Received::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::socketpair;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .expect("socketpair")
    }

    #[test]
    fn messages_keep_their_boundaries_and_oversize_is_reported() {
        let (a, b) = pair();
        assert_eq!(try_send(a.as_fd(), b"one"), Sent::Done);
        assert_eq!(try_send(a.as_fd(), b"three"), Sent::Done);
        assert_eq!(try_send(a.as_fd(), &[7u8; 64]), Sent::Done);
        let mut buf = [0u8; 32];
        assert_eq!(try_recv(b.as_fd(), &mut buf), Received::Message(3));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(try_recv(b.as_fd(), &mut buf), Received::Message(5));
        assert_eq!(try_recv(b.as_fd(), &mut buf), Received::Oversized);
        assert_eq!(try_recv(b.as_fd(), &mut buf), Received::WouldBlock);
        drop(a);
        assert_eq!(try_recv(b.as_fd(), &mut buf), Received::Closed);
        assert_eq!(try_send(b.as_fd(), b"x"), Sent::PeerGone);
    }

    #[test]
    fn a_full_socket_would_block_and_a_deadline_ends_the_wait() {
        let (a, _b) = pair();
        let chunk = vec![0u8; 16 * 1024];
        let mut sent = 0;
        while try_send(a.as_fd(), &chunk) == Sent::Done {
            sent += 1;
            assert!(sent < 10_000, "the socket never filled");
        }
        let soon = Instant::now() + std::time::Duration::from_millis(50);
        assert!(!send_waiting(a.as_fd(), &chunk, Some(soon)));
    }
}
