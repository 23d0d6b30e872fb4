//! Connecting and upgrading: TCP or TLS, then the SPDY upgrade (client-go's
//! `SpdyRoundTripper`) or the WebSocket handshake.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::ClientError;
use crate::http_server::STREAM_PROTOCOL_HEADER;
use crate::spdy::{Connection, ConnectionConfig, Role};

/// The trust anchors for `https` URLs.
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
}

impl ClientTls {
    /// Trusts the certificates of a PEM file (e.g. the server's self-signed one).
    pub fn from_ca_file(path: &Path) -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|err| ClientError::Tls(err.to_string()))?
        {
            let cert = cert.map_err(|err| ClientError::Tls(err.to_string()))?;
            roots
                .add(cert)
                .map_err(|err| ClientError::Tls(err.to_string()))?;
        }
        Ok(Self {
            roots: Arc::new(roots),
        })
    }
}

/// A connected byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxedIo = Box<dyn Io>;

fn parse_url(url: &str) -> Result<Uri, ClientError> {
    url.parse()
        .map_err(|err: http::uri::InvalidUri| ClientError::Url {
            url: url.into(),
            reason: err.to_string(),
        })
}

fn is_tls(uri: &Uri) -> bool {
    matches!(uri.scheme_str(), Some("https" | "wss"))
}

async fn connect(uri: &Uri, tls: Option<&ClientTls>) -> Result<BoxedIo, ClientError> {
    let host = uri.host().ok_or_else(|| ClientError::Url {
        url: uri.to_string(),
        reason: "no host".into(),
    })?;
    let port = uri.port_u16().unwrap_or(if is_tls(uri) { 443 } else { 80 });
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|source| ClientError::Connect {
            address: format!("{host}:{port}"),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !is_tls(uri) {
        return Ok(Box::new(tcp));
    }
    let tls =
        tls.ok_or_else(|| ClientError::Tls(format!("{uri} needs trust anchors (ClientTls)")))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|err| ClientError::Tls(err.to_string()))?
    .with_root_certificates(tls.roots.clone())
    .with_no_client_auth();
    let server_name = ServerName::try_from(bare_host.to_owned())
        .map_err(|err| ClientError::Tls(err.to_string()))?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|err| ClientError::Tls(err.to_string()))?;
    Ok(Box::new(stream))
}

/// POSTs an upgrade to SPDY/3.1 offering `protocols` (in preference order) and
/// starts a client connection; returns it with the protocol the server chose.
pub async fn dial_spdy(
    url: &str,
    protocols: &[&str],
    tls: Option<&ClientTls>,
) -> Result<(Connection, String), ClientError> {
    let uri = parse_url(url)?;
    let io = connect(&uri, tls).await?;
    let (mut sender, http_connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| ClientError::Http(err.to_string()))?;
    tokio::spawn(http_connection.with_upgrades());
    let mut request = Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(HOST, uri.authority().map_or("", |a| a.as_str()))
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, crate::spdy::UPGRADE_TOKEN)
        .body(Empty::<Bytes>::new())
        .map_err(|err| ClientError::Http(err.to_string()))?;
    for protocol in protocols {
        let value =
            HeaderValue::from_str(protocol).map_err(|err| ClientError::Http(err.to_string()))?;
        request.headers_mut().append(STREAM_PROTOCOL_HEADER, value);
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| ClientError::Http(err.to_string()))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|body| {
                String::from_utf8_lossy(&body.to_bytes())
                    .trim_end()
                    .to_owned()
            })
            .unwrap_or_default();
        return Err(ClientError::Refused { status, body });
    }
    let negotiated = response
        .headers()
        .get(STREAM_PROTOCOL_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|err| ClientError::Http(err.to_string()))?;
    let (connection, _incoming) =
        Connection::start(TokioIo::new(upgraded), ConnectionConfig::new(Role::Client));
    Ok((connection, negotiated))
}

/// Opens a WebSocket offering `protocols`; returns it with the chosen subprotocol.
pub async fn dial_websocket(
    url: &str,
    protocols: &[&str],
    tls: Option<&ClientTls>,
) -> Result<(WebSocketStream<BoxedIo>, String), ClientError> {
    let uri = parse_url(url)?;
    let io = connect(&uri, tls).await?;
    let ws_url = match uri.scheme_str() {
        Some("https") => url.replacen("https://", "wss://", 1),
        Some("http") => url.replacen("http://", "ws://", 1),
        _ => url.to_owned(),
    };
    let mut request = ws_url
        .into_client_request()
        .map_err(|err| ClientError::WebSocket(err.to_string()))?;
    if !protocols.is_empty() {
        let value = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|err| ClientError::Http(err.to_string()))?;
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    let (ws, response) =
        tokio_tungstenite::client_async(request, io)
            .await
            .map_err(|err| match err {
                tokio_tungstenite::tungstenite::Error::Http(response) => ClientError::Refused {
                    status: response.status().as_u16(),
                    body: response
                        .body()
                        .as_ref()
                        .map(|body| String::from_utf8_lossy(body).trim_end().to_owned())
                        .unwrap_or_default(),
                },
                other => ClientError::WebSocket(other.to_string()),
            })?;
    let negotiated = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((ws, negotiated))
}
