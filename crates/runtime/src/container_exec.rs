//! What runs against a live container: ExecSync, ReopenContainerLog,
//! UpdateContainerResources, and the runtime spec for a verbose status.

use std::time::Duration;

use coracle_monitor::protocol::{ControlRequest, ExecConfig, InteractiveExec};

use crate::model::{ContainerState, ResourcesSpec};
use crate::monitor_client::ExecOutput;
use crate::monitor_session::run_interactive_exec;
use crate::streaming_io::StreamIo;
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
        self.running_container(id)?;
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
            interactive: None,
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

    /// Runs `command` in the container with the client's streams (CRI `Exec`): pipes,
    /// or a pty when `io.tty`, resized by `io.resize`. No deadline. Returns the exit
    /// code (128 + signal when killed). Dropping the future hangs up: the process
    /// group is killed.
    pub async fn exec_streaming(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> Result<i32, RuntimeError> {
        self.running_container(container_id)?;
        // Only plain values cross the await: a borrowed StreamIo (not Sync) would make
        // the future unsendable.
        let session = InteractiveExec {
            stdin: io.stdin.is_some(),
            tty: io.tty,
        };
        let config = self
            .interactive_exec_config(container_id, cmd, session)
            .await?;
        run_interactive_exec(&self.monitor_path, &config, io)
            .await
            .map_err(|source| RuntimeError::Monitor {
                id: container_id.to_owned(),
                source,
            })
    }

    /// The helper's config for `command` with `io`'s stdin and tty.
    async fn interactive_exec_config(
        &self,
        id: &str,
        command: Vec<String>,
        session: InteractiveExec,
    ) -> Result<ExecConfig, RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::invalid("cmd", "must not be empty"));
        }
        let mut process = self.container_process(id).await?;
        process["args"] = serde_json::json!(command);
        process["terminal"] = serde_json::json!(session.tty);
        if session.tty {
            // As containerd: a terminal gets a TERM.
            set_env(&mut process, "TERM", "xterm");
        }
        Ok(ExecConfig {
            container_id: id.to_owned(),
            oci_state_root: self.dirs.oci_root(),
            process,
            timeout_ms: None,
            interactive: Some(session),
        })
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
        self.running_container(id)?;
        crate::monitor_client::control(&self.dirs.container_dir(id), &ControlRequest::ReopenLog)
            .await
            .map_err(|source| RuntimeError::Monitor {
                id: id.to_owned(),
                source,
            })
    }

    /// Applies new resources to the container's live cgroup and records them.
    /// `merge` makes the new resources from the current ones; it runs under the
    /// container's lock, so two concurrent updates both take effect.
    pub async fn update_container_resources(
        &self,
        id: &str,
        merge: impl FnOnce(&ResourcesSpec) -> ResourcesSpec,
    ) -> Result<(), RuntimeError> {
        let guard = self.lock_container(id).await?;
        let container = self.existing_container(id)?;
        let resources = merge(&container.spec.resources);
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

/// Set `name=value` in a process's `env`, replacing an earlier value.
fn set_env(process: &mut serde_json::Value, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    let prefix = format!("{name}=");
    let mut env: Vec<String> = process
        .get("env")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    env.retain(|e| !e.starts_with(&prefix));
    env.push(entry);
    process["env"] = serde_json::json!(env);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_env_replaces_or_adds() {
        let mut p = serde_json::json!({"env": ["PATH=/bin", "TERM=vt100", "TERMINAL=x"]});
        set_env(&mut p, "TERM", "xterm");
        assert_eq!(
            p["env"],
            serde_json::json!(["PATH=/bin", "TERMINAL=x", "TERM=xterm"])
        );
        let mut bare = serde_json::json!({"args": ["sh"]});
        set_env(&mut bare, "TERM", "xterm");
        assert_eq!(bare["env"], serde_json::json!(["TERM=xterm"]));
    }
}
