//! The resize stream: `TerminalSize` JSON objects back to back, decoded the way Go's
//! `json.Decoder` does (keys matched case-insensitively, an object may span reads).

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tracing::debug;

use crate::runtime::TerminalSize;

/// Sizes buffered for the runtime; beyond that only the newest is kept.
pub(crate) const RESIZE_QUEUE: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct ResizeDecoder {
    buffered: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid terminal size on the resize stream: {0}")]
pub(crate) struct ResizeError(String);

impl ResizeDecoder {
    /// Adds bytes and returns the sizes they complete. After an error the stream is
    /// unusable, as for kubelet (which stops reading it).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<TerminalSize>, ResizeError> {
        self.buffered.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut values = serde_json::Deserializer::from_slice(&self.buffered).into_iter::<Value>();
        let mut consumed = 0;
        loop {
            match values.next() {
                None => {
                    consumed = self.buffered.len();
                    break;
                }
                Some(Ok(value)) => {
                    sizes.push(terminal_size(&value)?);
                    consumed = values.byte_offset();
                }
                // An object cut in half: keep it for the next read.
                Some(Err(err)) if err.is_eof() => break,
                Some(Err(err)) => return Err(ResizeError(err.to_string())),
            }
        }
        self.buffered.drain(..consumed);
        Ok(sizes)
    }
}

fn terminal_size(value: &Value) -> Result<TerminalSize, ResizeError> {
    let object = value
        .as_object()
        .ok_or_else(|| ResizeError(format!("expected an object, got {value}")))?;
    let field = |name: &str| -> Result<u16, ResizeError> {
        match object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
        {
            None | Some((_, Value::Null)) => Ok(0),
            Some((_, value)) => value
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| ResizeError(format!("{name} {value} is not a uint16"))),
        }
    };
    Ok(TerminalSize {
        width: field("width")?,
        height: field("height")?,
    })
}

/// Reads sizes from `source` and hands them to the runtime. The source is always
/// drained promptly so a runtime that stops reading sizes cannot stall the
/// connection; if the runtime falls behind, intermediate sizes are dropped and the
/// newest one is delivered.
pub(crate) async fn forward_resize_events<R>(mut source: R, sink: mpsc::Sender<TerminalSize>)
where
    R: AsyncRead + Unpin,
{
    let mut decoder = ResizeDecoder::default();
    let mut newest_undelivered: Option<TerminalSize> = None;
    let mut source_open = true;
    let mut buf = [0u8; 512];
    while source_open || newest_undelivered.is_some() {
        tokio::select! {
            permit = sink.reserve(), if newest_undelivered.is_some() => {
                let Ok(permit) = permit else { return };
                if let Some(size) = newest_undelivered.take() {
                    permit.send(size);
                }
            }
            read = source.read(&mut buf), if source_open => match read {
                Ok(0) | Err(_) => source_open = false,
                Ok(n) => match decoder.push(&buf[..n]) {
                    Ok(sizes) => {
                        for size in sizes {
                            if !queue_size(&sink, &mut newest_undelivered, size) {
                                return;
                            }
                        }
                    }
                    Err(err) => {
                        debug!(%err, "resize stream ended");
                        source_open = false;
                    }
                },
            },
            () = sink.closed() => return,
        }
    }
}

/// Sends `size` now if it can go in order, else remembers it as the newest. False
/// once the runtime dropped its receiver.
fn queue_size(
    sink: &mpsc::Sender<TerminalSize>,
    newest_undelivered: &mut Option<TerminalSize>,
    size: TerminalSize,
) -> bool {
    if newest_undelivered.is_some() {
        *newest_undelivered = Some(size);
        return true;
    }
    match sink.try_send(size) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(size)) => {
            *newest_undelivered = Some(size);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u16, height: u16) -> TerminalSize {
        TerminalSize { width, height }
    }

    #[test]
    fn back_to_back_objects_and_split_objects() {
        let mut decoder = ResizeDecoder::default();
        assert_eq!(
            decoder
                .push(br#"{"Width":80,"Height":24}{"Width":100,"#)
                .expect("push"),
            vec![size(80, 24)]
        );
        assert_eq!(
            decoder.push(br#""Height":50}"#).expect("push"),
            vec![size(100, 50)]
        );
        assert_eq!(decoder.push(b"\n  ").expect("push"), vec![]);
    }

    #[test]
    fn keys_are_case_insensitive_like_go() {
        let mut decoder = ResizeDecoder::default();
        assert_eq!(
            decoder.push(br#"{"width":1,"HEIGHT":2}"#).expect("push"),
            vec![size(1, 2)]
        );
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(ResizeDecoder::default().push(b"nope").is_err());
        assert!(
            ResizeDecoder::default()
                .push(br#"{"Width":70000}"#)
                .is_err()
        );
        assert!(ResizeDecoder::default().push(b"[1]").is_err());
    }

    #[tokio::test]
    async fn a_slow_consumer_gets_the_newest_size() {
        let (tx, mut rx) = mpsc::channel(1);
        let input: &[u8] = br#"{"Width":1,"Height":1}{"Width":2,"Height":2}{"Width":3,"Height":3}"#;
        let forwarder = tokio::spawn(forward_resize_events(input, tx));
        // Let the forwarder read everything before the consumer takes anything.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(rx.recv().await, Some(size(1, 1)));
        assert_eq!(rx.recv().await, Some(size(3, 3)));
        assert_eq!(rx.recv().await, None);
        forwarder.await.expect("forwarder");
    }
}
