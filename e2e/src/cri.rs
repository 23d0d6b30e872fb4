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

/// Containers.
impl Daemon {
    pub async fn create_container(
        &self,
        pod_id: &str,
        config: v1::ContainerConfig,
        pod_config: &v1::PodSandboxConfig,
    ) -> Result<String, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        };
        Ok(client
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::StartContainerRequest {
            container_id: id.into(),
        };
        client.start_container(request).await.map(drop)
    }

    pub async fn stop_container(&self, id: &str, timeout_seconds: i64) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_seconds,
        };
        client.stop_container(request).await.map(drop)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::RemoveContainerRequest {
            container_id: id.into(),
        };
        client.remove_container(request).await.map(drop)
    }

    /// Verbose, so tests can read the info map too.
    pub async fn container_status(&self, id: &str) -> Result<v1::ContainerStatusResponse, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        Ok(client.container_status(request).await?.into_inner())
    }

    /// The status alone (panics on a missing status, which the CRI never allows).
    pub async fn container_state(&self, id: &str) -> Result<v1::ContainerStatus, Status> {
        self.container_status(id)
            .await?
            .status
            .ok_or_else(|| Status::internal("ContainerStatus without a status"))
    }

    pub async fn list_containers(
        &self,
        filter: Option<v1::ContainerFilter>,
    ) -> Result<Vec<v1::Container>, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ListContainersRequest { filter };
        Ok(client
            .list_containers(request)
            .await?
            .into_inner()
            .containers)
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_seconds: i64,
    ) -> Result<v1::ExecSyncResponse, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_seconds,
        };
        Ok(client.exec_sync(request).await?.into_inner())
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ReopenContainerLogRequest {
            container_id: id.into(),
        };
        client.reopen_container_log(request).await.map(drop)
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        linux: v1::LinuxContainerResources,
    ) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(linux),
            ..Default::default()
        };
        client.update_container_resources(request).await.map(drop)
    }

    /// Polls ContainerStatus until the container has exited, up to `timeout`.
    pub async fn wait_container_exited(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<v1::ContainerStatus, Status> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let status = self.container_state(id).await?;
            if status.state == v1::ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if std::time::Instant::now() > deadline {
                return Err(Status::deadline_exceeded(format!(
                    "container {id} still in state {} after {timeout:?}",
                    status.state
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn container_stats(&self, id: &str) -> Result<v1::ContainerStats, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ContainerStatsRequest {
            container_id: id.into(),
        };
        let stats = client.container_stats(request).await?.into_inner().stats;
        stats.ok_or_else(|| Status::internal("ContainerStats answered without stats"))
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<v1::ContainerStatsFilter>,
    ) -> Result<Vec<v1::ContainerStats>, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ListContainerStatsRequest { filter };
        Ok(client
            .list_container_stats(request)
            .await?
            .into_inner()
            .stats)
    }

    pub async fn pod_stats(&self, id: &str) -> Result<v1::PodSandboxStats, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::PodSandboxStatsRequest {
            pod_sandbox_id: id.into(),
        };
        let stats = client.pod_sandbox_stats(request).await?.into_inner().stats;
        stats.ok_or_else(|| Status::internal("PodSandboxStats answered without stats"))
    }

    pub async fn list_pod_stats(
        &self,
        filter: Option<v1::PodSandboxStatsFilter>,
    ) -> Result<Vec<v1::PodSandboxStats>, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::ListPodSandboxStatsRequest { filter };
        Ok(client
            .list_pod_sandbox_stats(request)
            .await?
            .into_inner()
            .stats)
    }

    /// A GetContainerEvents subscription.
    pub async fn container_events(
        &self,
    ) -> Result<tonic::Streaming<v1::ContainerEventResponse>, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        Ok(client
            .get_container_events(v1::GetEventsRequest {})
            .await?
            .into_inner())
    }

    /// UpdateRuntimeConfig with kubelet's pod CIDR.
    pub async fn update_pod_cidr(&self, pod_cidr: &str) -> Result<(), Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::UpdateRuntimeConfigRequest {
            runtime_config: Some(v1::RuntimeConfig {
                network_config: Some(v1::NetworkConfig {
                    pod_cidr: pod_cidr.into(),
                }),
            }),
        };
        client.update_runtime_config(request).await?;
        Ok(())
    }

    /// The `info` map of a verbose Status (what `crictl info` prints).
    pub async fn status_info(&self) -> Result<std::collections::HashMap<String, String>, Status> {
        let mut client = self.runtime_client().await.map_err(connect_error)?;
        let request = v1::StatusRequest { verbose: true };
        Ok(client.status(request).await?.into_inner().info)
    }
}
