//! SPDY/3.1 as Kubernetes uses it for exec, attach and port-forward: the frame codec
//! with zlib header compression, and a multiplexed connection of half-closable
//! streams. Written from the SPDY/3 draft and moby/spdystream (Rust has no
//! maintained SPDY crate).

pub mod codec;
pub mod compression;
pub mod connection;
pub mod dictionary;
pub mod frame;
pub mod stream;

pub use connection::{
    Connection, ConnectionConfig, IncomingStreams, Role, SpdyError, StreamFilter,
};
pub use frame::{Frame, FrameError, HeaderBlock, RstStatus, StreamId};
pub use stream::{Stream, StreamReader, StreamWriter};

/// The `Upgrade` token of an HTTP upgrade to SPDY.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";
