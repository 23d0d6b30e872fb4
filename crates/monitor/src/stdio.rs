//! The container's standard streams, owned by the monitor.
//!
//! Without a terminal: a pipe each for stdout and stderr (the container gets the write
//! ends, the monitor reads), stdin /dev/null or a pipe whose write end the monitor
//! keeps (for attach). With a terminal: a console socket in the monitor dir; the init
//! allocates the pty inside the container and sends the master over it (SCM_RIGHTS),
//! and the master carries all output, logged as stdout.

use std::fs::File;
use std::io::{ErrorKind, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use coracle_oci::Stdio;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::cri_log::StreamKind;
use crate::error::{MonitorError, io_err, sys_err};

/// The console socket's name in the monitor dir (the monitor's cwd).
pub const CONSOLE_SOCKET: &str = "console.sock";

/// One stream the monitor reads.
pub struct Output {
    pub kind: StreamKind,
    pub file: File,
    /// The pty master (else a pipe).
    pub pty: bool,
}

/// What `prepare` made: hand `stdio`/`console_socket` to `Container::create`, then
/// call [`ContainerIo::finish`].
pub struct ContainerIo {
    pub stdio: Stdio,
    pub console_socket: Option<PathBuf>,
    console: Option<UnixListener>,
    outputs: Vec<Output>,
    stdin_writer: Option<OwnedFd>,
    keep_stdin: bool,
}

/// The monitor's ends of the container's streams, once it is created.
pub struct Streams {
    /// What to read: stdout and stderr pipes, or the pty master.
    pub outputs: Vec<Output>,
    /// Where attach input goes (non-blocking): the stdin pipe's write end, or the pty
    /// master; `None` when the container has no stdin.
    pub stdin: Option<File>,
    /// The pty master, for window size changes.
    pub pty_master: Option<File>,
}

pub fn pipe() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe2"))
}

pub fn set_nonblocking(fd: &impl std::os::fd::AsFd) -> Result<(), MonitorError> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(sys_err("fcntl F_GETFL"))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(sys_err("fcntl F_SETFL"))
}

pub fn dev_null() -> Result<OwnedFd, MonitorError> {
    File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(io_err("open", Path::new("/dev/null")))
}

/// Set up the streams. With `tty`, binds the console socket in the current directory.
pub fn prepare(tty: bool, keep_stdin: bool) -> Result<ContainerIo, MonitorError> {
    if tty {
        let path = Path::new(CONSOLE_SOCKET);
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale console socket", path)(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err("bind console socket", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("set console socket non-blocking", path))?;
        return Ok(ContainerIo {
            stdio: Stdio::Inherit,
            console_socket: Some(path.to_path_buf()),
            console: Some(listener),
            outputs: Vec::new(),
            stdin_writer: None,
            keep_stdin,
        });
    }
    let (stdin_r, stdin_writer) = if keep_stdin {
        let (r, w) = pipe()?;
        set_nonblocking(&w)?;
        (r, Some(w))
    } else {
        (dev_null()?, None)
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    set_nonblocking(&out_r)?;
    set_nonblocking(&err_r)?;
    Ok(ContainerIo {
        stdio: Stdio::Fds([stdin_r, out_w, err_w]),
        console_socket: None,
        console: None,
        outputs: vec![
            Output {
                kind: StreamKind::Stdout,
                file: out_r.into(),
                pty: false,
            },
            Output {
                kind: StreamKind::Stderr,
                file: err_r.into(),
                pty: false,
            },
        ],
        stdin_writer,
        keep_stdin,
    })
}

impl ContainerIo {
    /// After a successful create: take the pty master from the console socket (the
    /// init sent it before reporting ready), remove the socket.
    pub fn finish(mut self) -> Result<Streams, MonitorError> {
        let mut streams = Streams {
            outputs: std::mem::take(&mut self.outputs),
            stdin: self.stdin_writer.take().map(File::from),
            pty_master: None,
        };
        if let Some(listener) = self.console.take() {
            let _ = std::fs::remove_file(CONSOLE_SOCKET);
            let master = accept_pty_master(&listener)?;
            set_nonblocking(&master)?;
            let master = File::from(master);
            let dup = |what| {
                master
                    .try_clone()
                    .map_err(io_err(what, Path::new(CONSOLE_SOCKET)))
            };
            if self.keep_stdin {
                streams.stdin = Some(dup("dup the pty master for stdin")?);
            }
            streams.pty_master = Some(dup("dup the pty master for resize")?);
            streams.outputs.push(Output {
                kind: StreamKind::Stdout,
                file: master,
                pty: true,
            });
        }
        Ok(streams)
    }

    /// After a failed create.
    pub fn abandon(self) {
        if self.console.is_some() {
            let _ = std::fs::remove_file(CONSOLE_SOCKET);
        }
    }
}

fn accept_pty_master(listener: &UnixListener) -> Result<OwnedFd, MonitorError> {
    let path = Path::new(CONSOLE_SOCKET);
    let (conn, _) = listener.accept().map_err(|e| {
        if e.kind() == ErrorKind::WouldBlock {
            MonitorError::Console(
                "the container process did not connect (is process.terminal set?)".into(),
            )
        } else {
            io_err("accept on console socket", path)(e)
        }
    })?;
    receive_pty_master(&conn)
}

/// The pty master a process sent on the console connection `conn` (already there:
/// the process sends it before its execve, which the executor waits for).
pub fn receive_pty_master(conn: &impl AsFd) -> Result<OwnedFd, MonitorError> {
    // Already queued: no waiting.
    let mut payload = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut payload)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            conn.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Err(nix::Error::EINTR) => continue,
            other => break other.map_err(sys_err("recvmsg on console socket"))?,
        }
    };
    let mut fds = Vec::new();
    for c in msg
        .cmsgs()
        .map_err(sys_err("console socket control message"))?
    {
        if let ControlMessageOwned::ScmRights(received) = c {
            fds.extend(received);
        }
    }
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        // SAFETY: SCM_RIGHTS installed these fds in our table just now; nobody else
        // owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if owned.len() != 1 {
        return Err(MonitorError::Console(format!(
            "expected one pty master fd, got {}",
            owned.len()
        )));
    }
    owned
        .pop()
        .ok_or_else(|| MonitorError::Console("no pty master".into()))
}
