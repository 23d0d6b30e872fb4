//! `Status` and `RuntimeConfig`: whether the node can run pods, and how.

use std::collections::HashMap;
use std::path::Path;

use coracle_runtime::{PodNetworkSummary, PodSubnetsSource};
use k8s_cri::v1::{
    CgroupDriver as CriCgroupDriver, LinuxRuntimeConfiguration, RuntimeCondition,
    RuntimeConfigResponse, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus, StatusResponse,
};
use nix::unistd::{AccessFlags, access};

use crate::service::{CgroupDriver, CriService};

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

impl CriService {
    pub(crate) async fn status(&self, verbose: bool) -> StatusResponse {
        let dirs = self.runtime.dirs();
        let problem = self.runtime.network_problem().await;
        let network = condition(NETWORK_READY, problem.map(|p| ("NetworkPluginNotReady", p)));
        let conditions = vec![runtime_condition(&dirs.root, &dirs.state), network];
        let mut info = HashMap::new();
        if verbose {
            info.insert(
                "config".to_owned(),
                self.options.effective_config_json.clone(),
            );
            let network = network_info(&self.runtime.pod_network_summary().await);
            info.insert("network".to_owned(), network.to_string());
        }
        StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![default_runtime_handler()],
            features: None,
        }
    }

    pub(crate) fn runtime_config(&self) -> RuntimeConfigResponse {
        let cgroup_driver = match self.options.cgroup_driver {
            CgroupDriver::Cgroupfs => CriCgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => CriCgroupDriver::Systemd,
        };
        RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: cgroup_driver as i32,
            }),
        }
    }
}

/// The pod network for `crictl info`: its mode and the ranges pods get addresses from.
fn network_info(summary: &PodNetworkSummary) -> serde_json::Value {
    match summary {
        PodNetworkSummary::Bridge {
            bridge,
            pod_subnets,
            source,
        } => serde_json::json!({
            "mode": "bridge",
            "bridge": bridge,
            "podCIDRs": pod_subnets.as_slice().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "podCIDRsFrom": match source {
                PodSubnetsSource::Config => "config",
                PodSubnetsSource::Kubelet => "kubelet",
            },
        }),
        PodNetworkSummary::Cni { conf_dir } => serde_json::json!({
            "mode": "cni",
            "confDir": conf_dir,
        }),
    }
}

/// Recursive read-only mounts and user namespaces are not supported yet: say so, so
/// kubelet refuses such pods up front instead of running them unprotected.
fn default_runtime_handler() -> RuntimeHandler {
    RuntimeHandler {
        name: String::new(),
        features: Some(RuntimeHandlerFeatures {
            recursive_read_only_mounts: false,
            user_namespaces: false,
        }),
    }
}

fn condition(kind: &str, failure: Option<(&str, String)>) -> RuntimeCondition {
    let (status, reason, message) = match failure {
        None => (true, String::new(), String::new()),
        Some((reason, message)) => (false, reason.to_owned(), message),
    };
    RuntimeCondition {
        r#type: kind.to_owned(),
        status,
        reason,
        message,
    }
}

/// The runtime is ready while it can write its root and state directories.
fn runtime_condition(root: &Path, state: &Path) -> RuntimeCondition {
    let failure = [("root", root), ("state", state)]
        .into_iter()
        .find_map(|(what, dir)| {
            access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
                .err()
                .map(|errno| {
                    (
                        "RuntimeDirUnusable",
                        format!("{what} dir {} is not writable: {errno}", dir.display()),
                    )
                })
        });
    condition(RUNTIME_READY, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_state_dir_makes_the_runtime_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let condition = runtime_condition(dir.path(), &missing);
        assert!(!condition.status);
        assert_eq!(condition.r#type, RUNTIME_READY);
        assert!(condition.message.contains("gone"), "{}", condition.message);
        assert!(runtime_condition(dir.path(), dir.path()).status);
    }
}
