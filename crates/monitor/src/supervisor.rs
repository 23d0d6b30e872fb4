//! The real monitor, after the double fork: a session of its own, child subreaper,
//! parent of the container init. Creates the container, answers the handshake, then
//! runs the event loop until the init exits and its exit record is written.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use coracle_monitor::protocol::{
    ATTACH_SOCKET, CONTROL_SOCKET, ControlRequest, ControlResponse, ExitRecord, Handshake,
    MAX_FRAME, MONITOR_LOG, MonitorConfig,
};
use coracle_oci::{Container, CreateOptions};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::attach::AttachServer;
use crate::child_reaper::{InitExit, Reaper};
use crate::container_input::ContainerInput;
use crate::control::{ControlServer, Handler};
use crate::cri_log::{CriLog, LineSplitter, StreamKind};
use crate::error::{MonitorError, chain, io_err, sys_err};
use crate::stdio::{self, Output, Streams};
use crate::{exit_file, sys};

/// Output read per stream after the init exited: enough for anything buffered in a
/// pipe or pty, bounded so that an orphan that keeps writing (no PID namespace of the
/// container's own) cannot keep the exit record from being written.
const DRAIN_LIMIT: usize = 4 << 20;

/// How long the pty may take, after the init exited, to hand over what the init wrote
/// last: a pty slave's output reaches the master through the kernel's flip-buffer work
/// queue, not synchronously as a pipe's does. EIO (no slave left) ends it earlier.
const PTY_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Bytes read per read(2): one attach frame's payload, read in after its kind byte.
const READ_CHUNK: usize = MAX_FRAME - 1;

/// Run the monitor; `handshake` is where the one handshake line goes. Never returns.
pub fn main(cfg: MonitorConfig, handshake: OwnedFd) -> ! {
    match setup(&cfg) {
        Ok(mut m) => {
            let answer = Handshake::Created {
                monitor_pid: std::process::id() as i32,
                monitor_start_time: coracle_oci::state::proc_stat(nix::unistd::getpid().as_raw())
                    .map_or(0, |stat| stat.start_time),
                container_pid: m.init_pid,
            };
            send_handshake(handshake, &answer);
            let code = m.run(&cfg);
            std::process::exit(code)
        }
        Err(e) => {
            let message = chain(&e);
            crate::report(format_args!("{message}"));
            send_handshake(handshake, &Handshake::Failed { message });
            std::process::exit(1)
        }
    }
}

fn send_handshake(to: OwnedFd, answer: &Handshake) {
    let Ok(mut line) = serde_json::to_vec(answer) else {
        return;
    };
    line.push(b'\n');
    // The spawner may be gone (killed); the monitor carries on regardless.
    let _ = nix::sys::socket::send(
        to.as_raw_fd(),
        &line,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    );
}

/// What the event loop works on.
struct Monitor {
    init_pid: i32,
    reaper: Reaper,
    streams: Vec<Stream>,
    log: CriLog,
    control: ControlServer,
    attach: AttachServer,
    /// The container's stdin (kept open while we hold it) and pty, for attach.
    input: ContainerInput,
    dir: PathBuf,
}

struct Stream {
    out: Output,
    lines: LineSplitter,
    open: bool,
}

/// Detach, prepare the dir, stdio, log and control socket, create the container.
fn setup(cfg: &MonitorConfig) -> Result<Monitor, MonitorError> {
    nix::unistd::setsid().map_err(sys_err("setsid"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(sys_err("PR_SET_CHILD_SUBREAPER"))?;
    // Nothing reading our /proc/<pid> files should reach the runtime binary.
    nix::sys::prctl::set_dumpable(false).map_err(sys_err("PR_SET_DUMPABLE"))?;
    // The spawner's pipes must not stay open through us (the daemon would wait for
    // their EOF) nor reach the container.
    redirect_stdio_to_null()?;
    let dir = cfg.dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_err("create monitor dir", &dir))?;
    // Sockets are bound by relative name: an absolute path may be longer than
    // sun_path's 108 bytes.
    nix::unistd::chdir(&dir).map_err(sys_err("chdir to the monitor dir"))?;
    let monitor_log = dir.join(MONITOR_LOG);
    let errors = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&monitor_log)
        .map_err(io_err("open", &monitor_log))?;
    nix::unistd::dup2_stderr(errors).map_err(sys_err("dup2 monitor log onto stderr"))?;

    let log = CriLog::open(cfg.log_path.as_deref()).map_err(io_err(
        "open log",
        cfg.log_path.as_deref().unwrap_or(Path::new("")),
    ))?;
    let (control, attach) = bind_sockets(&dir)?;
    let created = stdio::prepare(cfg.tty, cfg.stdin).and_then(|io| create(cfg, io));
    let (init_pid, reaper, streams) = match created {
        Ok(v) => v,
        Err(e) => {
            remove_sockets();
            return Err(e);
        }
    };
    let Streams {
        outputs,
        stdin,
        pty_master,
    } = streams;
    sys::trim_heap();
    sys::release_startup_code();
    Ok(Monitor {
        init_pid,
        reaper,
        streams: outputs
            .into_iter()
            .map(|out| Stream {
                out,
                lines: LineSplitter::default(),
                open: true,
            })
            .collect(),
        log,
        control,
        attach,
        input: ContainerInput::new(stdin, pty_master, cfg.stdin_once),
        dir,
    })
}

/// The control and attach sockets, by relative name in the monitor dir (the cwd).
fn bind_sockets(dir: &Path) -> Result<(ControlServer, AttachServer), MonitorError> {
    let control = ControlServer::bind(Path::new(CONTROL_SOCKET))
        .map_err(io_err("bind control socket", &dir.join(CONTROL_SOCKET)))?;
    match AttachServer::bind(Path::new(ATTACH_SOCKET)) {
        Ok(attach) => Ok((control, attach)),
        Err(e) => {
            remove_sockets();
            Err(io_err("bind attach socket", &dir.join(ATTACH_SOCKET))(e))
        }
    }
}

fn remove_sockets() {
    let _ = std::fs::remove_file(CONTROL_SOCKET);
    let _ = std::fs::remove_file(ATTACH_SOCKET);
}

type Created = (i32, Reaper, Streams);

/// `Container::create` with our stdio, then what the event loop needs of it. On any
/// failure after create the container is deleted: the daemon will never hear of it.
/// The Container handle (with its parsed spec) is dropped: the exit path loads it
/// again for the OOM count.
fn create(cfg: &MonitorConfig, mut io: stdio::ContainerIo) -> Result<Created, MonitorError> {
    let mut opts = CreateOptions::new(&cfg.oci_state_root);
    opts.console_socket = io.console_socket.take();
    opts.stdio = std::mem::take(&mut io.stdio);
    let container = match Container::create(&cfg.container_id, &cfg.bundle, opts) {
        Ok(c) => c,
        Err(source) => {
            io.abandon();
            return Err(MonitorError::Create {
                id: cfg.container_id.clone(),
                source,
            });
        }
    };
    let pid = container.pid();
    let finished = io.finish().and_then(|streams| {
        let reaper = Reaper::new(pid).map_err(sys_err("signalfd for SIGCHLD"))?;
        sys::block_sigpipe().map_err(sys_err("block SIGPIPE"))?;
        Ok((pid, reaper, streams))
    });
    match finished {
        Ok(created) => Ok(created),
        Err(e) => {
            if let Err(d) = container.delete(true) {
                crate::report(format_args!("delete after failed setup: {}", chain(&d)));
            }
            Err(e)
        }
    }
}

fn redirect_stdio_to_null() -> Result<(), MonitorError> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("open", Path::new("/dev/null")))?;
    nix::unistd::dup2_stdin(&null).map_err(sys_err("dup2 /dev/null onto stdin"))?;
    nix::unistd::dup2_stdout(&null).map_err(sys_err("dup2 /dev/null onto stdout"))?;
    nix::unistd::dup2_stderr(&null).map_err(sys_err("dup2 /dev/null onto stderr"))
}

impl Handler for CriLog {
    fn handle(&mut self, req: ControlRequest) -> ControlResponse {
        match req {
            ControlRequest::ReopenLog => match self.reopen() {
                Ok(()) => ControlResponse::Ok,
                Err(e) => ControlResponse::Error {
                    message: format!("reopen log: {e}"),
                },
            },
        }
    }
}

/// Which fd a poll slot was.
#[derive(Clone, Copy)]
enum Slot {
    Reaper,
    Listener,
    Stream(usize),
    Conn(usize),
    AttachListener,
    AttachClient(usize),
    /// The container's stdin has room again.
    Stdin,
}

impl Monitor {
    /// The event loop. Returns the process exit code.
    fn run(&mut self, cfg: &MonitorConfig) -> i32 {
        // SIGCHLDs before the signalfd existed are not queued on it: look once.
        let mut exit = self.reaper.reap();
        let mut buf = vec![0u8; MAX_FRAME];
        while exit.is_none() {
            let ready = match self.wait() {
                Ok(r) => r,
                Err(e) => {
                    crate::report(format_args!("poll: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            };
            // Control connections close as they are served: walk them back to front
            // so the indices of the ones not served yet stay valid. Attach clients are
            // only marked closed, and removed after the round.
            for (slot, revents) in ready.into_iter().rev() {
                match slot {
                    Slot::Reaper => exit = exit.or(self.reaper.reap()),
                    Slot::Listener => self.control.accept(),
                    Slot::Stream(i) => {
                        self.read_stream(i, &mut buf, READ_CHUNK);
                    }
                    Slot::Conn(i) => {
                        self.control.serve(i, &mut self.log);
                    }
                    Slot::AttachListener => self.attach.accept(),
                    Slot::AttachClient(i) => {
                        self.attach.serve(i, revents, &mut self.input, &mut buf);
                    }
                    Slot::Stdin => self.input.flush(),
                }
            }
            self.attach.remove_closed(&mut self.input);
        }
        let exit = exit.unwrap_or(InitExit {
            code: 255,
            signal: None,
            finished_at: crate::timestamp::now_ns(),
        });
        for i in 0..self.streams.len() {
            self.read_stream(i, &mut buf, DRAIN_LIMIT);
            if self.streams[i].out.pty {
                self.drain_pty(i, &mut buf);
            }
            let s = &mut self.streams[i];
            self.log.finish(s.out.kind, &mut s.lines);
        }
        let record = ExitRecord {
            exit_code: exit.code,
            signal: exit.signal,
            finished_at: exit.finished_at,
            oom_killed: oom_killed(cfg),
        };
        remove_sockets();
        self.attach.finish(exit.code);
        match exit_file::write(&self.dir, &record) {
            Ok(()) => 0,
            Err(e) => {
                crate::report(format_args!("{}", chain(&e)));
                1
            }
        }
    }

    /// Poll every fd; returns the slots that are ready.
    fn wait(&self) -> nix::Result<Vec<(Slot, PollFlags)>> {
        let mut slots = vec![Slot::Reaper, Slot::Listener, Slot::AttachListener];
        let mut fds = vec![
            PollFd::new(self.reaper.fd(), PollFlags::POLLIN),
            PollFd::new(self.control.listener_fd(), PollFlags::POLLIN),
            PollFd::new(self.attach.listener_fd(), PollFlags::POLLIN),
        ];
        for (i, s) in self.streams.iter().enumerate().filter(|(_, s)| s.open) {
            slots.push(Slot::Stream(i));
            fds.push(PollFd::new(s.out.file.as_fd(), PollFlags::POLLIN));
        }
        for (i, fd) in self.control.conn_fds().enumerate() {
            slots.push(Slot::Conn(i));
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        for (i, fd, events) in self.attach.polls(self.input.blocked()) {
            slots.push(Slot::AttachClient(i));
            fds.push(PollFd::new(fd, events));
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

    /// After the init exited: read the pty until it reports EIO or PTY_DRAIN passed.
    fn drain_pty(&mut self, i: usize, buf: &mut [u8]) {
        let deadline = std::time::Instant::now() + PTY_DRAIN;
        let mut total = 0;
        while self.streams[i].open && total < DRAIN_LIMIT {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(
                self.streams[i].out.file.as_fd(),
                PollFlags::POLLIN,
            )];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(_) => break,
            }
            total += self.read_stream(i, buf, DRAIN_LIMIT - total);
        }
    }

    /// Read stream `i` until it would block, ends, or `limit` bytes were read; log it.
    /// `buf` holds a frame: the output is read in after the kind byte, so attach
    /// clients get it without a copy.
    fn read_stream(&mut self, i: usize, buf: &mut [u8], limit: usize) -> usize {
        let s = &mut self.streams[i];
        let mut total = 0;
        buf[0] = frame_kind(s.out.kind);
        while s.open && total < limit {
            match s.out.file.read(&mut buf[1..]) {
                Ok(0) => s.open = false,
                Ok(n) => {
                    total += n;
                    self.log.write(s.out.kind, &mut s.lines, &buf[1..=n]);
                    self.attach.broadcast(&buf[..=n]);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    // EIO: the pty has no slave left, its "EOF".
                    if e.raw_os_error() != Some(libc::EIO) {
                        crate::report(format_args!("read container {:?}: {e}", s.out.kind));
                    }
                    s.open = false;
                }
            }
        }
        if !s.open {
            self.log.finish(s.out.kind, &mut s.lines);
        }
        total
    }
}

fn frame_kind(kind: StreamKind) -> u8 {
    match kind {
        StreamKind::Stdout => coracle_monitor::protocol::frame_kind::STDOUT,
        StreamKind::Stderr => coracle_monitor::protocol::frame_kind::STDERR,
    }
}

/// Whether the kernel's OOM killer hit the container's cgroup. Read after the init
/// exited and before the daemon deletes the container (it waits for our exit record).
fn oom_killed(cfg: &MonitorConfig) -> bool {
    let count =
        Container::load(&cfg.oci_state_root, &cfg.container_id).and_then(|c| c.oom_kill_count());
    match count {
        Ok(n) => n > 0,
        Err(e) => {
            crate::report(format_args!("read OOM kill count: {}", chain(&e)));
            false
        }
    }
}
