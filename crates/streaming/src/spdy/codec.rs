//! Bytes to frames and back, for `tokio_util::codec::{FramedRead, FramedWrite}`. A
//! frame is decoded only once all of it is buffered, so partial reads never touch
//! the zlib context. Each direction of a connection uses its own codec instance: the
//! reading one owns the decompressor, the writing one the compressor.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::compression::{HeaderCompressor, HeaderDecompressor};
use super::frame::*;

const HEADER_LEN: usize = 8;

#[derive(Default)]
pub struct FrameCodec {
    compressor: Option<HeaderCompressor>,
    decompressor: Option<HeaderDecompressor>,
}

impl FrameCodec {
    pub fn new() -> Self {
        Self::default()
    }

    fn decompress(&mut self, compressed: &[u8]) -> Result<HeaderBlock, FrameError> {
        let block = self
            .decompressor
            .get_or_insert_with(HeaderDecompressor::new)
            .decompress(compressed)?;
        HeaderBlock::decode(&block)
    }

    fn compress(&mut self, headers: &HeaderBlock) -> Result<Vec<u8>, FrameError> {
        let compressor = match &mut self.compressor {
            Some(compressor) => compressor,
            None => self.compressor.insert(HeaderCompressor::new()?),
        };
        compressor.compress(&headers.encode())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let length = u32::from_be_bytes([0, src[5], src[6], src[7]]) as usize;
            if src.len() < HEADER_LEN + length {
                src.reserve(HEADER_LEN + length - src.len());
                return Ok(None);
            }
            let first_word = src.get_u32();
            let flags = src.get_u8();
            src.advance(3);
            let payload = src.split_to(length).freeze();
            let frame = if first_word & 0x8000_0000 == 0 {
                Some(decode_data(first_word, flags, payload)?)
            } else {
                let version = ((first_word >> 16) & 0x7fff) as u16;
                if version != SPDY_VERSION {
                    return Err(FrameError::UnsupportedVersion(version));
                }
                self.decode_control((first_word & 0xffff) as u16, flags, payload)?
            };
            // Unknown control frame types are skipped (section 2.2.1).
            if let Some(frame) = frame {
                return Ok(Some(frame));
            }
        }
    }
}

fn decode_data(first_word: u32, flags: u8, payload: Bytes) -> Result<Frame, FrameError> {
    let stream_id = first_word & 0x7fff_ffff;
    if stream_id == 0 {
        return Err(FrameError::invalid("DATA", "stream id 0"));
    }
    Ok(Frame::Data(Data {
        stream_id,
        fin: flags & FLAG_FIN != 0,
        data: payload,
    }))
}

impl FrameCodec {
    fn decode_control(
        &mut self,
        frame_type: u16,
        flags: u8,
        mut payload: Bytes,
    ) -> Result<Option<Frame>, FrameError> {
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                require_min_len("SYN_STREAM", &payload, 10)?;
                let stream_id = nonzero_stream_id("SYN_STREAM", payload.get_u32())?;
                let associated_to_stream_id = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                let slot = payload.get_u8();
                Frame::SynStream(SynStream {
                    stream_id,
                    associated_to_stream_id,
                    priority,
                    slot,
                    fin: flags & FLAG_FIN != 0,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.decompress(&payload)?,
                })
            }
            TYPE_SYN_REPLY => {
                require_min_len("SYN_REPLY", &payload, 4)?;
                let stream_id = nonzero_stream_id("SYN_REPLY", payload.get_u32())?;
                Frame::SynReply(SynReply {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    headers: self.decompress(&payload)?,
                })
            }
            TYPE_HEADERS => {
                require_min_len("HEADERS", &payload, 4)?;
                let stream_id = nonzero_stream_id("HEADERS", payload.get_u32())?;
                Frame::Headers(Headers {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    headers: self.decompress(&payload)?,
                })
            }
            TYPE_RST_STREAM => {
                require_len("RST_STREAM", &payload, 8)?;
                let stream_id = nonzero_stream_id("RST_STREAM", payload.get_u32())?;
                let status = payload.get_u32();
                if status == 0 {
                    return Err(FrameError::invalid("RST_STREAM", "status 0"));
                }
                Frame::RstStream(RstStream {
                    stream_id,
                    status: RstStatus(status),
                })
            }
            TYPE_SETTINGS => decode_settings(flags, payload)?,
            TYPE_PING => {
                require_len("PING", &payload, 4)?;
                Frame::Ping(Ping {
                    id: payload.get_u32(),
                })
            }
            TYPE_GOAWAY => {
                require_len("GOAWAY", &payload, 8)?;
                Frame::GoAway(GoAway {
                    last_good_stream_id: payload.get_u32() & 0x7fff_ffff,
                    status: GoAwayStatus(payload.get_u32()),
                })
            }
            TYPE_WINDOW_UPDATE => {
                require_len("WINDOW_UPDATE", &payload, 8)?;
                Frame::WindowUpdate(WindowUpdate {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                })
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }
}

fn decode_settings(flags: u8, mut payload: Bytes) -> Result<Frame, FrameError> {
    require_min_len("SETTINGS", &payload, 4)?;
    let count = payload.get_u32() as usize;
    if payload.len() != count.saturating_mul(8) {
        return Err(FrameError::invalid(
            "SETTINGS",
            "length does not match the entry count",
        ));
    }
    let entries = (0..count)
        .map(|_| {
            let flags_and_id = payload.get_u32();
            Setting {
                flags: (flags_and_id >> 24) as u8,
                id: flags_and_id & 0x00ff_ffff,
                value: payload.get_u32(),
            }
        })
        .collect();
    Ok(Frame::Settings(Settings {
        clear_persisted: flags & FLAG_SETTINGS_CLEAR != 0,
        entries,
    }))
}

fn require_len(frame: &'static str, payload: &Bytes, len: usize) -> Result<(), FrameError> {
    if payload.len() != len {
        return Err(FrameError::invalid(frame, "wrong length"));
    }
    Ok(())
}

fn require_min_len(frame: &'static str, payload: &Bytes, len: usize) -> Result<(), FrameError> {
    if payload.len() < len {
        return Err(FrameError::invalid(frame, "too short"));
    }
    Ok(())
}

fn nonzero_stream_id(frame: &'static str, word: u32) -> Result<StreamId, FrameError> {
    match word & 0x7fff_ffff {
        0 => Err(FrameError::invalid(frame, "stream id 0")),
        id => Ok(id),
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data(data) => {
                put_data_header(dst, data.stream_id, data.fin, data.data.len())?;
                dst.extend_from_slice(&data.data);
            }
            Frame::SynStream(syn) => {
                let block = self.compress(&syn.headers)?;
                let mut flags = 0;
                if syn.fin {
                    flags |= FLAG_FIN;
                }
                if syn.unidirectional {
                    flags |= FLAG_UNIDIRECTIONAL;
                }
                put_control_header(dst, TYPE_SYN_STREAM, flags, 10 + block.len())?;
                dst.put_u32(syn.stream_id & 0x7fff_ffff);
                dst.put_u32(syn.associated_to_stream_id & 0x7fff_ffff);
                dst.put_u8((syn.priority & 0x07) << 5);
                dst.put_u8(syn.slot);
                dst.extend_from_slice(&block);
            }
            Frame::SynReply(reply) => {
                let block = self.compress(&reply.headers)?;
                put_control_header(dst, TYPE_SYN_REPLY, fin_flag(reply.fin), 4 + block.len())?;
                dst.put_u32(reply.stream_id & 0x7fff_ffff);
                dst.extend_from_slice(&block);
            }
            Frame::Headers(headers) => {
                let block = self.compress(&headers.headers)?;
                put_control_header(dst, TYPE_HEADERS, fin_flag(headers.fin), 4 + block.len())?;
                dst.put_u32(headers.stream_id & 0x7fff_ffff);
                dst.extend_from_slice(&block);
            }
            Frame::RstStream(rst) => {
                put_control_header(dst, TYPE_RST_STREAM, 0, 8)?;
                dst.put_u32(rst.stream_id & 0x7fff_ffff);
                dst.put_u32(rst.status.0);
            }
            Frame::Settings(settings) => {
                let flags = if settings.clear_persisted {
                    FLAG_SETTINGS_CLEAR
                } else {
                    0
                };
                put_control_header(dst, TYPE_SETTINGS, flags, 4 + 8 * settings.entries.len())?;
                dst.put_u32(settings.entries.len() as u32);
                for entry in settings.entries {
                    dst.put_u32(u32::from(entry.flags) << 24 | (entry.id & 0x00ff_ffff));
                    dst.put_u32(entry.value);
                }
            }
            Frame::Ping(ping) => {
                put_control_header(dst, TYPE_PING, 0, 4)?;
                dst.put_u32(ping.id);
            }
            Frame::GoAway(goaway) => {
                put_control_header(dst, TYPE_GOAWAY, 0, 8)?;
                dst.put_u32(goaway.last_good_stream_id & 0x7fff_ffff);
                dst.put_u32(goaway.status.0);
            }
            Frame::WindowUpdate(update) => {
                put_control_header(dst, TYPE_WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(update.stream_id & 0x7fff_ffff);
                dst.put_u32(update.delta & 0x7fff_ffff);
            }
        }
        Ok(())
    }
}

fn fin_flag(fin: bool) -> u8 {
    if fin { FLAG_FIN } else { 0 }
}

fn put_control_header(
    dst: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    length: usize,
) -> Result<(), FrameError> {
    let length = checked_length(length)?;
    dst.reserve(HEADER_LEN + length as usize);
    dst.put_u16(0x8000 | SPDY_VERSION);
    dst.put_u16(frame_type);
    dst.put_u32(u32::from(flags) << 24 | length);
    Ok(())
}

fn put_data_header(
    dst: &mut BytesMut,
    stream_id: StreamId,
    fin: bool,
    length: usize,
) -> Result<(), FrameError> {
    if stream_id == 0 || stream_id & 0x8000_0000 != 0 {
        return Err(FrameError::invalid("DATA", "stream id out of range"));
    }
    let length = checked_length(length)?;
    dst.reserve(HEADER_LEN + length as usize);
    dst.put_u32(stream_id);
    dst.put_u32(u32::from(fin_flag(fin)) << 24 | length);
    Ok(())
}

fn checked_length(length: usize) -> Result<u32, FrameError> {
    if length > MAX_FRAME_LENGTH {
        return Err(FrameError::TooLarge(length));
    }
    Ok(length as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(codec: &mut FrameCodec, frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        codec.encode(frame, &mut buf).expect("encode");
        buf
    }

    fn decode_all(codec: &mut FrameCodec, bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).expect("decode") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "undecoded bytes left");
        frames
    }

    fn headers() -> HeaderBlock {
        HeaderBlock::new()
            .with("url", "http://www.google.com/")
            .with("method", "get")
            .with("version", "http/1.1")
    }

    fn every_frame_kind() -> Vec<Frame> {
        vec![
            Frame::SynStream(SynStream {
                stream_id: 1,
                associated_to_stream_id: 0,
                priority: 3,
                slot: 1,
                fin: false,
                unidirectional: true,
                headers: headers(),
            }),
            Frame::SynReply(SynReply {
                stream_id: 1,
                fin: true,
                headers: HeaderBlock::new(),
            }),
            Frame::Headers(Headers {
                stream_id: 3,
                fin: false,
                headers: headers(),
            }),
            Frame::RstStream(RstStream {
                stream_id: 1,
                status: RstStatus::INVALID_STREAM,
            }),
            Frame::Settings(Settings {
                clear_persisted: true,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: 5,
                        value: 10,
                    },
                    Setting {
                        flags: 2,
                        id: 1,
                        value: 1,
                    },
                ],
            }),
            Frame::Ping(Ping { id: 31337 }),
            Frame::GoAway(GoAway {
                last_good_stream_id: 31337,
                status: GoAwayStatus::PROTOCOL_ERROR,
            }),
            Frame::WindowUpdate(WindowUpdate {
                stream_id: 0,
                delta: 65536,
            }),
            Frame::Data(Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hello"),
            }),
        ]
    }

    #[test]
    fn every_frame_kind_round_trips() {
        let (mut writer, mut reader) = (FrameCodec::new(), FrameCodec::new());
        let frames = every_frame_kind();
        let mut wire = BytesMut::new();
        for frame in frames.clone() {
            wire.extend_from_slice(&encode(&mut writer, frame));
        }
        assert_eq!(decode_all(&mut reader, &wire), frames);
    }

    #[test]
    fn partial_reads_decode_once_complete() {
        let (mut writer, mut reader) = (FrameCodec::new(), FrameCodec::new());
        let frames = every_frame_kind();
        let mut wire = Vec::new();
        for frame in frames.clone() {
            wire.extend_from_slice(&encode(&mut writer, frame));
        }
        // Feed one byte at a time: every frame appears exactly when its last byte does.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(frame) = reader.decode(&mut buf).expect("decode") {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
    }

    #[test]
    fn compressed_headers_across_frames_share_the_context() {
        let (mut writer, mut reader) = (FrameCodec::new(), FrameCodec::new());
        let mut sizes = Vec::new();
        let mut wire = BytesMut::new();
        let mut frames = Vec::new();
        for stream_id in [1, 3, 5, 7] {
            let frame = Frame::SynStream(SynStream {
                stream_id,
                associated_to_stream_id: 0,
                priority: 0,
                slot: 0,
                fin: false,
                unidirectional: false,
                headers: HeaderBlock::new()
                    .with("streamtype", "data")
                    .with("port", "8080")
                    .with("requestid", &stream_id.to_string()),
            });
            let bytes = encode(&mut writer, frame.clone());
            sizes.push(bytes.len());
            wire.extend_from_slice(&bytes);
            frames.push(frame);
        }
        // Later blocks back-reference earlier ones in the shared zlib window.
        assert!(sizes[1] < sizes[0], "sizes {sizes:?}");
        assert_eq!(decode_all(&mut reader, &wire), frames);
    }

    #[test]
    fn known_bytes_of_uncompressed_frames() {
        let mut codec = FrameCodec::new();
        let cases: Vec<(Frame, &[u8])> =
            vec![
            (
                Frame::Data(Data { stream_id: 1, fin: false, data: Bytes::from_static(b"hello") }),
                b"\x00\x00\x00\x01\x00\x00\x00\x05hello",
            ),
            (
                Frame::Data(Data { stream_id: 3, fin: true, data: Bytes::new() }),
                b"\x00\x00\x00\x03\x01\x00\x00\x00",
            ),
            (
                Frame::RstStream(RstStream { stream_id: 1, status: RstStatus::CANCEL }),
                b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x05",
            ),
            (
                Frame::Ping(Ping { id: 2 }),
                b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x02",
            ),
            (
                Frame::GoAway(GoAway { last_good_stream_id: 7, status: GoAwayStatus::OK }),
                b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00",
            ),
            (
                Frame::WindowUpdate(WindowUpdate { stream_id: 5, delta: 0x8000 }),
                b"\x80\x03\x00\x09\x00\x00\x00\x08\x00\x00\x00\x05\x00\x00\x80\x00",
            ),
            (
                Frame::Settings(Settings {
                    clear_persisted: false,
                    entries: vec![Setting { flags: 0, id: 7, value: 65536 }],
                }),
                b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x01\x00\x00\x00\x07\x00\x01\x00\x00",
            ),
        ];
        for (frame, bytes) in cases {
            assert_eq!(&encode(&mut codec, frame.clone())[..], bytes, "{frame:?}");
            assert_eq!(decode_all(&mut codec, bytes), vec![frame]);
        }
    }

    /// Two SYN_STREAMs whose header blocks were compressed by CPython's `zlib`
    /// module (C zlib, level 9, the SPDY dictionary, `Z_SYNC_FLUSH`): an
    /// implementation independent of the zlib-rs backend this crate uses. The second
    /// block only decodes with the context the first one left.
    #[test]
    fn decodes_syn_streams_compressed_by_c_zlib() {
        let wire = include_bytes!("testdata/syn_streams_cpython_zlib.bin");
        let frames = decode_all(&mut FrameCodec::new(), wire);
        let [Frame::SynStream(first), Frame::SynStream(second)] = frames.as_slice() else {
            panic!("expected two SYN_STREAMs, got {frames:?}");
        };
        assert_eq!(
            (first.stream_id, first.headers.get("streamtype")),
            (1, Some("error"))
        );
        assert_eq!(
            (second.stream_id, second.headers.get("streamtype")),
            (3, Some("stdout"))
        );
    }

    /// The first three frames `kubectl exec` (v1.32, Go spdystream, Go's
    /// compress/flate) sent on an upgraded connection for `kubectl exec pod -- echo hi`,
    /// captured from the wire: the error, stdout and stderr streams, their header
    /// blocks sharing one zlib context.
    #[test]
    fn decodes_syn_streams_written_by_kubectl() {
        let wire = include_bytes!("testdata/syn_streams_kubectl_1_32.bin");
        let frames = decode_all(&mut FrameCodec::new(), wire);
        let streams: Vec<(StreamId, Option<&str>)> = frames
            .iter()
            .map(|frame| match frame {
                Frame::SynStream(syn) => (syn.stream_id, syn.headers.get("streamtype")),
                other => panic!("expected SYN_STREAM, got {other:?}"),
            })
            .collect();
        assert_eq!(
            streams,
            [(1, Some("error")), (3, Some("stdout")), (5, Some("stderr"))]
        );
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut bytes = b"\x80\x03\x00\x0a\x00\x00\x00\x02\xab\xcd".to_vec();
        bytes.extend_from_slice(b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01");
        assert_eq!(
            decode_all(&mut FrameCodec::new(), &bytes),
            vec![Frame::Ping(Ping { id: 1 })]
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad: &[&[u8]] = &[
            // version 2
            b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01",
            // data on stream 0
            b"\x00\x00\x00\x00\x00\x00\x00\x00",
            // ping with a 3-byte payload
            b"\x80\x03\x00\x06\x00\x00\x00\x03\x00\x00\x01",
            // rst with status 0
            b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00",
            // settings claiming two entries but carrying one
            b"\x80\x03\x00\x04\x00\x00\x00\x0c\x00\x00\x00\x02\x00\x00\x00\x07\x00\x01\x00\x00",
            // syn_stream too short
            b"\x80\x03\x00\x01\x00\x00\x00\x04\x00\x00\x00\x01",
            // syn_stream whose header block is not zlib
            b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00junk",
        ];
        for bytes in bad {
            let mut buf = BytesMut::from(*bytes);
            assert!(FrameCodec::new().decode(&mut buf).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn oversized_data_is_refused_on_encode() {
        let frame = Frame::Data(Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0; MAX_FRAME_LENGTH + 1]),
        });
        let mut buf = BytesMut::new();
        assert!(matches!(
            FrameCodec::new().encode(frame, &mut buf),
            Err(FrameError::TooLarge(_))
        ));
    }
}
