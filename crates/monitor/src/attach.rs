//! The attach socket (`<dir>/attach.sock`, `SOCK_SEQPACKET`): every client gets the
//! container's output as frames and may feed its stdin and resize its pty. The frames
//! and the rules are in the library's protocol docs.
//!
//! The container and the CRI log never wait for a client: output goes to a client
//! with a non-blocking send, what does not fit waits in that client's backlog, and a
//! client whose backlog passes [`ATTACH_BACKLOG`] is disconnected. Input is the other
//! way round: while the container's stdin is full, no client is read, so a client
//! that types faster than the container reads waits in its own socket buffer.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use coracle_monitor::protocol::{ATTACH_BACKLOG, Frame};
use nix::poll::PollFlags;

use crate::container_input::ContainerInput;
use crate::seqpacket::{self, Received, Sent};

/// Clients served at once; one more is turned away (its connection closed at once).
const MAX_CLIENTS: usize = 16;
/// Frames read from one client per wakeup, so one client cannot starve the loop.
const FRAMES_PER_WAKEUP: usize = 64;
/// After the container exited: how long the last output and the exit frame may take
/// to reach the clients, all together.
const FINISH_FLUSH: Duration = Duration::from_secs(1);

pub struct AttachServer {
    listener: OwnedFd,
    clients: Vec<Client>,
}

struct Client {
    socket: OwnedFd,
    /// Frames that did not fit in the socket yet, oldest first.
    backlog: VecDeque<Vec<u8>>,
    backlog_bytes: usize,
    /// It sent a stdin frame: the end of its stdin (or its disconnect) counts for
    /// stdin_once.
    has_stdin: bool,
    stdin_ended: bool,
    /// Dropped at the next [`AttachServer::remove_closed`].
    closed: bool,
}

impl AttachServer {
    /// Bind at `path` (relative to the monitor dir, the cwd).
    pub fn bind(path: &Path) -> std::io::Result<AttachServer> {
        Ok(AttachServer {
            listener: seqpacket::listen_at(path)?,
            clients: Vec::new(),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Client fds to poll and for what: input unless the container's stdin is full,
    /// output while a backlog waits. Yields (client index, fd, events).
    pub fn polls(
        &self,
        input_blocked: bool,
    ) -> impl Iterator<Item = (usize, BorrowedFd<'_>, PollFlags)> {
        self.clients
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.closed)
            .filter_map(move |(i, c)| {
                let mut events = PollFlags::empty();
                if !input_blocked {
                    events |= PollFlags::POLLIN;
                }
                if !c.backlog.is_empty() {
                    events |= PollFlags::POLLOUT;
                }
                (!events.is_empty()).then(|| (i, c.socket.as_fd(), events))
            })
    }

    /// The listener is readable: take every pending connection.
    pub fn accept(&mut self) {
        while let Some(socket) = seqpacket::accept(self.listener.as_fd()) {
            if self.clients.len() >= MAX_CLIENTS {
                crate::report(format_args!(
                    "attach: {MAX_CLIENTS} clients already; turning one away"
                ));
                continue;
            }
            self.clients.push(Client {
                socket,
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                has_stdin: false,
                stdin_ended: false,
                closed: false,
            });
        }
    }

    /// Client `i` polled `revents`: send its backlog, read its frames.
    pub fn serve(
        &mut self,
        i: usize,
        revents: PollFlags,
        input: &mut ContainerInput,
        buf: &mut [u8],
    ) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        if client.closed {
            return;
        }
        if revents.contains(PollFlags::POLLOUT) {
            client.send_backlog();
        }
        let readable = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        if revents.intersects(readable) && !client.closed {
            client.read_frames(input, buf);
        }
    }

    /// Output for every client: `message` is a whole frame.
    pub fn broadcast(&mut self, message: &[u8]) {
        for client in self.clients.iter_mut().filter(|c| !c.closed) {
            client.send(message);
        }
    }

    /// Drop the clients marked closed (done after each round of events, so that
    /// indices stay valid within a round).
    /// A client closed for any reason (its hang-up, a failed send, too long a
    /// backlog) has ended its stdin, for stdin_once.
    pub fn remove_closed(&mut self, input: &mut ContainerInput) {
        for client in self.clients.iter_mut().filter(|c| c.closed) {
            client.end_stdin(input);
        }
        self.clients.retain(|c| !c.closed);
    }

    /// The container exited and its output was broadcast: send each client its
    /// backlog and the exit frame, within [`FINISH_FLUSH`] for all, and close them.
    pub fn finish(&mut self, exit_code: i32) {
        let exit = Frame::Exit(exit_code).encode();
        let deadline = Instant::now() + FINISH_FLUSH;
        for mut client in std::mem::take(&mut self.clients)
            .into_iter()
            .filter(|c| !c.closed)
        {
            client.backlog.push_back(exit.clone());
            while let Some(message) = client.backlog.pop_front() {
                if !seqpacket::send_waiting(client.socket.as_fd(), &message, Some(deadline)) {
                    break;
                }
            }
        }
    }
}

impl Client {
    fn send(&mut self, message: &[u8]) {
        if self.backlog.is_empty() {
            match seqpacket::try_send(self.socket.as_fd(), message) {
                Sent::Done => return,
                Sent::PeerGone => {
                    self.closed = true;
                    return;
                }
                Sent::WouldBlock => {}
            }
        }
        self.backlog_bytes += message.len();
        self.backlog.push_back(message.to_vec());
        if self.backlog_bytes > ATTACH_BACKLOG {
            crate::report(format_args!(
                "attach client fell {ATTACH_BACKLOG} bytes behind; disconnecting it"
            ));
            self.closed = true;
        }
    }

    fn send_backlog(&mut self) {
        while let Some(message) = self.backlog.front() {
            match seqpacket::try_send(self.socket.as_fd(), message) {
                Sent::Done => {
                    self.backlog_bytes -= message.len();
                    self.backlog.pop_front();
                }
                Sent::WouldBlock => return,
                Sent::PeerGone => {
                    self.closed = true;
                    return;
                }
            }
        }
        self.backlog = VecDeque::new();
    }

    fn read_frames(&mut self, input: &mut ContainerInput, buf: &mut [u8]) {
        for _ in 0..FRAMES_PER_WAKEUP {
            if input.blocked() {
                return;
            }
            match seqpacket::try_recv(self.socket.as_fd(), buf) {
                Received::Message(n) => self.handle(&buf[..n], input),
                Received::WouldBlock => return,
                Received::Closed => return self.disconnect(),
                Received::Oversized => {
                    crate::report(format_args!("attach client sent an oversized frame"));
                    return self.disconnect();
                }
            }
            if self.closed {
                return;
            }
        }
    }

    fn handle(&mut self, message: &[u8], input: &mut ContainerInput) {
        match Frame::parse(message) {
            Ok(Frame::Stdin(data)) => {
                self.has_stdin = true;
                if !self.stdin_ended {
                    input.write(data);
                }
            }
            Ok(Frame::StdinEof) => {
                self.has_stdin = true;
                self.end_stdin(input);
            }
            Ok(Frame::Resize { width, height }) => input.resize(width, height),
            Ok(other) => {
                crate::report(format_args!("attach client sent {other:?}; ignored"));
            }
            Err(e) => {
                crate::report(format_args!("attach client: {e}; disconnecting it"));
                self.disconnect();
            }
        }
    }

    fn end_stdin(&mut self, input: &mut ContainerInput) {
        if self.has_stdin && !self.stdin_ended {
            self.stdin_ended = true;
            input.client_stdin_ended();
        }
    }

    /// Its stdin ends when [`AttachServer::remove_closed`] drops it.
    fn disconnect(&mut self) {
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_monitor::protocol::{MAX_FRAME, frame_kind};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::fs::File;
    use std::io::{ErrorKind, Read};

    fn client_pair() -> (Client, OwnedFd) {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .expect("socketpair");
        let client = Client {
            socket: ours,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            has_stdin: false,
            stdin_ended: false,
            closed: false,
        };
        (client, theirs)
    }

    fn stdin_pipe() -> (File, File) {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .expect("pipe");
        (File::from(r), File::from(w))
    }

    fn send(to: &OwnedFd, frame: Frame<'_>) {
        assert_eq!(seqpacket::try_send(to.as_fd(), &frame.encode()), Sent::Done);
    }

    #[test]
    fn a_slow_client_is_dropped_once_its_backlog_is_full() {
        let (mut client, _peer) = client_pair();
        let mut frame = vec![frame_kind::STDOUT];
        frame.extend_from_slice(&[b'x'; 16 * 1024]);
        let mut sent = 0;
        while !client.closed {
            client.send(&frame);
            sent += frame.len();
            assert!(sent < 64 << 20, "never dropped");
        }
        assert!(client.backlog_bytes > ATTACH_BACKLOG);
    }

    #[test]
    fn stdin_once_closes_stdin_when_the_first_stdin_client_ends() {
        let (reader, writer) = stdin_pipe();
        let mut input = ContainerInput::new(Some(writer), None, true);
        let (mut first, first_peer) = client_pair();
        let mut buf = vec![0u8; MAX_FRAME];
        send(&first_peer, Frame::Stdin(b"hello\n"));
        send(&first_peer, Frame::StdinEof);
        first.read_frames(&mut input, &mut buf);
        assert!(!input.has_stdin());
        let mut got = String::new();
        let mut reader = reader;
        reader.read_to_string(&mut got).expect("EOF after the data");
        assert_eq!(got, "hello\n");
    }

    #[test]
    fn without_stdin_once_stdin_stays_open_and_a_client_without_stdin_counts_for_nothing() {
        let (_reader, writer) = stdin_pipe();
        let mut input = ContainerInput::new(Some(writer), None, false);
        let (mut c, peer) = client_pair();
        let mut buf = vec![0u8; MAX_FRAME];
        send(&peer, Frame::StdinEof);
        c.read_frames(&mut input, &mut buf);
        assert!(input.has_stdin());

        let (_reader, writer) = stdin_pipe();
        let mut input = ContainerInput::new(Some(writer), None, true);
        let (mut watcher, peer) = client_pair();
        drop(peer);
        watcher.read_frames(&mut input, &mut buf);
        assert!(watcher.closed);
        assert!(input.has_stdin(), "a client without stdin detached");
    }

    #[test]
    fn a_full_stdin_stops_reading_clients_until_flushed() {
        let (mut reader, writer) = stdin_pipe();
        let mut input = ContainerInput::new(Some(writer), None, false);
        let (mut c, peer) = client_pair();
        let mut buf = vec![0u8; MAX_FRAME];
        let chunk = [b'a'; 16 * 1024];
        for _ in 0..8 {
            send(&peer, Frame::Stdin(&chunk));
        }
        c.read_frames(&mut input, &mut buf);
        assert!(input.blocked(), "a 64 KiB pipe takes less than 128 KiB");
        let mut total = 0;
        let mut drain = vec![0u8; 1 << 20];
        while total < 8 * chunk.len() {
            match reader.read(&mut drain) {
                Ok(n) => total += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            input.flush();
            c.read_frames(&mut input, &mut buf);
        }
        assert_eq!(total, 8 * chunk.len());
        assert!(!input.blocked());
    }
}
