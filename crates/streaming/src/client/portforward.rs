//! Port-forward clients: client-go's `tools/portforward` over SPDY (an error and a
//! data stream per forwarded connection, paired by `requestID`) and kubelet's
//! WebSocket variant (two channels per port, each opened by the port number).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Join};

use super::transport::{dial_spdy, dial_websocket};
use super::{ClientError, ClientTls};
use crate::protocol;
use crate::spdy::{Connection, HeaderBlock, Stream, StreamReader};
use crate::websocket::{
    ChannelConfig, ChannelConnection, ChannelKind, ChannelReader, ChannelWriter, Codec,
};

const CLIENT_LINGER: Duration = Duration::from_secs(1);

/// One SPDY port-forward session: open as many connections as needed.
pub struct SpdyPortForward {
    connection: Connection,
    next_request_id: AtomicU64,
}

/// One forwarded TCP connection over SPDY.
pub struct ForwardedConnection {
    /// Bytes to and from the pod's port; shut down the write side to send EOF.
    pub data: Stream,
    /// Error text (JSON from recent servers) if forwarding failed; ends when the
    /// server is done with this connection.
    pub error: StreamReader,
}

impl SpdyPortForward {
    pub async fn connect(url: &str, tls: Option<&ClientTls>) -> Result<Self, ClientError> {
        let (connection, negotiated) = dial_spdy(url, &[protocol::PORTFORWARD_V1], tls).await?;
        if negotiated != protocol::PORTFORWARD_V1 {
            return Err(ClientError::Protocol(format!(
                "server chose {negotiated:?}"
            )));
        }
        Ok(Self {
            connection,
            next_request_id: AtomicU64::new(0),
        })
    }

    /// Opens a connection to `port` in the pod: the error stream first (closed for
    /// writing at once), then the data stream, as client-go does.
    pub async fn open(&self, port: u16) -> Result<ForwardedConnection, ClientError> {
        let request_id = self
            .next_request_id
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let port = port.to_string();
        let headers = |stream_type: &str| {
            HeaderBlock::new()
                .with("streamType", stream_type)
                .with("port", &port)
                .with("requestID", &request_id)
        };
        let (error, _) = self
            .connection
            .open_stream(headers("error"))
            .await?
            .into_split();
        let data = self.connection.open_stream(headers("data")).await?;
        Ok(ForwardedConnection { data, error })
    }

    pub async fn shutdown(self) {
        self.connection.shutdown(CLIENT_LINGER).await;
    }
}

impl ForwardedConnection {
    /// Sends `payload`, half-closes, and reads until the server closes the data
    /// stream; returns what came back and the error stream's content.
    pub async fn round_trip(self, payload: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ClientError> {
        let (mut reader, mut writer) = self.data.into_split();
        let mut error = self.error;
        let send = async {
            writer.write_all(payload).await?;
            writer.shutdown().await
        };
        let receive = async {
            let mut received = Vec::new();
            reader.read_to_end(&mut received).await.map(|_| received)
        };
        let errors = async {
            let mut text = Vec::new();
            error.read_to_end(&mut text).await.map(|_| text)
        };
        let (sent, received, errors) = tokio::join!(send, receive, errors);
        sent.map_err(ClientError::io("send forwarded data"))?;
        Ok((
            received.map_err(ClientError::io("receive forwarded data"))?,
            errors.map_err(ClientError::io("read the error stream"))?,
        ))
    }
}

/// A WebSocket port-forward: one connection per port named in the URL.
pub struct WebSocketPortForward {
    connection: ChannelConnection,
    pub ports: Vec<WebSocketForwardedPort>,
}

pub struct WebSocketForwardedPort {
    /// The port the server announced on the channels.
    pub port: u16,
    pub data: Join<ChannelReader, ChannelWriter>,
    pub error: ChannelReader,
}

impl WebSocketPortForward {
    /// Connects and reads each port's announcement; `port_count` is the number of
    /// ports the URL (its `port` query parameter) or the CRI request names.
    pub async fn connect(
        url: &str,
        port_count: usize,
        protocols: &[&str],
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let (ws, negotiated) = dial_websocket(url, protocols, tls).await?;
        let codec = if negotiated.contains("base64") {
            Codec::Base64
        } else {
            Codec::Binary
        };
        let config = ChannelConfig {
            codec,
            channels: (0..port_count)
                .flat_map(|_| [ChannelKind::ReadWrite, ChannelKind::Read])
                .collect(),
            receive_close_signal: false,
            send_close_signal: false,
            idle_timeout: None,
        };
        let (connection, channels) = ChannelConnection::start(ws, config);
        let mut channels = channels.into_iter();
        let mut ports = Vec::with_capacity(port_count);
        while let (Some(data), Some(error)) = (channels.next(), channels.next()) {
            let (Some(data_reader), Some(data_writer), Some(mut error)) =
                (data.reader, data.writer, error.reader)
            else {
                return Err(ClientError::Protocol(
                    "channel without the expected ends".into(),
                ));
            };
            let mut data = tokio::io::join(data_reader, data_writer);
            let port = read_port(&mut data).await?;
            let error_port = read_port(&mut error).await?;
            if port != error_port {
                return Err(ClientError::Protocol(format!(
                    "data channel names port {port}, error channel {error_port}"
                )));
            }
            ports.push(WebSocketForwardedPort { port, data, error });
        }
        Ok(Self { connection, ports })
    }

    pub async fn shutdown(self) {
        self.connection.shutdown(CLIENT_LINGER).await;
    }
}

impl WebSocketForwardedPort {
    /// Sends `payload` and reads until `expected` bytes came back (WebSocket
    /// channels have no half-close to wait for).
    pub async fn exchange(
        &mut self,
        payload: &[u8],
        expected: usize,
    ) -> Result<Vec<u8>, ClientError> {
        self.data
            .write_all(payload)
            .await
            .map_err(ClientError::io("send forwarded data"))?;
        let mut received = vec![0; expected];
        self.data
            .read_exact(&mut received)
            .await
            .map_err(ClientError::io("receive forwarded data"))?;
        Ok(received)
    }
}

async fn read_port<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> Result<u16, ClientError> {
    let mut port = [0u8; 2];
    reader
        .read_exact(&mut port)
        .await
        .map_err(ClientError::io("read the port announcement"))?;
    Ok(u16::from_le_bytes(port))
}
