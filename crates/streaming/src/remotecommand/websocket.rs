//! remotecommand over WebSocket (kubelet's `remotecommand/websocket.go`): fixed
//! channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::{Action, Session, Version};
use crate::protocol;
use crate::request::StdioOptions;
use crate::server::{LINGER, ServerContext};
use crate::websocket::{Channel, ChannelConfig, ChannelConnection, ChannelKind, Codec};

pub(crate) const STDIN: usize = 0;
pub(crate) const STDOUT: usize = 1;
pub(crate) const STDERR: usize = 2;
pub(crate) const ERROR: usize = 3;
pub(crate) const RESIZE: usize = 4;

/// Subprotocols, the client's preference deciding among them. `""` is a client that
/// names none: the binary v1 protocol, as for kubelet.
pub(crate) const PROTOCOLS: &[(&str, Version, Codec)] = &[
    (protocol::REMOTECOMMAND_V5, Version::V5, Codec::Binary),
    (protocol::REMOTECOMMAND_V4, Version::V4, Codec::Binary),
    (protocol::BASE64_V4, Version::V4, Codec::Base64),
    (protocol::REMOTECOMMAND_V3, Version::V3, Codec::Binary),
    (protocol::REMOTECOMMAND_V2, Version::V2, Codec::Binary),
    (protocol::REMOTECOMMAND_V1, Version::V1, Codec::Binary),
    (protocol::BASE64_V1, Version::V1, Codec::Base64),
    ("", Version::V1, Codec::Binary),
];

pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    version: Version,
    codec: Codec,
    stdio: StdioOptions,
    action: Action,
    ctx: Arc<ServerContext>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = ChannelConfig {
        codec,
        channels: channel_kinds(stdio),
        receive_close_signal: version == Version::V5,
        send_close_signal: false,
        idle_timeout: Some(ctx.config.stream_idle_timeout),
    };
    let (connection, mut channels) = ChannelConnection::start(ws, config);
    if let Err(err) = announce(&mut channels, stdio).await {
        debug!(%err, "remotecommand: websocket closed right after the upgrade");
        return;
    }
    let session = into_session(channels, stdio, version);
    super::run(session, action, &ctx.runtime, connection.closed()).await;
    connection.shutdown(LINGER).await;
}

fn channel_kinds(stdio: StdioOptions) -> Vec<ChannelKind> {
    let read = |wanted: bool| {
        if wanted {
            ChannelKind::Read
        } else {
            ChannelKind::Ignore
        }
    };
    let write = |wanted: bool| {
        if wanted {
            ChannelKind::Write
        } else {
            ChannelKind::Ignore
        }
    };
    vec![
        read(stdio.stdin),
        write(stdio.stdout),
        write(stdio.stderr && !stdio.tty),
        ChannelKind::Write,
        ChannelKind::Read,
    ]
}

/// kubelet writes an empty message on the lowest writable channel so the client
/// knows the connection is up.
async fn announce(channels: &mut [Channel], stdio: StdioOptions) -> std::io::Result<()> {
    let channel = if stdio.stdout {
        STDOUT
    } else if stdio.stderr && !stdio.tty {
        STDERR
    } else {
        ERROR
    };
    match channels.get_mut(channel).and_then(|c| c.writer.as_mut()) {
        Some(writer) => writer.write_empty().await,
        None => Ok(()),
    }
}

fn into_session(mut channels: Vec<Channel>, stdio: StdioOptions, version: Version) -> Session {
    let mut take = |index: usize| {
        channels
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default()
    };
    let reader = |channel: Channel| channel.reader.map(|r| Box::pin(r) as _);
    let writer = |channel: Channel| channel.writer.map(|w| Box::pin(w) as _);
    Session {
        stdin: reader(take(STDIN)),
        stdout: writer(take(STDOUT)),
        stderr: writer(take(STDERR)),
        error: writer(take(ERROR)),
        resize: reader(take(RESIZE)),
        tty: stdio.tty,
        version,
    }
}
