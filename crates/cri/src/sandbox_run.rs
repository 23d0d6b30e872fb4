//! `RunPodSandbox`: the CRI config translated to the runtime's PodSpec.

use coracle_runtime::model::{DnsSpec, PodMetadata, PodNamespaces, PodSpec, PortMapping, Protocol};
use k8s_cri::v1::{self, RunPodSandboxRequest};

use crate::error::CriError;
use crate::service::CriService;
use crate::translate::namespace_mode_from_cri;

impl CriService {
    pub(crate) async fn run_pod_sandbox(
        &self,
        request: RunPodSandboxRequest,
    ) -> Result<String, CriError> {
        let spec = pod_spec_from_cri(request)?;
        // A task of its own: if kubelet gives up and the call is dropped, the pod is
        // still finished or rolled back, never left half-made (and a repeat of the
        // request picks it up through the name reservation).
        let runtime = self.runtime.clone();
        Ok(tokio::spawn(async move { runtime.run_pod(spec).await }).await??)
    }
}

fn invalid(field: &'static str, reason: &str) -> CriError {
    CriError::InvalidArgument {
        field,
        reason: reason.to_owned(),
    }
}

pub(crate) fn pod_spec_from_cri(request: RunPodSandboxRequest) -> Result<PodSpec, CriError> {
    let config = request.config.ok_or_else(|| invalid("config", "missing"))?;
    let metadata = config
        .metadata
        .ok_or_else(|| invalid("config.metadata", "missing"))?;
    let linux = config.linux.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let namespaces = namespaces_from_cri(security.namespace_options)?;
    let port_mappings = config
        .port_mappings
        .iter()
        .map(port_mapping_from_cri)
        .collect::<Result<_, _>>()?;
    Ok(PodSpec {
        metadata: PodMetadata {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            attempt: metadata.attempt,
        },
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: config.dns_config.map(|dns| DnsSpec {
            servers: dns.servers,
            searches: dns.searches,
            options: dns.options,
        }),
        port_mappings,
        labels: config.labels.into_iter().collect(),
        annotations: config.annotations.into_iter().collect(),
        runtime_handler: request.runtime_handler,
        namespaces,
        cgroup_parent: linux.cgroup_parent,
        sysctls: linux.sysctls.into_iter().collect(),
    })
}

fn namespaces_from_cri(options: Option<v1::NamespaceOption>) -> Result<PodNamespaces, CriError> {
    let options = options.unwrap_or_default();
    if let Some(userns) = &options.userns_options {
        if userns.mode != v1::NamespaceMode::Node as i32 {
            return Err(CriError::Unsupported {
                what: "user namespaces for pods (hostUsers: false)",
            });
        }
    }
    Ok(PodNamespaces {
        network: namespace_mode_from_cri("namespace_options.network", options.network)?,
        ipc: namespace_mode_from_cri("namespace_options.ipc", options.ipc)?,
        pid: namespace_mode_from_cri("namespace_options.pid", options.pid)?,
        target_id: options.target_id,
    })
}

fn port_mapping_from_cri(mapping: &v1::PortMapping) -> Result<PortMapping, CriError> {
    let protocol = match v1::Protocol::try_from(mapping.protocol) {
        Ok(v1::Protocol::Tcp) => Protocol::Tcp,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        Ok(v1::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => return Err(invalid("port_mappings.protocol", "unknown protocol")),
    };
    let valid_port = |port: i32| (0..=65535).contains(&port);
    if !valid_port(mapping.container_port) || !valid_port(mapping.host_port) {
        return Err(invalid("port_mappings", "ports must be within 0..=65535"));
    }
    // An unparsable address must not widen to "every node address".
    if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid("port_mappings.host_ip", "not an IP address"));
    }
    Ok(PortMapping {
        protocol,
        container_port: mapping.container_port,
        host_port: mapping.host_port,
        host_ip: mapping.host_ip.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RunPodSandboxRequest {
        RunPodSandboxRequest {
            config: Some(v1::PodSandboxConfig {
                metadata: Some(v1::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u".into(),
                    namespace: "default".into(),
                    attempt: 2,
                }),
                hostname: "web-0".into(),
                port_mappings: vec![v1::PortMapping {
                    protocol: v1::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: String::new(),
                }],
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        }
    }

    #[test]
    fn config_is_translated() {
        let spec = pod_spec_from_cri(request()).unwrap();
        assert_eq!(spec.metadata.attempt, 2);
        assert_eq!(spec.hostname, "web-0");
        assert_eq!(spec.port_mappings[0].protocol, Protocol::Udp);
        assert_eq!(spec.labels["app"], "web");
    }

    #[test]
    fn missing_config_or_metadata_is_invalid() {
        let err = pod_spec_from_cri(RunPodSandboxRequest::default()).unwrap_err();
        assert!(err.to_string().contains("config"), "{err}");
        let mut no_metadata = request();
        no_metadata.config.as_mut().unwrap().metadata = None;
        let err = pod_spec_from_cri(no_metadata).unwrap_err();
        assert!(err.to_string().contains("config.metadata"), "{err}");
    }

    #[test]
    fn out_of_range_port_is_invalid() {
        let mut bad = request();
        bad.config.as_mut().unwrap().port_mappings[0].host_port = 70000;
        assert!(pod_spec_from_cri(bad).is_err());
    }

    #[test]
    fn malformed_host_ip_is_invalid() {
        let mut bad = request();
        bad.config.as_mut().unwrap().port_mappings[0].host_ip = "10.0.0.300".into();
        let err = pod_spec_from_cri(bad).unwrap_err();
        assert!(err.to_string().contains("host_ip"), "{err}");
    }

    #[test]
    fn unknown_namespace_mode_is_invalid() {
        let mut bad = request();
        bad.config.as_mut().unwrap().linux = Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: 42,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = pod_spec_from_cri(bad).unwrap_err();
        assert!(
            err.to_string().contains("namespace_options.network"),
            "{err}"
        );
    }
}
