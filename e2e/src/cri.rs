//! The CRI calls the tests make again and again, as methods of [`Daemon`]: each opens
//! a client on the daemon's socket, sends one request, and returns the reply or the
//! gRPC status for the test to judge.

use k8s_cri::v1;
use tonic::Status;

use crate::Daemon;

fn image_spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn connect_error(err: anyhow::Error) -> Status {
    Status::unavailable(format!("connect to coracled: {err:#}"))
}

impl Daemon {
    pub async fn run_pod(&self, config: v1::PodSandboxConfig) -> Result<String, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(client
            .run_pod_sandbox(request)
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Verbose, so tests can read the info map too.
    pub async fn pod_status(&self, id: &str) -> Result<v1::PodSandboxStatusResponse, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        Ok(client.pod_sandbox_status(request).await?.into_inner())
    }

    pub async fn stop_pod(&self, id: &str) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        client.stop_pod_sandbox(request).await.map(drop)
    }

    pub async fn remove_pod(&self, id: &str) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        client.remove_pod_sandbox(request).await.map(drop)
    }

    pub async fn list_pods(&self) -> Result<Vec<v1::PodSandbox>, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ListPodSandboxRequest::default();
        Ok(client.list_pod_sandbox(request).await?.into_inner().items)
    }

    pub async fn list_pod_ids(&self) -> Result<Vec<String>, Status> {
        Ok(self
            .list_pods()
            .await?
            .into_iter()
            .map(|pod| pod.id)
            .collect())
    }

    /// The runtime condition of type `kind` ("RuntimeReady", "NetworkReady").
    pub async fn condition(&self, kind: &str) -> Result<v1::RuntimeCondition, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let status = client.status(v1::StatusRequest { verbose: false }).await?;
        status
            .into_inner()
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|condition| condition.r#type == kind)
            .ok_or_else(|| Status::not_found(format!("no {kind} condition")))
    }

    /// Returns the image ref (the image id) the daemon answers.
    pub async fn pull_image(&self, image: &str) -> Result<String, Status> {
        let mut client = self.image_client().await.map_err(connect_error)?;
        let request = v1::PullImageRequest {
            image: image_spec(image),
            ..Default::default()
        };
        Ok(client.pull_image(request).await?.into_inner().image_ref)
    }

    /// Verbose, so tests can read the info map too.
    pub async fn image_status(&self, image: &str) -> Result<v1::ImageStatusResponse, Status> {
        let mut client = self.image_client().await.map_err(connect_error)?;
        let request = v1::ImageStatusRequest {
            image: image_spec(image),
            verbose: true,
        };
        Ok(client.image_status(request).await?.into_inner())
    }

    pub async fn remove_image(&self, image: &str) -> Result<(), Status> {
        let mut client = self.image_client().await.map_err(connect_error)?;
        let request = v1::RemoveImageRequest {
            image: image_spec(image),
        };
        client.remove_image(request).await.map(drop)
    }

    pub async fn list_images(&self) -> Result<Vec<v1::Image>, Status> {
        let mut client = self.image_client().await.map_err(connect_error)?;
        let request = v1::ListImagesRequest::default();
        Ok(client.list_images(request).await?.into_inner().images)
    }
}
