//! Port forwarding end to end: many connections over one SPDY connection, and over
//! WebSocket, to a local echo server standing in for the pod's port.

mod support;

use coracle_streaming::PortForwardRequest;
use coracle_streaming::client::{SpdyPortForward, WebSocketPortForward};
use futures_util::future::join_all;
use support::{closed_port, pattern, start_default_server, start_echo_server, within};
use tokio::io::AsyncReadExt;

const CONCURRENT: usize = 20;

fn request(ports: Vec<i32>) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: "pod1".into(),
        port: ports,
    }
}

#[tokio::test]
async fn spdy_twenty_concurrent_connections_over_one_session() {
    let test = start_default_server().await;
    let echo = start_echo_server().await;
    let url = test.server.get_port_forward(request(vec![])).expect("url");
    let session = within(SpdyPortForward::connect(&url, None))
        .await
        .expect("connect");
    let rounds = (0..CONCURRENT).map(|i| {
        let session = &session;
        async move {
            // Sizes around and above the 64 KiB SPDY window.
            let payload = pattern(48 * 1024 + i * 7919, i as u8);
            let connection = session.open(echo.port()).await.expect("open");
            let (received, errors) = connection.round_trip(&payload).await.expect("round trip");
            assert!(
                received == payload,
                "connection {i}: echo differs ({} bytes)",
                received.len()
            );
            assert!(
                errors.is_empty(),
                "connection {i}: {}",
                String::from_utf8_lossy(&errors)
            );
        }
    });
    within(join_all(rounds)).await;
    // The session stays usable after all those connections ended.
    let connection = session.open(echo.port()).await.expect("open");
    let (received, _) = within(connection.round_trip(b"still here"))
        .await
        .expect("round trip");
    assert_eq!(received, b"still here");
    session.shutdown().await;
}

#[tokio::test]
async fn spdy_forward_errors_are_reported_on_the_error_stream() {
    let test = start_default_server().await;
    let port = closed_port().await;
    let url = test.server.get_port_forward(request(vec![])).expect("url");
    let session = within(SpdyPortForward::connect(&url, None))
        .await
        .expect("connect");
    let connection = session.open(port).await.expect("open");
    let (received, errors) = within(connection.round_trip(b"hello"))
        .await
        .expect("round trip");
    assert!(received.is_empty());
    let errors = String::from_utf8(errors).expect("utf-8");
    let json: serde_json::Value = serde_json::from_str(&errors).expect("kubelet's json");
    let message = json["message"].as_str().expect("message");
    assert!(
        message.starts_with(&format!(
            "error forwarding port {port} to pod pod1, uid : connect to port {port}"
        )),
        "{message}"
    );
    assert_eq!(json["closeConnection"], true);
}

#[tokio::test]
async fn spdy_streams_without_a_valid_port_are_refused() {
    let test = start_default_server().await;
    let url = test.server.get_port_forward(request(vec![])).expect("url");
    let session = within(SpdyPortForward::connect(&url, None))
        .await
        .expect("connect");
    // Port 0 is invalid: the server resets the stream instead of replying.
    let err = within(session.open(0)).await.err().expect("stream refused");
    assert!(err.to_string().contains("reset"), "{err}");
    session.shutdown().await;
}

#[tokio::test]
async fn websocket_twenty_concurrent_forwards() {
    let test = start_default_server().await;
    let echo = start_echo_server().await;
    let rounds = (0..CONCURRENT).map(|i| {
        let url = test
            .server
            .get_port_forward(request(vec![echo.port().into()]))
            .expect("url");
        async move {
            let mut forward = WebSocketPortForward::connect(&url, 1, &["v4.channel.k8s.io"], None)
                .await
                .expect("connect");
            let port = &mut forward.ports[0];
            assert_eq!(port.port, echo.port());
            let payload = pattern(40 * 1024 + i * 13, i as u8);
            let received = port
                .exchange(&payload, payload.len())
                .await
                .expect("exchange");
            assert!(received == payload, "forward {i}: echo differs");
            forward.shutdown().await;
        }
    });
    within(join_all(rounds)).await;
}

#[tokio::test]
async fn websocket_ports_from_the_query_and_base64() {
    let test = start_default_server().await;
    let echo = start_echo_server().await;
    let url = test.server.get_port_forward(request(vec![])).expect("url");
    let url = format!("{url}?port={},{}", echo.port(), echo.port());
    let mut forward = within(WebSocketPortForward::connect(
        &url,
        2,
        &["v4.base64.channel.k8s.io"],
        None,
    ))
    .await
    .expect("connect");
    assert_eq!(forward.ports.len(), 2);
    for (i, port) in forward.ports.iter_mut().enumerate() {
        let payload = format!("port {i} says hi");
        let received = within(port.exchange(payload.as_bytes(), payload.len()))
            .await
            .expect("exchange");
        assert_eq!(received, payload.as_bytes());
    }
    forward.shutdown().await;
}

#[tokio::test]
async fn websocket_forward_errors_are_text_on_the_error_channel() {
    let test = start_default_server().await;
    let port = closed_port().await;
    let url = test
        .server
        .get_port_forward(request(vec![port.into()]))
        .expect("url");
    let mut forward = within(WebSocketPortForward::connect(
        &url,
        1,
        &["v4.channel.k8s.io"],
        None,
    ))
    .await
    .expect("connect");
    let mut errors = String::new();
    within(forward.ports[0].error.read_to_string(&mut errors))
        .await
        .expect("error channel");
    assert!(
        errors.starts_with(&format!("error forwarding port {port} to pod pod1, uid : ")),
        "{errors}"
    );
}

#[tokio::test]
async fn websocket_port_forward_without_any_port_is_400() {
    let test = start_default_server().await;
    let url = test.server.get_port_forward(request(vec![])).expect("url");
    let err = within(WebSocketPortForward::connect(
        &url,
        1,
        &["v4.channel.k8s.io"],
        None,
    ))
    .await
    .err()
    .expect("refused");
    assert_eq!(err.status(), Some(400), "{err}");
}
