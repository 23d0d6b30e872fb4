//! One layer's way in: the blob streams from the registry through the compressed
//! digest check, the decompressor, the diff-id hash and the unpacker (on a blocking
//! thread) into a staging dir; verified layers are committed bottom first.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::ImageStore;
use crate::decompress::decompressor;
use crate::digest::{Digest, Hasher, HashingReader};
use crate::error::ImageError;
use crate::fsutil::{self, rename_into_place};
use crate::manifest::{Compression, Descriptor};
use crate::progress::Progress;
use crate::pull::verify_digest;
use crate::registry::Endpoint;
use crate::unpack::{UnpackStats, copy_up_implied_dirs, unpack_layer};

/// Chunks in flight between the download and the unpacker (each is one HTTP frame).
const STREAM_DEPTH: usize = 64;

/// A staging directory removed when the last holder (the pull or an unpack thread
/// still winding down) lets go.
pub(crate) struct Staging(pub(crate) PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fsutil::remove_tree(&self.0);
    }
}
impl ImageStore {
    /// Downloads and unpacks one layer into `staging/<chain-id>/fs`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn stage_layer(
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
    pub(crate) fn commit_layers(
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
    pub(crate) async fn fetch_blob_anywhere(
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
            self.inner.client.count_blob_bytes(data.len());
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

pub(crate) struct LayerJob {
    pub(crate) layer: Descriptor,
    pub(crate) compression: Compression,
    pub(crate) diff_id: Digest,
    pub(crate) chain_id: Digest,
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
