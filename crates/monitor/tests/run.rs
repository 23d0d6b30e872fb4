//! `coracle-monitor run` against the real kernel: handshake, CRI log, exit record,
//! log reopen, OOM, tty, detachment, create failures, memory footprint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use coracle_monitor::protocol::{ControlResponse, Handshake};
use serde_json::json;

const EXIT_WAIT: Duration = Duration::from_secs(30);

fn contents(records: &[Record], stream: &str) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|r| r.stream == stream)
        .map(|r| (r.tag.clone(), r.content.clone()))
        .collect()
}

fn f(s: &str) -> (String, String) {
    ("F".to_string(), s.to_string())
}

#[test]
fn run_logs_stdout_and_stderr_and_records_the_exit_code() {
    let mut t = TestContainer::new("exit-code", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    // Relative paths are resolved where the monitor was started, as the daemon means.
    let cfg = t.relative_config();
    t.spawn_created_with(&cfg);
    t.start();
    let rec = t.wait_exit(EXIT_WAIT);
    assert_eq!(rec.exit_code, 3);
    assert_eq!(rec.signal, None);
    assert!(!rec.oom_killed);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!((now_ns - rec.finished_at).abs() < 60_000_000_000, "{rec:?}");
    let records = t.records();
    assert_eq!(contents(&records, "stdout"), [f("out")], "{records:?}");
    assert_eq!(contents(&records, "stderr"), [f("err")], "{records:?}");
}

#[test]
fn long_line_without_newline_is_split_into_partial_records() {
    let mut t = TestContainer::new(
        "long-line",
        &["sh", "-c", "head -c 40960 /dev/zero | tr '\\0' x"],
    );
    t.spawn_created();
    t.start();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    let records = t.records();
    let tags: Vec<&str> = records.iter().map(|r| r.tag.as_str()).collect();
    assert_eq!(tags, ["P", "P", "F"], "{:?}", records.len());
    assert!(records.iter().all(|r| r.stream == "stdout"));
    assert_eq!(records[0].content.len(), 16 * 1024);
    let joined: String = records.iter().map(|r| r.content.as_str()).collect();
    assert_eq!(joined, "x".repeat(40960));
}

#[test]
fn reopen_log_sends_new_records_to_the_new_file() {
    let mut t = TestContainer::new(
        "reopen",
        &[
            "sh",
            "-c",
            "echo one; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two",
        ],
    );
    t.spawn_created();
    t.start();
    let deadline = Instant::now() + EXIT_WAIT;
    while !t.records().iter().any(|r| r.content == "one") {
        assert!(Instant::now() < deadline, "no 'one' in the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A bad request gets an error and the monitor carries on.
    assert!(matches!(
        t.control("this is not json\n"),
        ControlResponse::Error { .. }
    ));
    let rotated = t.log_path().with_extension("log.1");
    std::fs::rename(t.log_path(), &rotated).unwrap();
    assert_eq!(t.reopen_log(), ControlResponse::Ok);
    std::fs::write(t.rootfs().join("tmp/go"), "").unwrap();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    let old: Vec<String> = records_in(&rotated)
        .into_iter()
        .map(|r| r.content)
        .collect();
    let new: Vec<String> = t.records().into_iter().map(|r| r.content).collect();
    assert_eq!(old, ["one"]);
    assert_eq!(new, ["two"]);
}

#[test]
fn all_output_is_logged_before_the_exit_record() {
    let mut t = TestContainer::new("drain", &["seq", "1", "100000"]);
    t.spawn_created();
    t.start();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    let records = t.records();
    assert_eq!(records.len(), 100_000);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(
            (r.tag.as_str(), r.content.as_str()),
            ("F", &*(i + 1).to_string())
        );
    }
}

#[test]
fn without_a_log_path_output_is_drained_and_dropped() {
    // Far more than a pipe holds: the container would block if nobody read.
    let mut t = TestContainer::new("no-log", &["seq", "1", "200000"]);
    let mut cfg = t.config();
    cfg.log_path = None;
    t.spawn_created_with(&cfg);
    t.start();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    assert!(!t.log_path().exists());
}

#[test]
fn stdin_is_kept_open_when_asked_and_a_kill_is_recorded() {
    // Without stdin the container reads /dev/null: EOF at once.
    let mut t = TestContainer::new("stdin-null", &["sh", "-c", "cat; echo eof"]);
    t.spawn_created();
    t.start();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    assert_eq!(contents(&t.records(), "stdout"), [f("eof")]);
    // With stdin the monitor holds the write end: cat waits until killed.
    let mut t = TestContainer::new("stdin-kept", &["sh", "-c", "cat; echo eof"]);
    let mut cfg = t.config();
    cfg.stdin = true;
    t.spawn_created_with(&cfg);
    t.start();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!t.dir().join("exit.json").exists());
    coracle_oci::Container::load(&t.state_root(), &t.id)
        .unwrap()
        .kill(nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    let rec = t.wait_exit(EXIT_WAIT);
    assert_eq!(
        (rec.exit_code, rec.signal, rec.oom_killed),
        (137, Some(9), false)
    );
    assert!(t.records().is_empty());
}

#[test]
fn oom_killed_container_is_reported() {
    let mut t = TestContainer::new("oom", &["sh", "-c", "x=a; while :; do x=$x$x; done"]);
    let limit = 8 * 1024 * 1024;
    t.spec["linux"]["resources"]["memory"] = json!({ "limit": limit, "swap": limit });
    t.write_spec();
    t.spawn_created();
    t.start();
    let rec = t.wait_exit(Duration::from_secs(60));
    assert_eq!(rec.exit_code, 137, "{rec:?}");
    assert_eq!(rec.signal, Some(9));
    assert!(rec.oom_killed, "{rec:?}");
}

#[test]
fn tty_output_is_logged_as_stdout() {
    let mut t = TestContainer::new("tty", &["sh", "-c", "echo hello; echo world >&2"]);
    t.spec["process"]["terminal"] = json!(true);
    t.write_spec();
    let mut cfg = t.config();
    cfg.tty = true;
    t.spawn_created_with(&cfg);
    // The console socket is gone once the pty master was received.
    assert!(!t.dir().join("console.sock").exists());
    t.start();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    let records = t.records();
    assert_eq!(
        contents(&records, "stdout"),
        [f("hello"), f("world")],
        "{records:?}"
    );
    assert!(contents(&records, "stderr").is_empty());
}

#[test]
fn monitor_outlives_its_spawner_and_exits_after_the_container() {
    let mut t = TestContainer::new(
        "detach",
        &["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.05; done"],
    );
    let cfg = t.config();
    let (h, code) = t.spawn_monitor(&cfg);
    assert_eq!(code, 0);
    let Handshake::Created {
        monitor_pid,
        monitor_start_time,
        container_pid,
    } = h
    else {
        panic!("{h:?}")
    };
    // The spawner exited (spawn_monitor waited for it); the monitor lives on, in a
    // session of its own, not a child of ours, parent of the init.
    assert_eq!(proc_state(monitor_pid).map(|s| s != 'Z'), Some(true));
    let ppid: i32 = stat_field(monitor_pid, 4).unwrap().parse().unwrap();
    assert_ne!(ppid, std::process::id() as i32);
    assert_eq!(stat_field(monitor_pid, 6).unwrap(), monitor_pid.to_string());
    assert_eq!(
        stat_field(monitor_pid, 22).unwrap(),
        monitor_start_time.to_string()
    );
    let init_ppid: i32 = stat_field(container_pid, 4).unwrap().parse().unwrap();
    assert_eq!(init_ppid, monitor_pid);
    // Its stdio is not the spawner's pipes.
    let out = std::fs::read_link(format!("/proc/{monitor_pid}/fd/1")).unwrap();
    assert_eq!(out, std::path::Path::new("/dev/null"));

    t.start();
    std::fs::write(t.rootfs().join("tmp/go"), "").unwrap();
    assert_eq!(t.wait_exit(EXIT_WAIT).exit_code, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc_state(monitor_pid).is_some_and(|s| s != 'Z')
        && stat_field(monitor_pid, 22).as_deref() == Some(&monitor_start_time.to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the monitor did not exit after writing the exit record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!t.dir().join("control.sock").exists());
}

#[test]
fn create_failure_is_reported_and_leaves_nothing_behind() {
    for (name, args, cwd, needle) in [
        ("missing-bin", "no-such-binary", "/", "no-such-binary"),
        ("bad-cwd", "true", "relative/cwd", "cwd"),
    ] {
        let mut t = TestContainer::new(name, &[args]);
        t.spec["process"]["cwd"] = json!(cwd);
        t.write_spec();
        let cfg = t.config();
        let (h, code) = t.spawn_monitor(&cfg);
        let Handshake::Failed { message } = h else {
            panic!("{name}: expected Failed, got {h:?}")
        };
        assert_eq!(code, 1, "{name}");
        assert!(message.contains(needle), "{name}: {message}");
        assert!(message.contains(&t.id), "{name}: {message}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.processes_in_dir().is_empty() {
            assert!(Instant::now() < deadline, "{name}: a monitor is left");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !t.state_root().join(&t.id).exists(),
            "{name}: oci state left"
        );
        for h in ["memory", "pids", "cpu", "freezer", "devices", "unified"] {
            assert!(!t.cgroup_dir(h).exists(), "{name}: cgroup left in {h}");
        }
        assert!(!t.dir().join("control.sock").exists(), "{name}");
        assert!(t.monitor_log().contains(needle), "{name}");
    }
}

#[test]
fn bad_config_is_a_failed_handshake() {
    assert_root();
    let out = std::process::Command::new(monitor_bin())
        .arg("run")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"{\"nope\": 1}")?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let h: Handshake = serde_json::from_slice(&out.stdout).unwrap();
    assert!(matches!(h, Handshake::Failed { message } if message.contains("config")));
}

/// Prints the monitors' proportional set size with running containers. PSS shares
/// the binary's pages among the monitors that map them, so run several (the
/// `CORACLE_MONITOR_PSS_N` env var, default 2) to see the cost per container on a busy
/// node; run it against the release build with
/// `CORACLE_MONITOR_BIN=target/release/coracle-monitor`.
#[test]
fn monitor_memory_is_measured() {
    let n: usize = std::env::var("CORACLE_MONITOR_PSS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut containers = Vec::new();
    let mut pids = Vec::new();
    for i in 0..n {
        let mut t = TestContainer::new(&format!("pss{i}"), &["sh", "-c", "echo hi; sleep 1000"]);
        let (monitor_pid, _) = t.spawn_created();
        t.start();
        pids.push(monitor_pid);
        containers.push(t);
    }
    // Let them settle into their event loops (and log a line).
    std::thread::sleep(Duration::from_millis(300));
    let mut total_pss = 0;
    for pid in &pids {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let kib = |key: &str| -> u64 {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        eprintln!(
            "monitor {pid}: Pss {} KiB, Rss {} KiB, Anonymous {} KiB",
            kib("Pss:"),
            kib("Rss:"),
            kib("Anonymous:")
        );
        assert!(kib("Pss:") > 0);
        total_pss += kib("Pss:");
    }
    eprintln!(
        "{n} monitors ({}): mean Pss {} KiB",
        monitor_bin().display(),
        total_pss / n as u64
    );
}
