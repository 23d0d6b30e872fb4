//! Crash-safe file operations: every write is temp file, fsync, rename, fsync dir.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of every temporary name, so `open` can sweep what a crash left.
pub const TEMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other writer in this or another process will pick.
pub fn unique_name(hint: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{TEMP_PREFIX}{hint}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_of(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(unique_name(&name));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        fsync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Renames `from` to `to` (both in the same filesystem) and fsyncs `to`'s parent.
/// `Ok(false)` when `to` already exists: someone else committed the same content.
pub fn rename_into_place(from: &Path, to: &Path) -> io::Result<bool> {
    match fs::rename(from, to) {
        Ok(()) => {
            fsync_dir(&parent_of(to)?)?;
            Ok(true)
        }
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY)
            ) || (to.is_dir() && err.kind() == io::ErrorKind::AlreadyExists) =>
        {
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn remove_file_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(&parent_of(path)?),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Removes a directory tree; missing is fine.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Removes every leftover temp file or dir directly under `dir`.
pub fn sweep_temps(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                remove_tree(&path)?;
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

fn parent_of(path: &Path) -> io::Result<PathBuf> {
    path.parent()
        .map(Path::to_owned)
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))
}
