//! The control socket (`<dir>/control.sock`): a client writes one
//! [`ControlRequest`] JSON line and reads one [`ControlResponse`] line, then the
//! connection is closed. Everything is non-blocking and bounded: a slow, silent or
//! malformed client costs one slot and gets an error, never a hung or dead monitor.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use coracle_monitor::protocol::{ControlRequest, ControlResponse};
use nix::sys::socket::{MsgFlags, send};

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;
/// Connections served at once; a new one beyond this evicts the oldest.
const MAX_CONNS: usize = 8;

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

pub struct ControlServer {
    listener: UnixListener,
    conns: VecDeque<Conn>,
}

/// What a request asks the monitor to do; the event loop owns the state it acts on.
pub trait Handler {
    fn handle(&mut self, req: ControlRequest) -> ControlResponse;
}

impl ControlServer {
    /// Bind at `path` (a stale socket file left there is replaced).
    pub fn bind(path: &Path) -> std::io::Result<ControlServer> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer {
            listener,
            conns: VecDeque::new(),
        })
    }

    pub fn listener_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    pub fn conn_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.conns.iter().map(|c| c.stream.as_fd())
    }

    /// The listener is readable: take every pending connection.
    pub fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.conns.len() == MAX_CONNS {
                        self.conns.pop_front();
                    }
                    self.conns.push_back(Conn {
                        stream,
                        buf: Vec::new(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::report(format_args!("control socket accept: {e}"));
                    return;
                }
            }
        }
    }

    /// Connection `i` (in [`Self::conn_fds`] order) is readable or hung up. Returns
    /// whether it was closed (indices after it shift down by one).
    pub fn serve(&mut self, i: usize, handler: &mut impl Handler) -> bool {
        let Some(conn) = self.conns.get_mut(i) else {
            return false;
        };
        let mut chunk = [0u8; 512];
        let line_done = loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    conn.buf.extend_from_slice(&chunk[..n]);
                    if conn.buf.contains(&b'\n') || conn.buf.len() > MAX_REQUEST {
                        break true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        if !line_done {
            return false;
        }
        if let Some(conn) = self.conns.remove(i) {
            let response = answer(&conn.buf, handler);
            reply(&conn.stream, &response);
        }
        true
    }
}

/// The response to one request line (its first line; a missing newline at EOF is fine).
pub fn answer(buf: &[u8], handler: &mut impl Handler) -> ControlResponse {
    if buf.len() > MAX_REQUEST && !buf[..MAX_REQUEST].contains(&b'\n') {
        return ControlResponse::Error {
            message: format!("request longer than {MAX_REQUEST} bytes"),
        };
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    match serde_json::from_slice::<ControlRequest>(line) {
        Ok(req) => handler.handle(req),
        Err(e) => ControlResponse::Error {
            message: format!("bad request: {e}"),
        },
    }
}

fn reply(stream: &UnixStream, response: &ControlResponse) {
    let Ok(mut line) = serde_json::to_vec(response) else {
        return;
    };
    line.push(b'\n');
    // A few dozen bytes into an empty socket buffer: one non-blocking send. A client
    // that is gone (EPIPE) or not reading loses its answer; MSG_NOSIGNAL keeps
    // SIGPIPE (default action here) away.
    let _ = send(stream.as_raw_fd(), &line, MsgFlags::MSG_NOSIGNAL);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(usize);

    impl Handler for Count {
        fn handle(&mut self, req: ControlRequest) -> ControlResponse {
            assert_eq!(req, ControlRequest::ReopenLog);
            self.0 += 1;
            ControlResponse::Ok
        }
    }

    #[test]
    fn answers_good_and_bad_lines() {
        let mut h = Count(0);
        assert_eq!(
            answer(b"{\"op\":\"reopen_log\"}\n", &mut h),
            ControlResponse::Ok
        );
        assert_eq!(
            answer(b"{\"op\":\"reopen_log\"}", &mut h),
            ControlResponse::Ok
        );
        assert_eq!(h.0, 2);
        for bad in [
            &b"nonsense\n"[..],
            b"{\"op\":\"fly\"}\n",
            b"",
            b"\xff\xfe\n",
        ] {
            assert!(
                matches!(answer(bad, &mut h), ControlResponse::Error { .. }),
                "{bad:?}"
            );
        }
        let long = vec![b' '; MAX_REQUEST + 10];
        assert!(matches!(
            answer(&long, &mut h),
            ControlResponse::Error { message } if message.contains("longer")
        ));
        assert_eq!(h.0, 2);
    }
}
