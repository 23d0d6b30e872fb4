//! `linux.maskedPaths` and `linux.readonlyPaths`, applied after pivot_root.
//!
//! A masked file gets /dev/null bind-mounted over it. The /dev/null used must really
//! be the 1:3 character device: if the container could make /dev/null a symlink to
//! (or a bind of) some other file, masking would instead expose that file, writable,
//! at the masked path (CVE-2025-31133). So /dev/null is opened without following
//! symlinks, checked with fstat, and the mount source is that very fd.

use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use pathrs::Root;

use super::RootfsError;
use super::mount::{remount_bind, reresolve};
use crate::sys::{fstat, proc_fd_path};

/// Open `/dev/null` inside the root and refuse anything but the real 1:3 char device.
pub fn open_checked_dev_null(root: &Root) -> Result<pathrs::Handle, RootfsError> {
    let bad = |msg: String| RootfsError::DevNull(msg);
    let handle = root
        .resolve_nofollow("dev/null")
        .map_err(|e| bad(format!("open /dev/null: {e}")))?;
    let st = fstat(handle.as_fd()).map_err(|e| bad(format!("stat /dev/null: {e}")))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
        return Err(bad(format!(
            "/dev/null is not a character device (mode {:o})",
            st.st_mode
        )));
    }
    if st.st_rdev != libc::makedev(1, 3) {
        return Err(bad(format!(
            "/dev/null is device {}:{}, not 1:3",
            libc::major(st.st_rdev),
            libc::minor(st.st_rdev)
        )));
    }
    Ok(handle)
}

pub fn mask_paths(root: &Root, paths: &[String]) -> Result<(), RootfsError> {
    if paths.is_empty() {
        return Ok(());
    }
    let dev_null = open_checked_dev_null(root)?;
    for p in paths {
        let path = Path::new(p);
        let rel = path.strip_prefix("/").unwrap_or(path);
        // A path that does not exist needs no mask (runc: ENOENT is ignored).
        let Ok(target) = root.resolve(rel) else {
            continue;
        };
        let st =
            fstat(target.as_fd()).map_err(|e| RootfsError::DevNull(format!("stat {p}: {e}")))?;
        let dst = proc_fd_path(target.as_fd());
        let res = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount(
                Some("tmpfs"),
                dst.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some(proc_fd_path(dev_null.as_fd()).as_str()),
                dst.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        res.map_err(|source| RootfsError::Mount {
            src: "mask".into(),
            dst: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

pub fn readonly_paths(root: &Root, paths: &[String]) -> Result<(), RootfsError> {
    for p in paths {
        let path = Path::new(p);
        let rel = path.strip_prefix("/").unwrap_or(path);
        let Ok(target) = root.resolve(rel) else {
            continue;
        };
        let dst = proc_fd_path(target.as_fd());
        mount(
            Some(dst.as_str()),
            dst.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| RootfsError::Mount {
            src: p.clone(),
            dst: path.to_path_buf(),
            source,
        })?;
        let _ = reresolve(root, path)?;
        remount_bind(root, path, MsFlags::MS_RDONLY)?;
    }
    Ok(())
}
