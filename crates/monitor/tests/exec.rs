//! `coracle-monitor exec` (ExecSync) in a running container: output and exit codes,
//! the deadline, and not waiting for stdout held by a background child.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use coracle_monitor::protocol::ExecConfig;

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
