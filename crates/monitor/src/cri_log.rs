//! The CRI container log, byte for byte what kubelet reads (containerd's
//! `internal/cri/io/logger.go` writes the same):
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F hello
//! ```
//!
//! One record per line of output: timestamp, stream, tag, content. A line longer than
//! [`MAX_LINE`] is cut into `P` (partial) records, the last piece `F`; a `\r` before the
//! newline is dropped (terminal output); output that ends without a newline is written
//! as `F` when the stream ends. Lines are buffered until complete, as containerd does.
//!
//! A write error (disk full) never stops the monitor or the container: the record is
//! dropped and the error reported once in the monitor's own log.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::timestamp;

/// Longest content of one record (kubelet's and containerd's 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Flush the batch of formatted records once it grows past this.
const FLUSH_AT: usize = 32 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

impl StreamKind {
    fn name(self) -> &'static [u8] {
        match self {
            StreamKind::Stdout => b"stdout",
            StreamKind::Stderr => b"stderr",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Partial,
    Full,
}

/// Cuts one stream's output into record contents. Holds the unfinished line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feed output; `emit(tag, head, tail)` gets each record's content as two pieces
    /// (the buffered start of the line and the rest), so nothing is copied twice.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(Tag, &[u8], &[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            // Up to MAX_LINE bytes wait in `pending`: a newline right after them still
            // ends the line as one F record.
            let window = &data[..data.len().min(room + 1)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                let (mut head, mut tail) = (self.pending.as_slice(), &data[..i]);
                if let Some(t) = tail.strip_suffix(b"\r") {
                    tail = t;
                } else if tail.is_empty() {
                    head = head.strip_suffix(b"\r").unwrap_or(head);
                }
                emit(Tag::Full, head, tail);
                self.pending.clear();
                data = &data[i + 1..];
            } else if data.len() > room {
                emit(Tag::Partial, &self.pending, &data[..room]);
                self.pending.clear();
                data = &data[room..];
            } else {
                self.pending.extend_from_slice(data);
                data = &[];
            }
        }
    }

    /// The stream ended: what is left is a last, full record.
    pub fn finish(&mut self, emit: &mut impl FnMut(Tag, &[u8], &[u8])) {
        if !self.pending.is_empty() {
            emit(Tag::Full, &self.pending, &[]);
            self.pending.clear();
        }
        self.pending.shrink_to_fit();
    }
}

/// Append one formatted record to `out`.
fn push_record(
    out: &mut Vec<u8>,
    ts: &[u8; timestamp::LEN],
    kind: StreamKind,
    tag: Tag,
    head: &[u8],
    tail: &[u8],
) {
    out.extend_from_slice(ts);
    out.push(b' ');
    out.extend_from_slice(kind.name());
    out.extend_from_slice(match tag {
        Tag::Partial => b" P ",
        Tag::Full => b" F ",
    });
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
    out.push(b'\n');
}

/// Open (create) a log file as kubelet expects it: append-only, 0640, parent dirs
/// made if missing.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Where the records go.
struct Sink {
    path: PathBuf,
    file: File,
    /// A write failed and nothing has succeeded since: do not report again.
    failing: bool,
}

impl Sink {
    fn write_batch(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            return;
        }
        match self.file.write_all(out) {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    crate::report(format_args!(
                        "log {}: writes succeed again",
                        self.path.display()
                    ));
                }
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    crate::report(format_args!(
                        "log {}: {e}; dropping output until writes succeed",
                        self.path.display()
                    ));
                }
            }
        }
        out.clear();
    }
}

/// The container's CRI log: `None` drops the output (no log path configured).
pub struct CriLog {
    sink: Option<Sink>,
    out: Vec<u8>,
}

impl CriLog {
    pub fn open(path: Option<&Path>) -> std::io::Result<CriLog> {
        let sink = match path {
            None => None,
            Some(p) => Some(Sink {
                path: p.to_path_buf(),
                file: open_log(p)?,
                failing: false,
            }),
        };
        Ok(CriLog {
            sink,
            out: Vec::new(),
        })
    }

    /// kubelet renamed the file away: open a new one at the same path. On failure the
    /// old file stays in use (kubelet renames it back when the reopen fails).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        let Some(sink) = &mut self.sink else {
            return Ok(());
        };
        sink.file = open_log(&sink.path)?;
        sink.failing = false;
        Ok(())
    }

    /// Log output of stream `kind`.
    pub fn write(&mut self, kind: StreamKind, lines: &mut LineSplitter, data: &[u8]) {
        let Some(sink) = &mut self.sink else { return };
        let out = &mut self.out;
        let ts = timestamp::now();
        lines.feed(data, &mut |tag, head, tail| {
            push_record(out, &ts, kind, tag, head, tail);
            if out.len() >= FLUSH_AT {
                sink.write_batch(out);
            }
        });
        sink.write_batch(out);
        release_if_large(out);
    }

    /// Stream `kind` ended: write its unfinished line.
    pub fn finish(&mut self, kind: StreamKind, lines: &mut LineSplitter) {
        let Some(sink) = &mut self.sink else {
            lines.finish(&mut |_, _, _| {});
            return;
        };
        let out = &mut self.out;
        let ts = timestamp::now();
        lines.finish(&mut |tag, head, tail| push_record(out, &ts, kind, tag, head, tail));
        sink.write_batch(out);
        release_if_large(out);
    }
}

/// A burst of output should not pin its batch buffer for the container's lifetime.
fn release_if_large(out: &mut Vec<u8>) {
    if out.capacity() > FLUSH_AT + MAX_LINE {
        *out = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(Tag, Vec<u8>)> {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        let mut emit = |t: Tag, a: &[u8], b: &[u8]| got.push((t, [a, b].concat()));
        for c in chunks {
            s.feed(c, &mut emit);
        }
        s.finish(&mut emit);
        got
    }

    #[test]
    fn lines_become_full_records_across_chunks() {
        let got = split(&[b"hel", b"lo\nwor", b"ld\n\n"]);
        assert_eq!(
            got,
            vec![
                (Tag::Full, b"hello".to_vec()),
                (Tag::Full, b"world".to_vec()),
                (Tag::Full, b"".to_vec()),
            ]
        );
    }

    #[test]
    fn output_without_newline_at_the_end_is_full() {
        assert_eq!(
            split(&[b"a\nno newline"])[1],
            (Tag::Full, b"no newline".to_vec())
        );
    }

    #[test]
    fn long_line_is_cut_into_partials_then_full() {
        let line = vec![b'x'; 40 * 1024];
        let got = split(&[&line[..1000], &line[1000..]]);
        let tags: Vec<Tag> = got.iter().map(|g| g.0).collect();
        assert_eq!(tags, [Tag::Partial, Tag::Partial, Tag::Full]);
        assert_eq!(got[0].1.len(), MAX_LINE);
        assert_eq!(got[1].1.len(), MAX_LINE);
        assert_eq!(got.concat_content(), line);
    }

    #[test]
    fn line_of_exactly_max_len_is_one_full_record() {
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        let got = split(&[&data]);
        assert_eq!(got, vec![(Tag::Full, vec![b'y'; MAX_LINE])]);
        let mut over = vec![b'y'; MAX_LINE + 1];
        over.push(b'\n');
        let got = split(&[&over]);
        assert_eq!(
            got,
            vec![
                (Tag::Partial, vec![b'y'; MAX_LINE]),
                (Tag::Full, b"y".to_vec())
            ]
        );
    }

    #[test]
    fn carriage_return_before_newline_is_dropped() {
        let got = split(&[b"hello\r\n", b"split\r", b"\n", b"mid\rdle\n"]);
        let contents: Vec<&[u8]> = got.iter().map(|g| g.1.as_slice()).collect();
        assert_eq!(contents, [&b"hello"[..], b"split", b"mid\rdle"]);
    }

    #[test]
    fn record_layout_is_kubelets() {
        let mut out = Vec::new();
        let ts = timestamp::format(1_475_713_029, 669_794_202);
        push_record(&mut out, &ts, StreamKind::Stdout, Tag::Full, b"hel", b"lo");
        push_record(&mut out, &ts, StreamKind::Stderr, Tag::Partial, b"", b"x");
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "2016-10-06T00:17:09.669794202Z stdout F hello\n\
             2016-10-06T00:17:09.669794202Z stderr P x\n"
        );
    }

    #[test]
    fn log_file_gets_records_and_reopen_follows_a_rename() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/dir/0.log");
        let mut log = CriLog::open(Some(&path)).expect("open");
        let mut lines = LineSplitter::default();
        log.write(StreamKind::Stdout, &mut lines, b"one\ntw");
        std::fs::rename(&path, dir.path().join("rotated")).expect("rename");
        log.reopen().expect("reopen");
        log.write(StreamKind::Stdout, &mut lines, b"o\n");
        let old = std::fs::read_to_string(dir.path().join("rotated")).expect("old");
        let new = std::fs::read_to_string(&path).expect("new");
        assert!(old.ends_with(" stdout F one\n"), "{old}");
        assert!(new.ends_with(" stdout F two\n"), "{new}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640 & !umask());
    }

    fn umask() -> u32 {
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        nix::sys::stat::umask(old);
        old.bits()
    }

    trait Concat {
        fn concat_content(&self) -> Vec<u8>;
    }

    impl Concat for Vec<(Tag, Vec<u8>)> {
        fn concat_content(&self) -> Vec<u8> {
            self.iter().flat_map(|g| g.1.iter().copied()).collect()
        }
    }
}
