//! The exit record, written once before the monitor exits: temp file, fsync, rename,
//! fsync of the directory, so the daemon (now or after a crash and restart) reads
//! either no record or a whole one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use coracle_monitor::protocol::{EXIT_FILE, ExitRecord};

use crate::error::{MonitorError, io_err};

pub fn write(dir: &Path, record: &ExitRecord) -> Result<(), MonitorError> {
    let tmp = dir.join(".exit.json.tmp");
    let path = dir.join(EXIT_FILE);
    let mut bytes = serde_json::to_vec(record)
        .map_err(|e| io_err("serialize exit record", &path)(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.write_all(&bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io_err("rename to", &path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = ExitRecord {
            exit_code: 137,
            signal: Some(9),
            finished_at: 1_700_000_000_123_456_789,
            oom_killed: true,
        };
        write(dir.path(), &rec).expect("write");
        let back: ExitRecord =
            serde_json::from_slice(&std::fs::read(dir.path().join(EXIT_FILE)).expect("read"))
                .expect("parse");
        assert_eq!(back, rec);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [EXIT_FILE]);
    }
}
