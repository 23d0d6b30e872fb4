//! The /dev symlinks every container gets (runtime spec "Default Devices" and runc's
//! `setupDevSymlinks`).

use std::path::{Path, PathBuf};

use pathrs::{InodeType, Root};

use super::RootfsError;

pub fn default_dev_symlinks(has_devpts: bool) -> Vec<(PathBuf, PathBuf)> {
    let mut links: Vec<(PathBuf, PathBuf)> = vec![
        ("dev/fd".into(), "/proc/self/fd".into()),
        ("dev/stdin".into(), "/proc/self/fd/0".into()),
        ("dev/stdout".into(), "/proc/self/fd/1".into()),
        ("dev/stderr".into(), "/proc/self/fd/2".into()),
    ];
    // /dev/core only when the host has a kcore to point at.
    if Path::new("/proc/kcore").exists() {
        links.push(("dev/core".into(), "/proc/kcore".into()));
    }
    if has_devpts {
        links.push(("dev/ptmx".into(), "pts/ptmx".into()));
    }
    links
}

/// Create `link -> target` inside the root, replacing whatever is at `link` when
/// `replace` is set (/dev/ptmx from the image must become the devpts one).
pub fn create_symlink(
    root: &Root,
    link: &Path,
    target: &Path,
    replace: bool,
) -> Result<(), RootfsError> {
    let err = |source: pathrs::error::Error| RootfsError::Resolve {
        path: link.to_path_buf(),
        source,
    };
    if root.resolve_nofollow(link).is_ok() {
        if !replace {
            return Ok(());
        }
        root.remove_all(link).map_err(err)?;
    }
    root.create(link, &InodeType::Symlink(target.to_path_buf()))
        .map_err(err)
}
