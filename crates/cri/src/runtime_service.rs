//! `runtime.v1.RuntimeService`: each RPC delegates to the module named after it;
//! RPCs whose issue has not landed yet answer UNIMPLEMENTED with their name.

use std::pin::Pin;

use k8s_cri::v1::{self, runtime_service_server::RuntimeService};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api_version::api_version_of;
use crate::error::CriError;
use crate::service::CriService;
use crate::version;

type Rpc<T> = Result<Response<T>, Status>;

fn unimplemented<T>(rpc: &'static str) -> Rpc<T> {
    Err(CriError::unimplemented(rpc).into())
}

fn required_id<'a>(field: &'static str, id: &'a str) -> Result<&'a str, CriError> {
    if id.is_empty() {
        return Err(CriError::InvalidArgument {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(id)
}

#[tonic::async_trait]
impl RuntimeService for CriService {
    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>>;

    async fn version(&self, request: Request<v1::VersionRequest>) -> Rpc<v1::VersionResponse> {
        Ok(Response::new(version::version(api_version_of(&request))))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<v1::RunPodSandboxRequest>,
    ) -> Rpc<v1::RunPodSandboxResponse> {
        let pod_sandbox_id = self.run_pod_sandbox(request.into_inner()).await?;
        Ok(Response::new(v1::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<v1::StopPodSandboxRequest>,
    ) -> Rpc<v1::StopPodSandboxResponse> {
        let id = required_id("pod_sandbox_id", &request.get_ref().pod_sandbox_id)?;
        let (runtime, id) = (self.runtime.clone(), id.to_owned());
        // Run to completion even if the call is cancelled: see run_pod_sandbox.
        tokio::spawn(async move { runtime.stop_pod(&id).await })
            .await
            .map_err(CriError::from)?
            .map_err(CriError::from)?;
        Ok(Response::new(v1::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<v1::RemovePodSandboxRequest>,
    ) -> Rpc<v1::RemovePodSandboxResponse> {
        let id = required_id("pod_sandbox_id", &request.get_ref().pod_sandbox_id)?;
        let (runtime, id) = (self.runtime.clone(), id.to_owned());
        tokio::spawn(async move { runtime.remove_pod(&id).await })
            .await
            .map_err(CriError::from)?
            .map_err(CriError::from)?;
        Ok(Response::new(v1::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<v1::PodSandboxStatusRequest>,
    ) -> Rpc<v1::PodSandboxStatusResponse> {
        let request = request.get_ref();
        let id = required_id("pod_sandbox_id", &request.pod_sandbox_id)?;
        Ok(Response::new(self.pod_sandbox_status(id, request.verbose)?))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<v1::ListPodSandboxRequest>,
    ) -> Rpc<v1::ListPodSandboxResponse> {
        let items = self.list_pod_sandboxes(request.get_ref().filter.as_ref());
        Ok(Response::new(v1::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        _request: Request<v1::CreateContainerRequest>,
    ) -> Rpc<v1::CreateContainerResponse> {
        unimplemented("CreateContainer")
    }

    async fn start_container(
        &self,
        _request: Request<v1::StartContainerRequest>,
    ) -> Rpc<v1::StartContainerResponse> {
        unimplemented("StartContainer")
    }

    async fn stop_container(
        &self,
        _request: Request<v1::StopContainerRequest>,
    ) -> Rpc<v1::StopContainerResponse> {
        unimplemented("StopContainer")
    }

    async fn remove_container(
        &self,
        _request: Request<v1::RemoveContainerRequest>,
    ) -> Rpc<v1::RemoveContainerResponse> {
        unimplemented("RemoveContainer")
    }

    async fn list_containers(
        &self,
        request: Request<v1::ListContainersRequest>,
    ) -> Rpc<v1::ListContainersResponse> {
        let containers = self.list_containers(request.get_ref().filter.as_ref());
        Ok(Response::new(v1::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        _request: Request<v1::ContainerStatusRequest>,
    ) -> Rpc<v1::ContainerStatusResponse> {
        unimplemented("ContainerStatus")
    }

    async fn update_container_resources(
        &self,
        _request: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Rpc<v1::UpdateContainerResourcesResponse> {
        unimplemented("UpdateContainerResources")
    }

    async fn reopen_container_log(
        &self,
        _request: Request<v1::ReopenContainerLogRequest>,
    ) -> Rpc<v1::ReopenContainerLogResponse> {
        unimplemented("ReopenContainerLog")
    }

    async fn exec_sync(&self, _request: Request<v1::ExecSyncRequest>) -> Rpc<v1::ExecSyncResponse> {
        unimplemented("ExecSync")
    }

    async fn exec(&self, _request: Request<v1::ExecRequest>) -> Rpc<v1::ExecResponse> {
        unimplemented("Exec")
    }

    async fn attach(&self, _request: Request<v1::AttachRequest>) -> Rpc<v1::AttachResponse> {
        unimplemented("Attach")
    }

    async fn port_forward(
        &self,
        _request: Request<v1::PortForwardRequest>,
    ) -> Rpc<v1::PortForwardResponse> {
        unimplemented("PortForward")
    }

    async fn container_stats(
        &self,
        _request: Request<v1::ContainerStatsRequest>,
    ) -> Rpc<v1::ContainerStatsResponse> {
        unimplemented("ContainerStats")
    }

    async fn list_container_stats(
        &self,
        _request: Request<v1::ListContainerStatsRequest>,
    ) -> Rpc<v1::ListContainerStatsResponse> {
        unimplemented("ListContainerStats")
    }

    async fn pod_sandbox_stats(
        &self,
        _request: Request<v1::PodSandboxStatsRequest>,
    ) -> Rpc<v1::PodSandboxStatsResponse> {
        unimplemented("PodSandboxStats")
    }

    async fn list_pod_sandbox_stats(
        &self,
        _request: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Rpc<v1::ListPodSandboxStatsResponse> {
        unimplemented("ListPodSandboxStats")
    }

    async fn update_runtime_config(
        &self,
        _request: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Rpc<v1::UpdateRuntimeConfigResponse> {
        unimplemented("UpdateRuntimeConfig")
    }

    async fn status(&self, request: Request<v1::StatusRequest>) -> Rpc<v1::StatusResponse> {
        Ok(Response::new(self.status(request.get_ref().verbose).await))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<v1::CheckpointContainerRequest>,
    ) -> Rpc<v1::CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    async fn get_container_events(
        &self,
        _request: Request<v1::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        unimplemented("GetContainerEvents")
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Rpc<v1::ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Rpc<v1::ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }

    async fn runtime_config(
        &self,
        _request: Request<v1::RuntimeConfigRequest>,
    ) -> Rpc<v1::RuntimeConfigResponse> {
        Ok(Response::new(self.runtime_config()))
    }
}
