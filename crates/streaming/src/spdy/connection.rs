//! A SPDY/3.1 session over any byte stream, as moby/spdystream runs one: a reader
//! task that demultiplexes frames into streams, and a writer task that owns the
//! header compressor and writes frames in the order they were queued.
//!
//! Behaviour that matters to Kubernetes clients (all Go spdystream):
//! - streams opened by the peer get a SYN_REPLY with no headers before any of our
//!   data on them (apimachinery's `newSpdyStream`);
//! - PINGs from the peer are echoed; GOAWAY stops new streams;
//! - flow control: spdystream never sends WINDOW_UPDATE and ignores the ones it gets,
//!   so we never wait for send window (that would stall every transfer at 64 KiB);
//!   we do credit what we consume, so a strict SPDY/3.1 peer does not stall either;
//! - backpressure instead comes from bounded queues: a stream whose reader falls
//!   behind holds the connection's reader task, and our writers wait for the socket.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::codec::FrameCodec;
use super::frame::*;
use super::stream::{INITIAL_WINDOW, Stream, StreamFlags};

/// Which end of the connection we are: clients use odd stream and ping ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Decides whether a stream the peer opens is accepted (SYN_REPLY) or refused
/// (RST_STREAM), from its headers, before any of its data is used.
pub type StreamFilter = Arc<dyn Fn(&HeaderBlock) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct ConnectionConfig {
    pub role: Role,
    /// Close the connection after this long without a frame in either direction.
    pub idle_timeout: Option<Duration>,
    pub stream_filter: Option<StreamFilter>,
}

impl ConnectionConfig {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            idle_timeout: None,
            stream_filter: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection closed")]
    Closed,
    #[error("spdy connection is going away: no new streams")]
    GoingAway,
    #[error("spdy stream {stream_id} reset by the peer with status {status}")]
    Reset { stream_id: StreamId, status: u32 },
}

/// Chunks buffered per stream before the reader task waits for the stream's reader.
const INBOUND_CHUNKS_PER_STREAM: usize = 16;
/// Bytes of DATA queued for the socket before stream writers wait.
const WRITE_BUDGET_BYTES: usize = 1 << 20;
/// Open streams per connection; more are refused. Port forwarding opens two per
/// forwarded TCP connection.
const MAX_STREAMS: usize = 4096;

/// What the writer task is asked to do, in order.
pub(crate) enum Outgoing {
    Frame(Frame),
    /// A DATA frame holding its share of the write budget until it is written.
    Data {
        frame: Frame,
        permit: OwnedSemaphorePermit,
    },
    /// Flush, shut the write side down and stop.
    Close,
}

/// A SPDY connection. Streams opened by the peer arrive on the [`IncomingStreams`]
/// returned with it.
pub struct Connection {
    shared: Arc<Shared>,
    stop_reader: CancellationToken,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// The streams the peer opens, in the order it opened them.
pub type IncomingStreams = mpsc::UnboundedReceiver<Stream>;

pub(crate) struct Shared {
    role: Role,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    write_budget: Arc<Semaphore>,
    state: Mutex<State>,
    read_closed: CancellationToken,
    last_activity: Mutex<Instant>,
}

struct State {
    streams: HashMap<StreamId, StreamEntry>,
    next_stream_id: StreamId,
    last_peer_stream_id: StreamId,
    /// We or the peer sent GOAWAY, or the connection ended: no new streams.
    going_away: bool,
    session_unacknowledged: usize,
}

struct StreamEntry {
    /// `None` once the peer finished its side (FIN) or the stream ended.
    inbound: Option<mpsc::Sender<Bytes>>,
    /// Waiting for the SYN_REPLY of a stream we opened.
    reply: Option<oneshot::Sender<Result<(), SpdyError>>>,
    flags: Arc<StreamFlags>,
}

impl Connection {
    /// Starts the reader and writer tasks on `io` (after the HTTP upgrade).
    pub fn start<T>(io: T, config: ConnectionConfig) -> (Self, IncomingStreams)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            role: config.role,
            outgoing,
            write_budget: Arc::new(Semaphore::new(WRITE_BUDGET_BYTES)),
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_stream_id: match config.role {
                    Role::Client => 1,
                    Role::Server => 2,
                },
                last_peer_stream_id: 0,
                going_away: false,
                session_unacknowledged: 0,
            }),
            read_closed: CancellationToken::new(),
            last_activity: Mutex::new(Instant::now()),
        });
        let stop_reader = CancellationToken::new();
        let reader = FrameReader {
            shared: shared.clone(),
            incoming: incoming_tx,
            filter: config.stream_filter,
            idle_timeout: config.idle_timeout,
        };
        let reader = tokio::spawn(reader.run(read_half, stop_reader.clone()));
        let writer = tokio::spawn(write_frames(
            write_half,
            outgoing_rx,
            shared.clone(),
            config.idle_timeout,
        ));
        let connection = Self {
            shared,
            stop_reader,
            reader,
            writer,
        };
        (connection, incoming_rx)
    }

    /// Opens a stream (client side) and waits for the peer's SYN_REPLY.
    pub async fn open_stream(&self, headers: HeaderBlock) -> Result<Stream, SpdyError> {
        let (stream, reply) = self.shared.open_stream(headers)?;
        match reply.await {
            Ok(Ok(())) => Ok(stream),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(SpdyError::Closed),
        }
    }

    /// Resolves once the peer's side of the connection is gone (EOF, error, idle
    /// timeout): the client went away.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.read_closed.clone().cancelled_owned()
    }

    /// Ends the connection politely: FIN on every stream still open on our side,
    /// GOAWAY, flush, shut our write side down, then give the peer `linger` to close
    /// its side before dropping the socket.
    pub async fn shutdown(mut self, linger: Duration) {
        self.shared.finish_all_streams();
        self.shared.go_away(GoAwayStatus::OK);
        self.shared.send(Outgoing::Close);
        if tokio::time::timeout(linger, &mut self.writer)
            .await
            .is_err()
        {
            debug!("spdy: peer did not take our last frames in time");
            self.writer.abort();
        }
        if tokio::time::timeout(linger, &mut self.reader)
            .await
            .is_err()
        {
            debug!("spdy: peer did not close the connection in time");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Writers still holding streams get errors once the writer task stops; the
        // writer flushes what is queued first.
        self.stop_reader.cancel();
        self.shared.send(Outgoing::Close);
    }
}

impl Shared {
    pub(crate) fn write_budget(&self) -> Arc<Semaphore> {
        self.write_budget.clone()
    }

    /// Queues a message for the writer task; false if the writer is gone.
    pub(crate) fn send(&self, message: Outgoing) -> bool {
        self.outgoing.send(message).is_ok()
    }

    fn send_frame(&self, frame: Frame) {
        self.send(Outgoing::Frame(frame));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Stream bookkeeping stays usable after a panic elsewhere; no invariant spans
        // more than one field update.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        *self
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    fn peer_parity(&self) -> u32 {
        match self.role {
            Role::Client => 0,
            Role::Server => 1,
        }
    }

    fn open_stream(
        self: &Arc<Self>,
        headers: HeaderBlock,
    ) -> Result<(Stream, oneshot::Receiver<Result<(), SpdyError>>), SpdyError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CHUNKS_PER_STREAM);
        let flags = Arc::new(StreamFlags::default());
        // Allocating the id and queueing the SYN_STREAM under one lock keeps ids
        // increasing on the wire, which the peer checks.
        let mut state = self.lock();
        if state.going_away {
            return Err(SpdyError::GoingAway);
        }
        let stream_id = state.next_stream_id;
        state.next_stream_id += 2;
        state.streams.insert(
            stream_id,
            StreamEntry {
                inbound: Some(inbound_tx),
                reply: Some(reply_tx),
                flags: flags.clone(),
            },
        );
        self.send_frame(Frame::SynStream(SynStream {
            stream_id,
            associated_to_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: headers.clone(),
        }));
        drop(state);
        let stream = Stream::new(stream_id, headers, inbound_rx, flags, self.clone());
        Ok((stream, reply_rx))
    }

    /// Registers a stream the peer opened and queues its SYN_REPLY, or refuses it.
    fn accept_peer_stream(
        self: &Arc<Self>,
        syn: SynStream,
        filter: Option<&StreamFilter>,
    ) -> Option<Stream> {
        let stream_id = syn.stream_id;
        let mut state = self.lock();
        if stream_id % 2 != self.peer_parity() || stream_id <= state.last_peer_stream_id {
            self.send_frame(rst(stream_id, RstStatus::PROTOCOL_ERROR));
            return None;
        }
        state.last_peer_stream_id = stream_id;
        if state.going_away {
            return None;
        }
        if state.streams.len() >= MAX_STREAMS {
            debug!(stream_id, "spdy: too many open streams, refusing");
            self.send_frame(rst(stream_id, RstStatus::REFUSED_STREAM));
            return None;
        }
        if let Some(Err(reason)) = filter.map(|filter| filter(&syn.headers)) {
            debug!(stream_id, %reason, "spdy: stream rejected");
            self.send_frame(rst(stream_id, RstStatus::REFUSED_STREAM));
            return None;
        }
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CHUNKS_PER_STREAM);
        let flags = Arc::new(StreamFlags::default());
        flags.local_fin.store(syn.unidirectional, Ordering::Release);
        state.streams.insert(
            stream_id,
            StreamEntry {
                inbound: (!syn.fin).then_some(inbound_tx),
                reply: None,
                flags: flags.clone(),
            },
        );
        self.send_frame(Frame::SynReply(SynReply {
            stream_id,
            fin: false,
            headers: HeaderBlock::new(),
        }));
        drop(state);
        Some(Stream::new(
            stream_id,
            syn.headers,
            inbound_rx,
            flags,
            self.clone(),
        ))
    }

    fn on_syn_reply(&self, reply: SynReply) {
        let mut state = self.lock();
        if let Some(entry) = state.streams.get_mut(&reply.stream_id) {
            if let Some(waiter) = entry.reply.take() {
                let _ = waiter.send(Ok(()));
            }
        }
        drop(state);
        if reply.fin {
            self.on_remote_fin(reply.stream_id);
        }
    }

    /// The sender for a stream's inbound data, if the stream still takes data.
    fn inbound_sender(&self, stream_id: StreamId) -> Option<mpsc::Sender<Bytes>> {
        self.lock()
            .streams
            .get(&stream_id)
            .and_then(|entry| entry.inbound.clone())
    }

    /// Credits received bytes to the session window (SPDY/3.1 stream 0).
    fn acknowledge_session(&self, received: usize) {
        let mut state = self.lock();
        state.session_unacknowledged += received;
        if state.session_unacknowledged >= INITIAL_WINDOW / 2 {
            let delta = state.session_unacknowledged as u32;
            state.session_unacknowledged = 0;
            self.send_frame(Frame::WindowUpdate(WindowUpdate {
                stream_id: 0,
                delta,
            }));
        }
    }

    fn on_remote_fin(&self, stream_id: StreamId) {
        let mut state = self.lock();
        let Some(entry) = state.streams.get_mut(&stream_id) else {
            return;
        };
        entry.inbound = None;
        if entry.flags.local_fin.load(Ordering::Acquire) {
            state.streams.remove(&stream_id);
        }
    }

    pub(crate) fn note_local_fin(&self, stream_id: StreamId) {
        let mut state = self.lock();
        if state
            .streams
            .get(&stream_id)
            .is_some_and(|entry| entry.inbound.is_none() && entry.reply.is_none())
        {
            state.streams.remove(&stream_id);
        }
    }

    fn on_peer_reset(&self, stream_id: StreamId, status: RstStatus) {
        let Some(entry) = self.lock().streams.remove(&stream_id) else {
            return;
        };
        entry.flags.reset.store(true, Ordering::Release);
        if let Some(waiter) = entry.reply {
            let _ = waiter.send(Err(SpdyError::Reset {
                stream_id,
                status: status.0,
            }));
        }
    }

    pub(crate) fn reset_stream(&self, stream_id: StreamId, status: RstStatus) {
        let entry = self.lock().streams.remove(&stream_id);
        if let Some(entry) = entry {
            if entry.flags.reset.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        self.send_frame(rst(stream_id, status));
    }

    fn finish_all_streams(&self) {
        let state = self.lock();
        for (&stream_id, entry) in &state.streams {
            let flags = &entry.flags;
            if !flags.reset.load(Ordering::Acquire) && !flags.local_fin.swap(true, Ordering::AcqRel)
            {
                self.send_frame(Frame::Data(Data {
                    stream_id,
                    fin: true,
                    data: Bytes::new(),
                }));
            }
        }
    }

    fn go_away(&self, status: GoAwayStatus) {
        let mut state = self.lock();
        state.going_away = true;
        self.send_frame(Frame::GoAway(GoAway {
            last_good_stream_id: state.last_peer_stream_id,
            status,
        }));
    }

    /// The peer is gone: every stream's reader sees EOF, waiters get errors.
    fn close_read_side(&self) {
        let mut state = self.lock();
        state.going_away = true;
        for entry in state.streams.values_mut() {
            entry.inbound = None;
            if let Some(waiter) = entry.reply.take() {
                let _ = waiter.send(Err(SpdyError::Closed));
            }
        }
        drop(state);
        self.read_closed.cancel();
    }
}

fn rst(stream_id: StreamId, status: RstStatus) -> Frame {
    Frame::RstStream(RstStream { stream_id, status })
}

/// The reader task's context.
struct FrameReader {
    shared: Arc<Shared>,
    incoming: mpsc::UnboundedSender<Stream>,
    filter: Option<StreamFilter>,
    idle_timeout: Option<Duration>,
}

enum ReadEnd {
    Eof,
    Idle,
    Stopped,
    Protocol(FrameError),
}

impl FrameReader {
    async fn run<R: AsyncRead + Unpin + Send>(self, io: R, stop: CancellationToken) {
        let mut frames = FramedRead::new(io, FrameCodec::new());
        let end = loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break ReadEnd::Stopped,
                next = self.next_frame(&mut frames) => next,
            };
            match next {
                Ok(frame) => {
                    self.shared.touch();
                    self.handle(frame).await;
                }
                Err(end) => break end,
            }
        };
        match end {
            ReadEnd::Protocol(FrameError::Io(err)) => debug!(%err, "spdy: connection read failed"),
            ReadEnd::Protocol(err) => {
                debug!(%err, "spdy: protocol error, going away");
                self.shared.go_away(GoAwayStatus::PROTOCOL_ERROR);
                self.shared.send(Outgoing::Close);
            }
            ReadEnd::Idle => {
                debug!("spdy: connection idle for too long, closing");
                self.shared.go_away(GoAwayStatus::OK);
                self.shared.send(Outgoing::Close);
            }
            ReadEnd::Eof | ReadEnd::Stopped => {}
        }
        self.shared.close_read_side();
    }

    async fn next_frame<R: AsyncRead + Unpin>(
        &self,
        frames: &mut FramedRead<R, FrameCodec>,
    ) -> Result<Frame, ReadEnd> {
        let next = match self.idle_timeout {
            None => frames.next().await,
            Some(idle) => loop {
                let remaining = idle.saturating_sub(self.shared.idle_for());
                if remaining.is_zero() {
                    return Err(ReadEnd::Idle);
                }
                // `next` is cancel safe: a timed-out read keeps its buffered bytes.
                if let Ok(next) = tokio::time::timeout(remaining, frames.next()).await {
                    break next;
                }
            },
        };
        match next {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(err)) => Err(ReadEnd::Protocol(err)),
            None => Err(ReadEnd::Eof),
        }
    }

    async fn handle(&self, frame: Frame) {
        match frame {
            Frame::SynStream(syn) => self.on_syn_stream(syn),
            Frame::SynReply(reply) => self.shared.on_syn_reply(reply),
            Frame::Data(data) => self.on_data(data).await,
            Frame::RstStream(rst) => self.shared.on_peer_reset(rst.stream_id, rst.status),
            Frame::Ping(ping) => self.on_ping(ping),
            Frame::GoAway(_) => self.shared.lock().going_away = true,
            Frame::Headers(headers) => {
                if headers.fin {
                    self.shared.on_remote_fin(headers.stream_id);
                }
            }
            // We never wait for send window (see the module docs), and no setting
            // changes what we do.
            Frame::WindowUpdate(_) | Frame::Settings(_) => {}
        }
    }

    fn on_syn_stream(&self, syn: SynStream) {
        let Some(stream) = self.shared.accept_peer_stream(syn, self.filter.as_ref()) else {
            return;
        };
        if let Err(mpsc::error::SendError(stream)) = self.incoming.send(stream) {
            // Nobody takes new streams on this connection.
            stream.reset(RstStatus::REFUSED_STREAM);
        }
    }

    async fn on_data(&self, data: Data) {
        self.shared.acknowledge_session(data.data.len());
        if !data.data.is_empty() {
            if let Some(inbound) = self.shared.inbound_sender(data.stream_id) {
                // Waits while the stream's reader is behind; a dropped reader just
                // discards the data.
                let _ = inbound.send(data.data).await;
            }
        }
        if data.fin {
            self.shared.on_remote_fin(data.stream_id);
        }
    }

    fn on_ping(&self, ping: Ping) {
        // A ping with the peer's parity is theirs: echo it. Ours coming back needs
        // nothing (we only send pings from the client for keepalive).
        let ours = match self.shared.role {
            Role::Client => 1,
            Role::Server => 0,
        };
        if ping.id % 2 != ours {
            self.shared.send_frame(Frame::Ping(ping));
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin + Send>(
    io: W,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
    stall_timeout: Option<Duration>,
) {
    let mut sink = FramedWrite::new(io, FrameCodec::new());
    let stall = stall_timeout.unwrap_or(Duration::MAX);
    let result: Result<(), String> = async {
        while let Some(message) = queue.recv().await {
            let frame = match message {
                Outgoing::Frame(frame) => frame,
                // The permit goes back to the budget once the frame is in the sink.
                Outgoing::Data {
                    frame,
                    permit: _permit,
                } => frame,
                Outgoing::Close => break,
            };
            with_stall_timeout(stall, sink.feed(frame)).await?;
            shared.touch();
            if queue.is_empty() {
                with_stall_timeout(stall, sink.flush()).await?;
            }
        }
        with_stall_timeout(stall, sink.close()).await
    }
    .await;
    if let Err(err) = result {
        debug!(%err, "spdy: connection write failed");
    }
    // Writers waiting for budget must fail now rather than wait forever.
    shared.write_budget.close();
}

async fn with_stall_timeout<F>(stall: Duration, write: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), FrameError>>,
{
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("write stalled for longer than the idle timeout".into()),
    }
}
