//! Interoperability with the real client: `kubectl exec` and `kubectl port-forward`
//! (Go's spdystream, gorilla/websocket and client-go) against the streaming server.
//!
//! A minimal fake API server answers kubectl's discovery and pod lookups and, like
//! the apiserver and kubelet, turns each exec/portforward request into a CRI-style
//! call on the streaming server, then proxies the connection to the URL it returns.
//!
//! kubectl (>= 1.29, for its WebSocket transport) is not among CI's Debian packages,
//! so these tests are `#[ignore]`d rather than skipped silently: run them where
//! kubectl is on PATH with `cargo nextest run -p coracle-streaming --test kubectl
//! --run-ignored only`; without kubectl they fail.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use coracle_streaming::{ExecRequest, PortForwardRequest, StreamingServer};
use futures_util::future::join_all;
use support::{pattern, start_default_server, start_echo_server, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"mypod","namespace":"default"},"spec":{"containers":[{"name":"c","image":"x"}]},"status":{"phase":"Running"}}"#;

fn require_kubectl() {
    let found = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(found, "kubectl is not on PATH: these interop tests need it");
}

/// What the fake API server saw: the `Upgrade` header of each proxied request.
type Upgrades = Arc<Mutex<Vec<String>>>;

struct FakeApiServer {
    upgrades: Upgrades,
    _home: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl FakeApiServer {
    async fn start(streaming: Arc<StreamingServer>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind fake apiserver");
        let addr = listener.local_addr().expect("address");
        let upgrades = Upgrades::default();
        let seen = upgrades.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve_client(client, streaming.clone(), seen.clone()));
            }
        });
        let home = tempfile::tempdir().expect("kubectl home");
        let kubeconfig = home.path().join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n\
             current-context: fake\nusers: [{{name: fake, user: {{}}}}]\n"
        );
        std::fs::write(&kubeconfig, config).expect("write kubeconfig");
        Self {
            upgrades,
            _home: home,
            kubeconfig,
        }
    }

    fn kubectl(&self, websockets: bool) -> Command {
        let mut command = Command::new("kubectl");
        command
            .env("HOME", self.kubeconfig.parent().unwrap_or(Path::new("/")))
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
                if websockets { "true" } else { "false" },
            )
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
            .kill_on_drop(true);
        command
    }

    fn last_upgrade(&self) -> String {
        self.upgrades
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Serves kubectl's requests on one connection until it upgrades or closes.
async fn serve_client(client: TcpStream, streaming: Arc<StreamingServer>, upgrades: Upgrades) {
    let mut client = BufReader::new(client);
    loop {
        let Some(head) = read_head(&mut client).await else {
            return;
        };
        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let pod_path = "/api/v1/namespaces/default/pods/mypod";
        let streaming_url = match path.strip_prefix(pod_path) {
            Some("/exec") => streaming.get_exec(exec_request(query)).expect("get_exec"),
            Some("/portforward") => streaming
                .get_port_forward(PortForwardRequest {
                    pod_sandbox_id: "mypod".into(),
                    port: vec![],
                })
                .expect("get_port_forward"),
            _ => {
                let body = discovery(path);
                let status = if body.is_some() {
                    "200 OK"
                } else {
                    "404 Not Found"
                };
                let body =
                    body.unwrap_or(r#"{"kind":"Status","status":"Failure","code":404}"#.into());
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        let upgrade = head
            .lines()
            .find_map(|line| {
                line.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("upgrade"))
            })
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default();
        upgrades.lock().expect("lock").push(upgrade);
        proxy(client, &head, &streaming_url, streaming.local_addr()).await;
        return;
    }
}

/// The exec request kubectl describes in its query, as the apiserver passes it on.
fn exec_request(query: &str) -> ExecRequest {
    let mut request = ExecRequest {
        container_id: "c".into(),
        cmd: vec![],
        tty: false,
        stdin: false,
        stdout: false,
        stderr: false,
    };
    for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "command" => request.cmd.push(value),
            "stdin" => request.stdin = value == "true",
            "stdout" => request.stdout = value == "true",
            "stderr" => request.stderr = value == "true",
            "tty" => request.tty = value == "true",
            _ => {}
        }
    }
    request
}

fn discovery(path: &str) -> Option<String> {
    let body = match path {
        "/version" => r#"{"major":"1","minor":"32","gitVersion":"v1.32.0"}"#,
        "/api" => {
            r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#
        }
        "/apis" => r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#,
        "/api/v1" => {
            r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#
        }
        "/api/v1/namespaces/default/pods/mypod" => POD,
        _ => return None,
    };
    Some(body.into())
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// Sends kubectl's request to the streaming URL and splices the two connections.
async fn proxy(
    client: BufReader<TcpStream>,
    head: &str,
    streaming_url: &str,
    upstream: SocketAddr,
) {
    let path = &streaming_url[streaming_url.find("://").map_or(0, |i| i + 3)..];
    let path = &path[path.find('/').unwrap_or(0)..];
    let mut lines = head.lines();
    let method = lines
        .next()
        .and_then(|line| line.split(' ').next())
        .unwrap_or("GET");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for line in lines.filter(|line| !line.to_ascii_lowercase().starts_with("host:")) {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Host: {upstream}\r\n\r\n"));
    let mut server = TcpStream::connect(upstream)
        .await
        .expect("connect streaming server");
    server
        .write_all(request.as_bytes())
        .await
        .expect("forward request");
    // Whatever kubectl already sent after its request head.
    let buffered = client.buffer().to_vec();
    server
        .write_all(&buffered)
        .await
        .expect("forward buffered bytes");
    let mut client = client.into_inner();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn run_kubectl(mut command: Command, stdin: Option<Vec<u8>>) -> Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn kubectl");
    let mut child_stdin = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default();
    let feed = tokio::spawn(async move {
        let _ = child_stdin.write_all(&input).await;
        // Dropping stdin is EOF for kubectl, which passes it on.
    });
    let output = within(child.wait_with_output()).await.expect("kubectl");
    let _ = feed.await;
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn check_exec(api: &FakeApiServer, websockets: bool) {
    let transport = if websockets { "websocket" } else { "SPDY/3.1" };

    let mut command = api.kubectl(websockets);
    command.args(["exec", "mypod", "--", "echo", "hello", "kubectl"]);
    let output = run_kubectl(command, None).await;
    assert!(
        output.status.success(),
        "{transport} echo: {}",
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), "hello kubectl\n", "{transport}");
    assert_eq!(api.last_upgrade(), transport);

    let mut command = api.kubectl(websockets);
    command.args(["exec", "mypod", "--", "exit", "7"]);
    let output = run_kubectl(command, None).await;
    assert_eq!(
        output.status.code(),
        Some(7),
        "{transport}: {}",
        text(&output.stderr)
    );
    assert!(
        text(&output.stderr).contains("command terminated with exit code 7"),
        "{transport}: {}",
        text(&output.stderr)
    );

    let mut command = api.kubectl(websockets);
    command.args(["exec", "mypod", "--", "stderr", "to", "stderr"]);
    let output = run_kubectl(command, None).await;
    assert!(
        output.status.success(),
        "{transport}: {}",
        text(&output.stderr)
    );
    assert_eq!(text(&output.stderr), "to stderr\n", "{transport}");

    let input = pattern(1 << 20, 9);
    let mut command = api.kubectl(websockets);
    command.args(["exec", "-i", "mypod", "--", "cat"]);
    let output = run_kubectl(command, Some(input.clone())).await;
    assert!(
        output.status.success(),
        "{transport} cat: {}",
        text(&output.stderr)
    );
    assert!(
        output.stdout == input,
        "{transport}: stdin came back changed ({} bytes)",
        output.stdout.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kubectl >= 1.29 on PATH; run with --run-ignored only"]
async fn kubectl_exec_over_spdy() {
    require_kubectl();
    let test = start_default_server().await;
    let api = FakeApiServer::start(Arc::new(test.server)).await;
    check_exec(&api, false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kubectl >= 1.29 on PATH; run with --run-ignored only"]
async fn kubectl_exec_over_websocket() {
    require_kubectl();
    let test = start_default_server().await;
    let api = FakeApiServer::start(Arc::new(test.server)).await;
    check_exec(&api, true).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kubectl >= 1.29 on PATH; run with --run-ignored only"]
async fn kubectl_port_forward_twenty_connections() {
    require_kubectl();
    let test = start_default_server().await;
    let echo = start_echo_server().await;
    let api = FakeApiServer::start(Arc::new(test.server)).await;
    let mut command = api.kubectl(false);
    command
        .args(["port-forward", "--address", "127.0.0.1", "mypod"])
        .arg(format!(":{}", echo.port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // "Forwarding from 127.0.0.1:43567 -> 8080"
    let local_port: u16 = within(async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read")
                .expect("kubectl port-forward exited");
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                break rest
                    .split(' ')
                    .next()
                    .expect("port")
                    .parse()
                    .expect("port number");
            }
        }
    })
    .await;
    let rounds = (0..20).map(|i| async move {
        let payload = pattern(100 * 1024 + i * 17, i as u8);
        let mut socket = TcpStream::connect(("127.0.0.1", local_port))
            .await
            .expect("connect");
        let (mut reader, mut writer) = socket.split();
        let send = async {
            writer.write_all(&payload).await.expect("send");
            writer.shutdown().await.expect("half-close");
        };
        let mut received = Vec::new();
        let receive = reader.read_to_end(&mut received);
        let ((), read) = tokio::join!(send, receive);
        read.expect("receive");
        assert!(
            received == payload,
            "connection {i}: echo differs ({} bytes)",
            received.len()
        );
    });
    within(join_all(rounds)).await;
    assert_eq!(api.last_upgrade(), "SPDY/3.1");
    child.kill().await.expect("stop kubectl");
}
