//! Exclusive lock files: one daemon per root directory (two daemons writing the same
//! records would corrupt each other's view) and one daemon per socket path.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockFileError {
    #[error("open lock file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is held by another coracled (pid {holder})")]
    Held { path: PathBuf, holder: String },
    #[error("lock {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },
    #[error("write pid to {path}: {source}")]
    WritePid { path: PathBuf, source: io::Error },
}

/// An exclusive `flock` on a file, held as long as this value lives.
/// The kernel drops it when the process dies, so a crash never leaves it stale.
#[derive(Debug)]
pub struct LockFile {
    _lock: Flock<File>,
}

impl LockFile {
    /// Takes the lock, or fails at once with the pid of the process holding it.
    pub fn acquire(path: &Path) -> Result<Self, LockFileError> {
        if let Some(parent) = path.parent() {
            crate::store::create_private_dir(parent).map_err(|err| LockFileError::Open {
                path: path.to_owned(),
                source: io::Error::other(err.to_string()),
            })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| LockFileError::Open {
                path: path.to_owned(),
                source,
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(LockFileError::Held {
                    path: path.to_owned(),
                    holder: read_holder_pid(&mut file),
                });
            }
            Err((_, source)) => {
                return Err(LockFileError::Lock {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        write_own_pid(&mut lock).map_err(|source| LockFileError::WritePid {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { _lock: lock })
    }
}

fn read_holder_pid(file: &mut File) -> String {
    let mut pid = String::new();
    match file.read_to_string(&mut pid) {
        Ok(_) if !pid.trim().is_empty() => pid.trim().to_owned(),
        _ => "unknown".to_owned(),
    }
}

fn write_own_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_of_the_same_file_is_refused_with_the_holder_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _first = LockFile::acquire(&dir.path().join("x.lock")).unwrap();
        // flock locks belong to the open file description, so a second open in the
        // same process conflicts just as another process would.
        let err = LockFile::acquire(&dir.path().join("x.lock")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, LockFileError::Held { .. }), "{message}");
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
    }

    #[test]
    fn lock_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        drop(LockFile::acquire(&dir.path().join("x.lock")).unwrap());
        LockFile::acquire(&dir.path().join("x.lock")).unwrap();
    }
}
