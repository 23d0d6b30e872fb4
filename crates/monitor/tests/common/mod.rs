//! Shared helpers of the monitor's root integration tests: a busybox bundle, the
//! monitor binary driven as the daemon drives it (config on stdin, one handshake line
//! on stdout), CRI log parsing, and a guard that removes the container, its cgroup and
//! the monitor whatever the test's outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coracle_monitor::protocol::{
    ATTACH_SOCKET, CONTROL_SOCKET, ControlRequest, ControlResponse, EXIT_FILE, ExitRecord, Frame,
    Handshake, MAX_FRAME, MonitorConfig,
};
use coracle_oci::Container;
use serde_json::{Value, json};

/// These tests use the kernel for real: they must fail, not skip, without root.
pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the monitor tests need root (namespaces, mounts, cgroups)"
    );
}

/// The binary under test; `CORACLE_MONITOR_BIN` points the tests at another build
/// (the release binary, to measure its memory).
pub fn monitor_bin() -> PathBuf {
    std::env::var_os("CORACLE_MONITOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_coracle-monitor")))
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

/// A rootfs with busybox and its applets.
pub fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let path = dir.join(applet);
        if applet.is_empty() || path.exists() {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", &path).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

/// One container under test: its bundle, state root, monitor dir and log in a temp dir.
pub struct TestContainer {
    pub id: String,
    pub cgroup_path: String,
    pub tmp: tempfile::TempDir,
    pub spec: Value,
    monitor_pid: Option<i32>,
}

impl TestContainer {
    /// A container running `args` with mount, pid, ipc and uts namespaces and a cgroup
    /// of its own.
    pub fn new(test: &str, args: &[&str]) -> Self {
        assert_root();
        let suffix = unique_suffix();
        let tmp = tempfile::Builder::new()
            .prefix("coracle-monitor-test-")
            .tempdir()
            .unwrap();
        busybox_rootfs(&tmp.path().join("bundle/rootfs"));
        let cgroup_path = format!("/coracle-monitor-test-{test}-{suffix}");
        let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
        spec["root"] = json!({ "path": "rootfs", "readonly": false });
        spec["hostname"] = json!("monitor-test");
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(false);
        spec["linux"]["namespaces"] =
            json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        spec["linux"]["cgroupsPath"] = json!(cgroup_path);
        let t = TestContainer {
            id: format!("{test}-{suffix}"),
            cgroup_path,
            tmp,
            spec,
            monitor_pid: None,
        };
        t.write_spec();
        t
    }

    pub fn write_spec(&self) {
        std::fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }

    pub fn bundle(&self) -> PathBuf {
        self.tmp.path().join("bundle")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    pub fn state_root(&self) -> PathBuf {
        self.tmp.path().join("oci-state")
    }

    /// The monitor dir (the monitor creates it).
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("monitor")
    }

    /// The CRI log, in a directory that does not exist yet.
    pub fn log_path(&self) -> PathBuf {
        self.tmp.path().join("logs/ctr/0.log")
    }

    pub fn config(&self) -> MonitorConfig {
        MonitorConfig {
            container_id: self.id.clone(),
            bundle: self.bundle(),
            oci_state_root: self.state_root(),
            dir: self.dir(),
            log_path: Some(self.log_path()),
            tty: false,
            stdin: false,
            stdin_once: false,
        }
    }

    /// Spawn `coracle-monitor run` as the daemon does; returns the handshake and the
    /// spawner's exit code. The spawner must exit, and close its stdout, promptly.
    pub fn spawn_monitor(&mut self, cfg: &MonitorConfig) -> (Handshake, i32) {
        // From the test's temp dir, so a config with relative paths means the same.
        let mut child = Command::new(monitor_bin())
            .arg("run")
            .current_dir(self.tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(cfg).unwrap())
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the spawner did not exit (or kept its stdout open) within 60s")
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.matches('\n').count(),
            1,
            "one handshake line expected, got {stdout:?} (stderr {:?})",
            String::from_utf8_lossy(&out.stderr)
        );
        let h: Handshake = serde_json::from_str(stdout.trim_end()).unwrap();
        if let Handshake::Created { monitor_pid, .. } = &h {
            self.monitor_pid = Some(*monitor_pid);
        }
        (h, out.status.code().unwrap_or(-1))
    }

    /// The config with every path relative to the temp dir.
    pub fn relative_config(&self) -> MonitorConfig {
        MonitorConfig {
            bundle: "bundle".into(),
            oci_state_root: "oci-state".into(),
            dir: "monitor".into(),
            log_path: Some("logs/ctr/0.log".into()),
            ..self.config()
        }
    }

    /// Spawn with the default config and expect success; returns (monitor, init) pids.
    pub fn spawn_created(&mut self) -> (i32, i32) {
        let cfg = self.config();
        self.spawn_created_with(&cfg)
    }

    pub fn spawn_created_with(&mut self, cfg: &MonitorConfig) -> (i32, i32) {
        match self.spawn_monitor(cfg) {
            (
                Handshake::Created {
                    monitor_pid,
                    container_pid,
                    ..
                },
                0,
            ) => (monitor_pid, container_pid),
            other => panic!("expected Created and exit 0, got {other:?}"),
        }
    }

    pub fn start(&self) {
        Container::load(&self.state_root(), &self.id)
            .unwrap()
            .start()
            .unwrap();
    }

    /// Wait for the exit record.
    pub fn wait_exit(&self, timeout: Duration) -> ExitRecord {
        let path = self.dir().join(EXIT_FILE);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                return serde_json::from_slice(&bytes).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no {} within {timeout:?}; monitor.log: {}",
                path.display(),
                self.monitor_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn monitor_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("monitor.log")).unwrap_or_default()
    }

    pub fn records(&self) -> Vec<Record> {
        records_in(&self.log_path())
    }

    /// One control request on the monitor's socket.
    pub fn control(&self, line: &str) -> ControlResponse {
        let mut s = UnixStream::connect(self.dir().join(CONTROL_SOCKET)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer).unwrap();
        serde_json::from_str(answer.trim_end())
            .unwrap_or_else(|e| panic!("bad answer {answer:?}: {e}"))
    }

    pub fn reopen_log(&self) -> ControlResponse {
        self.control(&format!(
            "{}\n",
            serde_json::to_string(&ControlRequest::ReopenLog).unwrap()
        ))
    }

    /// The container's cgroup directory in hierarchy `h` (a /sys/fs/cgroup entry).
    pub fn cgroup_dir(&self, h: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(h)
            .join(self.cgroup_path.trim_start_matches('/'))
    }

    /// Live (not zombie) processes in the container's cgroup.
    pub fn live_pids(&self) -> Vec<i32> {
        let procs = std::fs::read_to_string(self.cgroup_dir("pids").join("cgroup.procs"))
            .unwrap_or_default();
        procs
            .lines()
            .filter_map(|l| l.parse().ok())
            .filter(|p| proc_state(*p).is_some_and(|s| s != 'Z'))
            .collect()
    }

    /// The monitor dir exists only while the monitor or its files do: processes whose
    /// cwd is it are monitors of this test.
    pub fn processes_in_dir(&self) -> Vec<i32> {
        let dir = self.dir();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c == dir))
            .filter(|p| proc_state(*p).is_some_and(|s| s != 'Z'))
            .collect()
    }

    pub fn monitor_pid(&self) -> Option<i32> {
        self.monitor_pid
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        if let Ok(c) = Container::load(&self.state_root(), &self.id) {
            let _ = c.delete(true);
        }
        if let Some(pid) = self.monitor_pid {
            // It exits by itself once the init is gone; kill it (it is ours) if not.
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive_and_ours(pid, &self.dir()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive_and_ours(pid, &self.dir()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Ok(hs) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hs.flatten() {
                let dir = h.path().join(self.cgroup_path.trim_start_matches('/'));
                if dir.exists() {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
    }
}

fn alive_and_ours(pid: i32, dir: &Path) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
        && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir)
}

/// Field 3 of /proc/<pid>/stat.
pub fn proc_state(pid: i32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The fields of /proc/<pid>/stat after the command name (field 3 first).
pub fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (1-based, as proc(5) counts) of /proc/<pid>/stat, n >= 3.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    stat_fields(pid)?.get(n - 3).cloned()
}

/// One CRI log record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time: String,
    pub stream: String,
    pub tag: String,
    pub content: String,
}

pub fn records_in(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let r = Record {
                time: p.next().unwrap().to_string(),
                stream: p.next().unwrap_or_default().to_string(),
                tag: p.next().unwrap_or_default().to_string(),
                content: p.next().unwrap_or_default().to_string(),
            };
            assert!(
                ["stdout", "stderr"].contains(&r.stream.as_str()),
                "bad stream in {l:?}"
            );
            assert!(["P", "F"].contains(&r.tag.as_str()), "bad tag in {l:?}");
            assert_valid_timestamp(&r.time);
            r
        })
        .collect()
}

/// Days since 1970-01-01 of a civil date (a second implementation, to check the
/// monitor's against).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`, within a minute of now.
pub fn assert_valid_timestamp(ts: &str) {
    let b = ts.as_bytes();
    assert_eq!(b.len(), 30, "timestamp {ts:?}");
    for (i, c) in b.iter().enumerate() {
        let want_digit = !matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 29);
        assert_eq!(c.is_ascii_digit(), want_digit, "timestamp {ts:?} at {i}");
    }
    assert_eq!(
        (
            &ts[4..5],
            &ts[7..8],
            &ts[10..11],
            &ts[13..14],
            &ts[16..17],
            &ts[19..20],
            &ts[29..]
        ),
        ("-", "-", "T", ":", ":", ".", "Z"),
        "timestamp {ts:?}"
    );
    let n = |r: std::ops::Range<usize>| ts[r].parse::<i64>().unwrap();
    let secs = days_from_civil(n(0..4), n(5..7), n(8..10)) * 86_400
        + n(11..13) * 3600
        + n(14..16) * 60
        + n(17..19);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - secs).abs() < 600, "timestamp {ts:?} is not now");
}

/// Read what is available on `r` within `timeout`, without waiting for EOF.
pub fn read_available(r: &mut impl Read) -> String {
    let mut s = Vec::new();
    let _ = r.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// A process spec for exec in this container: its own with `args`.
pub fn exec_process(t: &TestContainer, args: &[&str]) -> Value {
    let mut p = t.spec["process"].clone();
    p["args"] = json!(args);
    p
}

/// A client of the attach frames (an attach connection or an interactive exec's
/// socket), blocking, every receive bounded by [`FrameClient::TIMEOUT`].
pub struct FrameClient {
    fd: std::os::fd::OwnedFd,
}

/// What a client received.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Received {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<i32>,
    /// The connection was closed (after the exit frame, or without one).
    pub closed: bool,
}

impl Received {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl FrameClient {
    pub const TIMEOUT: Duration = Duration::from_secs(20);

    /// Connect to the monitor's attach socket.
    pub fn attach(t: &TestContainer) -> FrameClient {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let path = t.dir().join(ATTACH_SOCKET);
        connect(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap())
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        FrameClient::from_fd(fd)
    }

    pub fn from_fd(fd: std::os::fd::OwnedFd) -> FrameClient {
        let timeout = nix::sys::time::TimeVal::new(Self::TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .unwrap();
        FrameClient { fd }
    }

    pub fn send(&self, frame: Frame<'_>) {
        use std::os::fd::AsRawFd;
        nix::sys::socket::send(
            self.fd.as_raw_fd(),
            &frame.encode(),
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .unwrap();
    }

    /// Receive one frame into `into`; false once the connection is closed.
    pub fn receive(&self, into: &mut Received) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = vec![0u8; MAX_FRAME];
        let n = match nix::sys::socket::recv(
            self.fd.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => {
                panic!("no frame within {:?}: {into:?}", Self::TIMEOUT)
            }
            Err(nix::errno::Errno::ECONNRESET) => 0,
            Err(e) => panic!("recv: {e}"),
        };
        if n == 0 {
            into.closed = true;
            return false;
        }
        match Frame::parse(&buf[..n]).unwrap() {
            Frame::Stdout(d) => into.stdout.extend_from_slice(d),
            Frame::Stderr(d) => into.stderr.extend_from_slice(d),
            Frame::Exit(code) => {
                assert_eq!(into.exit, None, "a second exit frame");
                into.exit = Some(code);
            }
            other => panic!("unexpected frame {other:?}"),
        }
        true
    }

    /// Receive until stdout contains `needle`.
    pub fn receive_until(&self, into: &mut Received, needle: &str) {
        while !into.stdout().contains(needle) {
            assert!(self.receive(into), "closed before {needle:?}: {into:?}");
        }
    }

    /// Receive until the connection closes.
    pub fn receive_all(&self) -> Received {
        let mut got = Received::default();
        while self.receive(&mut got) {}
        got
    }
}
