//! `runtime.v1.RuntimeService`: each RPC delegates to the module named after it;
//! RPCs whose issue has not landed yet answer UNIMPLEMENTED with their name.

use k8s_cri::v1::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use std::time::Duration;

use crate::api_version::api_version_of;
use crate::container_create::{
    check_privileged_allowed, container_config_to_spec, linux_resources_from_cri,
    merge_resources_update,
};
use crate::container_status::{StatusExtras, container_status_to_cri};
use crate::error::CriError;
use crate::service::CriService;
use crate::version;
use crate::{events, pod_metrics, stats, translate};

type Rpc<T> = Result<Response<T>, Status>;

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
    type GetContainerEventsStream = events::EventStream;

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
        request: Request<v1::CreateContainerRequest>,
    ) -> Rpc<v1::CreateContainerResponse> {
        let request = request.into_inner();
        let pod_id = required_id("pod_sandbox_id", &request.pod_sandbox_id)?.to_owned();
        let config = request.config.ok_or(CriError::InvalidArgument {
            field: "config",
            reason: "must be set".into(),
        })?;
        check_privileged_allowed(&config, request.sandbox_config.as_ref())?;
        let spec = container_config_to_spec(&config)?;
        let runtime = self.runtime.clone();
        // Run to completion even if kubelet gives up: a repeat finds the container.
        let container_id =
            tokio::spawn(async move { runtime.create_container(&pod_id, spec).await })
                .await
                .map_err(CriError::from)?
                .map_err(CriError::from)?;
        Ok(Response::new(v1::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<v1::StartContainerRequest>,
    ) -> Rpc<v1::StartContainerResponse> {
        let id = required_id("container_id", &request.get_ref().container_id)?.to_owned();
        let runtime = self.runtime.clone();
        tokio::spawn(async move { runtime.start_container(&id).await })
            .await
            .map_err(CriError::from)?
            .map_err(CriError::from)?;
        Ok(Response::new(v1::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<v1::StopContainerRequest>,
    ) -> Rpc<v1::StopContainerResponse> {
        let request = request.into_inner();
        let id = required_id("container_id", &request.container_id)?.to_owned();
        let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        let runtime = self.runtime.clone();
        tokio::spawn(async move { runtime.stop_container(&id, timeout).await })
            .await
            .map_err(CriError::from)?
            .map_err(CriError::from)?;
        Ok(Response::new(v1::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<v1::RemoveContainerRequest>,
    ) -> Rpc<v1::RemoveContainerResponse> {
        let id = required_id("container_id", &request.get_ref().container_id)?.to_owned();
        let runtime = self.runtime.clone();
        tokio::spawn(async move { runtime.remove_container(&id).await })
            .await
            .map_err(CriError::from)?
            .map_err(CriError::from)?;
        Ok(Response::new(v1::RemoveContainerResponse {}))
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
        request: Request<v1::ContainerStatusRequest>,
    ) -> Rpc<v1::ContainerStatusResponse> {
        let request = request.get_ref();
        let id = required_id("container_id", &request.container_id)?;
        let record = self
            .runtime
            .existing_container(id)
            .map_err(CriError::from)?;
        let mut extras = StatusExtras::from_record(&record);
        if request.verbose {
            extras.runtime_spec = self.runtime.container_runtime_spec(id).await.ok();
        }
        Ok(Response::new(container_status_to_cri(
            &record,
            request.verbose,
            &extras,
        )))
    }

    async fn update_container_resources(
        &self,
        request: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Rpc<v1::UpdateContainerResourcesResponse> {
        let request = request.into_inner();
        let id = required_id("container_id", &request.container_id)?.to_owned();
        let Some(linux) = request.linux else {
            return Ok(Response::new(v1::UpdateContainerResourcesResponse {}));
        };
        let update = linux_resources_from_cri(&linux)?;
        let runtime = self.runtime.clone();
        let merge = move |current: &_| merge_resources_update(current, &update);
        tokio::spawn(async move { runtime.update_container_resources(&id, merge).await })
            .await
            .map_err(CriError::from)?
            .map_err(CriError::from)?;
        Ok(Response::new(v1::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<v1::ReopenContainerLogRequest>,
    ) -> Rpc<v1::ReopenContainerLogResponse> {
        let id = required_id("container_id", &request.get_ref().container_id)?;
        self.runtime
            .reopen_container_log(id)
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(v1::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, request: Request<v1::ExecSyncRequest>) -> Rpc<v1::ExecSyncResponse> {
        let request = request.into_inner();
        let id = required_id("container_id", &request.container_id)?;
        let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        let output = self
            .runtime
            .exec_sync(id, request.cmd, timeout)
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(v1::ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        }))
    }

    async fn exec(&self, request: Request<v1::ExecRequest>) -> Rpc<v1::ExecResponse> {
        let request = request.into_inner();
        required_id("container_id", &request.container_id)?;
        Ok(Response::new(v1::ExecResponse {
            url: self.get_exec(request)?,
        }))
    }

    async fn attach(&self, request: Request<v1::AttachRequest>) -> Rpc<v1::AttachResponse> {
        let request = request.into_inner();
        required_id("container_id", &request.container_id)?;
        Ok(Response::new(v1::AttachResponse {
            url: self.get_attach(request)?,
        }))
    }

    async fn port_forward(
        &self,
        request: Request<v1::PortForwardRequest>,
    ) -> Rpc<v1::PortForwardResponse> {
        let request = request.into_inner();
        required_id("pod_sandbox_id", &request.pod_sandbox_id)?;
        Ok(Response::new(v1::PortForwardResponse {
            url: self.get_port_forward(request)?,
        }))
    }

    async fn container_stats(
        &self,
        request: Request<v1::ContainerStatsRequest>,
    ) -> Rpc<v1::ContainerStatsResponse> {
        let id = required_id("container_id", &request.get_ref().container_id)?;
        let (container, usage) = self
            .runtime
            .container_stats(id)
            .await
            .map_err(CriError::from)?;
        Ok(Response::new(v1::ContainerStatsResponse {
            stats: Some(stats::container_stats_to_cri(&container, &usage)),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<v1::ListContainerStatsRequest>,
    ) -> Rpc<v1::ListContainerStatsResponse> {
        let filter = request.into_inner().filter;
        let stats = self
            .runtime
            .list_container_stats(|c| stats::container_filter_matches(c, filter.as_ref()))
            .await
            .iter()
            .map(|(container, usage)| stats::container_stats_to_cri(container, usage))
            .collect();
        Ok(Response::new(v1::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<v1::PodSandboxStatsRequest>,
    ) -> Rpc<v1::PodSandboxStatsResponse> {
        let id = required_id("pod_sandbox_id", &request.get_ref().pod_sandbox_id)?;
        let (pod, usage) = self.runtime.pod_stats(id).await.map_err(CriError::from)?;
        Ok(Response::new(v1::PodSandboxStatsResponse {
            stats: Some(stats::pod_stats_to_cri(&pod, &usage)),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Rpc<v1::ListPodSandboxStatsResponse> {
        let filter = request.into_inner().filter;
        let stats = self
            .runtime
            .list_pod_stats(|p| stats::pod_filter_matches(p, filter.as_ref()))
            .await
            .iter()
            .map(|(pod, usage)| stats::pod_stats_to_cri(pod, usage))
            .collect();
        Ok(Response::new(v1::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Rpc<v1::UpdateRuntimeConfigResponse> {
        let pod_cidr = request
            .get_ref()
            .runtime_config
            .as_ref()
            .and_then(|config| config.network_config.as_ref())
            .map_or("", |network| network.pod_cidr.trim());
        // "If the CIDR is empty, runtimes should omit it."
        if !pod_cidr.is_empty() {
            let subnets = translate::pod_subnets(pod_cidr)?;
            self.runtime
                .update_pod_subnets(subnets)
                .await
                .map_err(CriError::from)?;
        }
        Ok(Response::new(v1::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, request: Request<v1::StatusRequest>) -> Rpc<v1::StatusResponse> {
        Ok(Response::new(self.status(request.get_ref().verbose).await))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<v1::CheckpointContainerRequest>,
    ) -> Rpc<v1::CheckpointContainerResponse> {
        Err(CriError::Unsupported {
            what: "CheckpointContainer (container checkpoint/restore with CRIU)",
        }
        .into())
    }

    async fn get_container_events(
        &self,
        _request: Request<v1::GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        Ok(Response::new(events::event_stream(
            self.runtime.subscribe_events(),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Rpc<v1::ListMetricDescriptorsResponse> {
        Ok(Response::new(v1::ListMetricDescriptorsResponse {
            descriptors: pod_metrics::metric_descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Rpc<v1::ListPodSandboxMetricsResponse> {
        let pod_metrics = self
            .runtime
            .list_pod_stats(|_| true)
            .await
            .iter()
            .map(|(pod, usage)| pod_metrics::pod_metrics(pod, usage))
            .collect();
        Ok(Response::new(v1::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<v1::RuntimeConfigRequest>,
    ) -> Rpc<v1::RuntimeConfigResponse> {
        Ok(Response::new(self.runtime_config()))
    }
}
