//! Pulling: resolve the reference on the first endpoint that answers, pick the
//! platform, fetch and verify the config, then stream every missing layer (bounded
//! parallelism) through digest check, decompression, diff-id check and the unpacker
//! into a staging dir; a snapshot is renamed into place only once both digests match,
//! and the image record is written last. A pull that fails or is cancelled removes
//! the snapshots it committed unless another image or pull uses them.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::config::Credentials;
use crate::decompress::decompressor;
use crate::digest::{Digest, Hasher, HashingReader, chain_ids};
use crate::error::ImageError;
use crate::fsutil::{self, rename_into_place};
use crate::manifest::{
    Compression, Descriptor, Fetched, Manifest, Platform, choose_platform, layer_compression,
    parse_config, parse_manifest,
};
use crate::reference::ImageRef;
use crate::registry::{Endpoint, endpoints};
use crate::store::Image;
use crate::unpack::{UnpackStats, copy_up_implied_dirs, unpack_layer};
use crate::{ImageStore, Inner};

/// Chunks in flight between the download and the unpacker (each is one HTTP frame).
const STREAM_DEPTH: usize = 64;
const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// Last time a pull received bytes or got an answer, and what it is doing now.
#[derive(Clone)]
pub(crate) struct Progress(Arc<ProgressState>);

struct ProgressState {
    last: Mutex<Instant>,
    /// Layer jobs queued behind another pull (same layer) or a download slot.
    waiting: AtomicUsize,
    /// Layer jobs downloading.
    downloading: AtomicUsize,
}

/// Counts a job in one of the states while alive.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Progress {
    fn new() -> Self {
        Self(Arc::new(ProgressState {
            last: Mutex::new(Instant::now()),
            waiting: AtomicUsize::new(0),
            downloading: AtomicUsize::new(0),
        }))
    }

    fn touch(&self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Instant::now();
        }
    }

    /// Time since the last progress. A pull whose only work is queued behind other
    /// pulls is not idle: those have their own watchdogs, and a stalled one frees
    /// what this one waits for when it is cancelled.
    fn idle(&self) -> Duration {
        let queued = self.0.waiting.load(Ordering::SeqCst) > 0
            && self.0.downloading.load(Ordering::SeqCst) == 0;
        if queued {
            self.touch();
            return Duration::ZERO;
        }
        self.0
            .last
            .lock()
            .map(|last| last.elapsed())
            .unwrap_or_default()
    }

    fn waiting(&self) -> Counted<'_> {
        Counted::new(&self.0.waiting)
    }

    fn downloading(&self) -> Counted<'_> {
        Counted::new(&self.0.downloading)
    }
}

/// Runs `work` until it ends or makes no progress for `timeout`.
async fn with_progress_timeout<T>(
    reference: &str,
    progress: &Progress,
    timeout: Duration,
    work: impl Future<Output = Result<T, ImageError>>,
) -> Result<T, ImageError> {
    tokio::pin!(work);
    loop {
        let idle = progress.idle();
        if idle >= timeout {
            return Err(ImageError::ProgressTimeout {
                reference: reference.to_owned(),
                timeout,
            });
        }
        tokio::select! {
            result = &mut work => return result,
            () = tokio::time::sleep(timeout - idle) => {}
        }
    }
}

/// One async lock per key (a reference, a chain id), dropped when unused.
#[derive(Default)]
pub(crate) struct KeyedLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.retain(|_, weak| weak.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// What the reference resolved to.
struct Resolved {
    /// The endpoint that had the manifest first, then the other candidates: blobs
    /// are content-addressed, so any endpoint that has one will do.
    endpoints: Vec<Endpoint>,
    /// The digest the reference names (an index's, for a multi-platform image).
    top_digest: Digest,
    manifest_digest: Digest,
    manifest: Manifest,
    /// Every manifest/index blob to keep.
    blobs: Vec<(Digest, Bytes)>,
}

/// Rolls back the snapshots a pull committed, unless it finished.
struct PullGuard<'a> {
    inner: &'a Inner,
    chain_ids: Vec<Digest>,
    created: Mutex<Vec<Digest>>,
    finished: bool,
}

impl Drop for PullGuard<'_> {
    fn drop(&mut self) {
        self.inner.release_inflight(&self.chain_ids);
        if self.finished {
            return;
        }
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        // Check and delete under the inflight lock, as the store's gc does.
        let inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for chain_id in created {
            if !self.inner.snapshot_referenced_with(&chain_id, &inflight) {
                if let Err(err) = self.inner.layout.delete_snapshot(&chain_id) {
                    tracing::warn!(%chain_id, error = %err, "rolling back a failed pull's snapshot");
                }
            }
        }
    }
}

/// A staging directory removed when the last holder (the pull or an unpack thread
/// still winding down) lets go.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fsutil::remove_tree(&self.0);
    }
}

impl ImageStore {
    /// Pulls `reference` (normalized first) and records it. Concurrent pulls of the
    /// same reference wait for the first and reuse its work.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<Credentials>,
    ) -> Result<Image, ImageError> {
        let image_ref = ImageRef::parse(reference)?;
        let name = image_ref.to_string();
        let _same_reference = self.inner.pull_locks.lock(&name).await;
        let progress = Progress::new();
        let timeout = self.inner.config.progress_timeout;
        let started = Instant::now();
        let image = with_progress_timeout(
            &name,
            &progress,
            timeout,
            self.pull_locked(&image_ref, auth.as_ref(), &progress),
        )
        .await?;
        tracing::info!(reference = %name, id = %image.id, elapsed = ?started.elapsed(), "pulled");
        Ok(image)
    }

    async fn pull_locked(
        &self,
        image_ref: &ImageRef,
        auth: Option<&Credentials>,
        progress: &Progress,
    ) -> Result<Image, ImageError> {
        let name = image_ref.to_string();
        let resolved = self.resolve(image_ref, auth, progress).await?;
        let config_desc = resolved.manifest.config.clone();
        let config_bytes = self
            .fetch_config(
                &name,
                &resolved.endpoints,
                image_ref,
                &config_desc,
                progress,
            )
            .await?;
        let config = parse_config(&config_desc.digest, &resolved.manifest, &config_bytes).map_err(
            |source| ImageError::Manifest {
                reference: name.clone(),
                source,
            },
        )?;
        let compressions = resolved
            .manifest
            .layers
            .iter()
            .map(layer_compression)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ImageError::Manifest {
                reference: name.clone(),
                source,
            })?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        let mut guard = PullGuard {
            inner: &self.inner,
            chain_ids: chain.clone(),
            created: Mutex::new(Vec::new()),
            finished: false,
        };
        self.inner.hold_inflight(&chain);

        let staging_path = self.inner.layout.tmp().join(fsutil::unique_name("pull"));
        std::fs::create_dir(&staging_path).map_err(ImageError::io("create", &staging_path))?;
        let staging = Arc::new(Staging(staging_path));
        // Layer locks in layer order: pulls sharing layers share a bottom prefix of
        // chain ids, so ordered acquisition cannot deadlock. They are held until the
        // commit, so a pull sharing a layer waits for it instead of fetching it too.
        let queued = progress.waiting();
        let mut layer_guards = Vec::with_capacity(chain.len());
        for chain_id in &chain {
            layer_guards.push(self.inner.layer_locks.lock(chain_id.as_str()).await);
        }
        drop(queued);
        progress.touch();
        let missing: Vec<usize> = (0..chain.len())
            .filter(|&i| !self.inner.layout.snapshot_fs(&chain[i]).is_dir())
            .collect();
        let jobs = missing.iter().map(|&i| {
            self.stage_layer(
                &name,
                &resolved.endpoints,
                &image_ref.repository,
                LayerJob {
                    layer: resolved.manifest.layers[i].clone(),
                    compression: compressions[i],
                    diff_id: config.rootfs.diff_ids[i].clone(),
                    chain_id: chain[i].clone(),
                },
                Arc::clone(&staging),
                progress,
            )
        });
        let staged = futures_util::future::try_join_all(jobs).await?;
        // Durable before visible under their names.
        self.inner.sync_dir_fs(&staging.0);
        self.commit_layers(&name, &chain, &missing, &staged, &staging, &guard.created)?;
        drop(layer_guards);

        for (digest, bytes) in &resolved.blobs {
            self.inner.layout.save_blob(digest, bytes)?;
        }
        self.inner
            .layout
            .save_blob(&config_desc.digest, &config_bytes)?;
        let size = resolved.manifest.config.size
            + resolved.manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let image = Image {
            id: config_desc.digest.clone(),
            repo_tags: image_ref.tagged().into_iter().collect(),
            repo_digests: vec![image_ref.with_digest(&resolved.top_digest)],
            size,
            manifest_digest: resolved.manifest_digest.clone(),
            config: config.config.map(Into::into).unwrap_or_default(),
            diff_ids: config.rootfs.diff_ids.clone(),
            chain_ids: chain,
            created: config.created.clone(),
        };
        let image = self.inner.record_pulled(image)?;
        guard.finished = true;
        Ok(image)
    }

    /// Finds the manifest on the first endpoint that has it.
    async fn resolve(
        &self,
        image_ref: &ImageRef,
        auth: Option<&Credentials>,
        progress: &Progress,
    ) -> Result<Resolved, ImageError> {
        let name = image_ref.to_string();
        let candidates = endpoints(&self.inner.config, image_ref, auth);
        let mut last_error = None;
        for (i, endpoint) in candidates.iter().enumerate() {
            match self
                .resolve_on(&name, image_ref, endpoint.clone(), progress)
                .await
            {
                Ok(mut resolved) => {
                    let others = candidates.iter().enumerate().filter(|(j, _)| *j != i);
                    resolved.endpoints.extend(others.map(|(_, e)| e.clone()));
                    return Ok(resolved);
                }
                Err(err) => {
                    tracing::info!(reference = %name, endpoint = %endpoint.describe(), error = %err, "endpoint failed");
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.unwrap_or(ImageError::NoEndpoint { reference: name }))
    }

    async fn resolve_on(
        &self,
        name: &str,
        image_ref: &ImageRef,
        endpoint: Endpoint,
        progress: &Progress,
    ) -> Result<Resolved, ImageError> {
        let registry_err = |source| ImageError::Registry {
            reference: name.to_owned(),
            source: Box::new(source),
        };
        let manifest_err = |source| ImageError::Manifest {
            reference: name.to_owned(),
            source,
        };
        let client = &self.inner.client;
        let (body, content_type) = client
            .fetch_manifest(
                &endpoint,
                &image_ref.repository,
                &image_ref.manifest_reference(),
            )
            .await
            .map_err(registry_err)?;
        progress.touch();
        let top_digest = Digest::of(&body);
        if let Some(expected) = &image_ref.digest {
            verify_digest(name, "manifest", expected, &top_digest)?;
        }
        let mut blobs = vec![(top_digest.clone(), body.clone())];
        let (manifest_digest, manifest) =
            match parse_manifest(&top_digest, content_type.as_deref(), &body)
                .map_err(manifest_err)?
            {
                Fetched::Manifest(manifest) => (top_digest.clone(), manifest),
                Fetched::Index(index) => {
                    let child = choose_platform(&top_digest, &index, &Platform::host())
                        .map_err(manifest_err)?
                        .clone();
                    let (child_body, child_type) = client
                        .fetch_manifest(&endpoint, &image_ref.repository, child.digest.as_str())
                        .await
                        .map_err(registry_err)?;
                    progress.touch();
                    verify_blob(name, "manifest", &child, &child_body)?;
                    blobs.push((child.digest.clone(), child_body.clone()));
                    match parse_manifest(&child.digest, child_type.as_deref(), &child_body)
                        .map_err(manifest_err)?
                    {
                        Fetched::Manifest(manifest) => (child.digest.clone(), manifest),
                        Fetched::Index(_) => {
                            return Err(manifest_err(
                                crate::manifest::ManifestError::UnsupportedMediaType {
                                    digest: child.digest.clone(),
                                    media_type: "nested index".to_owned(),
                                },
                            ));
                        }
                    }
                }
            };
        Ok(Resolved {
            endpoints: vec![endpoint],
            top_digest,
            manifest_digest,
            manifest,
            blobs,
        })
    }

    /// The config blob, from the store when already there, else from the registry.
    async fn fetch_config(
        &self,
        name: &str,
        endpoints: &[Endpoint],
        image_ref: &ImageRef,
        desc: &Descriptor,
        progress: &Progress,
    ) -> Result<Bytes, ImageError> {
        if let Some(bytes) = self.inner.layout.read_blob(&desc.digest) {
            return Ok(Bytes::from(bytes));
        }
        if desc.size > MAX_CONFIG_BYTES {
            return Err(ImageError::SizeMismatch {
                reference: name.to_owned(),
                what: "config",
                digest: desc.digest.clone(),
                expected: MAX_CONFIG_BYTES,
                actual: desc.size,
            });
        }
        let registry_err = |source| ImageError::Registry {
            reference: name.to_owned(),
            source: Box::new(source),
        };
        let mut response = self
            .fetch_blob_anywhere(name, endpoints, &image_ref.repository, &desc.digest)
            .await?;
        let mut bytes = Vec::new();
        while let Some(frame) = response.body.frame().await {
            let frame = frame.map_err(|source| {
                registry_err(crate::registry::RegistryError::Body {
                    url: response.url.clone(),
                    source,
                })
            })?;
            progress.touch();
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() as u64 > desc.size {
                    break;
                }
            }
        }
        verify_blob(name, "config", desc, &bytes)?;
        Ok(Bytes::from(bytes))
    }

    /// Downloads and unpacks one layer into `staging/<chain-id>/fs`.
    #[allow(clippy::too_many_arguments)]
    async fn stage_layer(
        &self,
        name: &str,
        endpoints: &[Endpoint],
        repository: &str,
        job: LayerJob,
        staging: Arc<Staging>,
        progress: &Progress,
    ) -> Result<UnpackStats, ImageError> {
        let queued = progress.waiting();
        let _slot = self
            .inner
            .download_slots
            .acquire()
            .await
            .map_err(|_| ImageError::Task {
                reference: name.to_owned(),
                digest: job.layer.digest.clone(),
                reason: "download slots closed".to_owned(),
            })?;
        let _active = progress.downloading();
        drop(queued);
        progress.touch();
        let fs_dir = staging.0.join(job.chain_id.hex()).join("fs");
        std::fs::create_dir_all(&fs_dir).map_err(ImageError::io("create", &fs_dir))?;
        self.download_and_unpack(
            name, endpoints, repository, &job, &fs_dir, &staging, progress,
        )
        .await
    }

    /// Renames the staged layers into `snapshots/`, bottom first, each after its
    /// implied directories took their attributes from the layers below.
    fn commit_layers(
        &self,
        name: &str,
        chain: &[Digest],
        missing: &[usize],
        staged: &[UnpackStats],
        staging: &Staging,
        created: &Mutex<Vec<Digest>>,
    ) -> Result<(), ImageError> {
        let layout = &self.inner.layout;
        for (&i, stats) in missing.iter().zip(staged) {
            let layer_dir = staging.0.join(chain[i].hex());
            let fs_dir = layer_dir.join("fs");
            // Every lower layer is committed by now (this loop goes bottom up).
            let lowers: Vec<PathBuf> = chain[..i]
                .iter()
                .rev()
                .map(|lower| layout.snapshot_fs(lower))
                .collect();
            copy_up_implied_dirs(&fs_dir, &stats.implied_dirs, &lowers).map_err(|source| {
                ImageError::Unpack {
                    reference: name.to_owned(),
                    digest: chain[i].clone(),
                    source,
                }
            })?;
            let target = layout.snapshot(&chain[i]);
            if rename_into_place(&layer_dir, &target)
                .map_err(ImageError::io("commit snapshot", &target))?
            {
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(chain[i].clone());
            }
        }
        Ok(())
    }

    /// The blob's response from the first endpoint that answers.
    async fn fetch_blob_anywhere(
        &self,
        name: &str,
        endpoints: &[Endpoint],
        repository: &str,
        digest: &Digest,
    ) -> Result<crate::registry::BlobResponse, ImageError> {
        let mut last_error = None;
        for endpoint in endpoints {
            match self
                .inner
                .client
                .fetch_blob(endpoint, repository, digest)
                .await
            {
                Ok(response) => return Ok(response),
                Err(err) => {
                    tracing::info!(reference = name, %digest, endpoint = %endpoint.describe(), error = %err, "blob fetch failed");
                    last_error = Some(err);
                }
            }
        }
        Err(ImageError::Registry {
            reference: name.to_owned(),
            source: Box::new(last_error.unwrap_or_else(|| {
                crate::registry::RegistryError::NotFound {
                    url: format!("blob {digest}"),
                }
            })),
        })
    }

    /// Streams the blob into the unpacker, checking size and digest as bytes flow
    /// and the diff id when the stream ends.
    #[allow(clippy::too_many_arguments)]
    async fn download_and_unpack(
        &self,
        name: &str,
        endpoints: &[Endpoint],
        repository: &str,
        job: &LayerJob,
        fs_dir: &Path,
        staging: &Arc<Staging>,
        progress: &Progress,
    ) -> Result<UnpackStats, ImageError> {
        let digest = job.layer.digest.clone();
        let registry_err = |source| ImageError::Registry {
            reference: name.to_owned(),
            source: Box::new(source),
        };
        let mut response = self
            .fetch_blob_anywhere(name, endpoints, repository, &digest)
            .await?;
        progress.touch();

        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_DEPTH);
        let unpacker = spawn_unpacker(job.compression, rx, fs_dir.to_owned(), Arc::clone(staging));

        let mut hasher = Hasher::new();
        let mut received: u64 = 0;
        let mut stream_error = None;
        let mut unpacker_gone = false;
        while let Some(frame) = response.body.frame().await {
            let data = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Err(source) => {
                    stream_error = Some(registry_err(crate::registry::RegistryError::Body {
                        url: response.url.clone(),
                        source,
                    }));
                    break;
                }
            };
            progress.touch();
            received += data.len() as u64;
            if received > job.layer.size {
                break;
            }
            hasher.update(&data);
            if !unpacker_gone && tx.send(data).await.is_err() {
                // The unpacker stopped early. Keep hashing: a corrupt blob is better
                // reported as a digest mismatch than as the garbage it unpacks to.
                unpacker_gone = true;
            }
        }
        drop(tx);
        let unpacked = unpacker.await;
        if let Some(err) = stream_error {
            return Err(err);
        }
        if received != job.layer.size {
            return Err(ImageError::SizeMismatch {
                reference: name.to_owned(),
                what: "layer",
                digest,
                expected: job.layer.size,
                actual: received,
            });
        }
        verify_digest(name, "layer", &digest, &hasher.finish())?;
        let (diff_id, stats) = match unpacked {
            Ok(Ok(done)) => done,
            Ok(Err(UnpackFailure::Unpack(source))) => {
                return Err(ImageError::Unpack {
                    reference: name.to_owned(),
                    digest,
                    source,
                });
            }
            Ok(Err(UnpackFailure::Decompress(source))) => {
                return Err(ImageError::Decompress {
                    reference: name.to_owned(),
                    digest,
                    source,
                });
            }
            Err(join) => {
                return Err(ImageError::Task {
                    reference: name.to_owned(),
                    digest,
                    reason: join.to_string(),
                });
            }
        };
        if diff_id != job.diff_id {
            return Err(ImageError::DiffIdMismatch {
                reference: name.to_owned(),
                digest,
                expected: job.diff_id.clone(),
                actual: diff_id,
            });
        }
        Ok(stats)
    }
}

struct LayerJob {
    layer: Descriptor,
    compression: Compression,
    diff_id: Digest,
    chain_id: Digest,
}

enum UnpackFailure {
    Unpack(crate::unpack::UnpackError),
    Decompress(io::Error),
}

/// Decompression, diff-id hashing and untar on a blocking thread, fed chunk by
/// chunk as the download proceeds.
fn spawn_unpacker(
    compression: Compression,
    rx: mpsc::Receiver<Bytes>,
    fs_dir: PathBuf,
    staging: Arc<Staging>,
) -> tokio::task::JoinHandle<Result<(Digest, crate::unpack::UnpackStats), UnpackFailure>> {
    tokio::task::spawn_blocking(move || {
        let _keep_staging = staging;
        let reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        let decompressed = decompressor(compression, reader).map_err(UnpackFailure::Decompress)?;
        let mut hashing = HashingReader::new(decompressed);
        let stats = unpack_layer(&mut hashing, &fs_dir).map_err(|err| match err {
            crate::unpack::UnpackError::Tar(source) => UnpackFailure::Decompress(source),
            other => UnpackFailure::Unpack(other),
        })?;
        let (diff_id, _bytes) = hashing
            .drain_and_finish()
            .map_err(UnpackFailure::Decompress)?;
        Ok((diff_id, stats))
    })
}

/// Reads the chunks sent by the download task; EOF when it hangs up.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

fn verify_digest(
    name: &str,
    what: &'static str,
    expected: &Digest,
    actual: &Digest,
) -> Result<(), ImageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            reference: name.to_owned(),
            what,
            expected: expected.clone(),
            actual: actual.clone(),
        })
    }
}

fn verify_blob(
    name: &str,
    what: &'static str,
    desc: &Descriptor,
    bytes: &[u8],
) -> Result<(), ImageError> {
    if bytes.len() as u64 != desc.size {
        return Err(ImageError::SizeMismatch {
            reference: name.to_owned(),
            what,
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    verify_digest(name, what, &desc.digest, &Digest::of(bytes))
}
