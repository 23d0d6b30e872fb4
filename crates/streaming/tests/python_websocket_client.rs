//! The WebSocket side checked by a client this project did not write: the PyPI
//! package `websocket-client`, driven by `tests/python/ws_exec_client.py`, against a
//! server with the fake runtime. A self-consistent but wrong implementation of the
//! channel protocol fails here even if our own Rust client agrees with it.
//!
//! Needs python3 with venv and PyPI access (installed into `target/tmp`); the test
//! fails, loudly, when they are missing: `hack/install-deps.sh` installs them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use coracle_streaming::ExecRequest;
use support::{start_default_server, within};
use tokio::process::Command;

/// Pinned so a new release cannot change what the test proves.
const WEBSOCKET_CLIENT: &str = "websocket-client==1.9.2";

fn exec(cmd: &str, stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.split(' ').map(str::to_owned).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    }
}

async fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", program.display()))
}

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A venv under target/tmp with websocket-client in it; returns its python.
async fn python_with_websocket_client() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-websocket-client");
    let python = venv.join("bin/python3");
    if !python.exists() {
        let created = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .output()
            .await;
        let created = created.unwrap_or_else(|err| {
            panic!("python3 is required for this test (hack/install-deps.sh installs it): {err}")
        });
        check("python3 -m venv (is python3-venv installed?)", &created);
    }
    let import = run(&python, &["-c", "import websocket"]).await;
    if !import.status.success() {
        let install = run(
            &python,
            &[
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                WEBSOCKET_CLIENT,
            ],
        )
        .await;
        check("pip install websocket-client (needs PyPI access)", &install);
    }
    python
}

#[tokio::test(flavor = "multi_thread")]
async fn python_websocket_client_runs_v5_exec() {
    let python = python_with_websocket_client().await;
    let test = start_default_server().await;
    let urls = [
        test.server
            .get_exec(exec("echo hello from python", false))
            .expect("url"),
        test.server.get_exec(exec("exit 7", false)).expect("url"),
        test.server.get_exec(exec("cat", true)).expect("url"),
        test.server
            .get_exec(exec("echo base64 works", false))
            .expect("url"),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ws_exec_client.py");
    let mut args = vec![script.to_str().expect("utf-8 path")];
    args.extend(urls.iter().map(String::as_str));
    let output = within(run(&python, &args)).await;
    check("ws_exec_client.py", &output);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: websocket-client"));
}
