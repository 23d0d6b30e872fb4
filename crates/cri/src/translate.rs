//! CRI <-> runtime model conversions shared by several RPCs.

use coracle_runtime::model::{NamespaceMode, PodNamespaces, PodState};
use coracle_runtime::{PodSubnets, SubnetError};
use k8s_cri::v1::{self, PodSandboxState};

use crate::error::CriError;

pub(crate) fn namespace_mode_from_cri(
    field: &'static str,
    value: i32,
) -> Result<NamespaceMode, CriError> {
    match v1::NamespaceMode::try_from(value) {
        Ok(v1::NamespaceMode::Pod) => Ok(NamespaceMode::Pod),
        Ok(v1::NamespaceMode::Container) => Ok(NamespaceMode::Container),
        Ok(v1::NamespaceMode::Node) => Ok(NamespaceMode::Node),
        Ok(v1::NamespaceMode::Target) => Ok(NamespaceMode::Target),
        Err(_) => Err(CriError::InvalidArgument {
            field,
            reason: format!("unknown namespace mode {value}"),
        }),
    }
}

/// kubelet's pod CIDR: one range, or an IPv4 and an IPv6 one joined by a comma.
pub(crate) fn pod_subnets(pod_cidr: &str) -> Result<PodSubnets, CriError> {
    pod_cidr
        .parse()
        .map_err(|err: SubnetError| CriError::InvalidArgument {
            field: "runtime_config.network_config.pod_cidr",
            reason: err.to_string(),
        })
}

pub(crate) fn namespace_mode_to_cri(mode: NamespaceMode) -> i32 {
    let mode = match mode {
        NamespaceMode::Pod => v1::NamespaceMode::Pod,
        NamespaceMode::Container => v1::NamespaceMode::Container,
        NamespaceMode::Node => v1::NamespaceMode::Node,
        NamespaceMode::Target => v1::NamespaceMode::Target,
    };
    mode as i32
}

pub(crate) fn namespaces_to_cri(namespaces: &PodNamespaces) -> v1::NamespaceOption {
    v1::NamespaceOption {
        network: namespace_mode_to_cri(namespaces.network),
        pid: namespace_mode_to_cri(namespaces.pid),
        ipc: namespace_mode_to_cri(namespaces.ipc),
        target_id: namespaces.target_id.clone(),
        userns_options: None,
    }
}

pub(crate) fn pod_state_to_cri(state: PodState) -> PodSandboxState {
    match state {
        PodState::Ready => PodSandboxState::SandboxReady,
        PodState::NotReady | PodState::Creating => PodSandboxState::SandboxNotready,
    }
}

pub(crate) fn pod_metadata_to_cri(
    metadata: &coracle_runtime::model::PodMetadata,
) -> v1::PodSandboxMetadata {
    v1::PodSandboxMetadata {
        name: metadata.name.clone(),
        uid: metadata.uid.clone(),
        namespace: metadata.namespace.clone(),
        attempt: metadata.attempt,
    }
}
