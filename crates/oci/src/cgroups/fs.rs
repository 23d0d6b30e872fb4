//! Direct cgroupfs file access, for what cgroups-rs does not do or does in a way we cannot
//! use (its `Controller::create` panics on a bad path and swallows mkdir errors, its
//! errors lose the errno we need for EBUSY/ENOENT decisions, and its attribute writer is
//! crate-private).
//!
//! std opens every file with O_CLOEXEC.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::CgroupError;

/// Reads a whole cgroupfs (or procfs) file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a one-value file, trimmed.
pub(crate) fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    Ok(read(path)?.trim().to_string())
}

/// Reads a one-number file.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read_trimmed(path)?)
}

/// `text` (read from `path`) as a number; an error naming the file otherwise.
pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.parse().map_err(|_| CgroupError::Read {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}

/// The `key value` lines of a flat-keyed cgroup file (`memory.stat`, `cpu.stat`,
/// `memory.events`, ...); lines that are not are skipped.
pub(crate) fn flat_keyed(text: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Writes `value` to a cgroupfs file in a single write(2), as the kernel parses each write
/// on its own. The file must exist: cgroupfs files cannot be created, so no O_CREAT.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Like [`write`], keeping the raw `io::Error` for callers that branch on the errno.
pub(crate) fn write_raw(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// The errno behind a cgroups-rs error, when it kept one.
pub(crate) fn cgroups_rs_errno(e: &cgroups_rs::fs::error::Error) -> Option<i32> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(std::io::Error::raw_os_error)
}

/// Wraps a cgroups-rs result with the file and value it was writing.
pub(crate) fn via_cgroups_rs<T>(
    dir: &Path,
    file: &str,
    value: impl ToString,
    r: cgroups_rs::fs::error::Result<T>,
) -> Result<T, CgroupError> {
    r.map_err(|source| CgroupError::Controller {
        path: dir.join(file),
        value: value.to_string(),
        source,
    })
}

/// Creates `dir` and its missing parents; returns the directories this call created,
/// outermost first, so a failed create can remove exactly those. On error it removes
/// what it made itself.
pub(crate) fn mkdir_all(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        match std::fs::create_dir(&d) {
            Ok(()) => created.push(d),
            // Someone else (another container of the same pod) made it meanwhile.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => {
                for made in created.iter().rev() {
                    let _ = std::fs::remove_dir(made);
                }
                return Err(CgroupError::CreateDir { path: d, source });
            }
        }
    }
    Ok(created)
}

/// Every pid in `cgroup.procs` of `dir` and of all cgroups below it. A missing `dir` has
/// none.
pub(crate) fn procs_recursive(dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    let procs = dir.join("cgroup.procs");
    match std::fs::read_to_string(&procs) {
        Ok(text) => out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: procs,
                source,
            });
        }
    }
    for sub in sub_cgroups(dir)? {
        procs_recursive(&sub, out)?;
    }
    Ok(())
}

/// The child cgroups (directories) of `dir`; none if `dir` is gone.
fn sub_cgroups(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut subs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            subs.push(entry.path());
        }
    }
    Ok(subs)
}

/// Removes `dir` and the cgroups the container made below it, deepest first. A cgroup
/// directory is removed with rmdir(2) even though it holds files: they are not real.
/// ENOENT counts as done. Returns the raw error of the first rmdir that failed.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    let subs = match sub_cgroups(dir) {
        Ok(s) => s,
        Err(CgroupError::Read { path, source }) => return Err((path, source)),
        Err(_) => Vec::new(),
    };
    for sub in subs {
        remove_tree(&sub)?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err((dir.to_path_buf(), e)),
    }
}

/// Polls `check` with growing sleeps (1 ms up to 50 ms) until it says done or `timeout`
/// passes; returns the last answer. cgroupfs offers no wakeup for "tasks left" in v1, so
/// this is the one poll loop of the module, and it is bounded.
pub(crate) fn poll_until<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>, CgroupError>,
) -> Result<Option<T>, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(done) = check()? {
            return Ok(Some(done));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
