//! Coracle's streaming server: the HTTP endpoint behind the URLs that CRI `Exec`,
//! `Attach` and `PortForward` return, speaking the protocols kubelet's streaming
//! server (`k8s.io/kubelet/pkg/cri/streaming`) speaks:
//!
//! - remotecommand over SPDY/3.1: `v4.channel.k8s.io`, `v3.channel.k8s.io`,
//!   `v2.channel.k8s.io`, `channel.k8s.io`;
//! - remotecommand over WebSocket: `v5.channel.k8s.io` (with the stdin close signal),
//!   `v4.channel.k8s.io`, `v3`/`v2`/`channel.k8s.io` and the `base64.` variants;
//! - port forwarding over SPDY (`portforward.k8s.io`) and WebSocket
//!   (`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`).
//!
//! Transport and protocol only: processes and sockets come from a
//! [`StreamingRuntime`] the daemon plugs in. The [`client`] module holds Rust clients
//! for both transports, written from client-go, for tests here and in other crates.

mod chunks;
pub mod client;
mod config;
mod error;
mod http_server;
mod portforward;
mod remotecommand;
mod request;
mod request_cache;
mod runtime;
mod server;
pub mod spdy;
mod tls;
pub mod websocket;

pub use config::{
    DEFAULT_STREAM_CREATION_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, DEFAULT_TOKEN_TTL,
    MAX_IN_FLIGHT_REQUESTS, StreamingConfig, TlsConfig,
};
pub use error::{ErrorKind, StreamingError};
pub use remotecommand::status::{Status, StatusCause, StatusDetails};
pub use request::{AttachRequest, ExecRequest, PortForwardRequest};
pub use runtime::{AsyncReadWrite, BoxFuture, ProcessIo, StreamingRuntime, TerminalSize};
pub use server::StreamingServer;

/// Protocol names as they appear in `X-Stream-Protocol-Version` and
/// `Sec-WebSocket-Protocol`.
pub mod protocol {
    pub const REMOTECOMMAND_V1: &str = "channel.k8s.io";
    pub const REMOTECOMMAND_V2: &str = "v2.channel.k8s.io";
    pub const REMOTECOMMAND_V3: &str = "v3.channel.k8s.io";
    pub const REMOTECOMMAND_V4: &str = "v4.channel.k8s.io";
    pub const REMOTECOMMAND_V5: &str = "v5.channel.k8s.io";
    pub const BASE64_V1: &str = "base64.channel.k8s.io";
    pub const BASE64_V4: &str = "v4.base64.channel.k8s.io";
    pub const PORTFORWARD_V1: &str = "portforward.k8s.io";
}
