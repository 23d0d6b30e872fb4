//! The daemon's side of the attach frames (`coracle_monitor::protocol::Frame`): a
//! session between a client's [`StreamIo`] and either a container monitor's attach
//! socket (Attach) or an interactive exec helper (Exec).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use coracle_monitor::protocol::{ATTACH_SOCKET, ExecConfig, Frame, MAX_FRAME, MAX_FRAME_PAYLOAD};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, recv, send, socket, socketpair,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::monitor_client::{EXEC_HELPER_FAILED, MonitorError, exit_code_of, helper_failure};
use crate::streaming_io::{StreamIo, TerminalSize};

/// How long a connect may wait for the monitor to make room in its accept queue.
const CONNECT_PATIENCE: Duration = Duration::from_secs(2);
/// Kept of an exec helper's stderr (its error messages are one line).
const HELPER_STDERR_CAP: usize = 64 * 1024;

/// A non-blocking `SOCK_SEQPACKET` socket carrying frames.
pub(crate) struct FrameSocket {
    fd: AsyncFd<OwnedFd>,
}

impl FrameSocket {
    fn new(fd: OwnedFd) -> io::Result<FrameSocket> {
        set_nonblocking(&fd)?;
        // SAFETY: the OwnedFd moves into the AsyncFd: it stays open, and is the same
        // fd, for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(FrameSocket { fd })
    }

    /// Send one frame, waiting for room.
    async fn send(&self, frame: Frame<'_>) -> io::Result<()> {
        let message = frame.encode();
        loop {
            let mut ready = self.fd.writable().await?;
            let sent = ready.try_io(|fd| {
                let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                send(fd.get_ref().as_raw_fd(), &message, flags).map_err(io::Error::from)
            });
            if let Ok(result) = sent {
                return result.map(drop);
            }
        }
    }

    /// Receive one message into `buf` (which holds the longest frame); 0 at EOF.
    /// Cancel-safe: a message is only taken by a receive that completes.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            let received = ready.try_io(|fd| {
                let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC;
                recv(fd.get_ref().as_raw_fd(), buf, flags).map_err(io::Error::from)
            });
            match received {
                Ok(Ok(n)) if n > buf.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a {n}-byte frame, longer than the protocol allows"),
                    ));
                }
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Connect to the attach socket of the monitor whose dir is `monitor_dir`.
pub(crate) async fn connect_attach(monitor_dir: &Path) -> Result<FrameSocket, MonitorError> {
    let path = monitor_dir.join(ATTACH_SOCKET);
    let attach_err = |source: io::Error| MonitorError::Attach {
        path: path.clone(),
        source,
    };
    // As for the control socket: the dir's path may be too long for sun_path.
    let dir = std::fs::File::open(monitor_dir).map_err(attach_err)?;
    let short = format!("/proc/self/fd/{}/{ATTACH_SOCKET}", dir.as_raw_fd());
    let address = UnixAddr::new(short.as_str()).map_err(|e| attach_err(e.into()))?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| attach_err(e.into()))?;
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match connect(fd.as_raw_fd(), &address) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            // A unix socket connects at once, or says its accept queue is full.
            Err(Errno::EAGAIN) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(attach_err(e.into())),
        }
    }
    FrameSocket::new(fd).map_err(attach_err)
}

/// A running `coracle-monitor exec` in interactive mode.
struct ExecHelper {
    socket: FrameSocket,
    child: tokio::process::Child,
    /// What the helper wrote on stderr, once it exited.
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

/// Spawn the interactive exec helper: the config on its stdin, one end of a
/// seqpacket pair as its stdout. Dropping the returned socket is a hangup: the
/// helper then kills the process and exits (and tokio reaps it).
async fn spawn_exec_helper(binary: &Path, config: &ExecConfig) -> Result<ExecHelper, MonitorError> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut child = {
        // Dropped at the end of the block: our copy of `theirs` must not outlive the
        // spawn, or a dead helper would never read as EOF.
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("exec")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(theirs))
            .stderr(Stdio::piped());
        command.spawn().map_err(|source| MonitorError::Spawn {
            path: binary.to_owned(),
            source,
        })?
    };
    let request = serde_json::to_vec(config).map_err(io::Error::other)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&request).await?;
        // Dropped here: the helper reads its config to EOF.
    }
    let stderr = child.stderr.take();
    let stderr = tokio::spawn(async move {
        match stderr {
            Some(pipe) => read_capped(pipe, HELPER_STDERR_CAP).await,
            None => Vec::new(),
        }
    });
    Ok(ExecHelper {
        socket: FrameSocket::new(ours)?,
        child,
        stderr,
    })
}

/// Run an interactive exec to its end: the helper, then the session with `io`, then
/// the exit code (the exit frame's, else the helper's own status).
pub(crate) async fn run_interactive_exec(
    binary: &Path,
    config: &ExecConfig,
    io: StreamIo,
) -> Result<i32, MonitorError> {
    let helper = spawn_exec_helper(binary, config).await?;
    let rules = SessionRules {
        forward_stdin: true,
        end_with_stdin: false,
        end_when_output_fails: false,
    };
    let session = run_session(&helper.socket, io, rules).await;
    let ExecHelper {
        socket,
        mut child,
        stderr,
    } = helper;
    // After an exit frame the helper is exiting anyway; after a failure this hangs
    // up, and the helper kills the process.
    drop(socket);
    let status = child.wait().await?;
    let stderr = stderr.await.unwrap_or_default();
    match session? {
        Some(code) => Ok(code),
        None => helper_exit_code(status, &stderr),
    }
}

/// The exit code of an interactive exec whose helper closed without an exit frame:
/// its own exit status, unless that says it never started the process.
fn helper_exit_code(status: std::process::ExitStatus, stderr: &[u8]) -> Result<i32, MonitorError> {
    let code = exit_code_of(status);
    if code == EXEC_HELPER_FAILED {
        if let Some(message) = helper_failure(stderr) {
            return Err(MonitorError::CreateFailed(message));
        }
    }
    Ok(code)
}

/// Read to EOF, keeping the first `cap` bytes.
async fn read_capped(mut reader: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// How a session ends, besides the monitor's exit frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionRules {
    /// Forward the client's stdin (when it has one).
    pub forward_stdin: bool,
    /// The end of the client's stdin ends the session (an attach without
    /// stdin_once, as containerd).
    pub end_with_stdin: bool,
    /// A client that no longer takes output ends the session (attach); otherwise its
    /// output is dropped and the session goes on to learn the exit code (exec).
    pub end_when_output_fails: bool,
}

/// Relay between `io` and the socket until the monitor's exit frame, the socket's
/// EOF, or an end the rules allow. Returns the exit code when the frame came.
pub(crate) async fn run_session(
    socket: &FrameSocket,
    io: StreamIo,
    rules: SessionRules,
) -> io::Result<Option<i32>> {
    let mut relay = Relay {
        stdout: io.stdout,
        stderr: io.stderr,
        rules,
    };
    let mut stdin = io.stdin.filter(|_| rules.forward_stdin);
    let mut resize = io.resize;
    if stdin.is_some() {
        // Announces a stdin: its end counts for the container's stdin_once.
        send_or_closed(socket, Frame::Stdin(&[])).await?;
    }
    let mut frame = vec![0u8; MAX_FRAME];
    let mut input = vec![0u8; MAX_FRAME_PAYLOAD];
    loop {
        tokio::select! {
            received = socket.recv(&mut frame) => {
                let n = received?;
                if n == 0 {
                    return Ok(None);
                }
                match relay.deliver(&frame[..n]).await {
                    Delivered::Continue => {}
                    Delivered::Exit(code) => return Ok(Some(code)),
                    Delivered::ClientGone => return Ok(None),
                }
            }
            read = read_stdin(&mut stdin, &mut input), if stdin.is_some() => {
                let n = read.unwrap_or(0);
                let frame = if n == 0 { Frame::StdinEof } else { Frame::Stdin(&input[..n]) };
                if !send_or_closed(socket, frame).await? {
                    return Ok(None);
                }
                if n == 0 {
                    stdin = None;
                    if rules.end_with_stdin {
                        return Ok(None);
                    }
                }
            }
            size = next_size(&mut resize), if resize.is_some() => match size {
                Some(TerminalSize { width, height }) => {
                    if !send_or_closed(socket, Frame::Resize { width, height }).await? {
                        return Ok(None);
                    }
                }
                None => resize = None,
            },
        }
    }
}

/// Send; false when the monitor closed the connection (the container exited, or the
/// monitor dropped us), which ends a session without an error.
async fn send_or_closed(socket: &FrameSocket, frame: Frame<'_>) -> io::Result<bool> {
    match socket.send(frame).await {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn read_stdin(
    stdin: &mut Option<Pin<Box<dyn AsyncRead + Send>>>,
    buf: &mut [u8],
) -> io::Result<usize> {
    match stdin {
        Some(reader) => reader.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn next_size(
    resize: &mut Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
) -> Option<TerminalSize> {
    match resize {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Where output frames go.
struct Relay {
    stdout: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    stderr: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    rules: SessionRules,
}

enum Delivered {
    Continue,
    Exit(i32),
    ClientGone,
}

impl Relay {
    async fn deliver(&mut self, message: &[u8]) -> Delivered {
        let (writer, data) = match Frame::parse(message) {
            Ok(Frame::Stdout(data)) => (&mut self.stdout, data),
            Ok(Frame::Stderr(data)) => (&mut self.stderr, data),
            Ok(Frame::Exit(code)) => return Delivered::Exit(code),
            Ok(other) => {
                tracing::warn!(frame = ?other, "unexpected frame from the monitor; ignored");
                return Delivered::Continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "bad frame from the monitor; ignored");
                return Delivered::Continue;
            }
        };
        let Some(w) = writer else {
            return Delivered::Continue;
        };
        if let Err(err) = write_and_flush(w, data).await {
            tracing::debug!(error = %err, "the streaming client stopped taking output");
            if self.rules.end_when_output_fails {
                return Delivered::ClientGone;
            }
            *writer = None;
        }
        Delivered::Continue
    }
}

async fn write_and_flush(w: &mut Pin<Box<dyn AsyncWrite + Send>>, data: &[u8]) -> io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our end and the monitor's end of a connection.
    fn pair() -> (FrameSocket, FrameSocket) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        (
            FrameSocket::new(a).expect("register"),
            FrameSocket::new(b).expect("register"),
        )
    }

    struct Client {
        stdin: tokio::io::DuplexStream,
        stdout: tokio::io::DuplexStream,
        stderr: tokio::io::DuplexStream,
        resize: tokio::sync::mpsc::Sender<TerminalSize>,
    }

    fn stream_io() -> (StreamIo, Client) {
        let (stdin, stdin_theirs) = tokio::io::duplex(1024);
        let (stdout, stdout_theirs) = tokio::io::duplex(1024);
        let (stderr, stderr_theirs) = tokio::io::duplex(1024);
        let (resize, resize_rx) = tokio::sync::mpsc::channel(1);
        let io = StreamIo {
            stdin: Some(Box::pin(stdin_theirs)),
            stdout: Some(Box::pin(stdout_theirs)),
            stderr: Some(Box::pin(stderr_theirs)),
            tty: false,
            resize: Some(resize_rx),
        };
        let client = Client {
            stdin,
            stdout,
            stderr,
            resize,
        };
        (io, client)
    }

    const ATTACH: SessionRules = SessionRules {
        forward_stdin: true,
        end_with_stdin: true,
        end_when_output_fails: true,
    };
    const EXEC: SessionRules = SessionRules {
        forward_stdin: true,
        end_with_stdin: false,
        end_when_output_fails: false,
    };

    /// The next frame the monitor's end receives, as an owned message.
    async fn next(monitor: &FrameSocket) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_FRAME];
        let n = monitor.recv(&mut buf).await.expect("recv");
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn output_goes_to_its_stream_and_the_exit_frame_ends_the_session() {
        let (ours, monitor) = pair();
        let (io, mut client) = stream_io();
        let fake_monitor = async {
            assert_eq!(
                next(&monitor).await,
                Frame::Stdin(b"").encode(),
                "stdin announced"
            );
            monitor.send(Frame::Stdout(b"out")).await.expect("send");
            monitor.send(Frame::Stderr(b"err")).await.expect("send");
            monitor.send(Frame::Exit(7)).await.expect("send");
        };
        let (ended, ()) = tokio::join!(run_session(&ours, io, EXEC), fake_monitor);
        assert_eq!(ended.expect("session"), Some(7));
        let mut out = [0u8; 3];
        client.stdout.read_exact(&mut out).await.expect("stdout");
        assert_eq!(&out, b"out");
        client.stderr.read_exact(&mut out).await.expect("stderr");
        assert_eq!(&out, b"err");
    }

    #[tokio::test]
    async fn stdin_and_resize_become_frames_and_stdin_eof_ends_an_attach() {
        let (ours, monitor) = pair();
        let (io, client) = stream_io();
        let Client {
            mut stdin,
            resize,
            stdout: _stdout,
            stderr: _stderr,
        } = client;
        let fake_monitor = async {
            assert_eq!(next(&monitor).await, Frame::Stdin(b"").encode());
            resize
                .send(TerminalSize {
                    width: 80,
                    height: 25,
                })
                .await
                .expect("resize");
            let resized = Frame::Resize {
                width: 80,
                height: 25,
            };
            assert_eq!(next(&monitor).await, resized.encode());
            stdin.write_all(b"typed").await.expect("stdin");
            assert_eq!(next(&monitor).await, Frame::Stdin(b"typed").encode());
            drop(stdin);
            assert_eq!(next(&monitor).await, Frame::StdinEof.encode());
        };
        let (ended, ()) = tokio::join!(run_session(&ours, io, ATTACH), fake_monitor);
        assert_eq!(ended.expect("session"), None, "stdin EOF ends an attach");
    }

    #[tokio::test]
    async fn an_exec_outlives_its_stdin_and_a_client_that_stopped_reading() {
        let (ours, monitor) = pair();
        let (io, client) = stream_io();
        let Client { stdin, stdout, .. } = client;
        drop(stdout);
        drop(stdin);
        let fake_monitor = async {
            assert_eq!(next(&monitor).await, Frame::Stdin(b"").encode());
            assert_eq!(next(&monitor).await, Frame::StdinEof.encode());
            monitor
                .send(Frame::Stdout(b"nobody reads this"))
                .await
                .expect("send");
            monitor.send(Frame::Exit(0)).await.expect("send");
        };
        let (ended, ()) = tokio::join!(run_session(&ours, io, EXEC), fake_monitor);
        assert_eq!(ended.expect("session"), Some(0));
    }

    #[tokio::test]
    async fn an_attach_ends_when_its_client_stops_reading_or_the_monitor_closes() {
        let (ours, monitor) = pair();
        let (io, client) = stream_io();
        drop(client.stdout);
        let no_stdin = SessionRules {
            forward_stdin: false,
            ..ATTACH
        };
        let fake_monitor = async {
            monitor.send(Frame::Stdout(b"x")).await.expect("send");
        };
        let (ended, ()) = tokio::join!(run_session(&ours, io, no_stdin), fake_monitor);
        assert_eq!(ended.expect("session"), None);

        let (ours, monitor) = pair();
        let (io, _client) = stream_io();
        drop(monitor);
        let ended = run_session(&ours, io, no_stdin).await;
        assert_eq!(ended.expect("session"), None);
    }

    #[test]
    fn a_helper_that_could_not_start_is_an_error_not_an_exit_code() {
        use std::os::unix::process::ExitStatusExt;
        let failed = std::process::ExitStatus::from_raw(255 << 8);
        let message = b"coracle-monitor: exec: no such file\n";
        assert!(helper_exit_code(failed, message).is_err());
        assert_eq!(helper_exit_code(failed, b"").ok(), Some(255));
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(helper_exit_code(killed, b"").ok(), Some(137));
    }
}
