//! Header block compression (SPDY/3 section 2.6.10.1): zlib with the SPDY dictionary,
//! one stream per direction per connection, each block ending in a sync flush so the
//! peer can decode it without waiting for more.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::SPDY3_DICTIONARY;
use super::frame::FrameError;

/// A decompressed header block larger than this is refused: a few KiB of compressed
/// input must not grow into gigabytes.
pub const MAX_DECOMPRESSED_HEADER_BLOCK: usize = 1 << 20;

/// Compresses the header blocks one side sends.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Result<Self, FrameError> {
        // spdystream compresses with zlib.BestCompression; the level does not matter
        // to the peer, only the dictionary and the sync flush do.
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(SPDY3_DICTIONARY)
            .map_err(|err| FrameError::Compression(err.to_string()))?;
        Ok(Self { zlib })
    }

    /// Compresses one block and sync-flushes, continuing the connection's zlib stream.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before_in = self.zlib.total_in();
            self.zlib
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|err| FrameError::Compression(err.to_string()))?;
            consumed += (self.zlib.total_in() - before_in) as usize;
            // With a sync flush, zlib is done once it leaves output space unused.
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the header blocks the peer sends.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses one frame's block. The peer flushed at the end of it, so all of
    /// its output is available now.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 64);
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_DECOMPRESSED_HEADER_BLOCK {
                    return Err(FrameError::HeaderBlock(
                        "decompressed header block too large",
                    ));
                }
                out.reserve(out.len().max(256));
            }
            let before_in = self.zlib.total_in();
            let before_out = out.len();
            let status =
                self.zlib
                    .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.zlib.total_in() - before_in) as usize;
            match status {
                Ok(Status::StreamEnd) => {
                    return Err(FrameError::Compression("peer ended its zlib stream".into()));
                }
                Ok(_) => {}
                // The zlib header announces the dictionary (FDICT): supply it and go on.
                Err(err) if err.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(SPDY3_DICTIONARY)
                        .map_err(|err| FrameError::Compression(err.to_string()))?;
                    continue;
                }
                Err(err) => return Err(FrameError::Compression(err.to_string())),
            }
            let progressed = out.len() > before_out || self.zlib.total_in() > before_in;
            if consumed == compressed.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if !progressed && out.len() < out.capacity() {
                return Err(FrameError::Compression("truncated header block".into()));
            }
        }
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spdy::dictionary::SPDY3_DICTIONARY_ID;

    #[test]
    fn first_block_announces_the_spdy_dictionary() {
        let mut compressor = HeaderCompressor::new().expect("compressor");
        let out = compressor.compress(b"\x00\x00\x00\x00").expect("compress");
        // zlib header: CMF, FLG with FDICT set, then the dictionary's Adler-32.
        assert_eq!(out[0] & 0x0f, 8, "deflate");
        assert_ne!(out[1] & 0x20, 0, "FDICT");
        assert_eq!(
            u32::from_be_bytes([out[2], out[3], out[4], out[5]]),
            SPDY3_DICTIONARY_ID
        );
        // Every block ends with the sync flush marker.
        assert_eq!(&out[out.len() - 4..], b"\x00\x00\xff\xff");
    }

    #[test]
    fn blocks_share_one_zlib_context_per_direction() {
        let mut compressor = HeaderCompressor::new().expect("compressor");
        let mut decompressor = HeaderDecompressor::new();
        let block = b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x06stdout";
        let first = compressor.compress(block).expect("first");
        let second = compressor.compress(block).expect("second");
        // The second block refers back to the first, so it is smaller and has no header.
        assert!(second.len() < first.len());
        assert_eq!(decompressor.decompress(&first).expect("first"), block);
        assert_eq!(decompressor.decompress(&second).expect("second"), block);
        // A fresh decompressor cannot read the second block alone.
        assert!(HeaderDecompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn a_large_block_spans_several_output_buffers() {
        let mut compressor = HeaderCompressor::new().expect("compressor");
        let mut decompressor = HeaderDecompressor::new();
        let block: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let compressed = compressor.compress(&block).expect("compress");
        assert_eq!(
            decompressor.decompress(&compressed).expect("decompress"),
            block
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decompressor = HeaderDecompressor::new();
        assert!(
            decompressor
                .decompress(b"\x78\xbb\x00\x00\x00\x00garbage")
                .is_err()
        );
        assert!(
            HeaderDecompressor::new()
                .decompress(b"\x01\x02\x03")
                .is_err()
        );
    }
}
