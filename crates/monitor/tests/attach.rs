//! The monitor's attach socket against the real kernel: output fan-out to several
//! clients, stdin, stdin_once, tty resize, and a slow client that must not hold back
//! the container or its log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use coracle_monitor::protocol::Frame;
use serde_json::json;

const EXIT_WAIT: Duration = Duration::from_secs(30);

/// A shell line that prints `tick` until the test creates /tmp/go (so a client knows
/// it is being served once it saw a tick), then `start`.
const WAIT_FOR_GO: &str = "while [ ! -e /tmp/go ]; do echo tick; sleep 0.05; done; echo start; ";

fn go(t: &TestContainer) {
    std::fs::write(t.rootfs().join("tmp/go"), "").unwrap();
}

/// What came after the `start` line.
fn after_start(stdout: &str) -> &str {
    let at = stdout.find("start\n").expect("a start line");
    &stdout[at + "start\n".len()..]
}

#[test]
fn attach_clients_all_see_the_same_output() {
    let script = format!("{WAIT_FOR_GO} echo err >&2; seq 1 3000; exit 5");
    let mut t = TestContainer::new("attach-fanout", &["sh", "-c", &script]);
    t.spawn_created();
    t.start();
    let clients = [FrameClient::attach(&t), FrameClient::attach(&t)];
    let mut got = [Received::default(), Received::default()];
    for (c, g) in clients.iter().zip(&mut got) {
        c.receive_until(g, "tick\n");
    }
    go(&t);
    for (c, g) in clients.iter().zip(&mut got) {
        while c.receive(g) {}
    }
    let expected: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    for g in &got {
        assert_eq!(after_start(&g.stdout()), expected);
        assert_eq!(g.stderr(), "err\n");
        assert_eq!(g.exit, Some(5), "the exit frame comes last");
        assert!(g.closed);
    }
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 5);
    // The log has it all too, and the socket is gone with the monitor.
    let logged: Vec<String> = t
        .records()
        .into_iter()
        .filter(|r| r.stream == "stdout" && r.content != "tick")
        .map(|r| r.content)
        .collect();
    assert_eq!(logged.len(), 3001);
    assert!(!t.dir().join("attach.sock").exists());
}

#[test]
fn attach_stdin_reaches_the_container() {
    let mut t = TestContainer::new("attach-stdin", &["cat"]);
    let mut cfg = t.config();
    cfg.stdin = true;
    t.spawn_created_with(&cfg);
    t.start();
    let first = FrameClient::attach(&t);
    let mut got = Received::default();
    first.send(Frame::Stdin(b"hello\n"));
    first.receive_until(&mut got, "hello\n");
    // Without stdin_once, the end of one client's stdin leaves the container's open.
    first.send(Frame::StdinEof);
    drop(first);
    let second = FrameClient::attach(&t);
    let mut got = Received::default();
    second.send(Frame::Stdin(b"again\n"));
    second.receive_until(&mut got, "again\n");
    assert_eq!(got.stdout(), "again\n");
    assert!(!t.dir().join("exit.json").exists(), "cat saw EOF");
}

#[test]
fn stdin_once_closes_the_container_stdin_after_the_first_client() {
    let mut t = TestContainer::new(
        "attach-stdin-once",
        &["sh", "-c", "cat; echo cat-ended; exit 3"],
    );
    let mut cfg = t.config();
    cfg.stdin = true;
    cfg.stdin_once = true;
    t.spawn_created_with(&cfg);
    t.start();
    // A client without stdin comes and goes: that is no attach session with stdin.
    drop(FrameClient::attach(&t));
    let watcher = FrameClient::attach(&t);
    let typist = FrameClient::attach(&t);
    typist.send(Frame::Stdin(b""));
    typist.send(Frame::Stdin(b"line\n"));
    let mut got = Received::default();
    typist.receive_until(&mut got, "line\n");
    // Its disconnect ends its stdin: cat sees EOF.
    drop(typist);
    let seen = watcher.receive_all();
    assert_eq!(seen.stdout(), "line\ncat-ended\n");
    assert_eq!(seen.exit, Some(3));
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 3);
}

#[test]
fn tty_resize_reaches_the_container_pty() {
    let mut t = TestContainer::new(
        "attach-tty",
        &["sh", "-c", "read line; stty size; echo \"[$line]\""],
    );
    t.spec["process"]["terminal"] = json!(true);
    t.write_spec();
    let mut cfg = t.config();
    cfg.tty = true;
    cfg.stdin = true;
    t.spawn_created_with(&cfg);
    t.start();
    let c = FrameClient::attach(&t);
    // Frames are handled in order: the size is set before the line reaches the pty.
    c.send(Frame::Resize {
        width: 123,
        height: 45,
    });
    c.send(Frame::Stdin(b"go\n"));
    let got = c.receive_all();
    let out = got.stdout();
    assert!(out.contains("45 123\r\n"), "{out:?}");
    assert!(out.contains("[go]"), "{out:?}");
    assert!(got.stderr.is_empty(), "a tty has no stderr");
    assert_eq!(got.exit, Some(0));
}

#[test]
fn slow_attach_client_is_dropped_and_never_holds_back_the_log() {
    const BYTES: usize = 8 << 20;
    let script = format!("{WAIT_FOR_GO} head -c {BYTES} /dev/zero | tr '\\0' x");
    let mut t = TestContainer::new("attach-slow", &["sh", "-c", &script]);
    t.spawn_created();
    t.start();
    let slow = FrameClient::attach(&t);
    let mut got = Received::default();
    slow.receive_until(&mut got, "tick\n");
    go(&t);
    // Not reading: the container must still finish and its log be complete.
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    let logged: usize = t
        .records()
        .iter()
        .filter(|r| r.content != "tick" && r.content != "start")
        .map(|r| r.content.len())
        .sum();
    assert_eq!(logged, BYTES);
    while slow.receive(&mut got) {}
    assert_eq!(got.exit, None, "dropped clients get no exit frame");
    assert!(got.stdout.len() < BYTES);
    assert!(t.monitor_log().contains("fell"), "{}", t.monitor_log());
}
