//! A container's root filesystem: an overlay of the image's snapshots (top first)
//! under a per-container upper and work dir
//! (<https://docs.kernel.org/filesystems/overlayfs.html>).

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

use crate::ImageStore;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::fsutil::{self, write_atomic};

const ROOTFS_RECORD: &str = "rootfs.json";

/// The directories of one container's overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsLayers {
    /// Top layer first, as overlayfs's `lowerdir` wants them.
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
}

/// What `containers/<id>/rootfs.json` records: the snapshots the container holds.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct RootfsRecord {
    pub image: Digest,
    pub chain_ids: Vec<Digest>,
}

impl ImageStore {
    /// Makes `containers/<id>/{upper,work}` and returns the overlay's layers. The
    /// container's snapshots stay on disk until `release_rootfs`, even if the image
    /// is removed meanwhile. Calling it again returns the same layers.
    pub fn prepare_rootfs(
        &self,
        image_id: &str,
        container_id: &str,
    ) -> Result<RootfsLayers, ImageError> {
        validate_container_id(container_id)?;
        let layout = &self.inner.layout;
        let dir = layout.container(container_id);
        // Under the images lock: a concurrent remove must see the record.
        let images = self.inner.lock_images();
        let image = self
            .inner
            .find(&images, image_id)?
            .and_then(|id| images.get(&id).cloned())
            .ok_or_else(|| ImageError::NotFound(image_id.to_owned()))?;
        fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        let record = RootfsRecord {
            image: image.id.clone(),
            chain_ids: image.chain_ids.clone(),
        };
        let record_path = dir.join(ROOTFS_RECORD);
        let bytes = serde_json::to_vec(&record).map_err(|source| ImageError::Record {
            path: record_path.clone(),
            source,
        })?;
        if let Err(err) = write_atomic(&record_path, &bytes) {
            let _ = fs::remove_dir_all(&dir);
            return Err(ImageError::io("write", &record_path)(err));
        }
        drop(images);
        let layers = RootfsLayers {
            lower_dirs: image
                .chain_ids
                .iter()
                .rev()
                .map(|chain_id| layout.snapshot_fs(chain_id))
                .collect(),
            upper_dir: dir.join("upper"),
            work_dir: dir.join("work"),
        };
        for sub in [&layers.upper_dir, &layers.work_dir] {
            if let Err(err) = fs::create_dir_all(sub) {
                // The written record would pin the snapshots until someone released it.
                let _ = self.release_rootfs(container_id);
                return Err(ImageError::io("create", sub)(err));
            }
        }
        Ok(layers)
    }

    /// Removes the container's upper and work dirs and lets go of its snapshots.
    /// The overlay must be unmounted first. Idempotent.
    pub fn release_rootfs(&self, container_id: &str) -> Result<(), ImageError> {
        validate_container_id(container_id)?;
        let layout = &self.inner.layout;
        let dir = layout.container(container_id);
        let doomed = layout.tmp().join(fsutil::unique_name(container_id));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fsutil::remove_tree(&doomed).map_err(ImageError::io("remove", &doomed))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(ImageError::io("move aside", &dir)(err)),
        }
        let containers = layout.containers();
        fsutil::fsync_dir(&containers).map_err(ImageError::io("fsync", &containers))?;
        self.inner.gc_snapshots()
    }

    /// True while a prepared container rootfs uses the snapshot. This is the hook
    /// for container-held layers: backed by `containers/*/rootfs.json`, which
    /// `prepare_rootfs` writes and `release_rootfs` removes.
    pub fn snapshot_in_use(&self, chain_id: &Digest) -> bool {
        self.inner.snapshot_in_use(chain_id)
    }
}

pub(crate) fn read_rootfs_records(containers: &Path) -> Vec<RootfsRecord> {
    let Ok(entries) = fs::read_dir(containers) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| fs::read(entry.path().join(ROOTFS_RECORD)).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

/// The mount data of one call is at most a page; past this, lower dirs are named
/// by short `/proc/self/fd/N` paths instead (overlayfs resolves them at mount time).
const MAX_MOUNT_DATA: usize = 4000;

/// Mounts the overlay on `target` (which must exist).
pub fn mount_overlay(layers: &RootfsLayers, target: &Path) -> Result<(), ImageError> {
    for path in layers
        .lower_dirs
        .iter()
        .chain([&layers.upper_dir, &layers.work_dir])
    {
        // overlayfs splits its options at ',' and lowerdir at ':'.
        let text = path.to_string_lossy();
        if text.contains([',', ':']) {
            return Err(ImageError::OverlayPath(path.clone()));
        }
    }
    let mut options = overlay_options(layers);
    // Keeps the fds open until the mount is done.
    let mut _pinned = Vec::new();
    if options.len() > MAX_MOUNT_DATA {
        let mut short = layers.clone();
        short.lower_dirs.clear();
        for dir in &layers.lower_dirs {
            let fd = nix::fcntl::open(
                dir,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|source| ImageError::Mount {
                target: dir.clone(),
                source,
            })?;
            short.lower_dirs.push(PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            )));
            _pinned.push(fd);
        }
        options = overlay_options(&short);
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|source| ImageError::Mount {
        target: target.to_owned(),
        source,
    })
}

/// Unmounts `target`; not mounted (or gone) is fine.
pub fn unmount_overlay(target: &Path) -> Result<(), ImageError> {
    match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(source) => Err(ImageError::Unmount {
            target: target.to_owned(),
            source,
        }),
    }
}

/// `lowerdir=top:...:bottom,upperdir=...,workdir=...`. A single-layer image still
/// gets an upper dir, so the overlay is writable.
fn overlay_options(layers: &RootfsLayers) -> String {
    let lower: Vec<String> = layers
        .lower_dirs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        layers.upper_dir.display(),
        layers.work_dir.display()
    )
}

/// A container id becomes a directory name: plain characters only.
fn validate_container_id(id: &str) -> Result<(), ImageError> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::BadContainerId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_plain_names() {
        assert!(validate_container_id("abc-123_x.y").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(validate_container_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlay_options_list_lowers_top_first() {
        let layers = RootfsLayers {
            lower_dirs: vec!["/s/top".into(), "/s/bottom".into()],
            upper_dir: "/c/upper".into(),
            work_dir: "/c/work".into(),
        };
        assert_eq!(
            overlay_options(&layers),
            "lowerdir=/s/top:/s/bottom,upperdir=/c/upper,workdir=/c/work"
        );
    }
}
