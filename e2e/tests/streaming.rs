//! Exec, Attach and PortForward through CRI against the real daemon: the URL from the
//! RPC, then the streaming protocols as kubectl and crictl speak them (the Rust
//! clients of `coracle_streaming::client`, written from client-go), into real
//! containers and a real pod network namespace.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::time::Duration;

use coracle_e2e::fixtures::{container_config, pod_config};
use coracle_e2e::{Daemon, Registry, require_root};
use coracle_streaming::client::{ExecOptions, SpdyPortForward, exec_spdy, exec_websocket};
use coracle_streaming::{TerminalSize, protocol};
use k8s_cri::v1;
use tonic::Code;

struct Setup {
    daemon: Daemon,
    registry: Registry,
    pod_id: String,
    pod_config: v1::PodSandboxConfig,
    _logs: tempfile::TempDir,
}

impl Setup {
    async fn new(name: &str) -> Setup {
        require_root();
        let registry = Registry::start().unwrap();
        let daemon = Daemon::start().await.unwrap();
        for repo in ["busybox", "httpd"] {
            daemon
                .pull_image(&registry.reference(repo, "latest"))
                .await
                .unwrap();
        }
        let logs = tempfile::tempdir().unwrap();
        let pod_config = pod_config(name, logs.path());
        let pod_id = daemon.run_pod(pod_config.clone()).await.unwrap();
        Setup {
            daemon,
            registry,
            pod_id,
            pod_config,
            _logs: logs,
        }
    }

    async fn run(&self, mut config: v1::ContainerConfig) -> String {
        if config.image.as_ref().is_some_and(|i| i.image.is_empty()) {
            config.image = Some(v1::ImageSpec {
                image: self.registry.reference("busybox", "latest"),
                ..Default::default()
            });
        }
        let id = self
            .daemon
            .create_container(&self.pod_id, config, &self.pod_config)
            .await
            .unwrap();
        self.daemon.start_container(&id).await.unwrap();
        id
    }

    fn busybox(&self, name: &str, command: &[&str]) -> v1::ContainerConfig {
        container_config(name, &self.registry.reference("busybox", "latest"), command)
    }

    async fn exec_url(&self, id: &str, cmd: &[&str], tty: bool, stdin: bool) -> String {
        let mut client = self.daemon.runtime_client().await.unwrap();
        client
            .exec(v1::ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    async fn attach_url(&self, id: &str, stdin: bool) -> String {
        let mut client = self.daemon.runtime_client().await.unwrap();
        client
            .attach(v1::AttachRequest {
                container_id: id.into(),
                stdin,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url
    }

    async fn finish(mut self) {
        self.daemon.stop_pod(&self.pod_id).await.unwrap();
        self.daemon.remove_pod(&self.pod_id).await.unwrap();
        self.daemon.stop().await.unwrap();
    }
}

fn output_options(stdin: Option<&'static [u8]>) -> ExecOptions {
    ExecOptions {
        stdin: stdin.map(|bytes| Box::pin(bytes) as _),
        stdout: true,
        stderr: true,
        ..Default::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn exec_over_spdy_and_websocket_reports_output_and_exit_codes() {
    let setup = Setup::new("stream-exec").await;
    let id = setup.run(setup.busybox("sleeper", &["sleep", "600"])).await;

    let url = setup.exec_url(&id, &["echo", "hello"], false, false).await;
    let out = exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        output_options(None),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.protocol, protocol::REMOTECOMMAND_V4);
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(out.exit_code(), Ok(0));

    let url = setup
        .exec_url(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 7"],
            false,
            false,
        )
        .await;
    let out = exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        output_options(None),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("out\n".into(), "err\n".into())
    );
    let status = out.status().unwrap();
    assert_eq!(status.reason, "NonZeroExitCode", "{status:?}");
    assert_eq!(out.exit_code(), Ok(7));

    let url = setup
        .exec_url(&id, &["sh", "-c", "exit 7"], false, false)
        .await;
    let out = exec_websocket(
        &url,
        &[protocol::REMOTECOMMAND_V5],
        output_options(None),
        None,
    )
    .await
    .unwrap();
    assert_eq!(out.protocol, protocol::REMOTECOMMAND_V5);
    assert_eq!(out.exit_code(), Ok(7));

    // A URL is good for one session only.
    let url = setup.exec_url(&id, &["true"], false, false).await;
    exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        output_options(None),
        None,
    )
    .await
    .unwrap();
    let again = exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        output_options(None),
        None,
    )
    .await;
    assert_eq!(again.unwrap_err().status(), Some(404));

    let mut client = setup.daemon.runtime_client().await.unwrap();
    let refused = client
        .exec(v1::ExecRequest {
            container_id: "no-such-container".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    setup.finish().await;
}

#[tokio::test]
async fn exec_pipes_stdin_and_a_tty_follows_resizes() {
    let setup = Setup::new("stream-tty").await;
    let id = setup.run(setup.busybox("sleeper", &["sleep", "600"])).await;

    let url = setup.exec_url(&id, &["cat"], false, true).await;
    let out = exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        output_options(Some(b"piped through cat\n")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "piped through cat\n");
    assert_eq!(out.exit_code(), Ok(0));

    let url = setup.exec_url(&id, &["cat"], false, true).await;
    let out = exec_websocket(
        &url,
        &[protocol::REMOTECOMMAND_V5],
        output_options(Some(b"closed by the v5 signal\n")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "closed by the v5 signal\n");

    let (sizes, resize) = tokio::sync::mpsc::channel(4);
    sizes
        .send(TerminalSize {
            width: 101,
            height: 37,
        })
        .await
        .unwrap();
    drop(sizes);
    // Wait for the size to land before asking the terminal for it.
    let url = setup
        .exec_url(&id, &["sh", "-c", "sleep 1; stty size; tty"], true, false)
        .await;
    let out = exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        ExecOptions {
            stdout: true,
            tty: true,
            resize: Some(resize),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let shown = text(&out.stdout);
    assert!(shown.contains("37 101"), "{shown:?}");
    assert!(shown.contains("/dev/pts/"), "{shown:?}");
    assert!(out.stderr.is_empty(), "a tty has one output stream");
    assert_eq!(out.exit_code(), Ok(0));
    setup.finish().await;
}

#[tokio::test]
async fn attach_sees_output_and_feeds_stdin() {
    let setup = Setup::new("stream-attach").await;
    let writer = setup
        .run(setup.busybox(
            "writer",
            &[
                "sh",
                "-c",
                "sleep 2; for i in 1 2 3; do echo line$i; done; echo oops >&2",
            ],
        ))
        .await;
    // Two attaches at once see the same output.
    let (first, second) = tokio::join!(
        async {
            let url = setup.attach_url(&writer, false).await;
            exec_spdy(
                &url,
                &[protocol::REMOTECOMMAND_V4],
                output_options(None),
                None,
            )
            .await
        },
        async {
            let url = setup.attach_url(&writer, false).await;
            exec_websocket(
                &url,
                &[protocol::REMOTECOMMAND_V5],
                output_options(None),
                None,
            )
            .await
        }
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(text(&first.stdout), "line1\nline2\nline3\n");
    assert_eq!(text(&first.stderr), "oops\n");
    assert_eq!(first.stdout, second.stdout);

    let mut cat = setup.busybox("cat", &["cat"]);
    cat.stdin = true;
    cat.stdin_once = true;
    let cat = setup.run(cat).await;
    let url = setup.attach_url(&cat, true).await;
    let out = exec_spdy(
        &url,
        &[protocol::REMOTECOMMAND_V4],
        output_options(Some(b"to the container's stdin\n")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(text(&out.stdout), "to the container's stdin\n");
    // stdin_once: the end of the first attach's stdin is the container's EOF.
    let status = setup
        .daemon
        .wait_container_exited(&cat, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.exit_code, 0);
    setup.finish().await;
}

#[tokio::test]
async fn port_forward_reaches_httpd_in_the_pod_with_twenty_connections() {
    let setup = Setup::new("stream-pf").await;
    let httpd = container_config("httpd", &setup.registry.reference("httpd", "latest"), &[]);
    setup.run(httpd).await;
    let mut client = setup.daemon.runtime_client().await.unwrap();
    let url = client
        .port_forward(v1::PortForwardRequest {
            pod_sandbox_id: setup.pod_id.clone(),
            port: vec![80],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let session = SpdyPortForward::connect(&url, None).await.unwrap();
    // httpd may still be starting: retry the first request briefly.
    let mut first = None;
    for _ in 0..50 {
        let (data, _) = session
            .open(80)
            .await
            .unwrap()
            .round_trip(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        if text(&data).contains("coracle-httpd-ok") {
            first = Some(data);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first.is_some(), "httpd never answered through the forward");
    let connections = (0..20).map(|_| async {
        let connection = session.open(80).await.unwrap();
        connection
            .round_trip(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap()
    });
    for (data, errors) in futures_util::future::join_all(connections).await {
        assert!(text(&data).contains("coracle-httpd-ok"), "{}", text(&data));
        assert!(errors.is_empty(), "{}", text(&errors));
    }
    // A port nobody listens on: the error stream says so.
    let (data, errors) = session
        .open(81)
        .await
        .unwrap()
        .round_trip(b"x")
        .await
        .unwrap();
    assert!(data.is_empty());
    assert!(!errors.is_empty(), "no error for a closed port");
    session.shutdown().await;

    let refused = client
        .port_forward(v1::PortForwardRequest {
            pod_sandbox_id: "no-such-pod".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    setup.finish().await;
}

/// A client this project did not write: the PyPI package websocket-client
/// (`crates/streaming/tests/python`) runs v5 and base64 execs in a real container.
#[tokio::test]
async fn python_websocket_client_execs_in_a_real_container() {
    let setup = Setup::new("stream-python").await;
    let id = setup.run(setup.busybox("sleeper", &["sleep", "600"])).await;
    let urls = [
        setup
            .exec_url(&id, &["echo", "hello", "from", "python"], false, false)
            .await,
        setup
            .exec_url(&id, &["sh", "-c", "exit 7"], false, false)
            .await,
        setup.exec_url(&id, &["cat"], false, true).await,
        setup
            .exec_url(&id, &["echo", "base64", "works"], false, false)
            .await,
    ];
    let script = coracle_e2e::workspace_root().join("crates/streaming/tests/python/run.sh");
    let venv =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-websocket-client");
    let output = tokio::process::Command::new(&script)
        .arg(&venv)
        .args(&urls)
        .arg("sh -c exit 7")
        .output()
        .await
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    assert!(
        output.status.success(),
        "websocket-client against the daemon failed:\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    setup.finish().await;
}
