//! One implementation behind `runtime.v1` and `runtime.v1alpha2`.
//!
//! Every message v1alpha2 has carries the same field numbers and types in v1 (checked
//! field by field when this was written; `v1alpha2_is_a_wire_subset_of_v1` keeps it
//! checked), so a v1alpha2 request decodes as the v1 message and a v1 response
//! decodes as the v1alpha2 message, its extra fields skipped as unknown. This layer
//! routes `/runtime.v1alpha2.<Service>/<Method>` to the v1 handler and tells it, through
//! a request extension, which version the client spoke (Version must answer in kind).

use http::Uri;

const V1ALPHA2_PREFIX: &str = "/runtime.v1alpha2.";
const V1_PREFIX: &str = "/runtime.v1.";

/// The CRI API version a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1alpha2,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1alpha2 => "v1alpha2",
        }
    }
}

/// Rewrites a v1alpha2 request to its v1 path and records the version it came on.
pub fn route_api_version<B>(mut request: http::Request<B>) -> http::Request<B> {
    let version = match v1_uri_for_v1alpha2(request.uri()) {
        Some(uri) => {
            *request.uri_mut() = uri;
            ApiVersion::V1alpha2
        }
        None => ApiVersion::V1,
    };
    request.extensions_mut().insert(version);
    request
}

fn v1_uri_for_v1alpha2(uri: &Uri) -> Option<Uri> {
    let rest = uri.path().strip_prefix(V1ALPHA2_PREFIX)?;
    let mut parts = uri.clone().into_parts();
    let path = format!("{V1_PREFIX}{rest}");
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The version a handler's request arrived on (v1 when the layer is absent).
pub fn api_version_of<T>(request: &tonic::Request<T>) -> ApiVersion {
    request
        .extensions()
        .get::<ApiVersion>()
        .copied()
        .unwrap_or(ApiVersion::V1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn v1alpha2_path_is_routed_to_v1_and_marked() {
        let request = http::Request::builder()
            .uri("http://localhost/runtime.v1alpha2.RuntimeService/Version")
            .body(())
            .unwrap();
        let routed = route_api_version(request);
        assert_eq!(routed.uri().path(), "/runtime.v1.RuntimeService/Version");
        assert_eq!(
            routed.extensions().get::<ApiVersion>(),
            Some(&ApiVersion::V1alpha2)
        );
    }

    #[test]
    fn v1_path_is_left_alone() {
        let request = http::Request::builder()
            .uri("/runtime.v1.ImageService/ListImages")
            .body(())
            .unwrap();
        let routed = route_api_version(request);
        assert_eq!(routed.uri().path(), "/runtime.v1.ImageService/ListImages");
        assert_eq!(
            routed.extensions().get::<ApiVersion>(),
            Some(&ApiVersion::V1)
        );
    }

    /// A rich message survives v1alpha2 -> bytes -> v1 -> bytes -> v1alpha2 intact.
    #[test]
    fn v1alpha2_is_a_wire_subset_of_v1() {
        use k8s_cri::{v1, v1alpha2};
        let config = v1alpha2::PodSandboxConfig {
            metadata: Some(v1alpha2::PodSandboxMetadata {
                name: "web".into(),
                uid: "u-1".into(),
                namespace: "default".into(),
                attempt: 3,
            }),
            hostname: "web-0".into(),
            log_directory: "/var/log/pods/x".into(),
            dns_config: Some(v1alpha2::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            port_mappings: vec![v1alpha2::PortMapping {
                protocol: v1alpha2::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            }],
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
            linux: Some(v1alpha2::LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/pod1".into(),
                sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
                security_context: Some(v1alpha2::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1alpha2::NamespaceOption {
                        network: v1alpha2::NamespaceMode::Node as i32,
                        pid: v1alpha2::NamespaceMode::Pod as i32,
                        ipc: v1alpha2::NamespaceMode::Pod as i32,
                        target_id: String::new(),
                        ..Default::default()
                    }),
                    run_as_user: Some(v1alpha2::Int64Value { value: 1000 }),
                    supplemental_groups: vec![1, 2],
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = v1alpha2::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "runc".into(),
        };
        let as_v1 = v1::RunPodSandboxRequest::decode(request.encode_to_vec().as_slice()).unwrap();
        let v1_config = as_v1.config.as_ref().unwrap();
        assert_eq!(v1_config.metadata.as_ref().unwrap().attempt, 3);
        assert_eq!(
            v1_config.port_mappings[0].protocol,
            v1::Protocol::Udp as i32
        );
        let back =
            v1alpha2::RunPodSandboxRequest::decode(as_v1.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, request);
    }
}
