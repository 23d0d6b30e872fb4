//! SPDY/3 frames in memory ([SPDY/3 draft, section 2.2][spec]; SPDY/3.1 only adds
//! session-level WINDOW_UPDATE on stream 0) and their header blocks.
//!
//! ```text
//! control frame                          data frame
//! +-+-------------+---------------+      +-+-----------------------------+
//! |1| version(15) |  type (16)    |      |0|      stream id (31)         |
//! +---------------+---------------+      +---------------+---------------+
//! | flags (8) |   length (24)     |      | flags (8) |   length (24)     |
//! +-----------+-------------------+      +-----------+-------------------+
//! |           payload             |      |            data               |
//! ```
//!
//! [spec]: https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3/

use bytes::Bytes;

pub type StreamId = u32;

/// The version every control frame carries.
pub const SPDY_VERSION: u16 = 3;
/// Largest payload a frame's 24-bit length can describe.
pub const MAX_FRAME_LENGTH: usize = (1 << 24) - 1;

pub(crate) const TYPE_SYN_STREAM: u16 = 1;
pub(crate) const TYPE_SYN_REPLY: u16 = 2;
pub(crate) const TYPE_RST_STREAM: u16 = 3;
pub(crate) const TYPE_SETTINGS: u16 = 4;
pub(crate) const TYPE_PING: u16 = 6;
pub(crate) const TYPE_GOAWAY: u16 = 7;
pub(crate) const TYPE_HEADERS: u16 = 8;
pub(crate) const TYPE_WINDOW_UPDATE: u16 = 9;

pub(crate) const FLAG_FIN: u8 = 0x01;
pub(crate) const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub(crate) const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// RST_STREAM status codes (section 2.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INVALID_STREAM: Self = Self(2);
    pub const REFUSED_STREAM: Self = Self(3);
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    pub const CANCEL: Self = Self(5);
    pub const INTERNAL_ERROR: Self = Self(6);
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    pub const STREAM_IN_USE: Self = Self(8);
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    pub const FRAME_TOO_LARGE: Self = Self(11);
}

/// GOAWAY status codes (section 2.6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: Self = Self(0);
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// SETTINGS ids this implementation looks at (section 2.6.4).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream(SynStream),
    SynReply(SynReply),
    RstStream(RstStream),
    Settings(Settings),
    Ping(Ping),
    GoAway(GoAway),
    Headers(Headers),
    WindowUpdate(WindowUpdate),
    Data(Data),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    pub stream_id: StreamId,
    pub associated_to_stream_id: StreamId,
    /// 3 bits, 0 is the highest priority.
    pub priority: u8,
    pub slot: u8,
    pub fin: bool,
    pub unidirectional: bool,
    pub headers: HeaderBlock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynReply {
    pub stream_id: StreamId,
    pub fin: bool,
    pub headers: HeaderBlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStream {
    pub stream_id: StreamId,
    pub status: RstStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub clear_persisted: bool,
    pub entries: Vec<Setting>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    /// 24 bits.
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// Odd from the client, even from the server.
    pub id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAway {
    pub last_good_stream_id: StreamId,
    pub status: GoAwayStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub stream_id: StreamId,
    pub fin: bool,
    pub headers: HeaderBlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUpdate {
    /// 0 for the session window (SPDY/3.1).
    pub stream_id: StreamId,
    /// 31 bits.
    pub delta: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub stream_id: StreamId,
    pub fin: bool,
    pub data: Bytes,
}

/// What can be wrong with bytes on the wire. Every one of these ends the connection
/// (the peer and we no longer agree on framing or on the zlib context).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("read or write spdy frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported spdy version {0}")]
    UnsupportedVersion(u16),
    #[error("invalid {frame} frame: {reason}")]
    Invalid {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("invalid header block: {0}")]
    HeaderBlock(&'static str),
    #[error("header compression: {0}")]
    Compression(String),
    #[error("frame payload of {0} bytes exceeds the 24-bit length")]
    TooLarge(usize),
}

impl FrameError {
    pub(crate) fn invalid(frame: &'static str, reason: &'static str) -> Self {
        Self::Invalid { frame, reason }
    }
}

/// The name/value pairs of SYN_STREAM, SYN_REPLY and HEADERS (section 2.6.10). Names
/// are lowercase on the wire; a name with several values sends them NUL-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    fields: Vec<(String, Vec<String>)>,
}

/// Headers beyond this many in one block are a protocol error: no k8s client sends
/// more than a handful.
const MAX_HEADER_FIELDS: u32 = 1024;

impl HeaderBlock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder form of [`append`](Self::append).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.append(name, value);
        self
    }

    /// Adds a value under `name` (lowercased).
    pub fn append(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.to_owned()),
            None => self.fields.push((name, vec![value.to_owned()])),
        }
    }

    /// The first value of `name`, compared case-insensitively (Go's `Header.Get`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The uncompressed block: count, then length-prefixed names and values, all
    /// 32-bit big endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.fields.len() as u32).to_be_bytes());
        for (name, values) in &self.fields {
            let value = values.join("\0");
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed block; the whole input must be consumed.
    pub fn decode(mut input: &[u8]) -> Result<Self, FrameError> {
        let count = take_u32(&mut input)?;
        if count > MAX_HEADER_FIELDS {
            return Err(FrameError::HeaderBlock("too many header fields"));
        }
        let mut block = Self::new();
        for _ in 0..count {
            let name = take_string(&mut input)?;
            let value = take_string(&mut input)?;
            if name.is_empty() {
                return Err(FrameError::HeaderBlock("empty header name"));
            }
            // spdystream lowercases names it receives and merges repeats; so do we.
            for part in value.split('\0') {
                block.append(&name, part);
            }
        }
        if !input.is_empty() {
            return Err(FrameError::HeaderBlock("trailing bytes after the headers"));
        }
        Ok(block)
    }
}

fn take_u32(input: &mut &[u8]) -> Result<u32, FrameError> {
    let (head, rest) = input
        .split_first_chunk::<4>()
        .ok_or(FrameError::HeaderBlock("truncated length"))?;
    *input = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(input: &mut &[u8]) -> Result<String, FrameError> {
    let len = take_u32(input)? as usize;
    if input.len() < len {
        return Err(FrameError::HeaderBlock("truncated name or value"));
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::HeaderBlock("not utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_round_trips_and_joins_repeated_values() {
        let block = HeaderBlock::new()
            .with("streamType", "stdout")
            .with("port", "80")
            .with("port", "443");
        let encoded = block.encode();
        let decoded = HeaderBlock::decode(&encoded).expect("decode");
        assert_eq!(decoded, block);
        assert_eq!(decoded.get("STREAMTYPE"), Some("stdout"));
        assert_eq!(decoded.get("port"), Some("80"));
        assert_eq!(decoded.len(), 2);
    }

    #[test]
    fn header_block_known_bytes() {
        let block = HeaderBlock::new().with("streamtype", "error");
        let expected: &[u8] = b"\x00\x00\x00\x01\x00\x00\x00\x0astreamtype\x00\x00\x00\x05error";
        assert_eq!(block.encode(), expected);
        assert_eq!(HeaderBlock::decode(expected).expect("decode"), block);
    }

    #[test]
    fn header_block_lowercases_received_names() {
        let bytes: &[u8] = b"\x00\x00\x00\x01\x00\x00\x00\x04Port\x00\x00\x00\x02\x38\x30";
        let block = HeaderBlock::decode(bytes).expect("decode");
        assert_eq!(block.get("port"), Some("80"));
    }

    #[test]
    fn header_block_rejects_truncation_and_trailing_bytes() {
        let encoded = HeaderBlock::new().with("a", "b").encode();
        for cut in 0..encoded.len() {
            assert!(
                HeaderBlock::decode(&encoded[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = encoded.clone();
        long.push(0);
        assert!(HeaderBlock::decode(&long).is_err());
    }

    #[test]
    fn header_block_rejects_absurd_counts_without_allocating() {
        assert!(HeaderBlock::decode(b"\xff\xff\xff\xff").is_err());
    }
}
