//! Exec and attach end to end through the streaming server, over SPDY (v1–v4) and
//! WebSocket (v1, v4, base64, v5), against the fake runtime.

mod support;

use std::time::Duration;

use coracle_streaming::client::{ExecOptions, RemoteCommandOutput, exec_spdy, exec_websocket};
use coracle_streaming::{AttachRequest, ExecRequest, TerminalSize};
use support::{pattern, start_default_server, within};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const V4: &str = "v4.channel.k8s.io";
const V5: &str = "v5.channel.k8s.io";

fn exec_request(cmd: &str, stdin: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.split(' ').map(str::to_owned).collect(),
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}

fn output_only() -> ExecOptions {
    ExecOptions {
        stdout: true,
        stderr: true,
        ..ExecOptions::default()
    }
}

fn with_stdin(bytes: Vec<u8>) -> ExecOptions {
    ExecOptions {
        stdin: Some(Box::pin(std::io::Cursor::new(bytes))),
        stdout: true,
        ..ExecOptions::default()
    }
}

fn status_json(output: &RemoteCommandOutput) -> String {
    String::from_utf8(output.error.clone()).expect("utf-8 status")
}

#[tokio::test]
async fn spdy_v4_exec_echo_exits_zero() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("echo hello world", false, true, false))
        .expect("url");
    let output = within(exec_spdy(
        &url,
        &[V4, "v3.channel.k8s.io"],
        output_only(),
        None,
    ))
    .await
    .expect("exec");
    assert_eq!(output.protocol, V4);
    assert_eq!(output.stdout, b"hello world\n");
    assert!(output.stderr.is_empty());
    assert_eq!(
        status_json(&output),
        r#"{"metadata":{},"status":"Success"}"#
    );
    assert_eq!(output.exit_code(), Ok(0));
}

#[tokio::test]
async fn spdy_v4_exit_7_is_reported_as_non_zero_exit_code() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("exit 7", false, true, false))
        .expect("url");
    let output = within(exec_spdy(&url, &[V4], output_only(), None))
        .await
        .expect("exec");
    assert_eq!(
        status_json(&output),
        r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [exit 7], exit code 7","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#
    );
    assert_eq!(output.exit_code(), Ok(7));
}

#[tokio::test]
async fn spdy_stdin_is_piped_through_and_half_close_is_eof() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("cat", true, false, false))
        .expect("url");
    // Much more than SPDY's 64 KiB initial window: flow control must not stall.
    let input = pattern(3 << 20, 7);
    let output = within(exec_spdy(&url, &[V4], with_stdin(input.clone()), None))
        .await
        .expect("exec");
    assert_eq!(output.stdout.len(), input.len());
    assert!(output.stdout == input, "stdin came back changed");
    assert_eq!(output.exit_code(), Ok(0));
}

#[tokio::test]
async fn spdy_stderr_is_its_own_stream() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("stderr oops", false, true, false))
        .expect("url");
    let output = within(exec_spdy(&url, &[V4], output_only(), None))
        .await
        .expect("exec");
    assert!(output.stdout.is_empty());
    assert_eq!(output.stderr, b"oops\n");
}

#[tokio::test]
async fn spdy_tty_has_no_stderr_and_delivers_resize_events() {
    let test = start_default_server().await;

    let url = test
        .server
        .get_exec(exec_request("tty", true, false, true))
        .expect("url");
    let options = ExecOptions {
        stdin: Some(Box::pin(tokio::io::empty())),
        stdout: true,
        tty: true,
        ..ExecOptions::default()
    };
    let output = within(exec_spdy(&url, &[V4], options, None))
        .await
        .expect("exec");
    assert_eq!(output.stdout, b"tty=true stdin=true stderr=false\n");

    let url = test
        .server
        .get_exec(exec_request("resize 2", true, false, true))
        .expect("url");
    let (sizes, resize) = mpsc::channel(4);
    sizes
        .send(TerminalSize {
            width: 80,
            height: 24,
        })
        .await
        .expect("size");
    sizes
        .send(TerminalSize {
            width: 120,
            height: 40,
        })
        .await
        .expect("size");
    // stdin stays open until the exec is over.
    let (_stdin_keepalive, stdin) = tokio::io::duplex(64);
    let options = ExecOptions {
        stdin: Some(Box::pin(stdin)),
        stdout: true,
        tty: true,
        resize: Some(resize),
        ..ExecOptions::default()
    };
    let output = within(exec_spdy(&url, &[V4], options, None))
        .await
        .expect("exec");
    assert_eq!(output.stdout, b"80x24\n120x40\n");
    assert_eq!(output.exit_code(), Ok(0));
}

#[tokio::test]
async fn spdy_v2_reports_errors_as_text_and_success_as_nothing() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("exit 7", false, true, false))
        .expect("url");
    let output = within(exec_spdy(&url, &["v2.channel.k8s.io"], output_only(), None))
        .await
        .expect("exec");
    assert_eq!(output.protocol, "v2.channel.k8s.io");
    assert_eq!(
        status_json(&output),
        "command terminated with non-zero exit code: error executing command [exit 7], exit code 7"
    );

    let url = test
        .server
        .get_exec(exec_request("echo legacy", false, true, false))
        .expect("url");
    let output = within(exec_spdy(&url, &["channel.k8s.io"], output_only(), None))
        .await
        .expect("exec");
    assert_eq!(output.protocol, "channel.k8s.io");
    assert_eq!(output.stdout, b"legacy\n");
    assert!(output.error.is_empty());
}

#[tokio::test]
async fn spdy_v2_tty_ignores_resize() {
    // v2 has no resize stream: the server must not wait for one.
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("tty", false, false, true))
        .expect("url");
    let options = ExecOptions {
        stdout: true,
        tty: true,
        ..ExecOptions::default()
    };
    let output = within(exec_spdy(&url, &["v2.channel.k8s.io"], options, None))
        .await
        .expect("exec");
    assert_eq!(output.stdout, b"tty=true stdin=false stderr=false\n");
}

#[tokio::test]
async fn runtime_errors_reach_the_client_as_internal_errors() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("fail", false, true, false))
        .expect("url");
    let output = within(exec_spdy(&url, &[V4], output_only(), None))
        .await
        .expect("exec");
    assert_eq!(
        status_json(&output),
        r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: boom","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: boom"}]},"code":500}"#
    );

    let mut missing = exec_request("echo", false, true, false);
    missing.container_id = "missing".into();
    let url = test.server.get_exec(missing).expect("url");
    let output = within(exec_websocket(&url, &[V5], output_only(), None))
        .await
        .expect("exec");
    let status = output.status().expect("status");
    assert_eq!(status.code, 500);
    assert!(
        status.message.contains("container missing not found"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn websocket_v5_exec_echo_and_exit_7() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("echo hi", false, true, false))
        .expect("url");
    let output = within(exec_websocket(&url, &[V5, V4], output_only(), None))
        .await
        .expect("exec");
    assert_eq!(output.protocol, V5);
    assert_eq!(output.stdout, b"hi\n");
    assert_eq!(
        status_json(&output),
        r#"{"metadata":{},"status":"Success"}"#
    );

    let url = test
        .server
        .get_exec(exec_request("exit 7", false, true, false))
        .expect("url");
    let output = within(exec_websocket(&url, &[V5], output_only(), None))
        .await
        .expect("exec");
    let status = output.status().expect("status");
    assert_eq!(status.reason, "NonZeroExitCode");
    assert_eq!(status.details.expect("details").causes[0].message, "7");
    assert_eq!(output.exit_code(), Ok(7));
}

#[tokio::test]
async fn websocket_v5_close_signal_ends_stdin() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("cat", true, false, false))
        .expect("url");
    let input = pattern(1 << 20, 3);
    let output = within(exec_websocket(&url, &[V5], with_stdin(input.clone()), None))
        .await
        .expect("exec");
    assert!(
        output.stdout == input,
        "stdin came back changed ({} bytes)",
        output.stdout.len()
    );
    assert_eq!(output.exit_code(), Ok(0));
}

#[tokio::test]
async fn websocket_v4_and_base64_and_v1() {
    let test = start_default_server().await;
    for (protocol, json) in [
        (V4, true),
        ("v4.base64.channel.k8s.io", true),
        ("channel.k8s.io", false),
        ("base64.channel.k8s.io", false),
    ] {
        let url = test
            .server
            .get_exec(exec_request("stderr to stderr", false, true, false))
            .expect("url");
        let output = within(exec_websocket(&url, &[protocol], output_only(), None))
            .await
            .expect("exec");
        assert_eq!(output.protocol, protocol);
        assert_eq!(output.stderr, b"to stderr\n", "{protocol}");
        assert_eq!(!output.error.is_empty(), json, "{protocol}");

        let url = test
            .server
            .get_exec(exec_request("exit 3", false, true, false))
            .expect("url");
        let output = within(exec_websocket(&url, &[protocol], output_only(), None))
            .await
            .expect("exec");
        if json {
            assert_eq!(output.exit_code(), Ok(3), "{protocol}");
        } else {
            let text = String::from_utf8_lossy(&output.error);
            assert!(
                text.starts_with("command terminated with non-zero exit code"),
                "{protocol}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn websocket_without_subprotocol_is_binary_v1() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("echo plain", false, false, false))
        .expect("url");
    let output = within(exec_websocket(&url, &[], output_only(), None))
        .await
        .expect("exec");
    assert_eq!(output.protocol, "");
    assert_eq!(output.stdout, b"plain\n");
}

#[tokio::test]
async fn websocket_tty_resize() {
    let test = start_default_server().await;
    let url = test
        .server
        .get_exec(exec_request("resize 1", true, false, true))
        .expect("url");
    let (sizes, resize) = mpsc::channel(1);
    sizes
        .send(TerminalSize {
            width: 33,
            height: 44,
        })
        .await
        .expect("size");
    let (_stdin_keepalive, stdin) = tokio::io::duplex(64);
    let options = ExecOptions {
        stdin: Some(Box::pin(stdin)),
        stdout: true,
        tty: true,
        resize: Some(resize),
        ..ExecOptions::default()
    };
    let output = within(exec_websocket(&url, &[V5], options, None))
        .await
        .expect("exec");
    assert_eq!(output.stdout, b"33x44\n");
}

#[tokio::test]
async fn attach_streams_output_and_stdin() {
    let test = start_default_server().await;
    let request = AttachRequest {
        container_id: "c9".into(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let url = test.server.get_attach(request.clone()).expect("url");
    let output = within(exec_spdy(
        &url,
        &[V4],
        with_stdin(b"typed\n".to_vec()),
        None,
    ))
    .await
    .expect("attach");
    assert_eq!(output.stdout, b"attached c9\ntyped\n");
    assert_eq!(output.exit_code(), Ok(0));

    let url = test.server.get_attach(request).expect("url");
    let output = within(exec_websocket(
        &url,
        &[V5],
        with_stdin(b"again\n".to_vec()),
        None,
    ))
    .await
    .expect("attach");
    assert_eq!(output.stdout, b"attached c9\nagain\n");
}

#[tokio::test]
async fn client_going_away_drops_the_runtime_future() {
    let test = start_default_server().await;
    for websocket in [false, true] {
        let before = test.runtime.dropped();
        let url = test
            .server
            .get_exec(exec_request("sleep", true, false, false))
            .expect("url");
        let (mut stdin_writer, stdin) = tokio::io::duplex(64);
        let options = ExecOptions {
            stdin: Some(Box::pin(stdin)),
            stdout: true,
            ..ExecOptions::default()
        };
        let client = tokio::spawn(async move {
            if websocket {
                exec_websocket(&url, &[V5], options, None).await
            } else {
                exec_spdy(&url, &[V4], options, None).await
            }
        });
        stdin_writer.write_all(b"x").await.expect("stdin");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(test.runtime.dropped(), before, "exec ended early");
        // Killing the client task drops its connection.
        client.abort();
        within(async {
            while test.runtime.dropped() == before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}
