//! Coracle's image library: pull images from registries, keep them in a content
//! store, unpack layers safely into shared snapshots, and hand containers an
//! overlayfs root.
//!
//! # Registry client: our own, over hyper
//!
//! `oci-client` 0.18 was the alternative, and it would have done the protocol
//! well: `pull_blob_stream` verifies digests as bytes flow, `?ns=` mirrors exist
//! per reference. What tipped it: its default `rustls-tls` makes reqwest 0.13 build
//! aws-lc-rs (cmake and a large C build, on 2 shared cores); it adds a second
//! `oci-spec` (0.10 beside the 0.8 `crates/oci` uses), chrono, regex, olpc-cjson,
//! unicase and http-auth; its `pull()` buffers each layer in a `Vec`; it has no
//! OAuth2 refresh-token grant for CRI's `identity_token`; and the mirror fallback
//! order, the progress timeout and unpack-while-verifying would be ours anyway.
//! What we need of the distribution API is small: GET manifests (with the `Accept`
//! distribution insists on) and blobs, follow redirects (dropping credentials off
//! host), answer the `WWW-Authenticate` challenge (bearer token with or without
//! basic credentials, basic, refresh token; CRI's `registry_token` as is). That is
//! `registry.rs` (about 600 lines with its tests) over hyper + hyper-util, which
//! tonic already brings into the workspace, plus rustls with *ring* (a small C/asm
//! build) and the system CA store. Layers: `flate2` (pure Rust miniz_oxide),
//! `ruzstd` (pure Rust; no libzstd build), `tar` (header parsing only; unpacking is
//! ours), `sha2`.
//!
//! # Pull
//!
//! [`ImageStore::pull`] normalizes the reference ([`reference`](mod@reference)), tries each endpoint
//! (mirrors in order, then upstream unless `no_upstream_fallback`), picks the node's
//! platform from an index, verifies the config, then downloads the missing layers
//! in parallel (at most `max_concurrent_downloads` across the store). Each layer
//! streams through sha256 (compressed digest and size), the decompressor (picked by
//! the stream's magic bytes), a second sha256 (the diff id) and the unpacker on a
//! blocking thread, into `tmp/<pull>/<chain>/fs`: unpacking happens while the bytes
//! arrive, not after. When every layer verified, one `syncfs`, then the layers are
//! renamed to `snapshots/<chain>` bottom first, each after the directories it only
//! implied took their attributes from the layers below (containerd's `mkparent`).
//! Blobs (manifests, config) and the image record come last. A failed or cancelled
//! pull removes its staging dir and the snapshots it committed that nothing else
//! uses. Pulls of one reference are serialized, so the second reuses the first's
//! work; pulls sharing layers take per-chain-id locks in layer order (shared
//! layers are a common bottom prefix, so no deadlock) and hold them to the commit.
//! A pull with no byte received for `progress_timeout` fails with
//! [`ImageError::ProgressTimeout`] (time queued behind another pull does not count).
//!
//! # Store
//!
//! Layout in [`store`]. Every write is temp+fsync+rename+fsync-dir; `open` reloads
//! the records, sweeps temp names and `tmp/`, and removes snapshots no image or
//! container references (what a crash mid-pull leaves). Layer blobs are not kept:
//! the snapshot is the layer.
//!
//! # Unpacking
//!
//! See [`unpack`]: every path is resolved under the snapshot root with `openat2`,
//! symlinks never followed, `..` refused, whiteouts turned into overlayfs format.
//!
//! # Rootfs
//!
//! [`ImageStore::prepare_rootfs`] records which snapshots a container holds
//! (`containers/<id>/rootfs.json`) and makes its upper/work dirs;
//! [`rootfs::mount_overlay`] mounts them; [`ImageStore::release_rootfs`] lets go.
//! Snapshots stay while a container record names them ([`ImageStore::snapshot_in_use`]),
//! even after their image is removed. Past a page of mount options (many layers),
//! lower dirs are named by `/proc/self/fd/N`.
//!
//! # Not yet
//!
//! * HTTPS is tested against a local TLS registry with a private CA (`ca_file`), not
//!   against the public ones (no internet here); no skip-verify option; HTTP/1.1 only.
//! * Layer blobs are not kept, so images cannot be pushed or exported from here.
//! * amd64 micro-architecture variants (`v2`, `v3`) in an index are not matched.
//! * A blob fetch that fails mid-stream is not resumed or retried on another endpoint.
//! * The pull benchmark against `skopeo copy` (issue 4, item 7) is not written.

pub mod config;
pub mod decompress;
pub mod digest;
pub mod error;
pub mod fsutil;
mod layer;
mod locks;
pub mod manifest;
mod progress;
mod pull;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod store;
pub mod unpack;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub use config::{Credentials, ImageConfig, RegistryConfig};
pub use digest::Digest;
pub use error::{ErrorKind, ImageError};
pub use manifest::RunConfig;
pub use reference::ImageRef;
pub use rootfs::{RootfsLayers, mount_overlay, unmount_overlay};
pub use store::{FsUsage, Image};

use locks::KeyedLocks;
use registry::RegistryClient;
use store::Layout;

/// Space used under the root, for ImageFsInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub root: PathBuf,
    /// Blobs, snapshots and records.
    pub images: FsUsage,
    /// The containers' writable layers.
    pub containers: FsUsage,
}

/// The image store. Share it behind an `Arc`; every method takes `&self`.
pub struct ImageStore {
    inner: Inner,
}

pub(crate) struct Inner {
    layout: Layout,
    config: ImageConfig,
    client: RegistryClient,
    images: Mutex<BTreeMap<Digest, Image>>,
    pull_locks: KeyedLocks,
    layer_locks: KeyedLocks,
    download_slots: tokio::sync::Semaphore,
    /// Chain ids used by pulls in progress, with a count each.
    inflight: Mutex<HashMap<Digest, usize>>,
}

/// How a removal named its image.
enum Named {
    Id(Digest),
    Tag(Digest, String),
    RepoDigest(Digest, String),
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`, reloads image records and
    /// cleans what an interrupted run left.
    pub fn open(root: &Path, config: ImageConfig) -> Result<ImageStore, ImageError> {
        let layout = Layout {
            root: root.to_owned(),
        };
        layout.prepare()?;
        let mut images = layout.load_images()?;
        drop_broken_images(&layout, &mut images)?;
        drop_unreferenced_blobs(&layout, &images)?;
        let client =
            RegistryClient::new(&config).map_err(|source| ImageError::Client(Box::new(source)))?;
        let slots = config.max_concurrent_downloads.max(1);
        let store = ImageStore {
            inner: Inner {
                layout,
                client,
                images: Mutex::new(images),
                pull_locks: KeyedLocks::default(),
                layer_locks: KeyedLocks::default(),
                download_slots: tokio::sync::Semaphore::new(slots),
                inflight: Mutex::new(HashMap::new()),
                config,
            },
        };
        store.inner.gc_snapshots()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    pub fn list(&self) -> Vec<Image> {
        self.inner.lock_images().values().cloned().collect()
    }

    /// The image named by id (`sha256:<hex>` or `<hex>`), tag, repo digest or a
    /// unique id prefix.
    pub fn status(&self, id_or_ref: &str) -> Option<Image> {
        let images = self.inner.lock_images();
        let id = self.inner.find(&images, id_or_ref).ok().flatten()?;
        images.get(&id).cloned()
    }

    /// The image config document as stored (for a verbose ImageStatus).
    pub fn config_json(&self, id: &Digest) -> Option<Vec<u8>> {
        self.inner.layout.read_blob(id)
    }

    /// Removes a tag or repo digest, or (by id) the whole image. The image goes
    /// when its last tag goes (or, for an image pulled by digest only, its last
    /// digest), and with it the snapshots nothing else uses. `Ok(false)` when
    /// nothing matched: removal is idempotent, as CRI wants.
    pub fn remove(&self, id_or_ref: &str) -> Result<bool, ImageError> {
        let mut images = self.inner.lock_images();
        let Some(named) = self.inner.name_for_removal(&images, id_or_ref)? else {
            return Ok(false);
        };
        let (id, delete) = match named {
            Named::Id(id) => (id, true),
            Named::Tag(id, tag) => {
                let image = images
                    .get_mut(&id)
                    .ok_or_else(|| ImageError::NotFound(tag.clone()))?;
                image.repo_tags.retain(|t| *t != tag);
                (id, image.repo_tags.is_empty())
            }
            Named::RepoDigest(id, digest) => {
                let image = images
                    .get_mut(&id)
                    .ok_or_else(|| ImageError::NotFound(digest.clone()))?;
                image.repo_digests.retain(|d| *d != digest);
                (
                    id,
                    image.repo_tags.is_empty() && image.repo_digests.is_empty(),
                )
            }
        };
        if !delete {
            if let Some(image) = images.get(&id) {
                self.inner.layout.save_image(image)?;
            }
            return Ok(true);
        }
        let Some(image) = images.remove(&id) else {
            return Ok(false);
        };
        self.inner.layout.delete_image(&image.id)?;
        self.inner.delete_image_blobs(&image, &images);
        drop(images);
        self.inner.gc_snapshots()?;
        Ok(true)
    }

    /// Bytes and inodes used by images and by containers' writable layers.
    pub fn fs_info(&self) -> FsInfo {
        let layout = &self.inner.layout;
        let mut images = store::disk_usage(&layout.blobs());
        for dir in [layout.snapshots(), layout.images()] {
            let usage = store::disk_usage(&dir);
            images.bytes += usage.bytes;
            images.inodes += usage.inodes;
        }
        FsInfo {
            root: layout.root.clone(),
            images,
            containers: store::disk_usage(&layout.containers()),
        }
    }

    /// Bytes and inodes of one container's writable layer (its overlay upper dir),
    /// with the filesystem root that [`fs_info`](Self::fs_info) names; `None` when the
    /// container has no rootfs here.
    pub fn container_fs_usage(&self, container_id: &str) -> Option<(PathBuf, FsUsage)> {
        let layout = &self.inner.layout;
        let upper = layout.container(container_id).join("upper");
        upper
            .is_dir()
            .then(|| (layout.root.clone(), store::disk_usage(&upper)))
    }

    /// Blob bytes (config and layers) received from registries so far.
    pub fn blob_bytes(&self) -> u64 {
        self.inner.client.blob_bytes()
    }

    /// Blob GETs sent so far (config and layers), for tests and metrics.
    pub fn blob_fetches(&self) -> u64 {
        self.inner.client.blob_fetches()
    }

    /// Removes snapshots no image, pull or container uses.
    pub fn gc(&self) -> Result<(), ImageError> {
        self.inner.gc_snapshots()
    }
}

impl Inner {
    fn lock_images(&self) -> MutexGuard<'_, BTreeMap<Digest, Image>> {
        self.images
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves an id, tag, repo digest or unique id prefix to an image id.
    fn find(
        &self,
        images: &BTreeMap<Digest, Image>,
        key: &str,
    ) -> Result<Option<Digest>, ImageError> {
        if let Some(id) = parse_id(key) {
            if images.contains_key(&id) {
                return Ok(Some(id));
            }
        }
        if let Ok(image_ref) = ImageRef::parse(key) {
            if let Some(image) = images.values().find(|image| matches_ref(image, &image_ref)) {
                return Ok(Some(image.id.clone()));
            }
        }
        let prefix = key.strip_prefix("sha256:").unwrap_or(key);
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut matches = images.keys().filter(|id| id.hex().starts_with(prefix));
        match (matches.next(), matches.next()) {
            (Some(id), None) => Ok(Some(id.clone())),
            (Some(_), Some(_)) => Err(ImageError::Ambiguous(key.to_owned())),
            _ => Ok(None),
        }
    }

    fn name_for_removal(
        &self,
        images: &BTreeMap<Digest, Image>,
        key: &str,
    ) -> Result<Option<Named>, ImageError> {
        if let Some(id) = parse_id(key) {
            if images.contains_key(&id) {
                return Ok(Some(Named::Id(id)));
            }
        }
        if let Ok(image_ref) = ImageRef::parse(key) {
            for image in images.values() {
                if let Some(digest) = &image_ref.digest {
                    let repo_digest = image_ref.with_digest(digest);
                    if image.repo_digests.contains(&repo_digest) {
                        return Ok(Some(Named::RepoDigest(image.id.clone(), repo_digest)));
                    }
                } else if let Some(tag) = image_ref.tagged() {
                    if image.repo_tags.contains(&tag) {
                        return Ok(Some(Named::Tag(image.id.clone(), tag)));
                    }
                }
            }
        }
        Ok(self.find(images, key)?.map(Named::Id))
    }

    /// Adds a pulled image, or merges its names into the existing record. A tag
    /// moves: the image that had it before loses it.
    fn record_pulled(&self, pulled: Image) -> Result<Image, ImageError> {
        let mut images = self.lock_images();
        let mut changed = Vec::new();
        for other in images.values_mut().filter(|i| i.id != pulled.id) {
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !pulled.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                changed.push(other.clone());
            }
        }
        for other in changed {
            self.layout.save_image(&other)?;
        }
        let merged = match images.get(&pulled.id) {
            Some(existing) => {
                let mut merged = existing.clone();
                for tag in &pulled.repo_tags {
                    if !merged.repo_tags.contains(tag) {
                        merged.repo_tags.push(tag.clone());
                    }
                }
                for digest in &pulled.repo_digests {
                    if !merged.repo_digests.contains(digest) {
                        merged.repo_digests.push(digest.clone());
                    }
                }
                merged
            }
            None => pulled,
        };
        self.layout.save_image(&merged)?;
        images.insert(merged.id.clone(), merged.clone());
        Ok(merged)
    }

    /// Drops the config and manifest blobs of a removed image.
    fn delete_image_blobs(&self, image: &Image, remaining: &BTreeMap<Digest, Image>) {
        let mut blobs = vec![image.id.clone(), image.manifest_digest.clone()];
        for repo_digest in &image.repo_digests {
            if let Some(Ok(digest)) = repo_digest.split_once('@').map(|(_, d)| Digest::parse(d)) {
                blobs.push(digest);
            }
        }
        for digest in blobs {
            let still_used = remaining.values().any(|other| {
                other.id == digest
                    || other.manifest_digest == digest
                    || other
                        .repo_digests
                        .iter()
                        .any(|d| d.ends_with(digest.as_str()))
            });
            if !still_used {
                if let Err(err) = self.layout.delete_blob(&digest) {
                    tracing::warn!(%digest, error = %err, "removing blob");
                }
            }
        }
    }

    fn hold_inflight(&self, chain_ids: &[Digest]) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for chain_id in chain_ids {
            *inflight.entry(chain_id.clone()).or_default() += 1;
        }
    }

    fn release_inflight(&self, chain_ids: &[Digest]) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        for chain_id in chain_ids {
            if let Some(count) = inflight.get_mut(chain_id) {
                *count -= 1;
                if *count == 0 {
                    inflight.remove(chain_id);
                }
            }
        }
    }

    /// The snapshots used by an image, a pull in progress (`inflight`, held locked
    /// by the caller) or a container; the container records are read once.
    fn referenced_snapshots(&self, inflight: &HashMap<Digest, usize>) -> HashSet<Digest> {
        let mut referenced: HashSet<Digest> = self
            .lock_images()
            .values()
            .flat_map(|image| image.chain_ids.iter().cloned())
            .collect();
        referenced.extend(inflight.keys().cloned());
        for record in rootfs::read_rootfs_records(&self.layout.containers()) {
            referenced.extend(record.chain_ids);
        }
        referenced
    }

    fn snapshot_in_use(&self, chain_id: &Digest) -> bool {
        rootfs::read_rootfs_records(&self.layout.containers())
            .iter()
            .any(|record| record.chain_ids.contains(chain_id))
    }

    /// Removes unreferenced snapshots. The inflight map stays locked from check to
    /// delete: a pull registers its chain ids there before it looks for existing
    /// snapshots, so it either keeps a snapshot alive or sees it gone and fetches it.
    fn gc_snapshots(&self) -> Result<(), ImageError> {
        let inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        let referenced = self.referenced_snapshots(&inflight);
        for chain_id in self.layout.list_snapshots()? {
            if !referenced.contains(&chain_id) {
                tracing::info!(%chain_id, "removing unused snapshot");
                self.layout.delete_snapshot(&chain_id)?;
            }
        }
        Ok(())
    }

    /// One syncfs for every layer a pull staged, before they are renamed into place.
    fn sync_dir_fs(&self, dir: &Path) {
        if let Ok(file) = std::fs::File::open(dir) {
            if let Err(err) = nix::unistd::syncfs(file.as_fd()) {
                tracing::warn!(dir = %dir.display(), error = %err, "syncfs");
            }
        }
    }
}

/// An image whose snapshot is gone (a disk cleaned by hand, a crash in a delete)
/// cannot start containers: forget it, so kubelet pulls it again.
fn drop_broken_images(
    layout: &Layout,
    images: &mut BTreeMap<Digest, Image>,
) -> Result<(), ImageError> {
    let broken: Vec<Digest> = images
        .values()
        .filter(|image| {
            image
                .chain_ids
                .iter()
                .any(|chain_id| !layout.snapshot_fs(chain_id).is_dir())
        })
        .map(|image| image.id.clone())
        .collect();
    for id in broken {
        tracing::warn!(%id, "image lost a layer snapshot; forgetting it");
        layout.delete_image(&id)?;
        images.remove(&id);
    }
    Ok(())
}

/// Blobs a crash left between a pull's blob writes and its record.
fn drop_unreferenced_blobs(
    layout: &Layout,
    images: &BTreeMap<Digest, Image>,
) -> Result<(), ImageError> {
    let dir = layout.blobs();
    for entry in std::fs::read_dir(&dir).map_err(ImageError::io("read", &dir))? {
        let name = entry.map_err(ImageError::io("read", &dir))?.file_name();
        let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
            continue;
        };
        let used = images.values().any(|image| {
            image.id == digest
                || image.manifest_digest == digest
                || image
                    .repo_digests
                    .iter()
                    .any(|d| d.ends_with(digest.as_str()))
        });
        if !used {
            layout.delete_blob(&digest)?;
        }
    }
    Ok(())
}

fn parse_id(key: &str) -> Option<Digest> {
    if digest::is_sha256_hex(key) {
        return Digest::parse(&format!("sha256:{key}")).ok();
    }
    Digest::parse(key).ok()
}

fn matches_ref(image: &Image, image_ref: &ImageRef) -> bool {
    if let Some(digest) = &image_ref.digest {
        return image.repo_digests.contains(&image_ref.with_digest(digest));
    }
    image_ref
        .tagged()
        .is_some_and(|tag| image.repo_tags.contains(&tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRI service shares one store across tonic's tasks and spawns pulls.
    #[test]
    fn store_is_shareable_and_pulls_can_be_spawned() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<ImageStore>();
        let root = std::env::temp_dir().join(fsutil::unique_name("send-check"));
        let store = ImageStore::open(&root, ImageConfig::default()).expect("open");
        let pull = store.pull("busybox", None);
        send(&pull);
        drop(pull);
        drop(store);
        let _ = std::fs::remove_dir_all(&root);
    }
}
