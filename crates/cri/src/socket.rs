//! The daemon's unix socket: created safely, never stolen from a live daemon.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coracle_runtime::{LockFile, LockFileError};
use tokio::net::UnixListener;

/// kubelet runs as root; group members may be granted access, nobody else.
pub const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("socket path {0} has no parent directory")]
    NoParent(PathBuf),
    #[error("create socket directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "socket directory {0} is world-writable: anyone could replace the socket; use a directory only root can write"
    )]
    WorldWritableDir(PathBuf),
    #[error("socket {path} is already served by another coracled: {source}")]
    Locked {
        path: PathBuf,
        source: LockFileError,
    },
    #[error("socket {0} is served by a live process; refusing to take it over")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("inspect {path}: {source}")]
    Inspect { path: PathBuf, source: io::Error },
    #[error("remove stale socket {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("bind {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("set mode of {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
}

/// A bound listening socket. The lock beside it is held while this value lives, and
/// the socket file is removed when it is dropped after a clean shutdown.
pub struct ListenSocket {
    pub(crate) listener: Option<UnixListener>,
    path: PathBuf,
    _lock: LockFile,
}

impl ListenSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds `path`. A socket file left by a crashed daemon is replaced; a socket that a
/// live process answers on is never taken over.
pub fn bind(path: &Path) -> Result<ListenSocket, SocketError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| SocketError::NoParent(path.to_owned()))?;
    ensure_safe_parent(parent)?;
    // The lock serializes daemons starting at once; the connect probe below also
    // catches a live server that is not coracled (or an older one without the lock).
    let lock = LockFile::acquire(&lock_path_for(path)).map_err(|source| SocketError::Locked {
        path: path.to_owned(),
        source,
    })?;
    remove_if_stale(path)?;
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_owned(),
        source,
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(|source| {
        SocketError::Chmod {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(ListenSocket {
        listener: Some(listener),
        path: path.to_owned(),
        _lock: lock,
    })
}

fn lock_path_for(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn ensure_safe_parent(parent: &Path) -> Result<(), SocketError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(parent)
        .map_err(|source| SocketError::CreateDir {
            path: parent.to_owned(),
            source,
        })?;
    let metadata = fs::metadata(parent).map_err(|source| SocketError::Inspect {
        path: parent.to_owned(),
        source,
    })?;
    if metadata.mode() & 0o002 != 0 {
        return Err(SocketError::WorldWritableDir(parent.to_owned()));
    }
    Ok(())
}

fn remove_if_stale(path: &Path) -> Result<(), SocketError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Inspect {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(SocketError::InUse(path.to_owned())),
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing stale socket left by a previous daemon");
            fs::remove_file(path).map_err(|source| SocketError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(SocketError::Inspect {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_created_with_mode_0660() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/c.sock");
        let socket = bind(&path).unwrap();
        let mode = fs::metadata(socket.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let parent_mode = fs::metadata(dir.path().join("run")).unwrap().mode() & 0o777;
        assert_eq!(parent_mode & 0o002, 0);
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        // A bound-then-dropped listener leaves the socket file with nobody behind it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = bind(&path).unwrap();
        assert!(socket.path().exists());
    }

    #[tokio::test]
    async fn live_socket_of_another_server_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = bind(&path).err().unwrap();
        assert!(matches!(err, SocketError::InUse(_)), "{err}");
        assert!(path.exists(), "the live socket was removed");
    }

    #[tokio::test]
    async fn second_bind_of_the_same_path_is_refused_by_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let _first = bind(&path).unwrap();
        let err = bind(&path).err().unwrap();
        assert!(matches!(err, SocketError::Locked { .. }), "{err}");
    }

    #[tokio::test]
    async fn regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        fs::write(&path, "precious").unwrap();
        let err = bind(&path).err().unwrap();
        assert!(matches!(err, SocketError::NotASocket(_)), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
    }

    #[tokio::test]
    async fn world_writable_parent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open_dir = dir.path().join("open");
        fs::create_dir(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = bind(&open_dir.join("c.sock")).err().unwrap();
        assert!(matches!(err, SocketError::WorldWritableDir(_)), "{err}");
    }
}
