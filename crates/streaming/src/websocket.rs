//! Kubernetes' channel protocols over WebSocket (apimachinery `wsstream`): every
//! message starts with its channel number, as a byte (`channel.k8s.io` and the
//! versioned binary protocols) or as an ASCII digit followed by base64 text
//! (`base64.channel.k8s.io`, `v4.base64.channel.k8s.io`). With `v5.channel.k8s.io`
//! the message `[255, n]` closes channel `n` (half-close, e.g. stdin EOF).

use crate::chunks::ChunkReceiver;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::{CancellationToken, PollSender};
use tracing::debug;

/// The v5 message that closes a channel: `[CLOSE_SIGNAL, channel]`.
pub const CLOSE_SIGNAL: u8 = 255;
/// Largest payload we put in one message.
const MAX_MESSAGE_PAYLOAD: usize = 32 * 1024;
/// Messages buffered per channel before the reader task waits for the channel's reader.
const INBOUND_MESSAGES_PER_CHANNEL: usize = 16;
/// Messages queued for the socket before writers wait.
const OUTGOING_MESSAGES: usize = 64;

/// How channel numbers and payloads are written in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages: `[channel, payload...]`.
    Binary,
    /// Text messages: `'0'+channel` then the payload in standard base64.
    Base64,
}

/// What a channel is used for, from this end's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Present but unused: data on it is dropped.
    Ignore,
    Read,
    Write,
    ReadWrite,
}

impl ChannelKind {
    fn readable(self) -> bool {
        matches!(self, Self::Read | Self::ReadWrite)
    }

    fn writable(self) -> bool {
        matches!(self, Self::Write | Self::ReadWrite)
    }
}

#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub codec: Codec,
    pub channels: Vec<ChannelKind>,
    /// Honour `[255, n]` from the peer (server side of v5).
    pub receive_close_signal: bool,
    /// Send `[255, n]` when a writer shuts down (client side of v5).
    pub send_close_signal: bool,
    /// Close the connection after this long without a message in either direction.
    pub idle_timeout: Option<Duration>,
}

/// The two ends of one channel; `None` where the channel's kind has no such end.
#[derive(Default)]
pub struct Channel {
    pub reader: Option<ChannelReader>,
    pub writer: Option<ChannelWriter>,
}

/// Reads one channel's payloads. EOF at the close signal or the connection's end.
pub struct ChannelReader {
    inbound: ChunkReceiver,
}

/// Writes payloads on one channel, one message per write.
pub struct ChannelWriter {
    channel: u8,
    outgoing: PollSender<Outgoing>,
    send_close_signal: bool,
    closed: bool,
}

enum Outgoing {
    Data {
        channel: u8,
        payload: Bytes,
    },
    CloseSignal(u8),
    /// Send a normal-closure Close frame and stop.
    Close,
}

/// A WebSocket carrying numbered channels.
pub struct ChannelConnection {
    outgoing: mpsc::Sender<Outgoing>,
    read_closed: CancellationToken,
    stop_reader: CancellationToken,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

type Activity = Arc<Mutex<Instant>>;

impl ChannelConnection {
    /// Starts reading and writing `ws`; returns one [`Channel`] per configured kind.
    pub fn start<S>(ws: WebSocketStream<S>, config: ChannelConfig) -> (Self, Vec<Channel>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, stream) = ws.split();
        let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_MESSAGES);
        let activity: Activity = Arc::new(Mutex::new(Instant::now()));
        let mut inbound = Vec::with_capacity(config.channels.len());
        let mut channels = Vec::with_capacity(config.channels.len());
        // Channel numbers are one byte, and 255 is the close signal.
        for (number, kind) in (0..CLOSE_SIGNAL).zip(config.channels.iter()) {
            let (reader, sender) = if kind.readable() {
                let (tx, rx) = mpsc::channel(INBOUND_MESSAGES_PER_CHANNEL);
                (
                    Some(ChannelReader {
                        inbound: ChunkReceiver::new(rx),
                    }),
                    Some(tx),
                )
            } else {
                (None, None)
            };
            let writer = kind.writable().then(|| ChannelWriter {
                channel: number,
                outgoing: PollSender::new(outgoing_tx.clone()),
                send_close_signal: config.send_close_signal,
                closed: false,
            });
            inbound.push(sender);
            channels.push(Channel { reader, writer });
        }
        let read_closed = CancellationToken::new();
        let stop_reader = CancellationToken::new();
        let reader = MessageReader {
            codec: config.codec,
            receive_close_signal: config.receive_close_signal,
            inbound,
            idle_timeout: config.idle_timeout,
            activity: activity.clone(),
        };
        let reader = tokio::spawn(reader.run(stream, stop_reader.clone(), read_closed.clone()));
        let writer = tokio::spawn(write_messages(
            sink,
            outgoing_rx,
            config.codec,
            config.idle_timeout,
            activity,
        ));
        let connection = Self {
            outgoing: outgoing_tx,
            read_closed,
            stop_reader,
            reader,
            writer,
        };
        (connection, channels)
    }

    /// Resolves once the peer's side is gone (Close, EOF, error, idle timeout).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.read_closed.clone().cancelled_owned()
    }

    /// Sends a normal-closure Close after everything queued, then gives the peer
    /// `linger` to answer before dropping the socket.
    pub async fn shutdown(mut self, linger: Duration) {
        if tokio::time::timeout(linger, self.outgoing.send(Outgoing::Close))
            .await
            .is_ok()
            && tokio::time::timeout(linger, &mut self.writer)
                .await
                .is_err()
        {
            debug!("websocket: peer did not take our last messages in time");
        }
        self.writer.abort();
        if tokio::time::timeout(linger, &mut self.reader)
            .await
            .is_err()
        {
            debug!("websocket: peer did not close in time");
        }
    }
}

impl Drop for ChannelConnection {
    fn drop(&mut self) {
        self.stop_reader.cancel();
        let _ = self.outgoing.try_send(Outgoing::Close);
    }
}

struct MessageReader {
    codec: Codec,
    receive_close_signal: bool,
    inbound: Vec<Option<mpsc::Sender<Bytes>>>,
    idle_timeout: Option<Duration>,
    activity: Activity,
}

impl MessageReader {
    async fn run<S>(
        mut self,
        mut stream: SplitStream<WebSocketStream<S>>,
        stop: CancellationToken,
        read_closed: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break,
                message = self.next_message(&mut stream) => message,
            };
            let Some(data) = message else { break };
            if !self.dispatch(data).await {
                break;
            }
        }
        // Every channel reader sees EOF.
        self.inbound.clear();
        read_closed.cancel();
    }

    /// The next data message's bytes; `None` at the connection's end.
    async fn next_message<S>(&self, stream: &mut SplitStream<WebSocketStream<S>>) -> Option<Bytes>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let next = match self.idle_timeout {
                None => stream.next().await,
                Some(idle) => {
                    let remaining = idle.saturating_sub(idle_for(&self.activity));
                    if remaining.is_zero() {
                        debug!("websocket: idle for too long, closing");
                        return None;
                    }
                    match tokio::time::timeout(remaining, stream.next()).await {
                        Ok(next) => next,
                        Err(_) => continue,
                    }
                }
            };
            touch(&self.activity);
            match next? {
                Ok(Message::Binary(data)) => return Some(data),
                Ok(Message::Text(text)) => return Some(Bytes::from(text)),
                Ok(Message::Close(_)) => return None,
                // Pings are answered by tungstenite itself.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Err(err) => {
                    debug!(%err, "websocket: read failed");
                    return None;
                }
            }
        }
    }

    /// Routes one message to its channel; false on a protocol error that ends the
    /// connection (as wsstream does).
    async fn dispatch(&mut self, data: Bytes) -> bool {
        // Some clients send an empty message first; wsstream skips it.
        let Some(&first) = data.first() else {
            return true;
        };
        if self.receive_close_signal && first == CLOSE_SIGNAL {
            return self.close_channel(&data);
        }
        let channel = match self.codec {
            Codec::Binary => first,
            Codec::Base64 => first.wrapping_sub(b'0'),
        };
        let Some(Some(sender)) = self.inbound.get(usize::from(channel)) else {
            // Unknown or non-readable channel: dropped, like wsstream.
            return true;
        };
        let payload = match self.codec {
            Codec::Binary => data.slice(1..),
            Codec::Base64 => match STANDARD.decode(&data[1..]) {
                Ok(decoded) => Bytes::from(decoded),
                Err(err) => {
                    debug!(channel, %err, "websocket: invalid base64 payload dropped");
                    return true;
                }
            },
        };
        // An empty payload is a no-op write, never an EOF.
        if !payload.is_empty() {
            let _ = sender.send(payload).await;
        }
        true
    }

    fn close_channel(&mut self, data: &[u8]) -> bool {
        let [_, channel] = data else {
            debug!(
                len = data.len(),
                "websocket: close signal must name exactly one channel"
            );
            return false;
        };
        match self.inbound.get_mut(usize::from(*channel)) {
            Some(sender) => {
                *sender = None;
                true
            }
            None => {
                debug!(channel, "websocket: close signal for an unknown channel");
                false
            }
        }
    }
}

async fn write_messages<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut queue: mpsc::Receiver<Outgoing>,
    codec: Codec,
    idle_timeout: Option<Duration>,
    activity: Activity,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stall = idle_timeout.unwrap_or(Duration::MAX);
    let result: Result<(), String> = async {
        while let Some(outgoing) = queue.recv().await {
            let message = match outgoing {
                Outgoing::Data { channel, payload } => encode(codec, channel, &payload),
                Outgoing::CloseSignal(channel) => {
                    Message::Binary(Bytes::from(vec![CLOSE_SIGNAL, channel]))
                }
                Outgoing::Close => {
                    // Code 1000: client-go treats any other closure as an error on
                    // every stream, including the one carrying the exit status.
                    let close = Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }));
                    return stalled(stall, sink.send(close)).await;
                }
            };
            stalled(stall, sink.feed(message)).await?;
            touch(&activity);
            if queue.is_empty() {
                stalled(stall, sink.flush()).await?;
            }
        }
        stalled(stall, sink.close()).await
    }
    .await;
    if let Err(err) = result {
        debug!(%err, "websocket: write failed");
    }
}

async fn stalled<F>(stall: Duration, write: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), tokio_tungstenite::tungstenite::Error>>,
{
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("write stalled for longer than the idle timeout".into()),
    }
}

/// One message of the channel protocol.
pub fn encode(codec: Codec, channel: u8, payload: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut data = Vec::with_capacity(payload.len() + 1);
            data.push(channel);
            data.extend_from_slice(payload);
            Message::Binary(Bytes::from(data))
        }
        Codec::Base64 => {
            let mut text = String::with_capacity(payload.len() * 4 / 3 + 5);
            text.push(char::from(b'0'.wrapping_add(channel)));
            STANDARD.encode_string(payload, &mut text);
            Message::Text(text.into())
        }
    }
}

fn touch(activity: &Activity) {
    *activity.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
}

fn idle_for(activity: &Activity) -> Duration {
    activity
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .elapsed()
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.get_mut().inbound.poll_read(cx, buf))?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after channel close",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(MAX_MESSAGE_PAYLOAD);
        this.send(
            cx,
            Outgoing::Data {
                channel: this.channel,
                payload: Bytes::copy_from_slice(&buf[..len]),
            },
        )
        .map_ok(|()| len)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if this.send_close_signal {
            ready!(this.send(cx, Outgoing::CloseSignal(this.channel)))?;
        }
        this.closed = true;
        Poll::Ready(Ok(()))
    }
}

impl ChannelWriter {
    /// Queues `message` once there is room.
    fn send(&mut self, cx: &mut Context<'_>, message: Outgoing) -> Poll<io::Result<()>> {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "websocket connection closed");
        if ready!(self.outgoing.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(gone()));
        }
        self.outgoing.send_item(message).map_err(|_| gone())?;
        Poll::Ready(Ok(()))
    }

    /// Writes an empty message on this channel: kubelet's "connection established"
    /// signal to the client.
    pub async fn write_empty(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            self.send(
                cx,
                Outgoing::Data {
                    channel: self.channel,
                    payload: Bytes::new(),
                },
            )
        })
        .await
    }
}

/// True for an HTTP request asking for a WebSocket upgrade (wsstream's
/// `IsWebSocketRequest`).
pub fn is_websocket_request(headers: &HeaderMap) -> bool {
    let upgrade_is_websocket = headers
        .get(http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"));
    upgrade_is_websocket && connection_has_upgrade(headers)
}

/// True when a `Connection` header lists `upgrade`.
pub fn connection_has_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.to_ascii_lowercase().contains("upgrade"))
}

/// The subprotocols a client offered, in its order of preference.
pub fn requested_protocols(headers: &HeaderMap) -> Vec<String> {
    comma_separated(headers, http::header::SEC_WEBSOCKET_PROTOCOL)
}

/// Values of a possibly repeated, comma-separated header, trimmed, without empties.
pub(crate) fn comma_separated(headers: &HeaderMap, name: http::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_messages_lead_with_the_channel_byte() {
        assert_eq!(
            encode(Codec::Binary, 1, b"hi"),
            Message::Binary(Bytes::from_static(b"\x01hi"))
        );
        assert_eq!(
            encode(Codec::Binary, 3, b""),
            Message::Binary(Bytes::from_static(b"\x03"))
        );
    }

    #[test]
    fn base64_messages_lead_with_an_ascii_digit() {
        // The example of wsstream's doc comment: "\n" on channel 1.
        assert_eq!(
            encode(Codec::Base64, 1, b"\n"),
            Message::Text("1Cg==".into())
        );
        assert_eq!(
            encode(Codec::Base64, 0, b"foo\n"),
            Message::Text("0Zm9vCg==".into())
        );
    }

    #[test]
    fn protocols_are_read_from_repeated_comma_separated_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "v5.channel.k8s.io, v4.channel.k8s.io"
                .parse()
                .expect("value"),
        );
        headers.append(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "channel.k8s.io".parse().expect("value"),
        );
        assert_eq!(
            requested_protocols(&headers),
            ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]
        );
    }

    #[test]
    fn websocket_requests_need_upgrade_and_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::UPGRADE, "WebSocket".parse().expect("value"));
        assert!(!is_websocket_request(&headers));
        headers.insert(
            http::header::CONNECTION,
            "keep-alive, Upgrade".parse().expect("value"),
        );
        assert!(is_websocket_request(&headers));
        headers.insert(http::header::UPGRADE, "SPDY/3.1".parse().expect("value"));
        assert!(!is_websocket_request(&headers));
    }
}
