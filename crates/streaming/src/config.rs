//! The streaming server's configuration. The daemon's TOML keys (`streaming.address`,
//! `streaming.port`, `streaming.tls_cert_file`, `streaming.tls_key_file`) map onto
//! [`StreamingConfig`]; see `docs/streaming.md`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How long a URL returned by `get_exec`/`get_attach`/`get_port_forward` stays valid
/// (kubelet's streaming server uses one minute).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long an established stream may stay idle (kubelet: 4 hours).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 60 * 60);
/// How long a SPDY client has to create its streams after the upgrade (kubelet: 30 s).
pub const DEFAULT_STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests handed out but not yet used; more are refused (kubelet's cap).
pub const MAX_IN_FLIGHT_REQUESTS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingConfig {
    /// Where to listen. Port 0 picks a free port; the URLs name the port actually bound.
    /// The IP goes into the URLs as is, so it should be one the clients can reach
    /// (not 0.0.0.0).
    pub address: SocketAddr,
    /// Serve HTTPS with this certificate and key when set.
    pub tls: Option<TlsConfig>,
    /// Lifetime of a single-use URL token.
    pub token_ttl: Duration,
    /// An upgraded connection with no traffic for this long is closed.
    pub stream_idle_timeout: Duration,
    /// Time a SPDY client has to open the streams it asked for.
    pub stream_creation_timeout: Duration,
}

/// PEM files for HTTPS: the certificate chain (leaf first) and its private key
/// (PKCS#8, PKCS#1 or SEC1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            stream_creation_timeout: DEFAULT_STREAM_CREATION_TIMEOUT,
        }
    }
}
