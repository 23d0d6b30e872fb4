//! The sync socket between the runtime (parent) and the intermediate/init processes:
//! a SOCK_SEQPACKET socketpair carrying one JSON message per packet. Errors in a child
//! travel back as `Msg::Error`, and every parent read has a timeout, so a failing or
//! stuck child makes `create` fail with a message instead of hanging.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("socketpair: {0}")]
    Socketpair(nix::Error),
    #[error("send {what} on sync socket: {source}")]
    Send {
        what: &'static str,
        source: nix::Error,
    },
    #[error("receive on sync socket: {0}")]
    Recv(nix::Error),
    #[error("no message from the container process within {0:?}")]
    Timeout(Duration),
    #[error("the container process exited before reporting (sync socket closed)")]
    Closed,
    #[error("bad message on sync socket: {0}")]
    Decode(serde_json::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// Parent -> intermediate: the cgroup is joined, carry on.
    Go,
    /// Intermediate -> parent: I unshared a user namespace; write my id maps.
    IdMapRequest,
    /// Parent -> intermediate: maps written.
    IdMapDone,
    /// Intermediate -> parent: the host pid of the init/exec process.
    Pid(i32),
    /// Init -> parent: namespaces and mounts are set up, run prestart/createRuntime.
    RunHooks,
    /// Parent -> init: hooks done.
    HooksDone,
    /// Init -> parent: fully set up, about to block on the exec fifo.
    Ready,
    /// Any child -> parent.
    Error(String),
}

const MAX_MSG: usize = 64 * 1024;

pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair: (parent end, child end).
pub fn channel_pair() -> Result<(Channel, Channel), ChannelError> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChannelError::Socketpair)?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Msg) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(msg).map_err(ChannelError::Decode)?;
        send(self.fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
            .map(|_| ())
            .map_err(|source| ChannelError::Send {
                what: msg_name(msg),
                source,
            })
    }

    /// Receive one message, waiting at most `timeout` (None: forever, for the children
    /// whose parent is guaranteed to answer or die).
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Msg, ChannelError> {
        if let Some(t) = timeout {
            let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let n = loop {
                match poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                ) {
                    Err(nix::Error::EINTR) => continue,
                    other => break other.map_err(ChannelError::Recv)?,
                }
            };
            if n == 0 {
                return Err(ChannelError::Timeout(t));
            }
        }
        let mut buf = vec![0u8; MAX_MSG];
        let n = loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Err(nix::Error::EINTR) => continue,
                other => break other.map_err(ChannelError::Recv)?,
            }
        };
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        serde_json::from_slice(&buf[..n]).map_err(ChannelError::Decode)
    }

    /// Report an error to the parent; best effort (the parent may be gone).
    pub fn send_error(&self, err: &dyn std::fmt::Display) {
        let _ = self.send(&Msg::Error(err.to_string()));
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn msg_name(msg: &Msg) -> &'static str {
    match msg {
        Msg::Go => "go",
        Msg::IdMapRequest => "id map request",
        Msg::IdMapDone => "id map done",
        Msg::Pid(_) => "pid",
        Msg::RunHooks => "run hooks",
        Msg::HooksDone => "hooks done",
        Msg::Ready => "ready",
        Msg::Error(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_closed_peer_is_reported() {
        let (a, b) = channel_pair().unwrap();
        a.send(&Msg::Pid(42)).unwrap();
        assert_eq!(b.recv(Some(Duration::from_secs(1))).unwrap(), Msg::Pid(42));
        assert!(matches!(
            b.recv(Some(Duration::from_millis(10))),
            Err(ChannelError::Timeout(_))
        ));
        drop(a);
        assert!(matches!(
            b.recv(Some(Duration::from_secs(1))),
            Err(ChannelError::Closed)
        ));
    }
}
