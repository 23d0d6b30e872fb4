//! Spec mounts. Every destination is resolved inside the rootfs with pathrs (never
//! following a symlink out of it) and the mount is made onto the resolved fd through
//! /proc/self/fd/N: a symlink swapped in by the container cannot redirect a mount onto
//! the host (CVE-2021-30465).

use std::fs::Permissions;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use oci_spec::runtime::Mount;
use pathrs::{InodeType, Root};

use super::RootfsError;
use crate::process::resources::CgroupMount;
use crate::sys::proc_fd_path;

/// Mount flags, propagation and data parsed from a spec mount's options, as runc's
/// `parseMountOptions`.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags to clear (an explicit "rw", "suid", ...).
    pub clear: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
    /// "rro": read-only all the way down, with `mount_setattr(2)` after the mount.
    pub recursive_readonly: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            clear: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            bind: false,
            recursive: false,
            recursive_readonly: false,
        }
    }
}

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions::default();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "rro" => {
                o.recursive_readonly = true;
                continue;
            }
            other => {
                if let Some(p) = propagation_flag(other) {
                    o.propagation.push(p);
                } else {
                    o.data.push(other.to_string());
                }
                continue;
            }
        };
        o.flags |= set;
        o.flags &= !clear;
        o.clear |= clear;
    }
    o
}

/// "rslave" -> MS_SLAVE|MS_REC, ... (also used for linux.rootfsPropagation).
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

fn mount_err(src: &str, dst: &Path, source: nix::Error) -> RootfsError {
    RootfsError::Mount {
        src: src.to_string(),
        dst: dst.to_path_buf(),
        source,
    }
}

/// Create `dest` inside the root as a directory (or as an empty file when the mount
/// source is a file) and return an O_PATH handle to it, resolved in the root.
pub fn ensure_target(
    root: &Root,
    dest: &Path,
    is_file: bool,
) -> Result<pathrs::Handle, RootfsError> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let resolve_err = |source: pathrs::error::Error| RootfsError::Resolve {
        path: dest.to_path_buf(),
        source,
    };
    if let Ok(h) = root.resolve(rel) {
        return Ok(h);
    }
    if is_file {
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            root.mkdir_all(parent, &Permissions::from_mode(0o755))
                .map_err(resolve_err)?;
        }
        match root.create(rel, &InodeType::File(Permissions::from_mode(0o644))) {
            Ok(()) => {}
            // Raced with ourselves or the file appeared: resolving below settles it.
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::EEXIST)) => {}
            Err(e) => return Err(resolve_err(e)),
        }
        root.resolve(rel).map_err(resolve_err)
    } else {
        match root.mkdir_all(rel, &Permissions::from_mode(0o755)) {
            Ok(h) => Ok(h),
            Err(e) => match symlink_target_in_root(root, rel) {
                // A dangling symlink (possibly planted to point at a host path): make
                // its target inside the root, then resolve through it, still in root.
                Some(target) => {
                    root.mkdir_all(&target, &Permissions::from_mode(0o755))
                        .map_err(resolve_err)?;
                    root.resolve(rel).map_err(resolve_err)
                }
                None => Err(resolve_err(e)),
            },
        }
    }
}

/// If `rel` is a symlink inside the root, where it points, as a path relative to the
/// root (absolute targets are taken relative to the root, as the kernel would inside
/// the container).
fn symlink_target_in_root(root: &Root, rel: &Path) -> Option<PathBuf> {
    let target = root.readlink(rel).ok()?;
    let joined = if target.is_absolute() {
        target
    } else {
        Path::new("/")
            .join(rel.parent().unwrap_or(Path::new("")))
            .join(target)
    };
    Some(joined.strip_prefix("/").unwrap_or(&joined).to_path_buf())
}

/// Re-resolve a destination after something was mounted on it: the old handle still
/// names the covered directory, not the new mount's root.
pub fn reresolve(root: &Root, dest: &Path) -> Result<pathrs::Handle, RootfsError> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    root.resolve(rel).map_err(|source| RootfsError::Resolve {
        path: dest.to_path_buf(),
        source,
    })
}

/// Perform one spec mount inside the rootfs.
pub fn mount_spec_entry(
    root: &Root,
    m: &Mount,
    bundle: &Path,
    cgroup_mounts: &[CgroupMount],
    in_new_userns: bool,
) -> Result<(), RootfsError> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(RootfsError::RelativeDestination(dest.clone()));
    }
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("");
    let source = m.source().clone().unwrap_or_default();
    if opts.bind || typ == "bind" {
        // Relative bind sources are relative to the bundle.
        let src = if source.is_absolute() {
            source
        } else {
            bundle.join(source)
        };
        return bind_mount(root, &src, dest, &opts);
    }
    match typ {
        "cgroup" | "cgroup2" => mount_cgroup(root, m, &opts, cgroup_mounts),
        "sysfs" => match mount_fs(root, "sysfs", "sysfs", dest, &opts) {
            // Without a network namespace of our own, sysfs cannot be mounted from a
            // user namespace: fall back to a read-only rbind of the host's /sys, as runc.
            Err(RootfsError::Mount {
                source: nix::Error::EPERM,
                ..
            }) if in_new_userns => {
                let mut o = parse_options(&["rbind".into(), "ro".into()]);
                o.flags |= opts.flags;
                bind_mount(root, Path::new("/sys"), dest, &o)
            }
            other => other,
        },
        _ => {
            let src = source.to_string_lossy().into_owned();
            mount_fs(root, &src, typ, dest, &opts)
        }
    }
}

/// A filesystem mount (proc, tmpfs, devpts, mqueue, ...).
pub fn mount_fs(
    root: &Root,
    src: &str,
    typ: &str,
    dest: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let target = ensure_target(root, dest, false)?;
    let data = opts.data.join(",");
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    mount(
        Some(src),
        proc_fd_path(target.as_fd()).as_str(),
        Some(typ),
        flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|e| mount_err(src, dest, e))?;
    if opts.recursive_readonly {
        make_recursive_readonly(root, dest)?;
    }
    apply_propagation(root, dest, &opts.propagation)
}

/// A bind mount; flags other than propagation need a second, remount, call.
pub fn bind_mount(
    root: &Root,
    src: &Path,
    dest: &Path,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let is_file = std::fs::metadata(src).map(|m| !m.is_dir()).unwrap_or(false);
    let target = ensure_target(root, dest, is_file)?;
    let mut flags = MsFlags::MS_BIND;
    if opts.recursive {
        flags |= MsFlags::MS_REC;
    }
    let src_s = src.to_string_lossy();
    mount(
        Some(src),
        proc_fd_path(target.as_fd()).as_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|e| mount_err(&src_s, dest, e))?;
    let extra = opts.flags & !(MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_REC);
    if !extra.is_empty() {
        remount_bind(root, dest, extra)?;
    }
    if opts.recursive_readonly {
        make_recursive_readonly(root, dest)?;
    }
    apply_propagation(root, dest, &opts.propagation)
}

/// "rro" (runc's recursive mount attribute): the mount at dest and every submount of it
/// read-only. Kernels before 5.12 lack mount_setattr(2): that is an error, never a
/// silently writable submount.
fn make_recursive_readonly(root: &Root, dest: &Path) -> Result<(), RootfsError> {
    let handle = reresolve(root, dest)?;
    crate::sys::mount_setattr_recursive_rdonly(handle.as_fd()).map_err(|e| {
        let source = nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        if source == nix::Error::ENOSYS {
            RootfsError::RecursiveReadonlyUnsupported(dest.to_path_buf())
        } else {
            mount_err(
                "mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)",
                dest,
                source,
            )
        }
    })
}

/// `MS_REMOUNT|MS_BIND|flags` on the mount at dest. The locked flags of the source
/// mount (nosuid/nodev/noexec set by the host) must be kept or a user-namespaced
/// remount fails with EPERM, so they are read back with statfs and preserved.
pub fn remount_bind(root: &Root, dest: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let handle = reresolve(root, dest)?;
    let path = proc_fd_path(handle.as_fd());
    let locked = locked_flags(&path);
    mount(
        None::<&str>,
        path.as_str(),
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags | locked,
        None::<&str>,
    )
    .map_err(|e| mount_err("remount", dest, e))
}

fn locked_flags(path: &str) -> MsFlags {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

pub fn apply_propagation(root: &Root, dest: &Path, props: &[MsFlags]) -> Result<(), RootfsError> {
    if props.is_empty() {
        return Ok(());
    }
    let handle = reresolve(root, dest)?;
    let path = proc_fd_path(handle.as_fd());
    for p in props {
        mount(None::<&str>, path.as_str(), None::<&str>, *p, None::<&str>)
            .map_err(|e| mount_err("propagation", dest, e))?;
    }
    Ok(())
}

/// cgroup v1 (the hybrid layout here): a tmpfs at the destination and a bind of each
/// controller directory of the container's cgroup, read-only unless the spec says rw.
fn mount_cgroup(
    root: &Root,
    m: &Mount,
    opts: &MountOptions,
    sources: &[CgroupMount],
) -> Result<(), RootfsError> {
    let dest = m.destination();
    let tmpfs_opts = MountOptions {
        flags: (opts.flags & !MsFlags::MS_RDONLY)
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        data: vec!["mode=755".into()],
        ..Default::default()
    };
    mount_fs(root, "tmpfs", "tmpfs", dest, &tmpfs_opts)?;
    let ro = !opts.clear.contains(MsFlags::MS_RDONLY);
    for src in sources {
        let sub: PathBuf = dest.join(&src.name);
        let mut o = parse_options(&["rbind".into()]);
        o.flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if ro {
            o.flags |= MsFlags::MS_RDONLY;
        }
        bind_mount(root, &src.host_path, &sub, &o)?;
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        remount_bind(root, dest, MsFlags::MS_RDONLY | tmpfs_opts.flags)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&s(&[
            "rbind",
            "ro",
            "nosuid",
            "rslave",
            "mode=755",
            "size=65536k",
        ]));
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, s(&["mode=755", "size=65536k"]));
    }

    #[test]
    fn rro_is_a_recursive_readonly_flag_not_mount_data() {
        let o = parse_options(&s(&["rbind", "rro"]));
        assert!(o.recursive_readonly);
        assert!(o.data.is_empty());
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn later_rw_clears_ro() {
        let o = parse_options(&s(&["ro", "rw"]));
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.clear.contains(MsFlags::MS_RDONLY));
    }
}
