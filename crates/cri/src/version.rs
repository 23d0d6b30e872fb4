//! `Version`: who we are, in the API version the client spoke.

use k8s_cri::v1::VersionResponse;

use crate::api_version::ApiVersion;

pub const RUNTIME_NAME: &str = "coracle";

/// The kubelet runtime API version; every CRI runtime reports 0.1.0.
const KUBELET_API_VERSION: &str = "0.1.0";

pub fn version(api: ApiVersion) -> VersionResponse {
    VersionResponse {
        version: KUBELET_API_VERSION.to_owned(),
        runtime_name: RUNTIME_NAME.to_owned(),
        runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        runtime_api_version: api.as_str().to_owned(),
    }
}
