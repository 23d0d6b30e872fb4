//! Shared by the integration tests: stores in unique temp dirs, and the local
//! registry of `hack/test-images`.

#![allow(dead_code)]

pub mod fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use coracle_image::{ImageConfig, ImageStore};

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the image integration tests need root (owners, device nodes, overlay mounts)"
    );
}

/// A temp dir on the same filesystem as the build (not tmpfs): overlayfs and
/// `trusted.*` xattrs need a real one.
pub fn temp_root() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coracle-image-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

pub fn open_store(root: &Path) -> ImageStore {
    ImageStore::open(root, config()).expect("open store")
}

pub fn config() -> ImageConfig {
    ImageConfig {
        progress_timeout: Duration::from_secs(30),
        ..ImageConfig::default()
    }
}

pub fn registry() -> coracle_e2e::Registry {
    coracle_e2e::Registry::start().expect("start the local registry")
}

/// Names directly under `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn snapshot_fs(root: &Path, chain_id: &coracle_image::Digest) -> PathBuf {
    root.join("snapshots").join(chain_id.hex()).join("fs")
}
