//! /dev contents: the default devices every container gets (runtime spec "Default
//! Devices") plus `linux.devices`. Outside a user namespace they are made with mknod;
//! inside one mknod is refused, so the host's node is bind-mounted onto an empty file.

use std::fs::Permissions;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use pathrs::{InodeType, Root};

use super::RootfsError;
use super::mount::ensure_target;
use crate::sys::{fchown_fd, fstat, proc_fd_path};

/// A device node to create.
#[derive(Debug, Clone)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: libc::mode_t,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn default_devices() -> Vec<DeviceNode> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Result<DeviceNode, RootfsError> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(RootfsError::Device {
                path: d.path().clone(),
                msg: "type 'a' is not a node".into(),
            });
        }
    };
    if !d.path().starts_with("/dev") {
        return Err(RootfsError::Device {
            path: d.path().clone(),
            msg: "device outside /dev".into(),
        });
    }
    Ok(DeviceNode {
        path: d.path().clone(),
        kind,
        major: d.major().max(0) as u64,
        minor: d.minor().max(0) as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Is what `handle` names the very device `dev` describes?
fn is_same_node(handle: &pathrs::Handle, dev: &DeviceNode) -> bool {
    fstat(handle.as_fd()).is_ok_and(|st| {
        st.st_mode & libc::S_IFMT == dev.kind
            && st.st_rdev == libc::makedev(dev.major as u32, dev.minor as u32)
    })
}

pub fn create_device(
    root: &Root,
    dev: &DeviceNode,
    bind_from_host: bool,
) -> Result<(), RootfsError> {
    let rel = dev.path.strip_prefix("/").unwrap_or(&dev.path);
    let err = |source: pathrs::error::Error| RootfsError::Resolve {
        path: dev.path.clone(),
        source,
    };
    if let Some(parent) = rel.parent() {
        root.mkdir_all(parent, &Permissions::from_mode(0o755))
            .map_err(err)?;
    }
    // Whatever the image put at the path (a symlink to a host file, a regular file) is
    // replaced, never followed: pathrs removes the name itself.
    if let Ok(existing) = root.resolve_nofollow(rel) {
        if !bind_from_host && is_same_node(&existing, dev) {
            return chown_node(root, dev);
        }
        root.remove_all(rel).map_err(err)?;
    }
    if bind_from_host {
        let host = Path::new(&dev.path);
        let is_host_node = std::fs::symlink_metadata(host)
            .is_ok_and(|m| m.file_type().is_char_device() || m.file_type().is_block_device());
        if !is_host_node {
            return Err(RootfsError::Device {
                path: dev.path.clone(),
                msg: "no such device on the host to bind".into(),
            });
        }
        let target = ensure_target(root, &dev.path, true)?;
        mount(
            Some(host),
            proc_fd_path(target.as_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| RootfsError::Mount {
            src: dev.path.display().to_string(),
            dst: dev.path.clone(),
            source,
        })?;
        return Ok(());
    }
    let perm = perm_of(dev);
    let rdev = libc::makedev(dev.major as u32, dev.minor as u32);
    let inode = match dev.kind {
        libc::S_IFBLK => InodeType::BlockDevice(perm, rdev),
        libc::S_IFIFO => InodeType::Fifo(perm),
        _ => InodeType::CharacterDevice(perm, rdev),
    };
    root.create(rel, &inode).map_err(err)?;
    chown_node(root, dev)?;
    // mknod applied our umask; set the mode the spec asked for.
    let handle = root.resolve_nofollow(rel).map_err(err)?;
    std::fs::set_permissions(proc_fd_path(handle.as_fd()), perm_of(dev)).map_err(|e| {
        RootfsError::Device {
            path: dev.path.clone(),
            msg: format!("chmod: {e}"),
        }
    })
}

fn perm_of(dev: &DeviceNode) -> Permissions {
    Permissions::from_mode(dev.mode)
}

fn chown_node(root: &Root, dev: &DeviceNode) -> Result<(), RootfsError> {
    let rel = dev.path.strip_prefix("/").unwrap_or(&dev.path);
    let handle = root
        .resolve_nofollow(rel)
        .map_err(|source| RootfsError::Resolve {
            path: dev.path.clone(),
            source,
        })?;
    fchown_fd(handle.as_fd(), dev.uid, dev.gid).map_err(|e| RootfsError::Device {
        path: dev.path.clone(),
        msg: format!("chown: {e}"),
    })
}
