//! The SPDY/3 header compression dictionary ([SPDY/3 draft, section 2.6.10.1][spec]),
//! byte for byte as moby/spdystream and Chromium (`kV3Dictionary`) use it: 1423
//! bytes, Adler-32 `0xe3c6a7c2`. Both zlib contexts of a connection start from it.
//!
//! [spec]: https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3/

/// Adler-32 of [`SPDY3_DICTIONARY`]: the DICTID a compressed header block announces.
pub const SPDY3_DICTIONARY_ID: u32 = 0xe3c6_a7c2;

pub const SPDY3_DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\
\x03put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\
\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0facc\
ept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05\
allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\
\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\
\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\
\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\
\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\
\x00\x06expect\x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04hos\
t\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif\
-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-since\x00\
\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forward\
s\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13pro\
xy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0b\
retry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\
\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser\
-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\
\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\
\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08H\
TTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\
\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin1001012012022052063003023033\
04305306307402405406407408409410411412413414415416417502504505203 Non-Author\
itative Information204 No Content301 Moved Permanently400 Bad Request401 Una\
uthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemen\
ted503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 0\
0:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,im\
age/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/java\
script,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1\
,utf-,*,enq=0.";

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in bytes {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        b << 16 | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert_eq!(adler32(SPDY3_DICTIONARY), SPDY3_DICTIONARY_ID);
        assert!(SPDY3_DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(SPDY3_DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
        let needle: &[u8] = b"203 Non-Authoritative Information204 No Content";
        assert!(SPDY3_DICTIONARY.windows(needle.len()).any(|w| w == needle));
    }
}
