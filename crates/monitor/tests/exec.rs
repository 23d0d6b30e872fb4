//! `coracle-monitor exec` in a running container. ExecSync: output and exit codes, the
//! deadline, and not waiting for stdout held by a background child. Interactive
//! (attach frames on a socket): exit code, stdin, tty and resize, the daemon hanging up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use coracle_monitor::protocol::{ExecConfig, Frame, InteractiveExec};

struct ExecResult {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn running(test: &str) -> (TestContainer, i32) {
    let mut t = TestContainer::new(test, &["sleep", "1000"]);
    let (_, init) = t.spawn_created();
    t.start();
    (t, init)
}

/// Run the exec helper; wait at most `limit` for it to exit, then read what its
/// stdout and stderr hold without waiting for them to close.
fn exec(t: &TestContainer, args: &[&str], timeout_ms: Option<u64>, limit: Duration) -> ExecResult {
    let cfg = ExecConfig {
        container_id: t.id.clone(),
        oci_state_root: t.state_root(),
        process: exec_process(t, args),
        timeout_ms,
        interactive: None,
    };
    let started = Instant::now();
    let mut child = Command::new(monitor_bin())
        .arg("exec")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&cfg).unwrap())
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec helper still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    for fd in [out.as_fd(), err.as_fd()] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
    }
    ExecResult {
        code: status.code(),
        stdout: read_available(&mut out),
        stderr: read_available(&mut err),
        elapsed,
    }
}

#[test]
fn exec_returns_output_and_exit_code() {
    let (t, _) = running("exec-codes");
    let r = exec(&t, &["echo", "hi"], Some(10_000), Duration::from_secs(30));
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "hi\n");
    let r = exec(
        &t,
        &["sh", "-c", "echo oops >&2; exit 7"],
        None,
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(7));
    assert_eq!(r.stderr, "oops\n");
    let r = exec(
        &t,
        &["sh", "-c", "kill -TERM $$"],
        None,
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(128 + 15));
}

#[test]
fn exec_timeout_kills_the_process_group() {
    let (t, init) = running("exec-timeout");
    let r = exec(&t, &["sleep", "100"], Some(300), Duration::from_secs(30));
    assert_eq!(r.code, Some(137));
    assert!(
        r.stderr
            .contains("coracle-monitor: exec timed out after 300ms"),
        "{}",
        r.stderr
    );
    assert!(r.elapsed < Duration::from_secs(3), "{:?}", r.elapsed);
    assert_eq!(t.live_pids(), [init]);
    // A child in the background dies with the group.
    let r = exec(
        &t,
        &["sh", "-c", "sleep 100 & sleep 100"],
        Some(300),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(137));
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.live_pids() != [init] {
        assert!(Instant::now() < deadline, "left: {:?}", t.live_pids());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_does_not_wait_for_a_background_child_holding_stdout() {
    let (t, _) = running("exec-bg");
    let r = exec(
        &t,
        &["sh", "-c", "sleep 100 & echo done"],
        Some(20_000),
        Duration::from_secs(10),
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.stdout, "done\n");
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
}

#[test]
fn exec_failure_to_start_exits_255_with_a_message() {
    let (t, _) = running("exec-fail");
    let r = exec(
        &t,
        &["/no/such/binary"],
        Some(5_000),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(255));
    assert!(r.stderr.contains("/no/such/binary"), "{}", r.stderr);
    let mut bad = ExecConfig {
        container_id: "no-such-container".into(),
        oci_state_root: t.state_root(),
        process: exec_process(&t, &["true"]),
        timeout_ms: None,
        interactive: None,
    };
    bad.process["args"] = serde_json::json!(["true"]);
    let mut child = Command::new(monitor_bin())
        .arg("exec")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&bad).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-container"));
}

/// An interactive exec helper and the daemon's end of its socket.
struct Interactive {
    child: std::process::Child,
    client: FrameClient,
}

fn exec_interactive(t: &TestContainer, args: &[&str], mode: InteractiveExec) -> Interactive {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let cfg = ExecConfig {
        container_id: t.id.clone(),
        oci_state_root: t.state_root(),
        process: exec_process(t, args),
        timeout_ms: None,
        interactive: Some(mode),
    };
    let mut child = Command::new(monitor_bin())
        .arg("exec")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(theirs))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&cfg).unwrap())
        .unwrap();
    Interactive {
        child,
        client: FrameClient::from_fd(ours),
    }
}

impl Interactive {
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        wait_helper(&mut self.child, limit)
    }
}

/// The helper's exit code, within `limit`.
fn wait_helper(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec helper still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn interactive_exec_relays_output_and_exit_code() {
    let (t, _) = running("iexec-code");
    let mut x = exec_interactive(
        &t,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        InteractiveExec::default(),
    );
    let got = x.client.receive_all();
    assert_eq!(got.stdout(), "out\n");
    assert_eq!(got.stderr(), "err\n");
    assert_eq!(got.exit, Some(7));
    assert_eq!(x.wait(Duration::from_secs(10)), Some(7));
}

#[test]
fn interactive_exec_pipes_stdin_and_passes_its_eof() {
    let (t, _) = running("iexec-stdin");
    let mode = InteractiveExec {
        stdin: true,
        tty: false,
    };
    let mut x = exec_interactive(&t, &["sh", "-c", "cat; echo done"], mode);
    let mut got = Received::default();
    x.client.send(Frame::Stdin(b"hello\n"));
    x.client.receive_until(&mut got, "hello\n");
    // More than a pipe holds, while the client reads the echo back.
    let big = vec![b'z'; 200_000];
    for chunk in big.chunks(16 * 1024) {
        x.client.send(Frame::Stdin(chunk));
    }
    x.client.send(Frame::StdinEof);
    while x.client.receive(&mut got) {}
    let expected = format!("hello\n{}done\n", "z".repeat(200_000));
    assert!(got.stdout() == expected, "{} bytes", got.stdout.len());
    assert_eq!(got.exit, Some(0));
    assert_eq!(x.wait(Duration::from_secs(10)), Some(0));
}

#[test]
fn interactive_exec_with_a_tty_sees_its_window_size() {
    let (t, _) = running("iexec-tty");
    let mode = InteractiveExec {
        stdin: true,
        tty: true,
    };
    let mut x = exec_interactive(
        &t,
        &[
            "sh",
            "-c",
            "[ -t 0 ] && echo is-a-tty; read l; stty size; exit 4",
        ],
        mode,
    );
    let mut got = Received::default();
    x.client.receive_until(&mut got, "is-a-tty");
    x.client.send(Frame::Resize {
        width: 100,
        height: 30,
    });
    x.client.send(Frame::Stdin(b"go\n"));
    while x.client.receive(&mut got) {}
    assert!(got.stdout().contains("30 100\r\n"), "{:?}", got.stdout());
    assert!(got.stderr.is_empty());
    assert_eq!(got.exit, Some(4));
    assert_eq!(x.wait(Duration::from_secs(10)), Some(4));
}

#[test]
fn interactive_exec_is_killed_when_the_daemon_hangs_up() {
    let (t, init) = running("iexec-hangup");
    let x = exec_interactive(
        &t,
        &["sh", "-c", "echo started; sleep 1000"],
        InteractiveExec::default(),
    );
    let mut got = Received::default();
    x.client.receive_until(&mut got, "started");
    assert!(t.live_pids().len() > 1);
    let Interactive { mut child, client } = x;
    drop(client);
    assert_eq!(wait_helper(&mut child, Duration::from_secs(10)), Some(137));
    assert_eq!(t.live_pids(), vec![init], "the exec'd processes are gone");
}

#[test]
fn interactive_exec_that_cannot_start_reports_why() {
    let (t, _) = running("iexec-fail");
    let mut x = exec_interactive(&t, &["/no/such/binary"], InteractiveExec::default());
    let got = x.client.receive_all();
    assert_eq!(got.exit, None);
    assert_eq!(x.wait(Duration::from_secs(10)), Some(255));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut x.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.starts_with("coracle-monitor: exec:"), "{stderr}");
}
