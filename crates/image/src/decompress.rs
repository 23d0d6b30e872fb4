//! Streaming decompression of layer blobs: gzip (multi-member), zstd (multi-frame,
//! skippable frames skipped, as zstd:chunked layers have them) or none.

use std::io::{self, BufRead, BufReader, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use crate::manifest::Compression;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// A reader of the uncompressed tar. The compression is read from the stream's
/// magic bytes, as containerd's `compression.DecompressStream` does: some images
/// label layers wrongly, and the blob digest was checked on the raw bytes anyway.
pub fn decompressor<'a, R: Read + Send + 'a>(
    declared: Compression,
    mut reader: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut head = Vec::with_capacity(ZSTD_MAGIC.len());
    (&mut reader)
        .take(ZSTD_MAGIC.len() as u64)
        .read_to_end(&mut head)?;
    let detected = if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    };
    if detected != declared {
        tracing::debug!(
            ?declared,
            ?detected,
            "layer compression differs from its media type"
        );
    }
    let stream = io::Cursor::new(head).chain(reader);
    Ok(match detected {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(ZstdReader::new(stream)),
    })
}

/// Decodes every frame of a zstd stream until its end.
pub struct ZstdReader<R> {
    source: BufReader<R>,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: Read> ZstdReader<R> {
    pub fn new(source: R) -> Self {
        Self {
            source: BufReader::new(source),
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Starts the next frame; `Ok(false)` at the end of the stream.
    fn start_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd: truncated skippable frame",
                        ));
                    }
                }
                Err(err) => return Err(io::Error::new(io::ErrorKind::InvalidData, err)),
            }
        }
    }
}

impl<R: Read> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.start_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            if self.decoder.can_collect() == 0 && !self.decoder.is_finished() {
                self.decoder
                    .decode_blocks(
                        &mut self.source,
                        BlockDecodingStrategy::UptoBytes(buf.len()),
                    )
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() && self.decoder.can_collect() == 0 {
                self.check_frame_checksum()?;
                self.in_frame = false;
            }
        }
    }
}

impl<R: Read> ZstdReader<R> {
    fn check_frame_checksum(&self) -> io::Result<()> {
        match (
            self.decoder.get_checksum_from_data(),
            self.decoder.get_calculated_checksum(),
        ) {
            (Some(stored), Some(computed)) if stored != computed => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "zstd: frame checksum mismatch",
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mislabeled_layers_are_read_by_their_magic() {
        let mut text = String::new();
        decompressor(Compression::Gzip, b"plain tar bytes".as_slice())
            .expect("sniff")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "plain tar bytes");
        let mut empty = Vec::new();
        decompressor(Compression::Zstd, b"".as_slice())
            .expect("sniff")
            .read_to_end(&mut empty)
            .expect("read");
        assert!(empty.is_empty());
    }

    #[test]
    fn gzip_members_are_all_read() {
        use flate2::Compression as Level;
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut out = Vec::new();
        for part in [b"hello ".as_slice(), b"world"] {
            let mut enc = GzEncoder::new(Vec::new(), Level::default());
            enc.write_all(part).expect("write");
            out.extend(enc.finish().expect("finish"));
        }
        let mut text = String::new();
        decompressor(Compression::Gzip, out.as_slice())
            .expect("sniff")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "hello world");
    }

    #[test]
    fn zstd_skippable_and_multiple_frames() {
        // Two frames of "ab" made by `zstd` (raw blocks), with a skippable frame between.
        let frame = |payload: &[u8]| {
            let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, payload.len() as u8];
            // last block, raw, size = payload.len()
            let header = 1u32 | ((payload.len() as u32) << 3);
            f.extend_from_slice(&header.to_le_bytes()[..3]);
            f.extend_from_slice(payload);
            f
        };
        let mut stream = frame(b"ab");
        stream.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        stream.extend(frame(b"cd"));
        let mut text = String::new();
        decompressor(Compression::Zstd, stream.as_slice())
            .expect("sniff")
            .read_to_string(&mut text)
            .expect("read");
        assert_eq!(text, "abcd");
    }
}
