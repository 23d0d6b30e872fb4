//! One SPDY stream as a pair of async byte halves. Reading ends (EOF) at the peer's
//! FIN, RST_STREAM or the end of the connection; shutting down or dropping the
//! writer sends our FIN (half-close), as spdystream's `Stream.Close` does.

use crate::chunks::ChunkReceiver;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSemaphore;

use super::connection::{Outgoing, Shared};
use super::frame::{Data, Frame, HeaderBlock, RstStatus, StreamId, WindowUpdate};

/// Largest DATA payload we send in one frame (what Go's io.Copy writes at once).
pub(crate) const MAX_DATA_CHUNK: usize = 32 * 1024;
/// SPDY/3's initial flow-control window. We do not block on the peer's window (Go
/// peers never send WINDOW_UPDATE), but we credit what we consume so a strict peer
/// never stalls.
pub(crate) const INITIAL_WINDOW: usize = 64 * 1024;

/// Per-stream state shared by the connection's reader task and the stream's writer.
#[derive(Debug, Default)]
pub(crate) struct StreamFlags {
    /// We sent our FIN (or the stream was created unidirectional).
    pub local_fin: AtomicBool,
    /// Either side reset the stream: no more frames on it.
    pub reset: AtomicBool,
}

/// A stream the peer opened (server side) or we opened (client side).
pub struct Stream {
    headers: HeaderBlock,
    reader: StreamReader,
    writer: StreamWriter,
}

/// The receiving half of a stream.
pub struct StreamReader {
    id: StreamId,
    inbound: ChunkReceiver,
    unacknowledged: usize,
    shared: Arc<Shared>,
}

/// The sending half of a stream.
pub struct StreamWriter {
    id: StreamId,
    flags: Arc<StreamFlags>,
    budget: PollSemaphore,
    shared: Arc<Shared>,
}

impl Stream {
    pub(crate) fn new(
        id: StreamId,
        headers: HeaderBlock,
        inbound: mpsc::Receiver<Bytes>,
        flags: Arc<StreamFlags>,
        shared: Arc<Shared>,
    ) -> Self {
        let reader = StreamReader {
            id,
            inbound: ChunkReceiver::new(inbound),
            unacknowledged: 0,
            shared: shared.clone(),
        };
        let writer = StreamWriter {
            id,
            flags,
            budget: PollSemaphore::new(shared.write_budget()),
            shared,
        };
        Self {
            headers,
            reader,
            writer,
        }
    }

    pub fn id(&self) -> StreamId {
        self.reader.id
    }

    /// The headers of the SYN_STREAM that created the stream.
    pub fn headers(&self) -> &HeaderBlock {
        &self.headers
    }

    /// Separates the halves so they can be used from different tasks.
    pub fn into_split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// Aborts the stream in both directions (RST_STREAM).
    pub fn reset(&self, status: RstStatus) {
        self.writer.reset(status);
    }
}

impl StreamReader {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Credits consumed bytes back to the peer once half the window is used.
    fn acknowledge(&mut self, consumed: usize) {
        self.unacknowledged += consumed;
        if self.unacknowledged >= INITIAL_WINDOW / 2 {
            let delta = self.unacknowledged as u32;
            self.unacknowledged = 0;
            self.shared
                .send(Outgoing::Frame(Frame::WindowUpdate(WindowUpdate {
                    stream_id: self.id,
                    delta,
                })));
        }
    }
}

impl StreamWriter {
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Sends our FIN unless it was sent already or the stream was reset.
    pub fn finish(&self) {
        if self.flags.reset.load(Ordering::Acquire)
            || self.flags.local_fin.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.shared.send(Outgoing::Frame(Frame::Data(Data {
            stream_id: self.id,
            fin: true,
            data: Bytes::new(),
        })));
        self.shared.note_local_fin(self.id);
    }

    /// Aborts the stream in both directions (RST_STREAM).
    pub fn reset(&self, status: RstStatus) {
        self.shared.reset_stream(self.id, status);
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.flags.reset.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "spdy stream was reset",
            ));
        }
        if self.flags.local_fin.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after spdy stream was closed",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = ready!(this.inbound.poll_read(cx, buf))?;
        this.acknowledge(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_writable()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(MAX_DATA_CHUNK);
        // Bounds the bytes queued for the socket: a slow peer slows the writers down.
        let Some(permit) = ready!(this.budget.poll_acquire_many(cx, len as u32)) else {
            return Poll::Ready(Err(connection_gone()));
        };
        this.check_writable()?;
        let frame = Frame::Data(Data {
            stream_id: this.id,
            fin: false,
            data: Bytes::copy_from_slice(&buf[..len]),
        });
        if !this.shared.send(Outgoing::Data { frame, permit }) {
            return Poll::Ready(Err(connection_gone()));
        }
        Poll::Ready(Ok(len))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are queued in order for the connection's writer task, which flushes
        // the socket whenever its queue runs empty.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().writer).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().writer).poll_shutdown(cx)
    }
}

fn connection_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "spdy connection closed")
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("headers", &self.headers)
            .finish()
    }
}
