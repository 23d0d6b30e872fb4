//! The server around the protocols: URLs and tokens, refusals, TLS, shutdown.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use coracle_streaming::client::{ClientTls, ExecOptions, exec_spdy, exec_websocket};
use coracle_streaming::{
    ErrorKind, ExecRequest, MAX_IN_FLIGHT_REQUESTS, PortForwardRequest, StreamingConfig, TlsConfig,
};
use support::{read_to_string, start_default_server, start_server, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const V4: &str = "v4.channel.k8s.io";

fn echo() -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["echo".into(), "ok".into()],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: false,
    }
}

fn stdout_only() -> ExecOptions {
    ExecOptions {
        stdout: true,
        ..ExecOptions::default()
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn urls_name_the_bound_port_and_the_endpoint() {
    let test = start_default_server().await;
    let port = test.server.local_addr().port();
    assert_ne!(port, 0);
    let url = test.server.get_exec(echo()).expect("url");
    let prefix = format!("http://127.0.0.1:{port}/exec/");
    assert!(url.starts_with(&prefix), "{url}");
    let token = &url[prefix.len()..];
    assert!(
        token.len() >= 32
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let attach = test
        .server
        .get_attach(coracle_streaming::AttachRequest {
            container_id: "c1".into(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .expect("url");
    assert!(attach.starts_with(&format!("http://127.0.0.1:{port}/attach/")));
    let forward = test
        .server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80],
        })
        .expect("url");
    assert!(forward.starts_with(&format!("http://127.0.0.1:{port}/portforward/")));
}

#[tokio::test]
async fn a_used_token_is_refused_with_404() {
    let test = start_default_server().await;
    let url = test.server.get_exec(echo()).expect("url");
    let output = within(exec_spdy(&url, &[V4], stdout_only(), None))
        .await
        .expect("first use");
    assert_eq!(output.stdout, b"ok\n");
    let second = within(exec_spdy(&url, &[V4], stdout_only(), None)).await;
    assert_eq!(second.err().and_then(|e| e.status()), Some(404));
    let third = within(exec_websocket(
        &url,
        &["v5.channel.k8s.io"],
        stdout_only(),
        None,
    ))
    .await;
    assert_eq!(third.err().and_then(|e| e.status()), Some(404));
}

#[tokio::test]
async fn an_expired_token_is_refused_with_404() {
    let config = StreamingConfig {
        token_ttl: Duration::from_millis(50),
        ..StreamingConfig::default()
    };
    let test = start_server(config).await;
    let url = test.server.get_exec(echo()).expect("url");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let result = within(exec_spdy(&url, &[V4], stdout_only(), None)).await;
    assert_eq!(result.err().and_then(|e| e.status()), Some(404));
}

#[tokio::test]
async fn unknown_tokens_and_wrong_endpoints_are_404() {
    let test = start_default_server().await;
    let base = format!("http://{}", test.server.local_addr());
    let unknown = within(exec_spdy(
        &format!("{base}/exec/nope"),
        &[V4],
        stdout_only(),
        None,
    ))
    .await;
    assert_eq!(unknown.err().and_then(|e| e.status()), Some(404));
    // An exec token used on /attach is consumed and refused, as kubelet does.
    let url = test.server.get_exec(echo()).expect("url");
    let attach_url = url.replacen("/exec/", "/attach/", 1);
    let wrong = within(exec_spdy(&attach_url, &[V4], stdout_only(), None)).await;
    assert_eq!(wrong.err().and_then(|e| e.status()), Some(404));
    let reused = within(exec_spdy(&url, &[V4], stdout_only(), None)).await;
    assert_eq!(reused.err().and_then(|e| e.status()), Some(404));
}

#[tokio::test]
async fn an_unsupported_spdy_protocol_is_refused_with_403() {
    let test = start_default_server().await;
    let url = test.server.get_exec(echo()).expect("url");
    let err = within(exec_spdy(&url, &["v9.channel.k8s.io"], stdout_only(), None))
        .await
        .expect_err("negotiated v9");
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string().contains("unable to negotiate protocol"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unsupported_websocket_protocol_is_refused_with_403() {
    let test = start_default_server().await;
    let url = test.server.get_exec(echo()).expect("url");
    let err = within(exec_websocket(
        &url,
        &["v9.channel.k8s.io"],
        stdout_only(),
        None,
    ))
    .await
    .expect_err("negotiated v9");
    assert_eq!(err.status(), Some(403), "{err}");
}

#[tokio::test]
async fn raw_requests_without_upgrade_headers_are_refused() {
    let test = start_default_server().await;
    let addr = test.server.local_addr();
    let cases = [
        // No X-Stream-Protocol-Version: 400.
        ("POST", "", "400 Bad Request"),
        // A protocol but no Upgrade/Connection headers: 400.
        (
            "POST",
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n",
            "400 Bad Request",
        ),
        // Another method: 405.
        ("DELETE", "", "405 Method Not Allowed"),
    ];
    for (method, headers, expected) in cases {
        let url = test.server.get_exec(echo()).expect("url");
        let path = &url[url.find("/exec/").expect("path")..];
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("send");
        let answer = within(read_to_string(tcp)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {expected}")),
            "{method} {headers:?}: {answer}"
        );
    }
    // Not one of our paths at all.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let answer = within(read_to_string(tcp)).await;
    assert!(answer.starts_with("HTTP/1.1 404 Not Found"), "{answer}");
    assert!(answer.ends_with("404 page not found\n"), "{answer}");
}

#[tokio::test]
async fn invalid_requests_are_invalid_arguments() {
    let test = start_default_server().await;
    let mut tty_and_stderr = echo();
    tty_and_stderr.tty = true;
    tty_and_stderr.stderr = true;
    let err = test
        .server
        .get_exec(tty_and_stderr)
        .expect_err("tty+stderr");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let mut no_streams = echo();
    no_streams.stdout = false;
    assert_eq!(
        test.server.get_exec(no_streams).map_err(|e| e.kind()),
        Err(ErrorKind::InvalidArgument)
    );
    let bad_port = PortForwardRequest {
        pod_sandbox_id: "p".into(),
        port: vec![70000],
    };
    assert_eq!(
        test.server.get_port_forward(bad_port).map_err(|e| e.kind()),
        Err(ErrorKind::InvalidArgument)
    );
}

#[tokio::test]
async fn in_flight_requests_are_capped() {
    let test = start_default_server().await;
    for _ in 0..MAX_IN_FLIGHT_REQUESTS {
        test.server.get_exec(echo()).expect("url");
    }
    let err = test.server.get_exec(echo()).expect_err("over the cap");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
}

#[tokio::test]
async fn exec_over_tls() {
    let config = StreamingConfig {
        tls: Some(TlsConfig {
            cert_file: fixture("server.crt"),
            key_file: fixture("server.key"),
        }),
        ..StreamingConfig::default()
    };
    let test = start_server(config).await;
    let tls = ClientTls::from_ca_file(&fixture("server.crt")).expect("trust anchors");
    let url = test.server.get_exec(echo()).expect("url");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let output = within(exec_spdy(&url, &[V4], stdout_only(), Some(&tls)))
        .await
        .expect("exec over https");
    assert_eq!(output.stdout, b"ok\n");
    let url = test.server.get_exec(echo()).expect("url");
    let output = within(exec_websocket(
        &url,
        &["v5.channel.k8s.io"],
        stdout_only(),
        Some(&tls),
    ))
    .await
    .expect("exec over wss");
    assert_eq!(output.stdout, b"ok\n");
    // A client that does not trust the certificate cannot connect.
    let url = test.server.get_exec(echo()).expect("url");
    let untrusting = ClientTls::from_ca_file(&fixture("README.md")).expect("empty trust store");
    assert!(
        within(exec_spdy(&url, &[V4], stdout_only(), Some(&untrusting)))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bad_tls_files_fail_start() {
    let config = StreamingConfig {
        tls: Some(TlsConfig {
            cert_file: fixture("missing.crt"),
            key_file: fixture("server.key"),
        }),
        ..StreamingConfig::default()
    };
    let runtime = std::sync::Arc::new(support::FakeRuntime::default());
    let err = coracle_streaming::StreamingServer::start(config, runtime)
        .await
        .err()
        .expect("start failed");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}

#[tokio::test]
async fn shutdown_closes_live_sessions() {
    let test = start_default_server().await;
    let mut request = echo();
    request.cmd = vec!["sleep".into()];
    let url = test.server.get_exec(request).expect("url");
    let client = tokio::spawn(async move { exec_spdy(&url, &[V4], stdout_only(), None).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = test.server.local_addr();
    within(test.server.shutdown()).await;
    // The session's runtime future was dropped and the client saw the end.
    assert!(test.runtime.dropped() >= 1);
    let output = within(client)
        .await
        .expect("client task")
        .expect("client saw a clean end");
    assert!(output.error.is_empty());
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}
