//! CRI configs the end-to-end tests build again and again: a pod as kubelet sends it
//! (own PID namespaces per container, logs under a temp dir) and a container of the
//! test registry's busybox with labels and annotations named after it.

use std::path::Path;

use k8s_cri::v1;

/// A pod named `name` (uid `uid-<name>`, namespace `e2e`) logging under `log_directory`.
pub fn pod_config(name: &str, log_directory: &Path) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_directory.to_string_lossy().into_owned(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    pid: v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container named `name` running `command` from `image`, logging to `<name>/0.log`.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), format!("{name}-note"))].into(),
        linux: Some(v1::LinuxContainerConfig::default()),
        ..Default::default()
    }
}
