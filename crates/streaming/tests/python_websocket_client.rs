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

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_websocket_client_runs_v5_exec() {
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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/run.sh");
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-websocket-client");
    let output = within(Command::new(&script).arg(&venv).args(&urls).output())
        .await
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    check("ws_exec_client.py", &output);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: websocket-client"));
}
