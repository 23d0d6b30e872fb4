//! `runtime.v1.ImageService`: pull, list, status, remove and filesystem usage, over
//! the runtime's image store (crates/image).

use std::collections::HashMap;

use coracle_image::{Credentials, Image as StoredImage, ImageError};
use k8s_cri::v1::{self, image_service_server::ImageService};
use tonic::{Request, Response, Status};

use crate::error::CriError;
use crate::service::CriService;

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        request: Request<v1::ListImagesRequest>,
    ) -> Rpc<v1::ListImagesResponse> {
        let wanted = request
            .get_ref()
            .filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|spec| spec.image.as_str())
            .filter(|image| !image.is_empty());
        let images = self.runtime.images();
        let mut found: Vec<StoredImage> = match wanted {
            Some(reference) => images.status(reference).into_iter().collect(),
            None => images.list(),
        };
        found.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(Response::new(v1::ListImagesResponse {
            images: found.iter().map(image_to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<v1::ImageStatusRequest>,
    ) -> Rpc<v1::ImageStatusResponse> {
        let request = request.into_inner();
        let reference = required_image(request.image.as_ref())?;
        // An unknown image is not an error: the CRI wants an empty status.
        let Some(image) = self.runtime.images().status(reference) else {
            return Ok(Response::new(v1::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if request.verbose {
            info.insert("info".to_owned(), verbose_info(self, &image).to_string());
        }
        Ok(Response::new(v1::ImageStatusResponse {
            image: Some(image_to_cri(&image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Rpc<v1::PullImageResponse> {
        let request = request.into_inner();
        let reference = required_image(request.image.as_ref())?.to_owned();
        let credentials = request.auth.map(credentials_from_cri);
        let started = std::time::Instant::now();
        let pulled = self.runtime.images().pull(&reference, credentials).await;
        self.metrics.record_pull(started.elapsed(), pulled.is_ok());
        let image = pulled.map_err(image_error)?;
        Ok(Response::new(v1::PullImageResponse {
            image_ref: image.id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<v1::RemoveImageRequest>,
    ) -> Rpc<v1::RemoveImageResponse> {
        let request = request.into_inner();
        let reference = required_image(request.image.as_ref())?.to_owned();
        let images = self.runtime.images().clone();
        // Removing an image that is already gone succeeds: the call is idempotent.
        tokio::task::spawn_blocking(move || images.remove(&reference))
            .await
            .map_err(CriError::from)?
            .map_err(image_error)?;
        Ok(Response::new(v1::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<v1::ImageFsInfoRequest>,
    ) -> Rpc<v1::ImageFsInfoResponse> {
        let images = self.runtime.images().clone();
        let info = tokio::task::spawn_blocking(move || images.fs_info())
            .await
            .map_err(CriError::from)?;
        let usage = |path: &std::path::Path, used: &coracle_image::FsUsage| v1::FilesystemUsage {
            timestamp: coracle_runtime::now_nanos(),
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: path.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(v1::UInt64Value { value: used.bytes }),
            inodes_used: Some(v1::UInt64Value { value: used.inodes }),
        };
        Ok(Response::new(v1::ImageFsInfoResponse {
            image_filesystems: vec![usage(&info.root, &info.images)],
            container_filesystems: vec![usage(&info.root, &info.containers)],
        }))
    }
}

fn required_image(spec: Option<&v1::ImageSpec>) -> Result<&str, CriError> {
    spec.map(|s| s.image.as_str())
        .filter(|image| !image.is_empty())
        .ok_or(CriError::InvalidArgument {
            field: "image.image",
            reason: "must name an image".into(),
        })
}

fn credentials_from_cri(auth: v1::AuthConfig) -> Credentials {
    let some = |value: String| (!value.is_empty()).then_some(value);
    Credentials {
        username: some(auth.username),
        password: some(auth.password),
        auth: some(auth.auth),
        identity_token: some(auth.identity_token),
        registry_token: some(auth.registry_token),
    }
}

/// The image's USER as kubelet wants it: a numeric uid, or a name to resolve later.
fn image_user(user: Option<&str>) -> (Option<v1::Int64Value>, String) {
    let user = user.unwrap_or_default();
    let name = user.split(':').next().unwrap_or_default();
    match name.parse::<i64>() {
        Ok(uid) => (Some(v1::Int64Value { value: uid }), String::new()),
        Err(_) => (None, name.to_owned()),
    }
}

fn image_to_cri(image: &StoredImage) -> v1::Image {
    let (uid, username) = image_user(image.config.user.as_deref());
    v1::Image {
        id: image.id.to_string(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(v1::ImageSpec {
            image: image.id.to_string(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// What `crictl inspecti` shows: the image config as stored, and the layer chain.
fn verbose_info(service: &CriService, image: &StoredImage) -> serde_json::Value {
    let config = service
        .runtime
        .images()
        .config_json(&image.id)
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "imageSpec": config,
        "manifestDigest": image.manifest_digest.to_string(),
        "chainIDs": image.chain_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn image_error(err: ImageError) -> Status {
    CriError::Image(Box::new(err)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_user_is_a_uid_or_a_name() {
        assert_eq!(image_user(Some("1234")).0.unwrap().value, 1234);
        assert_eq!(image_user(Some("1234:5678")).0.unwrap().value, 1234);
        assert_eq!(image_user(Some("coracle")), (None, "coracle".into()));
        assert_eq!(image_user(Some("coracle:extra")), (None, "coracle".into()));
        assert_eq!(image_user(None), (None, String::new()));
    }

    #[test]
    fn empty_auth_fields_are_absent() {
        let credentials = credentials_from_cri(v1::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        });
        assert_eq!(credentials.username.as_deref(), Some("u"));
        assert!(credentials.registry_token.is_none());
    }
}
