//! Port forwarding over WebSocket (kubelet's `portforward/websocket.go`): for every
//! requested port a data channel (`2i`) and an error channel (`2i+1`), each opened
//! by a message holding the port as a little-endian u16. One TCP connection per port.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::forward_error_message;
use crate::protocol;
use crate::server::{LINGER, ServerContext};
use crate::websocket::{
    Channel, ChannelConfig, ChannelConnection, ChannelKind, ChannelWriter, Codec,
};

pub(crate) const PROTOCOLS: &[(&str, Codec)] = &[
    (protocol::REMOTECOMMAND_V4, Codec::Binary),
    (protocol::BASE64_V4, Codec::Base64),
    ("", Codec::Binary),
];

pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    codec: Codec,
    ports: Vec<u16>,
    pod_sandbox_id: String,
    ctx: Arc<ServerContext>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = ChannelConfig {
        codec,
        channels: ports
            .iter()
            .flat_map(|_| [ChannelKind::ReadWrite, ChannelKind::Write])
            .collect(),
        receive_close_signal: false,
        send_close_signal: false,
        idle_timeout: Some(ctx.config.stream_idle_timeout),
    };
    let (connection, channels) = ChannelConnection::start(ws, config);
    let mut channels = channels.into_iter();
    let mut forwards = JoinSet::new();
    for &port in &ports {
        let (Some(data), Some(error)) = (channels.next(), channels.next()) else {
            break;
        };
        let Some((data, error)) = announce_port(port, data, error).await else {
            debug!(
                port,
                "portforward: websocket closed right after the upgrade"
            );
            return;
        };
        let forward = ctx
            .runtime
            .port_forward(pod_sandbox_id.clone(), port, Box::new(data));
        let pod_sandbox_id = pod_sandbox_id.clone();
        forwards.spawn(async move {
            if let Err(err) = forward.await {
                let message = forward_error_message(port, &pod_sandbox_id, &err);
                debug!(%message, "portforward");
                let mut error = error;
                let _ = error.write_all(message.as_bytes()).await;
            }
        });
    }
    let client_gone = connection.closed();
    tokio::select! {
        () = async { while forwards.join_next().await.is_some() {} } => {}
        () = client_gone => forwards.shutdown().await,
    }
    connection.shutdown(LINGER).await;
}

/// Writes the port on both channels; returns the data stream and error writer.
async fn announce_port(
    port: u16,
    data: Channel,
    error: Channel,
) -> Option<(
    tokio::io::Join<crate::websocket::ChannelReader, ChannelWriter>,
    ChannelWriter,
)> {
    let (Some(reader), Some(mut writer), Some(mut error)) =
        (data.reader, data.writer, error.writer)
    else {
        return None;
    };
    writer.write_all(&port.to_le_bytes()).await.ok()?;
    error.write_all(&port.to_le_bytes()).await.ok()?;
    Some((tokio::io::join(reader, writer), error))
}
