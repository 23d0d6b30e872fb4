//! Pulling: resolve the reference on the first endpoint that answers, pick the
//! platform, fetch and verify the config, then stream every missing layer (bounded
//! parallelism) through digest check, decompression, diff-id check and the unpacker
//! into a staging dir; a snapshot is renamed into place only once both digests match,
//! and the image record is written last. A pull that fails or is cancelled removes
//! the snapshots it committed unless another image or pull uses them. The layers
//! themselves are `layer.rs`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::config::Credentials;
use crate::digest::{Digest, chain_ids};
use crate::error::ImageError;
use crate::fsutil;
use crate::layer::{LayerJob, Staging};
use crate::manifest::{
    Descriptor, Fetched, Manifest, Platform, choose_platform, layer_compression, parse_config,
    parse_manifest,
};
use crate::progress::{Progress, with_progress_timeout};
use crate::reference::ImageRef;
use crate::registry::{Endpoint, endpoints};
use crate::store::Image;
use crate::{ImageStore, Inner};

const MAX_CONFIG_BYTES: u64 = 64 << 20;

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
        let referenced = self.inner.referenced_snapshots(&inflight);
        for chain_id in created {
            if !referenced.contains(&chain_id) {
                if let Err(err) = self.inner.layout.delete_snapshot(&chain_id) {
                    tracing::warn!(%chain_id, error = %err, "rolling back a failed pull's snapshot");
                }
            }
        }
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
        // A re-pull of layers already here has nothing to make durable or commit.
        if !missing.is_empty() {
            // Durable before visible under their names.
            self.inner.sync_dir_fs(&staging.0);
            self.commit_layers(&name, &chain, &missing, &staged, &staging, &guard.created)?;
        }
        drop(layer_guards);

        for (digest, bytes) in &resolved.blobs {
            self.inner.layout.save_blob(digest, bytes)?;
        }
        self.inner
            .layout
            .save_blob(&config_desc.digest, &config_bytes)?;
        // Sizes come from the registry; layers already here were never downloaded
        // to check them, so a hostile value must not overflow.
        let size = resolved
            .manifest
            .layers
            .iter()
            .fold(resolved.manifest.config.size, |sum, l| {
                sum.saturating_add(l.size)
            });
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
                self.inner.client.count_blob_bytes(data.len());
                bytes.extend_from_slice(&data);
                if bytes.len() as u64 > desc.size {
                    break;
                }
            }
        }
        verify_blob(name, "config", desc, &bytes)?;
        Ok(Bytes::from(bytes))
    }
}

pub(crate) fn verify_digest(
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

pub(crate) fn verify_blob(
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
