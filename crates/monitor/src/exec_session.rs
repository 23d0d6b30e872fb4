//! An interactive exec (CRI `Exec`): `coracle-monitor exec` with
//! `ExecConfig::interactive` set. The helper's stdout is a `SOCK_SEQPACKET` socket to
//! the daemon; the helper runs the process with pipes (or a pty), and relays between
//! them and the socket in attach frames until the process exits, then sends its exit
//! code as the last frame.
//!
//! Output is never dropped: while the socket is full, the process's output is not
//! read, so a slow client slows the process down (as a terminal would). There is no
//! deadline. When the daemon goes away before the process ended, nobody can read the
//! output or learn the exit code any more: the process group is killed, like the
//! hangup of a terminal.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use coracle_monitor::protocol::{ExecConfig, Frame, InteractiveExec, MAX_FRAME};
use coracle_oci::{ExecOptions, Stdio};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;

use crate::child_reaper::Reaper;
use crate::container_input::ContainerInput;
use crate::cri_log::StreamKind;
use crate::error::chain;
use crate::seqpacket::{self, Received, Sent};
use crate::stdio::{self, Output};
use crate::sys;

/// Output read after the process exited, per stream: what a pipe or pty holds, with
/// a bound against a background child that keeps writing.
const DRAIN_LIMIT: usize = 4 << 20;
/// After the process exited, how long a pty may take to hand over its last output
/// (see the supervisor's `PTY_DRAIN`).
const PTY_DRAIN: Duration = Duration::from_millis(500);
/// Frames taken from the daemon per wakeup.
const FRAMES_PER_WAKEUP: usize = 64;

/// A started interactive exec.
pub struct Session {
    /// To the daemon, non-blocking.
    socket: OwnedFd,
    pid: i32,
    reaper: Reaper,
    outputs: Vec<SessionOutput>,
    input: ContainerInput,
    /// A frame the socket had no room for; no output is read until it is sent.
    unsent: Option<Vec<u8>>,
}

struct SessionOutput {
    out: Output,
    open: bool,
}

/// The process's streams before and after `exec`.
struct Wiring {
    /// For the process.
    child: Stdio,
    /// The console socket's end the process sends its pty master on (tty).
    console: Option<OwnedFd>,
    /// Our end of the console socket.
    console_ours: Option<OwnedFd>,
    outputs: Vec<Output>,
    stdin: Option<File>,
}

/// Start the process: after this, [`Session::run`] relays until it exits.
pub fn start(cfg: ExecConfig, mode: InteractiveExec) -> Result<Session, String> {
    let socket = take_stdout_socket()?;
    let (mut process, container) = crate::exec::load(&cfg)?;
    process.set_terminal(Some(mode.tty));
    let mut wiring = if mode.tty {
        wire_tty()
    } else {
        wire_pipes(mode.stdin)
    }
    .map_err(|e| format!("stdio: {}", chain(&e)))?;
    let opts = ExecOptions {
        stdio: std::mem::take(&mut wiring.child),
        console: wiring.console.take(),
        new_process_group: true,
        ..ExecOptions::default()
    };
    let pid = container.exec(process, opts).map_err(|e| chain(&e))?.pid;
    let session = finish_wiring(wiring, mode).and_then(|(outputs, input)| {
        let reaper = Reaper::new(pid).map_err(|e| format!("signalfd for SIGCHLD: {e}"))?;
        sys::block_sigpipe().map_err(|e| format!("block SIGPIPE: {e}"))?;
        Ok(Session {
            socket,
            pid,
            reaper,
            outputs: outputs
                .into_iter()
                .map(|out| SessionOutput { out, open: true })
                .collect(),
            input,
            unsent: None,
        })
    });
    if session.is_err() {
        kill_process_group(pid);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
    }
    session
}

/// The socket to the daemon is our stdout: keep a close-on-exec copy of it and put
/// /dev/null in its place, so nothing else (the executor's children inherit our
/// stdio until theirs is set up) can write into it.
fn take_stdout_socket() -> Result<OwnedFd, String> {
    let stdout = std::io::stdout();
    let kind = nix::sys::socket::getsockopt(&stdout.as_fd(), nix::sys::socket::sockopt::SockType);
    if kind != Ok(SockType::SeqPacket) {
        return Err("an interactive exec needs a SOCK_SEQPACKET socket as stdout".into());
    }
    let socket = stdout
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("dup the stdout socket: {e}"))?;
    stdio::set_nonblocking(&socket).map_err(|e| chain(&e))?;
    let null = stdio::dev_null().map_err(|e| chain(&e))?;
    nix::unistd::dup2_stdout(null).map_err(|e| format!("dup2 /dev/null onto stdout: {e}"))?;
    Ok(socket)
}

fn wire_pipes(with_stdin: bool) -> Result<Wiring, crate::error::MonitorError> {
    let (child_stdin, stdin) = if with_stdin {
        let (r, w) = stdio::pipe()?;
        stdio::set_nonblocking(&w)?;
        (r, Some(File::from(w)))
    } else {
        (stdio::dev_null()?, None)
    };
    let (out_r, out_w) = stdio::pipe()?;
    let (err_r, err_w) = stdio::pipe()?;
    stdio::set_nonblocking(&out_r)?;
    stdio::set_nonblocking(&err_r)?;
    let output = |kind, fd: OwnedFd| Output {
        kind,
        file: fd.into(),
        pty: false,
    };
    Ok(Wiring {
        child: Stdio::Fds([child_stdin, out_w, err_w]),
        console: None,
        console_ours: None,
        outputs: vec![
            output(StreamKind::Stdout, out_r),
            output(StreamKind::Stderr, err_r),
        ],
        stdin,
    })
}

fn wire_tty() -> Result<Wiring, crate::error::MonitorError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(crate::error::sys_err("socketpair for the console"))?;
    Ok(Wiring {
        child: Stdio::Inherit,
        console: Some(theirs),
        console_ours: Some(ours),
        outputs: Vec::new(),
        stdin: None,
    })
}

/// After exec: take the pty master (tty), and make the streams to relay.
fn finish_wiring(
    wiring: Wiring,
    mode: InteractiveExec,
) -> Result<(Vec<Output>, ContainerInput), String> {
    let Some(console) = wiring.console_ours else {
        // stdin_once: the client's stdin EOF closes the process's stdin.
        return Ok((
            wiring.outputs,
            ContainerInput::new(wiring.stdin, None, true),
        ));
    };
    let master = stdio::receive_pty_master(&console).map_err(|e| chain(&e))?;
    stdio::set_nonblocking(&master).map_err(|e| chain(&e))?;
    let master = File::from(master);
    let dup = || {
        master
            .try_clone()
            .map_err(|e| format!("dup the pty master: {e}"))
    };
    let stdin = if mode.stdin { Some(dup()?) } else { None };
    let pty = Some(dup()?);
    let outputs = vec![Output {
        kind: StreamKind::Stdout,
        file: master,
        pty: true,
    }];
    Ok((outputs, ContainerInput::new(stdin, pty, true)))
}

fn kill_process_group(pid: i32) {
    // The group first (the process leads it), so nothing it spawned survives.
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

#[derive(Clone, Copy)]
enum Slot {
    Reaper,
    Socket,
    Output(usize),
    Stdin,
}

/// The daemon hung up.
struct DaemonGone;

impl Session {
    /// Relay until the process exits; returns the helper's exit code (the process's).
    pub fn run(mut self) -> i32 {
        let mut buf = vec![0u8; MAX_FRAME];
        // SIGCHLDs before the signalfd existed are not queued on it: look once.
        let mut exit = self.reaper.reap();
        while exit.is_none() {
            let ready = match self.wait() {
                Ok(ready) => ready,
                Err(e) => {
                    crate::report(format_args!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            for (slot, revents) in ready {
                let served = match slot {
                    Slot::Reaper => {
                        exit = exit.or(self.reaper.reap());
                        Ok(())
                    }
                    Slot::Socket => self.serve_socket(revents, &mut buf),
                    Slot::Output(i) => self.forward_output(i, &mut buf),
                    Slot::Stdin => {
                        self.input.flush();
                        Ok(())
                    }
                };
                if let Err(DaemonGone) = served {
                    return self.hang_up();
                }
            }
        }
        let code = exit.map_or(crate::exec::START_FAILED, |e| e.code);
        self.finish(code, &mut buf);
        code
    }

    fn wait(&self) -> nix::Result<Vec<(Slot, PollFlags)>> {
        let mut socket_events = PollFlags::empty();
        if !self.input.blocked() {
            socket_events |= PollFlags::POLLIN;
        }
        if self.unsent.is_some() {
            socket_events |= PollFlags::POLLOUT;
        }
        // Polled even for no event: its POLLHUP says the daemon is gone.
        let mut slots = vec![Slot::Reaper, Slot::Socket];
        let mut fds = vec![
            PollFd::new(self.reaper.fd(), PollFlags::POLLIN),
            PollFd::new(self.socket.as_fd(), socket_events),
        ];
        if self.unsent.is_none() {
            for (i, o) in self.outputs.iter().enumerate().filter(|(_, o)| o.open) {
                slots.push(Slot::Output(i));
                fds.push(PollFd::new(o.out.file.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Some(fd) = self.input.blocked_fd() {
            slots.push(Slot::Stdin);
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(fds
            .iter()
            .zip(slots)
            .filter_map(|(fd, slot)| fd.revents().filter(|r| !r.is_empty()).map(|r| (slot, r)))
            .collect())
    }

    /// Send what waited for room; take the daemon's frames.
    fn serve_socket(&mut self, revents: PollFlags, buf: &mut [u8]) -> Result<(), DaemonGone> {
        if revents.contains(PollFlags::POLLOUT) {
            self.send_unsent()?;
        }
        if revents.contains(PollFlags::POLLIN) {
            for _ in 0..FRAMES_PER_WAKEUP {
                if self.input.blocked() {
                    break;
                }
                match seqpacket::try_recv(self.socket.as_fd(), buf) {
                    Received::Message(n) => self.handle(&buf[..n]),
                    Received::WouldBlock => break,
                    Received::Closed | Received::Oversized => return Err(DaemonGone),
                }
            }
        }
        // Hung up with frames still unread is fine: they were for a process nobody
        // waits for any more.
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            return Err(DaemonGone);
        }
        Ok(())
    }

    fn handle(&mut self, message: &[u8]) {
        match Frame::parse(message) {
            Ok(Frame::Stdin(data)) => self.input.write(data),
            Ok(Frame::StdinEof) => self.input.client_stdin_ended(),
            Ok(Frame::Resize { width, height }) => self.input.resize(width, height),
            Ok(other) => crate::report(format_args!("exec: daemon sent {other:?}; ignored")),
            Err(e) => crate::report(format_args!("exec: bad frame from the daemon: {e}")),
        }
    }

    fn send_unsent(&mut self) -> Result<(), DaemonGone> {
        let Some(message) = &self.unsent else {
            return Ok(());
        };
        match seqpacket::try_send(self.socket.as_fd(), message) {
            Sent::Done => self.unsent = None,
            Sent::WouldBlock => {}
            Sent::PeerGone => return Err(DaemonGone),
        }
        Ok(())
    }

    /// Output `i` is readable: one read, one frame.
    fn forward_output(&mut self, i: usize, buf: &mut [u8]) -> Result<(), DaemonGone> {
        let Some(n) = self.read_output(i, buf) else {
            return Ok(());
        };
        match seqpacket::try_send(self.socket.as_fd(), &buf[..=n]) {
            Sent::Done => Ok(()),
            Sent::WouldBlock => {
                self.unsent = Some(buf[..=n].to_vec());
                Ok(())
            }
            Sent::PeerGone => Err(DaemonGone),
        }
    }

    /// Read output `i` into `buf` after the frame's kind byte; the payload length,
    /// `None` when there was nothing (or the stream ended).
    fn read_output(&mut self, i: usize, buf: &mut [u8]) -> Option<usize> {
        let o = self.outputs.get_mut(i)?;
        buf[0] = match o.out.kind {
            StreamKind::Stdout => coracle_monitor::protocol::frame_kind::STDOUT,
            StreamKind::Stderr => coracle_monitor::protocol::frame_kind::STDERR,
        };
        loop {
            match o.out.file.read(&mut buf[1..]) {
                Ok(0) => {
                    o.open = false;
                    return None;
                }
                Ok(n) => return Some(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) => {
                    // EIO: the pty has no slave left, its "EOF".
                    if e.raw_os_error() != Some(libc::EIO) {
                        crate::report(format_args!("exec: read {:?}: {e}", o.out.kind));
                    }
                    o.open = false;
                    return None;
                }
            }
        }
    }

    /// The process exited: send the output it left and the exit frame, waiting for
    /// room as long as the daemon reads.
    fn finish(&mut self, code: i32, buf: &mut [u8]) {
        if let Some(message) = self.unsent.take() {
            if !seqpacket::send_waiting(self.socket.as_fd(), &message, None) {
                return;
            }
        }
        for i in 0..self.outputs.len() {
            if !self.drain_output(i, buf) {
                return;
            }
        }
        let exit = Frame::Exit(code).encode();
        seqpacket::send_waiting(self.socket.as_fd(), &exit, None);
    }

    /// Send what output `i` still holds: a pipe until it is empty, a pty until its
    /// slave is gone or [`PTY_DRAIN`] passed. False when the daemon is gone.
    fn drain_output(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let deadline = Instant::now() + PTY_DRAIN;
        let mut total = 0;
        while self.outputs[i].open && total < DRAIN_LIMIT {
            match self.read_output(i, buf) {
                Some(n) => {
                    total += n;
                    if !seqpacket::send_waiting(self.socket.as_fd(), &buf[..=n], None) {
                        return false;
                    }
                }
                None if self.outputs[i].out.pty => {
                    // A pty hands over the slave's last writes asynchronously.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                    let mut fds = [PollFd::new(
                        self.outputs[i].out.file.as_fd(),
                        PollFlags::POLLIN,
                    )];
                    let _ = poll(&mut fds, timeout);
                }
                None => break,
            }
        }
        true
    }

    /// The daemon is gone before the process ended: kill it, as a terminal's hangup
    /// would, and reap it.
    fn hang_up(self) -> i32 {
        crate::report(format_args!(
            "exec: the daemon hung up; killing process group {}",
            self.pid
        ));
        kill_process_group(self.pid);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(self.pid), None);
        crate::exec::TIMED_OUT
    }
}
