//! The on-disk layout under the root and the image records.
//!
//! ```text
//! blobs/sha256/<hex>            manifests, indexes and configs (layers live unpacked)
//! snapshots/<chain-id-hex>/fs   one unpacked layer, shared by every image that has it
//! images/<config-hex>.json      one record per image (id = config digest)
//! containers/<id>/{upper,work}  a container's writable layer; rootfs.json names its snapshots
//! tmp/                          pull staging; emptied at open
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, is_sha256_hex};
use crate::error::ImageError;
use crate::fsutil::{self, write_atomic};
use crate::manifest::RunConfig;

/// An image as the store knows it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Image {
    /// The config digest, `sha256:<hex>` (what `crictl images` shows as IMAGE ID).
    pub id: Digest,
    /// `registry/repository:tag`.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:...` of the manifest or index the reference named.
    pub repo_digests: Vec<String>,
    /// Manifest, config and compressed layer sizes, as the registry served them.
    pub size: u64,
    /// The platform manifest (the child, when the reference named an index).
    pub manifest_digest: Digest,
    pub config: RunConfig,
    /// Bottom layer first.
    pub diff_ids: Vec<Digest>,
    /// Bottom layer first; `snapshots/<hex>/fs` each.
    pub chain_ids: Vec<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// Paths under the root.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    pub fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs().join(digest.hex())
    }
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub fn snapshot(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots().join(chain_id.hex())
    }
    pub fn snapshot_fs(&self, chain_id: &Digest) -> PathBuf {
        self.snapshot(chain_id).join("fs")
    }
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn image(&self, id: &Digest) -> PathBuf {
        self.images().join(format!("{}.json", id.hex()))
    }
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn container(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Makes the directories and removes what a crash left half-done.
    pub fn prepare(&self) -> Result<(), ImageError> {
        for dir in [
            self.blobs(),
            self.snapshots(),
            self.images(),
            self.containers(),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
            fsutil::sweep_temps(&dir).map_err(ImageError::io("sweep temps in", &dir))?;
        }
        let tmp = self.tmp();
        fsutil::remove_tree(&tmp).map_err(ImageError::io("remove", &tmp))?;
        fs::create_dir_all(&tmp).map_err(ImageError::io("create", &tmp))?;
        // Layers hold setuid binaries and files meant for root in the container:
        // host users must not reach them through the store (containerd keeps its
        // snapshot dirs 0700 for the same reason). Overlay mounts are unaffected.
        for dir in [self.root.clone(), self.snapshots(), self.containers(), tmp] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(ImageError::io("chmod 0700", &dir))?;
        }
        Ok(())
    }

    pub fn load_images(&self) -> Result<BTreeMap<Digest, Image>, ImageError> {
        let dir = self.images();
        let mut images = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io("read", &dir))? {
            let path = entry.map_err(ImageError::io("read", &dir))?.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let text = fs::read(&path).map_err(ImageError::io("read", &path))?;
            let image: Image =
                serde_json::from_slice(&text).map_err(|source| ImageError::Record {
                    path: path.clone(),
                    source,
                })?;
            images.insert(image.id.clone(), image);
        }
        Ok(images)
    }

    pub fn save_image(&self, image: &Image) -> Result<(), ImageError> {
        let path = self.image(&image.id);
        let bytes = serde_json::to_vec_pretty(image).map_err(|source| ImageError::Record {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes).map_err(ImageError::io("write", &path))
    }

    pub fn delete_image(&self, id: &Digest) -> Result<(), ImageError> {
        let path = self.image(id);
        fsutil::remove_file_durably(&path).map_err(ImageError::io("remove", &path))
    }

    /// Stores a small blob (manifest, index, config) whose digest is verified.
    pub fn save_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<(), ImageError> {
        // An intact copy is kept; a damaged one is replaced, not trusted forever.
        if self.read_blob(digest).is_some() {
            return Ok(());
        }
        let path = self.blob(digest);
        write_atomic(&path, bytes).map_err(ImageError::io("write", &path))
    }

    /// A stored blob, if present and intact.
    pub fn read_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        let bytes = fs::read(self.blob(digest)).ok()?;
        (Digest::of(&bytes) == *digest).then_some(bytes)
    }

    pub fn delete_blob(&self, digest: &Digest) -> Result<(), ImageError> {
        let path = self.blob(digest);
        fsutil::remove_file_durably(&path).map_err(ImageError::io("remove", &path))
    }

    /// Chain ids of the snapshots on disk.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>, ImageError> {
        let dir = self.snapshots();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io("read", &dir))? {
            let name = entry.map_err(ImageError::io("read", &dir))?.file_name();
            let name = name.to_string_lossy();
            if is_sha256_hex(&name) {
                if let Ok(digest) = Digest::parse(&format!("sha256:{name}")) {
                    out.push(digest);
                }
            }
        }
        Ok(out)
    }

    pub fn delete_snapshot(&self, chain_id: &Digest) -> Result<(), ImageError> {
        let path = self.snapshot(chain_id);
        // Rename first so a crash mid-delete never leaves a half snapshot under its name.
        let doomed = self.tmp().join(fsutil::unique_name(chain_id.hex()));
        match fs::rename(&path, &doomed) {
            Ok(()) => fsutil::remove_tree(&doomed).map_err(ImageError::io("remove", &doomed)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(ImageError::io("move aside", &path)(err)),
        }
    }
}

/// Bytes and inodes under a directory tree (hardlinks counted once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub fn disk_usage(path: &Path) -> FsUsage {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut usage = FsUsage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            usage.bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    usage
}
