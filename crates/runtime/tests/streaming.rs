//! The runtime side of Exec, Attach and PortForward against the real kernel and the
//! real `coracle-monitor`: a Runtime on temp dirs, containers made from a busybox
//! bundle by the monitor (as CreateContainer does, without an image), their records
//! put in the store, and a pinned network namespace for port-forward. Needs root and
//! the monitor binary (`cargo build -p coracle-monitor`, or `$CORACLE_MONITOR_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coracle_monitor::protocol::{Handshake, MonitorConfig};
use coracle_runtime::model::{ContainerRecord, PodRecord, PodState};
use coracle_runtime::{NetworkSetup, Runtime, RuntimeDirs, RuntimeError, StreamIo, TerminalSize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const LIMIT: Duration = Duration::from_secs(30);

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the streaming tests need root (namespaces, mounts, cgroups)"
    );
}

/// `coracle-monitor` next to the test binaries (target/<profile>/), or
/// `$CORACLE_MONITOR_BIN`.
fn monitor_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CORACLE_MONITOR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("coracle-monitor");
    assert!(
        binary.exists(),
        "{} not found: build it first with `cargo build -p coracle-monitor` (or set CORACLE_MONITOR_BIN)",
        binary.display()
    );
    binary
}

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}-{}-{nanos:x}", std::process::id())
}

struct Harness {
    runtime: Arc<Runtime>,
    _tmp: tempfile::TempDir,
}

async fn harness() -> Harness {
    assert_root();
    let tmp = tempfile::Builder::new()
        .prefix("coracle-streaming-test-")
        .tempdir()
        .unwrap();
    let dirs = RuntimeDirs {
        root: tmp.path().join("root"),
        state: tmp.path().join("state"),
    };
    // CNI with no config: nothing runs unless a pod asks for a network.
    let network = NetworkSetup::Cni {
        conf_dir: tmp.path().join("cni"),
        bin_dirs: Vec::new(),
    };
    let runtime = Runtime::open(
        dirs,
        network,
        coracle_image::ImageConfig::default(),
        monitor_bin(),
    )
    .await
    .unwrap();
    Harness {
        runtime: Arc::new(runtime),
        _tmp: tmp,
    }
}

/// A running container whose record is in the store; removed (with its cgroup) on drop.
struct TestContainer {
    id: String,
    oci_root: PathBuf,
    cgroup: String,
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        if let Ok(c) = coracle_oci::Container::load(&self.oci_root, &self.id) {
            let _ = c.delete(true);
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(self.cgroup.trim_start_matches('/')));
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
struct StdioConfig {
    tty: bool,
    stdin: bool,
    stdin_once: bool,
}

fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "stty", "sleep", "seq"] {
        std::os::unix::fs::symlink("/bin/busybox", dir.join("bin").join(applet)).unwrap();
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
}

/// Make, as CreateContainer and StartContainer would, a container running `args`.
async fn running_container(h: &Harness, args: &[&str], stdio: StdioConfig) -> TestContainer {
    let dirs = h.runtime.dirs();
    let id = unique("ctr");
    let bundle = dirs.container_bundle(&id);
    busybox_rootfs(&bundle.join("rootfs"));
    let cgroup = format!("/coracle-streaming-test-{id}");
    let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default()).unwrap();
    spec["root"] = json!({ "path": "rootfs", "readonly": false });
    spec["process"]["args"] = json!(args);
    spec["process"]["terminal"] = json!(stdio.tty);
    // No TERM: an exec with a tty must get one from the runtime.
    spec["process"]["env"] = json!(["PATH=/bin"]);
    spec["linux"]["namespaces"] =
        json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    spec["linux"]["cgroupsPath"] = json!(cgroup);
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let container = TestContainer {
        id: id.clone(),
        oci_root: dirs.oci_root(),
        cgroup,
    };
    let config = MonitorConfig {
        container_id: id.clone(),
        bundle,
        oci_state_root: dirs.oci_root(),
        dir: dirs.container_dir(&id),
        log_path: None,
        tty: stdio.tty,
        stdin: stdio.stdin,
        stdin_once: stdio.stdin_once,
    };
    let pid = spawn_monitor(&config);
    coracle_oci::Container::load(&dirs.oci_root(), &id)
        .unwrap()
        .start()
        .unwrap();
    let spec = coracle_runtime::model::ContainerSpec {
        stdin: stdio.stdin,
        stdin_once: stdio.stdin_once,
        tty: stdio.tty,
        ..Default::default()
    };
    let record: ContainerRecord = serde_json::from_value(json!({
        "id": id,
        "pod_id": "no-pod",
        "metadata": {"name": "test", "attempt": 0},
        "state": "running",
        "image": "busybox",
        "created_at": 0,
        "pid": pid,
        "spec": spec,
    }))
    .unwrap();
    drop(h.runtime.containers().insert(record).await.unwrap());
    container
}

/// `coracle-monitor run`; returns the container's pid.
fn spawn_monitor(config: &MonitorConfig) -> i32 {
    let mut child = Command::new(monitor_bin())
        .arg("run")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(config).unwrap())
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.wait().unwrap();
    match serde_json::from_str(&line).unwrap() {
        Handshake::Created { container_pid, .. } => container_pid,
        Handshake::Failed { message } => panic!("monitor: {message}"),
    }
}

/// The test's ends of a StreamIo.
struct Client {
    stdin: Option<DuplexStream>,
    stdout: DuplexStream,
    stderr: Option<DuplexStream>,
    resize: Option<tokio::sync::mpsc::Sender<TerminalSize>>,
}

fn stream_io(with_stdin: bool, tty: bool) -> (StreamIo, Client) {
    let pipe = || tokio::io::duplex(64 * 1024);
    let (stdin_ours, stdin_theirs) = pipe();
    let (stdout_ours, stdout_theirs) = pipe();
    let (stderr_ours, stderr_theirs) = pipe();
    let (resize_tx, resize_rx) = tokio::sync::mpsc::channel(4);
    type Reader = Pin<Box<dyn tokio::io::AsyncRead + Send>>;
    type Writer = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;
    let io = StreamIo {
        stdin: with_stdin.then(|| Box::pin(stdin_theirs) as Reader),
        stdout: Some(Box::pin(stdout_theirs) as Writer),
        stderr: (!tty).then(|| Box::pin(stderr_theirs) as Writer),
        tty,
        resize: tty.then_some(resize_rx),
    };
    let client = Client {
        stdin: with_stdin.then_some(stdin_ours),
        stdout: stdout_ours,
        stderr: (!tty).then_some(stderr_ours),
        resize: tty.then_some(resize_tx),
    };
    (io, client)
}

/// Read until `needle` shows up; everything read so far.
async fn read_until(r: &mut DuplexStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(LIMIT, async {
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = r.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "EOF before {needle:?}: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no {needle:?} within {LIMIT:?}: {:?}",
            String::from_utf8_lossy(&got)
        )
    });
    String::from_utf8(got).unwrap()
}

async fn read_to_end(r: Option<DuplexStream>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s).await.unwrap();
    }
    s
}

#[tokio::test]
async fn exec_returns_the_exit_code_and_separate_streams() {
    let h = harness().await;
    let c = running_container(&h, &["sleep", "1000"], StdioConfig::default()).await;
    let (io, client) = stream_io(false, false);
    let cmd = vec![
        "sh".into(),
        "-c".into(),
        "echo out; echo err >&2; exit 7".into(),
    ];
    let (code, out, err) = tokio::join!(
        h.runtime.exec_streaming(&c.id, cmd, io),
        read_to_end(Some(client.stdout)),
        read_to_end(client.stderr)
    );
    assert_eq!(code.unwrap(), 7);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
}

#[tokio::test]
async fn exec_stdin_reaches_the_process_and_its_eof_too() {
    let h = harness().await;
    let c = running_container(&h, &["sleep", "1000"], StdioConfig::default()).await;
    let (io, mut client) = stream_io(true, false);
    let cmd = vec!["sh".into(), "-c".into(), "cat; echo done".into()];
    let driver = async move {
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(b"hello\n").await.unwrap();
        let echoed = read_until(&mut client.stdout, "hello\n").await;
        drop(stdin);
        echoed + &read_to_end(Some(client.stdout)).await
    };
    let (code, out) = tokio::join!(h.runtime.exec_streaming(&c.id, cmd, io), driver);
    assert_eq!(code.unwrap(), 0);
    assert_eq!(out, "hello\ndone\n");
}

#[tokio::test]
async fn exec_with_a_tty_gets_term_and_the_window_size() {
    let h = harness().await;
    let c = running_container(&h, &["sleep", "1000"], StdioConfig::default()).await;
    let (io, mut client) = stream_io(true, true);
    // busybox's stty prints no size for 0x0 (a new pty's): wait for ours.
    let script = "echo TERM=$TERM; until [ \"$(stty size 2>/dev/null)\" = '43 132' ]; do sleep 0.02; done; echo resized; exit 3";
    let cmd = vec!["sh".into(), "-c".into(), script.into()];
    let driver = async move {
        let resize = client.resize.take().unwrap();
        resize
            .send(TerminalSize {
                width: 132,
                height: 43,
            })
            .await
            .unwrap();
        let out = read_until(&mut client.stdout, "resized").await;
        // Keep stdin and resize open until the process ends by itself.
        let rest = read_to_end(Some(client.stdout)).await;
        drop((resize, client.stdin));
        out + &rest
    };
    let (code, out) = tokio::join!(h.runtime.exec_streaming(&c.id, cmd, io), driver);
    assert_eq!(code.unwrap(), 3);
    assert!(out.contains("TERM=xterm\r\n"), "{out:?}");
    assert!(out.contains("resized\r\n"), "{out:?}");
}

#[tokio::test]
async fn exec_refuses_unknown_containers_and_empty_commands() {
    let h = harness().await;
    let (io, _client) = stream_io(false, false);
    let err = h
        .runtime
        .exec_streaming("nope", vec!["true".into()], io)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err}");
    let c = running_container(&h, &["sleep", "1000"], StdioConfig::default()).await;
    let (io, _client) = stream_io(false, false);
    let err = h
        .runtime
        .exec_streaming(&c.id, vec![], io)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidArgument { .. }), "{err}");
    let (io, _client) = stream_io(false, false);
    let err = h
        .runtime
        .exec_streaming(&c.id, vec!["/no/such/binary".into()], io)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
}

#[tokio::test]
async fn attach_clients_share_output_and_stdin_reaches_the_container() {
    let h = harness().await;
    let stdio = StdioConfig {
        stdin: true,
        ..StdioConfig::default()
    };
    let c = running_container(&h, &["cat"], stdio).await;
    let (io_a, mut a) = stream_io(true, false);
    let (io_b, mut b) = stream_io(false, false);
    let attach_a = spawn_attach(&h, &c.id, io_a);
    let attach_b = spawn_attach(&h, &c.id, io_b);
    let mut stdin = a.stdin.take().unwrap();
    stdin.write_all(b"one\n").await.unwrap();
    read_until(&mut a.stdout, "one\n").await;
    stdin.write_all(b"two\n").await.unwrap();
    read_until(&mut a.stdout, "two\n").await;
    let seen_by_b = read_until(&mut b.stdout, "two\n").await;
    assert!(seen_by_b.ends_with("two\n"), "{seen_by_b:?}");
    // Without stdin_once, the end of a's stdin ends a's attach, and only that.
    drop(stdin);
    tokio::time::timeout(LIMIT, attach_a)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!attach_b.is_finished());
    // b stays attached until the container exits.
    coracle_oci::Container::load(&c.oci_root, &c.id)
        .unwrap()
        .kill(nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    tokio::time::timeout(LIMIT, attach_b)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn spawn_attach(
    h: &Harness,
    id: &str,
    io: StreamIo,
) -> tokio::task::JoinHandle<Result<(), RuntimeError>> {
    let runtime = h.runtime.clone();
    let id = id.to_owned();
    tokio::spawn(async move { runtime.attach(&id, io).await })
}

#[tokio::test]
async fn attach_with_stdin_once_closes_the_container_stdin_and_waits_for_its_exit() {
    let h = harness().await;
    let stdio = StdioConfig {
        stdin: true,
        stdin_once: true,
        ..StdioConfig::default()
    };
    let c = running_container(&h, &["sh", "-c", "cat; echo cat-ended"], stdio).await;
    let (io, mut client) = stream_io(true, false);
    let driver = async move {
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(b"x\n").await.unwrap();
        drop(stdin);
        read_to_end(Some(client.stdout)).await
    };
    let (attached, out) = tokio::time::timeout(2 * LIMIT, async {
        tokio::join!(h.runtime.attach(&c.id, io), driver)
    })
    .await
    .unwrap();
    attached.unwrap();
    assert_eq!(out, "x\ncat-ended\n");
}

#[tokio::test]
async fn attach_with_a_tty_resizes_the_pty() {
    let h = harness().await;
    let stdio = StdioConfig {
        tty: true,
        stdin: true,
        stdin_once: false,
    };
    let script = "until [ \"$(stty size 2>/dev/null)\" = '20 90' ]; do sleep 0.02; done; echo resized; sleep 1000";
    let c = running_container(&h, &["sh", "-c", script], stdio).await;
    let (io, mut client) = stream_io(true, true);
    let driver = async move {
        let resize = client.resize.take().unwrap();
        resize
            .send(TerminalSize {
                width: 90,
                height: 20,
            })
            .await
            .unwrap();
        let out = read_until(&mut client.stdout, "resized\r\n").await;
        // With a tty, the end of stdin ends the attach (the container runs on).
        drop(client.stdin.take());
        drop(resize);
        out
    };
    let (attached, out) = tokio::time::timeout(2 * LIMIT, async {
        tokio::join!(h.runtime.attach(&c.id, io), driver)
    })
    .await
    .unwrap();
    attached.unwrap();
    assert!(out.contains("resized"), "{out:?}");
}

#[tokio::test]
async fn attach_refuses_containers_that_are_not_running() {
    let h = harness().await;
    let (io, _client) = stream_io(false, false);
    let err = h.runtime.attach("nope", io).await.unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err}");
}

/// A pod record whose network namespace is pinned, with loopback up; unpinned on drop.
struct TestPod {
    id: String,
    ns_dir: PathBuf,
}

impl Drop for TestPod {
    fn drop(&mut self) {
        let _ = coracle_net::unpin_namespaces(&self.ns_dir);
    }
}

async fn ready_pod(h: &Harness, state: PodState) -> TestPod {
    let id = unique("pod");
    let ns_dir = h.runtime.dirs().pod_namespace_dir(&id);
    coracle_net::pin_namespaces(
        &ns_dir,
        &[coracle_net::NamespaceKind::Net],
        &coracle_net::PinSetup::default(),
    )
    .unwrap();
    let pod = TestPod {
        id: id.clone(),
        ns_dir: ns_dir.clone(),
    };
    in_namespace(&ns_dir.join("net"), || {
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(status.success());
    });
    let record: PodRecord = serde_json::from_value(json!({
        "id": id,
        "spec": serde_json::to_value(coracle_runtime::model::PodSpec::default()).unwrap(),
        "state": serde_json::to_value(state).unwrap(),
        "created_at": 0,
        "namespace_dir": ns_dir,
        "pinned": ["net"],
    }))
    .unwrap();
    drop(h.runtime.pods().insert(record).await.unwrap());
    pod
}

/// Run `f` on a thread of its own that joined the network namespace at `netns`.
fn in_namespace<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A listener inside the namespace that greets one connection; returns its port.
fn greeter(netns: &Path, addr: SocketAddr, greeting: &'static str) -> u16 {
    let listener = in_namespace(netns, move || TcpListener::bind(addr).unwrap());
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(greeting.as_bytes());
        }
    });
    port
}

async fn greeting(stream: &mut tokio::net::TcpStream) -> String {
    let mut s = String::new();
    tokio::time::timeout(LIMIT, stream.read_to_string(&mut s))
        .await
        .unwrap()
        .unwrap();
    s
}

#[tokio::test]
async fn port_forward_connects_inside_the_pod_network_namespace() {
    let h = harness().await;
    let pod = ready_pod(&h, PodState::Ready).await;
    let netns = pod.ns_dir.join("net");
    let v4 = greeter(&netns, "127.0.0.1:0".parse().unwrap(), "hello over v4\n");
    let mut s = h.runtime.port_forward_connect(&pod.id, v4).await.unwrap();
    assert_eq!(greeting(&mut s).await, "hello over v4\n");
    // A server on ::1 only: v4 is refused, v6 answers (as kubelet's port-forward).
    let v6 = greeter(
        &netns,
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        "hello over v6\n",
    );
    let mut s = h.runtime.port_forward_connect(&pod.id, v6).await.unwrap();
    assert_eq!(greeting(&mut s).await, "hello over v6\n");
    // The host's loopback is another one: a port bound on the host is not reached.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    let err = h
        .runtime
        .port_forward_connect(&pod.id, host_port)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::PortForward { .. }), "{err}");
}

#[tokio::test]
async fn port_forward_refuses_unknown_and_unready_pods() {
    let h = harness().await;
    let err = h
        .runtime
        .port_forward_connect("nope", 80)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err}");
    let pod = ready_pod(&h, PodState::NotReady).await;
    let err = h
        .runtime
        .port_forward_connect(&pod.id, 80)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::FailedPrecondition(_)), "{err}");
}
