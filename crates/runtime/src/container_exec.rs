//! What runs against a live container: ExecSync, ReopenContainerLog,
//! UpdateContainerResources, and the runtime spec for a verbose status.

use std::time::Duration;

use coracle_monitor::protocol::{ControlRequest, ExecConfig};

use crate::model::{ContainerState, ResourcesSpec};
use crate::monitor_client::ExecOutput;
use crate::{Runtime, RuntimeError};

impl Runtime {
    /// Runs `command` in the container with its user, env, capabilities and
    /// seccomp, and returns its output. A zero timeout means no timeout.
    pub async fn exec_sync(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let container = self.existing_container(id)?;
        if container.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if command.is_empty() {
            return Err(RuntimeError::invalid("cmd", "must not be empty"));
        }
        let mut process = self.container_process(id).await?;
        process["args"] = serde_json::json!(command);
        process["terminal"] = serde_json::json!(false);
        let config = ExecConfig {
            container_id: id.to_owned(),
            oci_state_root: self.dirs.oci_root(),
            process,
            timeout_ms: (!timeout.is_zero())
                .then(|| u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        };
        let output = crate::monitor_client::exec_sync(&self.monitor_path, &config)
            .await
            .map_err(|source| RuntimeError::Monitor {
                id: id.to_owned(),
                source,
            })?;
        if output.timed_out {
            return Err(RuntimeError::ExecTimeout {
                id: id.to_owned(),
                timeout,
                output: Box::new(output),
            });
        }
        Ok(output)
    }

    /// The `process` object of the container's spec, as JSON.
    async fn container_process(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let spec = self.container_runtime_spec(id).await?;
        spec.get("process").cloned().ok_or_else(|| {
            RuntimeError::FailedPrecondition(format!("container {id} has no process in its spec"))
        })
    }

    /// The OCI spec the container runs with, as JSON.
    pub async fn container_runtime_spec(
        &self,
        id: &str,
    ) -> Result<serde_json::Value, RuntimeError> {
        let path = self.dirs.container_bundle(id).join("config.json");
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|source| RuntimeError::Bundle {
                id: id.to_owned(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|err| RuntimeError::Bundle {
            id: id.to_owned(),
            source: std::io::Error::other(err),
        })
    }

    /// Has the monitor reopen the log file (after kubelet rotated it).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), RuntimeError> {
        let container = self.existing_container(id)?;
        if container.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        crate::monitor_client::control(&self.dirs.container_dir(id), &ControlRequest::ReopenLog)
            .await
            .map_err(|source| RuntimeError::Monitor {
                id: id.to_owned(),
                source,
            })
    }

    /// Applies new resources to the container's live cgroup and records them.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: ResourcesSpec,
    ) -> Result<(), RuntimeError> {
        let guard = self.lock_container(id).await?;
        let container = self.existing_container(id)?;
        if !matches!(
            container.state,
            ContainerState::Created | ContainerState::Running
        ) {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        let linux = crate::container_spec::linux_resources(&resources, &self.host_facts).map_err(
            |source| RuntimeError::Spec {
                id: id.to_owned(),
                source,
            },
        )?;
        let oci_root = self.dirs.oci_root();
        let container_id = id.to_owned();
        let updated = tokio::task::spawn_blocking(move || {
            coracle_oci::Container::load(&oci_root, &container_id)?.update(&linux)
        })
        .await?;
        updated.map_err(|source| RuntimeError::Oci {
            op: "update",
            id: id.to_owned(),
            source: Box::new(source),
        })?;
        self.containers
            .update(&guard, move |record| record.spec.resources = resources)
            .await?;
        Ok(())
    }
}
