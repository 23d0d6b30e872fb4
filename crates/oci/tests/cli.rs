//! The runc-compatible CLI: each command a separate process, as a conformance tool or
//! containerd-shim would drive it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_coracle-oci");

fn cli(root: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = cli(root, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status(root: &Path, id: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["state", id])).unwrap();
    v["status"].as_str().unwrap().to_string()
}

/// For `create` and `run -d`: the container inherits the command's stdio (as with
/// runc), so a pipe would stay open as long as the container runs; use files.
fn ok_detached(root: &Path, args: &[&str]) {
    let dir = host_dir("cliout");
    let err_path = dir.path().join("stderr");
    let status = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{args:?}: {}",
        std::fs::read_to_string(&err_path).unwrap()
    );
}

/// Deletes the container through the CLI when dropped.
struct CliGuard<'a>(&'a Path, String);

impl Drop for CliGuard<'_> {
    fn drop(&mut self) {
        let _ = cli(self.0, &["delete", "--force", &self.1]);
    }
}

#[test]
fn cli_create_start_state_exec_kill_delete() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let root = b.state_root.as_path();
    let id = unique_id("cli");
    let pid_file = b.path().join("pid");
    let bundle = b.path().to_str().unwrap();
    // create forks the init and exits; the init outlives it (reparented).
    ok_detached(
        root,
        &[
            "create",
            "--bundle",
            bundle,
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
        ],
    );
    let _guard = CliGuard(root, id.clone());
    let state: serde_json::Value = serde_json::from_str(&ok(root, &["state", &id])).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(
        state["pid"].to_string(),
        std::fs::read_to_string(&pid_file).unwrap()
    );
    ok(root, &["start", &id]);
    assert_eq!(status(root, &id), "running");
    let ps: Vec<i32> = serde_json::from_str(&ok(root, &["ps", "--format", "json", &id])).unwrap();
    assert!(ps.contains(&state["pid"].as_i64().unwrap().try_into().unwrap()));

    let out = cli(
        root,
        &[
            "exec",
            "--env",
            "X=1",
            "--cwd",
            "/tmp",
            &id,
            "sh",
            "-c",
            "echo $X $(pwd); exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 /tmp\n");

    // exec --process: a runtime-spec Process as JSON, as containerd-shim passes it.
    let process_json = b.path().join("process.json");
    let mut p = default_spec(&["sh", "-c", "echo from-json; id -u"])
        .process()
        .clone()
        .unwrap();
    let mut user = p.user().clone();
    user.set_uid(1000);
    p.set_user(user);
    std::fs::write(&process_json, serde_json::to_vec(&p).unwrap()).unwrap();
    let out = cli(
        root,
        &["exec", "--process", process_json.to_str().unwrap(), &id],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-json\n1000\n");

    let refused = cli(root, &["delete", &id]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running"));
    ok(root, &["kill", &id, "KILL"]);
    for _ in 0..200 {
        if status(root, &id) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status(root, &id), "stopped");
    ok(root, &["delete", &id]);
    let gone = cli(root, &["state", &id]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[test]
fn cli_run_returns_the_exit_status_and_kill_takes_numbers() {
    let b = TestBundle::new(&default_spec(&["sh", "-c", "echo out; exit 5"]));
    let id = unique_id("clirun");
    let out = cli(
        &b.state_root,
        &["run", "--bundle", b.path().to_str().unwrap(), &id],
    );
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(
        !b.state_root.join(&id).exists(),
        "run must delete the container"
    );

    b.write_spec(&default_spec(&["sleep", "100"]));
    let id = unique_id("clikill");
    ok_detached(
        &b.state_root,
        &["run", "-d", "--bundle", b.path().to_str().unwrap(), &id],
    );
    let _guard = CliGuard(&b.state_root, id.clone());
    assert_eq!(status(&b.state_root, &id), "running");
    assert!(
        !cli(&b.state_root, &["kill", &id, "NOSUCHSIG"])
            .status
            .success()
    );
    ok(&b.state_root, &["kill", &id, "9"]);
    for _ in 0..200 {
        if status(&b.state_root, &id) == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(status(&b.state_root, &id), "stopped");
}

#[test]
fn cli_features_prints_runc_shaped_json() {
    let v: serde_json::Value =
        serde_json::from_str(&ok(Path::new("/nonexistent"), &["features"])).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert!(
        v["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "createRuntime")
    );
    assert!(
        v["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "rslave")
    );
    assert!(
        v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "user")
    );
    assert!(
        v["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN")
    );
    assert_eq!(v["linux"]["apparmor"]["enabled"], false);
}

#[test]
fn cli_errors_go_to_the_log_file() {
    let dir = host_dir("clilog");
    let log = dir.path().join("log.json");
    let out = Command::new(BIN)
        .args([
            "--root",
            dir.path().to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "start",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"]
            .as_str()
            .unwrap()
            .contains("nope does not exist")
    );
}
