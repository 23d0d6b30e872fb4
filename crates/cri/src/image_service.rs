//! `runtime.v1.ImageService`: answered UNIMPLEMENTED, by name, until the image
//! service lands.

use k8s_cri::v1::{self, image_service_server::ImageService};
use tonic::{Request, Response, Status};

use crate::error::CriError;
use crate::service::CriService;

type Rpc<T> = Result<Response<T>, Status>;

fn unimplemented<T>(rpc: &'static str) -> Rpc<T> {
    Err(CriError::unimplemented(rpc).into())
}

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        _request: Request<v1::ListImagesRequest>,
    ) -> Rpc<v1::ListImagesResponse> {
        unimplemented("ListImages")
    }

    async fn image_status(
        &self,
        _request: Request<v1::ImageStatusRequest>,
    ) -> Rpc<v1::ImageStatusResponse> {
        unimplemented("ImageStatus")
    }

    async fn pull_image(
        &self,
        _request: Request<v1::PullImageRequest>,
    ) -> Rpc<v1::PullImageResponse> {
        unimplemented("PullImage")
    }

    async fn remove_image(
        &self,
        _request: Request<v1::RemoveImageRequest>,
    ) -> Rpc<v1::RemoveImageResponse> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(
        &self,
        _request: Request<v1::ImageFsInfoRequest>,
    ) -> Rpc<v1::ImageFsInfoResponse> {
        unimplemented("ImageFsInfo")
    }
}
