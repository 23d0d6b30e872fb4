//! The HTTP side: routes `/exec/{token}`, `/attach/{token}`, `/portforward/{token}`
//! (GET or POST, as kubelet registers them), consumes the token, negotiates the
//! protocol and answers `101 Switching Protocols`; the session then runs on the
//! upgraded connection in its own task.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WebSocketRole;
use tracing::debug;

use crate::portforward;
use crate::remotecommand::{self, Action};
use crate::request::{PortForwardRequest, StdioOptions};
use crate::request_cache::CachedRequest;
use crate::server::ServerContext;
use crate::websocket;

type Body = Full<Bytes>;

/// A WebSocket port-forward uses channels 2i and 2i+1 for port i.
const MAX_WEBSOCKET_PORTS: usize = 127;

/// Clients must send their request headers within this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `X-Stream-Protocol-Version`: the SPDY subprotocols a client offers, and the one
/// we chose in the 101.
pub const STREAM_PROTOCOL_HEADER: HeaderName = HeaderName::from_static("x-stream-protocol-version");
/// `X-Accepted-Stream-Protocol-Versions`, listed on a 403 when none matched.
const ACCEPTED_PROTOCOLS_HEADER: HeaderName =
    HeaderName::from_static("x-accepted-stream-protocol-versions");

pub(crate) async fn serve_connection<I>(io: I, ctx: Arc<ServerContext>) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(request, ctx)) }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Exec,
    Attach,
    PortForward,
}

fn parse_path(path: &str) -> Option<(Endpoint, &str)> {
    let (endpoint, token) = path.strip_prefix('/')?.split_once('/')?;
    let endpoint = match endpoint {
        "exec" => Endpoint::Exec,
        "attach" => Endpoint::Attach,
        "portforward" => Endpoint::PortForward,
        _ => return None,
    };
    (!token.is_empty() && !token.contains('/')).then_some((endpoint, token))
}

fn handle(mut request: Request<Incoming>, ctx: Arc<ServerContext>) -> Response<Body> {
    let Some((endpoint, token)) = parse_path(request.uri().path()) else {
        return not_found();
    };
    if request.method() != Method::GET && request.method() != Method::POST {
        return text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    // Used, unknown and expired tokens all look the same: 404, like kubelet.
    let Some(cached) = ctx.cache.consume(token) else {
        return not_found();
    };
    match (endpoint, cached) {
        (Endpoint::Exec, CachedRequest::Exec(exec)) => {
            let stdio = exec.stdio();
            let action = Action::Exec {
                container_id: exec.container_id,
                cmd: exec.cmd,
            };
            upgrade_remotecommand(&mut request, action, stdio, ctx)
        }
        (Endpoint::Attach, CachedRequest::Attach(attach)) => {
            let stdio = attach.stdio();
            let action = Action::Attach {
                container_id: attach.container_id,
            };
            upgrade_remotecommand(&mut request, action, stdio, ctx)
        }
        (Endpoint::PortForward, CachedRequest::PortForward(port_forward)) => {
            upgrade_port_forward(&mut request, port_forward, ctx)
        }
        _ => not_found(),
    }
}

fn upgrade_remotecommand(
    request: &mut Request<Incoming>,
    action: Action,
    stdio: StdioOptions,
    ctx: Arc<ServerContext>,
) -> Response<Body> {
    if websocket::is_websocket_request(request.headers()) {
        let requested = websocket::requested_protocols(request.headers());
        let supported = remotecommand::websocket::PROTOCOLS;
        let Some(&(name, version, codec)) = negotiate_websocket(&requested, supported, |p| p.0)
        else {
            return websocket_protocol_mismatch(&requested, supported.iter().map(|p| p.0));
        };
        let response = match websocket_upgrade_response(request, name) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        let session_ctx = ctx.clone();
        spawn_websocket(request, &ctx, move |ws| {
            remotecommand::websocket::serve(ws, version, codec, stdio, action, session_ctx)
        });
        return response;
    }
    let supported = remotecommand::spdy::PROTOCOLS;
    let (name, version) = match negotiate_spdy(request.headers(), supported.iter().map(|p| p.0)) {
        Ok(name) => match supported.iter().find(|p| p.0 == name) {
            Some(&(name, version)) => (name, version),
            None => return not_found(),
        },
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = require_spdy_upgrade(request.headers()) {
        return refusal.into_response();
    }
    let session_ctx = ctx.clone();
    spawn_upgraded(request, &ctx, move |io| {
        remotecommand::spdy::serve(io, version, stdio, action, session_ctx)
    });
    spdy_upgrade_response(name)
}

fn upgrade_port_forward(
    request: &mut Request<Incoming>,
    port_forward: PortForwardRequest,
    ctx: Arc<ServerContext>,
) -> Response<Body> {
    let pod_sandbox_id = port_forward.pod_sandbox_id.clone();
    if websocket::is_websocket_request(request.headers()) {
        let ports = match websocket_ports(request.uri().query(), &port_forward) {
            Ok(ports) => ports,
            Err(message) => return text_response(StatusCode::BAD_REQUEST, &message),
        };
        let requested = websocket::requested_protocols(request.headers());
        let supported = portforward::websocket::PROTOCOLS;
        let Some(&(name, codec)) = negotiate_websocket(&requested, supported, |p| p.0) else {
            return websocket_protocol_mismatch(&requested, supported.iter().map(|p| p.0));
        };
        let response = match websocket_upgrade_response(request, name) {
            Ok(response) => response,
            Err(refusal) => return refusal.into_response(),
        };
        let session_ctx = ctx.clone();
        spawn_websocket(request, &ctx, move |ws| {
            portforward::websocket::serve(ws, codec, ports, pod_sandbox_id, session_ctx)
        });
        return response;
    }
    let name = match negotiate_spdy(
        request.headers(),
        portforward::spdy::PROTOCOLS.iter().copied(),
    ) {
        Ok(name) => name,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = require_spdy_upgrade(request.headers()) {
        return refusal.into_response();
    }
    let session_ctx = ctx.clone();
    spawn_upgraded(request, &ctx, move |io| {
        portforward::spdy::serve(io, pod_sandbox_id, session_ctx)
    });
    spdy_upgrade_response(name)
}

/// The ports a WebSocket port-forward carries: the `port` query parameters
/// (repeated or comma-separated, kubelet's `NewV4Options`), else the CRI request's.
fn websocket_ports(query: Option<&str>, request: &PortForwardRequest) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(("port", value)) = pair.split_once('=') else {
            continue;
        };
        let value = percent_decode_str(value).decode_utf8_lossy();
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for port in value.split(',') {
            ports.push(portforward::parse_port(port)?);
        }
    }
    if ports.is_empty() {
        // Validated when the URL was handed out.
        ports = request
            .port
            .iter()
            .filter_map(|&port| u16::try_from(port).ok())
            .collect();
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    // Two one-byte channel numbers per port, 255 being reserved.
    if ports.len() > MAX_WEBSOCKET_PORTS {
        return Err(format!("at most {MAX_WEBSOCKET_PORTS} ports per websocket"));
    }
    Ok(ports)
}

/// The first protocol the client offers that we support (client preference, as
/// x/net/websocket picks); a client offering none gets the `""` entry if any.
fn negotiate_websocket<'a, T>(
    requested: &[String],
    supported: &'a [T],
    name: impl Fn(&T) -> &str,
) -> Option<&'a T> {
    if requested.is_empty() {
        return supported.iter().find(|p| name(p).is_empty());
    }
    requested.iter().find_map(|wanted| {
        supported
            .iter()
            .find(|p| !name(p).is_empty() && name(p) == wanted)
    })
}

/// apimachinery's `httpstream.Handshake`: the first of the client's protocols we
/// support, else 403 listing what we accept.
fn negotiate_spdy(
    headers: &HeaderMap,
    supported: impl Iterator<Item = &'static str> + Clone,
) -> Result<&'static str, Refusal> {
    let requested = websocket::comma_separated(headers, STREAM_PROTOCOL_HEADER);
    if requested.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    if let Some(name) = requested
        .iter()
        .find_map(|wanted| supported.clone().find(|name| name == wanted))
    {
        return Ok(name);
    }
    let message = format!(
        "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
        requested.join(" "),
        supported.clone().collect::<Vec<_>>().join(" ")
    );
    let mut refusal = Refusal::new(StatusCode::FORBIDDEN, message);
    for name in supported {
        refusal = refusal.with_header(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(name));
    }
    Err(refusal)
}

/// apimachinery's SPDY `UpgradeResponse` check of `Connection` and `Upgrade`.
fn require_spdy_upgrade(headers: &HeaderMap) -> Result<(), Refusal> {
    let upgrade_is_spdy = headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("spdy/3.1"));
    if upgrade_is_spdy && websocket::connection_has_upgrade(headers) {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: missing upgrade headers in request",
    ))
}

fn spdy_upgrade_response(protocol: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        UPGRADE,
        HeaderValue::from_static(crate::spdy::UPGRADE_TOKEN),
    );
    headers.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

/// RFC 6455 section 4.2.2, with x/net/websocket's refusals: 405 for non-GET, 400
/// with `Sec-WebSocket-Version: 13` for another version, 400 without a key.
fn websocket_upgrade_response(
    request: &Request<Incoming>,
    protocol: &'static str,
) -> Result<Response<Body>, Refusal> {
    if request.method() != Method::GET {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "websocket upgrade needs GET",
        ));
    }
    let headers = request.headers();
    let version = headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        return Err(
            Refusal::new(StatusCode::BAD_REQUEST, "unsupported websocket version")
                .with_header(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")),
        );
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key",
        ));
    };
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "websocket accept key"))?;
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    if !protocol.is_empty() {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    }
    Ok(response)
}

/// x/net/websocket answers a failed subprotocol handshake with 403.
fn websocket_protocol_mismatch<'a>(
    requested: &[String],
    supported: impl Iterator<Item = &'a str>,
) -> Response<Body> {
    let supported: Vec<&str> = supported.filter(|name| !name.is_empty()).collect();
    text_response(
        StatusCode::FORBIDDEN,
        &format!(
            "requested protocol(s) are not supported: [{}]; supports [{}]",
            requested.join(" "),
            supported.join(" ")
        ),
    )
}

/// Runs `session` on the connection once hyper hands it over after the 101.
fn spawn_upgraded<F, Fut>(request: &mut Request<Incoming>, ctx: &Arc<ServerContext>, session: F)
where
    F: FnOnce(TokioIo<Upgraded>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_upgrade = hyper::upgrade::on(request);
    let shutdown = ctx.shutdown.clone();
    ctx.tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                debug!(%err, "streaming server: connection upgrade failed");
                return;
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = session(TokioIo::new(upgraded)) => {}
        }
    });
}

fn spawn_websocket<F, Fut>(request: &mut Request<Incoming>, ctx: &Arc<ServerContext>, session: F)
where
    F: FnOnce(WebSocketStream<TokioIo<Upgraded>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    spawn_upgraded(request, ctx, move |io| async move {
        let ws = WebSocketStream::from_raw_socket(io, WebSocketRole::Server, None).await;
        session(ws).await;
    });
}

/// An HTTP error answer, as Go's `http.Error` writes one: status, text, and any
/// headers that explain it.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut response = text_response(self.status, &self.message);
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

fn not_found() -> Response<Body> {
    text_response(StatusCode::NOT_FOUND, "404 page not found")
}

/// A plain-text error as Go's `http.Error` writes it.
fn text_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotecommand::Version;
    use crate::websocket::Codec;

    fn spdy_version(name: &str) -> Option<Version> {
        remotecommand::spdy::PROTOCOLS
            .iter()
            .find(|p| p.0 == name)
            .map(|p| p.1)
    }

    #[test]
    fn paths_name_an_endpoint_and_a_token() {
        assert_eq!(parse_path("/exec/abc"), Some((Endpoint::Exec, "abc")));
        assert_eq!(parse_path("/attach/abc"), Some((Endpoint::Attach, "abc")));
        assert_eq!(
            parse_path("/portforward/x-y_z"),
            Some((Endpoint::PortForward, "x-y_z"))
        );
        assert_eq!(parse_path("/exec/"), None);
        assert_eq!(parse_path("/exec/a/b"), None);
        assert_eq!(parse_path("/run/abc"), None);
        assert_eq!(parse_path("exec/abc"), None);
    }

    #[test]
    fn spdy_negotiation_prefers_the_clients_order() {
        let mut headers = HeaderMap::new();
        headers.append(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("v2.channel.k8s.io"),
        );
        headers.append(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("v4.channel.k8s.io, channel.k8s.io"),
        );
        let supported = remotecommand::spdy::PROTOCOLS.iter().map(|p| p.0);
        assert_eq!(
            negotiate_spdy(&headers, supported).ok(),
            Some("v2.channel.k8s.io")
        );
        assert_eq!(spdy_version("v5.channel.k8s.io"), Some(Version::V4));
    }

    #[test]
    fn spdy_negotiation_failure_is_403_with_the_accepted_list() {
        let mut headers = HeaderMap::new();
        headers.insert(
            STREAM_PROTOCOL_HEADER,
            HeaderValue::from_static("v9.channel.k8s.io"),
        );
        let supported = remotecommand::spdy::PROTOCOLS.iter().map(|p| p.0);
        let Err(refusal) = negotiate_spdy(&headers, supported) else {
            panic!("negotiated an unknown protocol");
        };
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response
                .headers()
                .get_all(ACCEPTED_PROTOCOLS_HEADER)
                .iter()
                .count(),
            5
        );
        let missing = negotiate_spdy(&HeaderMap::new(), ["x"].into_iter());
        assert_eq!(
            missing.err().map(|r| r.status),
            Some(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn websocket_negotiation() {
        let supported = remotecommand::websocket::PROTOCOLS;
        let pick = |requested: &[&str]| {
            let requested: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
            negotiate_websocket(&requested, supported, |p| p.0).map(|p| (p.0, p.1, p.2))
        };
        assert_eq!(pick(&[]), Some(("", Version::V1, Codec::Binary)));
        assert_eq!(
            pick(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(("v5.channel.k8s.io", Version::V5, Codec::Binary))
        );
        assert_eq!(
            pick(&["v4.base64.channel.k8s.io"]),
            Some(("v4.base64.channel.k8s.io", Version::V4, Codec::Base64))
        );
        assert_eq!(pick(&["nope"]), None);
    }

    #[test]
    fn websocket_ports_come_from_the_query_or_the_request() {
        let request = PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![8080],
        };
        assert_eq!(
            websocket_ports(Some("port=80&port=443%2C8443"), &request),
            Ok(vec![80, 443, 8443])
        );
        assert_eq!(websocket_ports(None, &request), Ok(vec![8080]));
        assert!(websocket_ports(Some("port=0"), &request).is_err());
        assert!(websocket_ports(Some("port="), &request).is_err());
        let empty = PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![],
        };
        assert!(websocket_ports(None, &empty).is_err());
        let many = vec!["1"; 128].join(",");
        assert!(websocket_ports(Some(&format!("port={many}")), &empty).is_err());
    }
}
