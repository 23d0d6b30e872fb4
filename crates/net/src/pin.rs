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
    #[error("sysctl {key}: {reason}")]
    InvalidSysctl { key: String, reason: String },
    #[error("write sysctl {key}={value}: {source}")]
    WriteSysctl {
        key: String,
        value: String,
        source: io::Error,
    },
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

/// What to set up inside the new namespaces before they are pinned.
#[derive(Clone, Debug, Default)]
pub struct PinSetup {
    /// Set in the new UTS namespace.
    pub hostname: Option<String>,
    /// Namespaced sysctls (net.*, IPC ones), written from inside the new namespaces
    /// only; see [`validate_sysctl`].
    pub sysctls: Vec<(String, String)>,
}

/// Creates new namespaces of `kinds` and pins them under `dir` (one file per kind),
/// after applying `setup` inside them. On error nothing stays pinned.
pub fn pin_namespaces(
    dir: &Path,
    kinds: &[NamespaceKind],
    setup: &PinSetup,
) -> Result<PinnedNamespaces, PinError> {
    for (key, value) in &setup.sysctls {
        validate_sysctl(key, value, kinds)?;
    }
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
    let setup = setup.clone();
    let result = std::thread::Builder::new()
        .name("coracle-pinns".into())
        .spawn(move || pin_on_this_thread(&thread_pinned, &setup))
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
fn pin_on_this_thread(pinned: &PinnedNamespaces, setup: &PinSetup) -> Result<(), PinError> {
    let flags = pinned
        .kinds
        .iter()
        .fold(CloneFlags::empty(), |flags, kind| flags | kind.clone_flag());
    unshare(flags).map_err(|source| PinError::Unshare { flags, source })?;
    let hostname = setup.hostname.as_deref();
    if let Some(hostname) = hostname.filter(|_| pinned.kinds.contains(&NamespaceKind::Uts)) {
        nix::unistd::sethostname(hostname).map_err(|source| PinError::Hostname {
            hostname: hostname.to_owned(),
            source,
        })?;
    }
    // /proc/sys/net and the IPC sysctls resolve against the opening task's own
    // namespaces, and this thread is now in the pod's.
    for (key, value) in &setup.sysctls {
        write_sysctl(key, value)?;
    }
    for &kind in &pinned.kinds {
        bind_namespace(kind, &pinned.dir.join(kind.name()))?;
    }
    Ok(())
}

/// IPC sysctls the kernel keeps per IPC namespace (as runc's validation lists them).
const IPC_SYSCTLS: [&str; 6] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
];

/// Accepts only sysctls that live in a namespace the pod gets a new copy of: a
/// node-wide sysctl set for one pod would change the whole node. The value may not
/// carry a newline or NUL, which could smuggle a second setting (CVE-2022-0811).
pub fn validate_sysctl(key: &str, value: &str, kinds: &[NamespaceKind]) -> Result<(), PinError> {
    let invalid = |reason: &str| PinError::InvalidSysctl {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let key = normalize_sysctl_key(key);
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        || key.split('.').any(str::is_empty)
    {
        return Err(invalid("not a sysctl name"));
    }
    if value.contains(['\n', '\0']) {
        return Err(invalid("value contains a newline or NUL"));
    }
    let namespace = if key.starts_with("net.") {
        NamespaceKind::Net
    } else if IPC_SYSCTLS.contains(&key.as_str())
        || key.starts_with("kernel.shm_rmid_forced")
        || key.starts_with("fs.mqueue.")
    {
        NamespaceKind::Ipc
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        NamespaceKind::Uts
    } else {
        return Err(invalid(
            "not a namespaced sysctl: setting it would change the whole node",
        ));
    };
    if !kinds.contains(&namespace) {
        return Err(invalid(&format!(
            "needs a pod {} namespace, but the pod shares the node's",
            namespace.name()
        )));
    }
    Ok(())
}

/// Kubernetes allows `/` as the separator (`net/ipv4/ip_forward`).
fn normalize_sysctl_key(key: &str) -> String {
    key.replace('/', ".")
}

fn write_sysctl(key: &str, value: &str) -> Result<(), PinError> {
    let path = format!("/proc/sys/{}", normalize_sysctl_key(key).replace('.', "/"));
    fs::write(&path, value).map_err(|source| PinError::WriteSysctl {
        key: key.to_owned(),
        value: value.to_owned(),
        source,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_sysctls_are_accepted() {
        let all = NamespaceKind::ALL;
        validate_sysctl("net.ipv4.ip_forward", "1", &all).unwrap();
        validate_sysctl("net/ipv4/ping_group_range", "0 2147483647", &all).unwrap();
        validate_sysctl("kernel.shmmax", "1000000", &all).unwrap();
        validate_sysctl("fs.mqueue.msg_max", "20", &all).unwrap();
    }

    #[test]
    fn node_wide_sysctl_is_refused() {
        let err = validate_sysctl("kernel.panic", "1", &NamespaceKind::ALL).unwrap_err();
        assert!(err.to_string().contains("whole node"), "{err}");
        assert!(validate_sysctl("vm.swappiness", "1", &NamespaceKind::ALL).is_err());
    }

    #[test]
    fn cve_2022_0811_value_cannot_smuggle_a_second_sysctl() {
        let err = validate_sysctl(
            "kernel.shm_rmid_forced",
            "1+kernel.core_pattern=|/evil",
            &NamespaceKind::ALL,
        );
        // '+' is harmless on its own (the kernel parses one value); a newline is not.
        assert!(err.is_ok());
        let err = validate_sysctl(
            "net.ipv4.ip_forward",
            "1\nkernel.core_pattern=|/evil",
            &NamespaceKind::ALL,
        )
        .unwrap_err();
        assert!(err.to_string().contains("newline"), "{err}");
    }

    #[test]
    fn path_tricks_in_the_key_are_refused() {
        for key in [
            "net.ipv4/../../kernel/panic",
            "net..x",
            "",
            "net.ipv4.ip_forward\n",
        ] {
            assert!(
                validate_sysctl(key, "1", &NamespaceKind::ALL).is_err(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn net_sysctl_needs_a_pod_network_namespace() {
        let err = validate_sysctl("net.ipv4.ip_forward", "1", &[NamespaceKind::Ipc]).unwrap_err();
        assert!(err.to_string().contains("net namespace"), "{err}");
    }
}
