//! Which namespaces the container process joins (by path) and which it creates, in the
//! order that works: the user namespace first (joining it gives us the capabilities
//! over the namespaces it owns), the mount namespace last (so the other paths are
//! still opened and joined from the runtime's view).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns, unshare};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("open namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setns {kind} ({path}): {source}")]
    Setns {
        kind: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("unshare {flags:?}: {source}")]
    Unshare {
        flags: CloneFlags,
        source: nix::Error,
    },
    #[error("write {path}: {source}")]
    IdMap {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("namespace {0} listed twice")]
    Duplicate(&'static str),
}

/// Join order (see module doc).
const ORDER: [(CloneFlags, &str); 8] = [
    (CloneFlags::CLONE_NEWUSER, "user"),
    (CloneFlags::CLONE_NEWIPC, "ipc"),
    (CloneFlags::CLONE_NEWUTS, "uts"),
    (CloneFlags::CLONE_NEWNET, "net"),
    (CloneFlags::CLONE_NEWPID, "pid"),
    (CloneFlags::CLONE_NEWCGROUP, "cgroup"),
    (CloneFlags::from_bits_retain(libc::CLONE_NEWTIME), "time"),
    (CloneFlags::CLONE_NEWNS, "mnt"),
];

pub fn flag_of(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

fn name_of(flag: CloneFlags) -> &'static str {
    ORDER
        .iter()
        .find(|(f, _)| *f == flag)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

/// Namespace fds to join (already opened, in join order) and flags to unshare.
#[derive(Debug)]
pub struct NsPlan {
    pub join: Vec<(CloneFlags, PathBuf, OwnedFd)>,
    pub unshare: CloneFlags,
}

impl Default for NsPlan {
    fn default() -> Self {
        NsPlan {
            join: Vec::new(),
            unshare: CloneFlags::empty(),
        }
    }
}

impl NsPlan {
    pub fn from_spec(spec: &Spec) -> Result<Self, NamespaceError> {
        let mut plan = NsPlan::default();
        let mut seen = CloneFlags::empty();
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in &namespaces {
            let flag = flag_of(ns.typ());
            if seen.contains(flag) {
                return Err(NamespaceError::Duplicate(name_of(flag)));
            }
            seen |= flag;
            match ns.path() {
                Some(path) => {
                    let fd = File::open(path).map_err(|source| NamespaceError::Open {
                        path: path.clone(),
                        source,
                    })?;
                    plan.join.push((flag, path.clone(), fd.into()));
                }
                None => plan.unshare |= flag,
            }
        }
        plan.sort();
        Ok(plan)
    }

    /// All namespaces of a running process that differ from ours (exec).
    pub fn from_pid(pid: i32) -> Result<Self, NamespaceError> {
        let mut plan = NsPlan::default();
        for (flag, name) in ORDER {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
            let (Ok(t), Ok(o)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
                continue;
            };
            if t.ino() == o.ino() && t.dev() == o.dev() {
                continue;
            }
            let fd = File::open(&theirs).map_err(|source| NamespaceError::Open {
                path: theirs.clone(),
                source,
            })?;
            plan.join.push((flag, theirs, fd.into()));
        }
        plan.sort();
        Ok(plan)
    }

    fn sort(&mut self) {
        let rank = |f: &CloneFlags| {
            ORDER
                .iter()
                .position(|(o, _)| o == f)
                .unwrap_or(ORDER.len())
        };
        self.join.sort_by_key(|(f, _, _)| rank(f));
    }

    pub fn joins(&self, flag: CloneFlags) -> bool {
        self.join.iter().any(|(f, _, _)| *f == flag)
    }

    /// Does the container have this namespace of its own (new or joined)?
    pub fn has(&self, flag: CloneFlags) -> bool {
        self.unshare.contains(flag) || self.joins(flag)
    }

    pub fn join_all(&self) -> Result<(), NamespaceError> {
        for (flag, path, fd) in &self.join {
            setns(fd.as_fd(), *flag).map_err(|source| NamespaceError::Setns {
                kind: name_of(*flag),
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

pub fn unshare_flags(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|source| NamespaceError::Unshare { flags, source })
}

fn map_lines(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Written by the parent (which has CAP_SETUID/CAP_SETGID in the parent user
/// namespace) for the child that just unshared its user namespace. "deny" on setgroups
/// is only required when the writer lacks CAP_SETGID there (user_namespaces(7)).
pub fn write_id_maps(pid: i32, spec: &Spec) -> Result<(), NamespaceError> {
    let linux = spec.linux().as_ref();
    let uids = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gids = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    let write = |file: &str, text: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, text).map_err(|source| NamespaceError::IdMap { path, source })
    };
    if !nix::unistd::geteuid().is_root() {
        write("setgroups", "deny")?;
    }
    if !uids.is_empty() {
        write("uid_map", &map_lines(&uids))?;
    }
    if !gids.is_empty() {
        write("gid_map", &map_lines(&gids))?;
    }
    Ok(())
}
