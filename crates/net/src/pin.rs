//! Pinning a pod's namespaces with bind mounts, as CRI-O's `pinns` does: no pause
//! container, so a pod's namespaces cost no process and start in milliseconds.
//!
//! net, ipc and uts namespaces are per-thread, so a fresh, short-lived thread
//! unshares them, sets the hostname, bind-mounts `/proc/thread-self/ns/<kind>` onto
//! a file per namespace, and exits. The mounts keep the namespaces alive until
//! [`unpin_namespaces`] detaches them. The daemon itself never forks for this.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    Net,
    Ipc,
    Uts,
}

impl NamespaceKind {
    pub const ALL: [NamespaceKind; 3] = [Self::Net, Self::Ipc, Self::Uts];

    /// The name under /proc/<pid>/ns/ and of the pin file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Net => "net",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
        }
    }

    fn clone_flag(self) -> CloneFlags {
        match self {
            Self::Net => CloneFlags::CLONE_NEWNET,
            Self::Ipc => CloneFlags::CLONE_NEWIPC,
            Self::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("create pin directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("pin directory {0} already holds pinned namespaces")]
    AlreadyPinned(PathBuf),
    #[error("unshare {flags:?}: {source}")]
    Unshare {
        flags: CloneFlags,
        source: nix::Error,
    },
    #[error("set hostname {hostname:?}: {source}")]
    Hostname {
        hostname: String,
        source: nix::Error,
    },
    #[error("create pin file {path}: {source}")]
    CreateFile { path: PathBuf, source: io::Error },
    #[error("bind {kind} namespace onto {path}: {source}")]
    Bind {
        kind: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("the pinning thread panicked")]
    ThreadPanicked,
}

/// Paths of a pod's pinned namespaces; pass them to setns or to an OCI spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedNamespaces {
    pub dir: PathBuf,
    pub kinds: Vec<NamespaceKind>,
}

impl PinnedNamespaces {
    pub fn path(&self, kind: NamespaceKind) -> Option<PathBuf> {
        self.kinds
            .contains(&kind)
            .then(|| self.dir.join(kind.name()))
    }
}

/// Creates new namespaces of `kinds` and pins them under `dir` (one file per kind).
/// `hostname` is set in the new UTS namespace. On error nothing stays pinned.
pub fn pin_namespaces(
    dir: &Path,
    kinds: &[NamespaceKind],
    hostname: Option<&str>,
) -> Result<PinnedNamespaces, PinError> {
    fs::create_dir_all(dir).map_err(|source| PinError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    if kinds.iter().any(|kind| dir.join(kind.name()).exists()) {
        return Err(PinError::AlreadyPinned(dir.to_owned()));
    }
    let pinned = PinnedNamespaces {
        dir: dir.to_owned(),
        kinds: kinds.to_vec(),
    };
    let thread_pinned = pinned.clone();
    let hostname = hostname.map(str::to_owned);
    let result = std::thread::Builder::new()
        .name("coracle-pinns".into())
        .spawn(move || pin_on_this_thread(&thread_pinned, hostname.as_deref()))
        .map_err(|source| PinError::CreateDir {
            path: dir.to_owned(),
            source,
        })?
        .join()
        .unwrap_or(Err(PinError::ThreadPanicked));
    if let Err(err) = result {
        if let Err(cleanup) = unpin_namespaces(dir) {
            tracing::warn!(dir = %dir.display(), %cleanup, "cleanup after a failed pin");
        }
        return Err(err);
    }
    Ok(pinned)
}

/// Runs on a thread that exits right after: its namespaces are not reused by anyone.
fn pin_on_this_thread(pinned: &PinnedNamespaces, hostname: Option<&str>) -> Result<(), PinError> {
    let flags = pinned
        .kinds
        .iter()
        .fold(CloneFlags::empty(), |flags, kind| flags | kind.clone_flag());
    unshare(flags).map_err(|source| PinError::Unshare { flags, source })?;
    if let Some(hostname) = hostname.filter(|_| pinned.kinds.contains(&NamespaceKind::Uts)) {
        nix::unistd::sethostname(hostname).map_err(|source| PinError::Hostname {
            hostname: hostname.to_owned(),
            source,
        })?;
    }
    for &kind in &pinned.kinds {
        bind_namespace(kind, &pinned.dir.join(kind.name()))?;
    }
    Ok(())
}

fn bind_namespace(kind: NamespaceKind, target: &Path) -> Result<(), PinError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(target)
        .map_err(|source| PinError::CreateFile {
            path: target.to_owned(),
            source,
        })?;
    let source_path = format!("/proc/thread-self/ns/{}", kind.name());
    mount(
        Some(source_path.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| PinError::Bind {
        kind: kind.name(),
        path: target.to_owned(),
        source,
    })
}

/// Releases every namespace pinned under `dir` and removes the directory. Idempotent:
/// a missing directory, file or mount is not an error (a repeated StopPodSandbox or a
/// cleanup after a crash must converge).
pub fn unpin_namespaces(dir: &Path) -> Result<(), PinError> {
    for kind in NamespaceKind::ALL {
        let path = dir.join(kind.name());
        if !path.exists() {
            continue;
        }
        // MNT_DETACH: a process still inside the namespace keeps it alive, not the mount.
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(source) => return Err(PinError::Unmount { path, source }),
        }
        remove_if_present(&path, |p| fs::remove_file(p))?;
    }
    remove_if_present(dir, |p| fs::remove_dir(p))
}

fn remove_if_present(path: &Path, remove: fn(&Path) -> io::Result<()>) -> Result<(), PinError> {
    match remove(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PinError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}
