//! Reading a byte stream out of a channel of chunks: what an SPDY stream and a
//! WebSocket channel both hand their readers.

use std::io;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::ReadBuf;
use tokio::sync::mpsc;

/// Chunks as they arrive, read as one stream; the sender's drop is EOF.
pub(crate) struct ChunkReceiver {
    inbound: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl ChunkReceiver {
    pub(crate) fn new(inbound: mpsc::Receiver<Bytes>) -> Self {
        Self {
            inbound,
            pending: Bytes::new(),
        }
    }

    /// Fills `buf` from the current chunk; returns how many bytes (0 at EOF).
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<usize>> {
        while self.pending.is_empty() {
            match ready!(self.inbound.poll_recv(cx)) {
                Some(chunk) => self.pending = chunk,
                None => return Poll::Ready(Ok(0)),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(n))
    }
}
