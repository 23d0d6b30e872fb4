//! PLACEHOLDER until the spec builder branch lands: the API the lifecycle code calls.
#![allow(dead_code, unused_variables)]

use std::path::{Path, PathBuf};

use crate::model::{ContainerSpec, PodRecord, ResolvedUser, ResourcesSpec};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Default)]
pub struct ImageRuntimeConfig;
impl ImageRuntimeConfig {
    pub fn from_run_config(_c: &coracle_image::RunConfig) -> Self {
        Self
    }
}
#[derive(Clone, Debug, Default)]
pub struct PodFilePaths;
impl PodFilePaths {
    pub fn in_dir(_d: &Path) -> Self {
        Self
    }
}
#[derive(Clone, Debug, Default)]
pub struct HostFacts;
impl HostFacts {
    pub fn probe() -> Self {
        Self
    }
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespacePath {
    Host,
    Path(PathBuf),
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidNamespace {
    New,
    Host,
    Path(PathBuf),
}
#[derive(Clone, Debug)]
pub struct NamespacePaths {
    pub network: NamespacePath,
    pub ipc: NamespacePath,
    pub uts: NamespacePath,
    pub pid: PidNamespace,
}
pub struct SpecInputs<'a> {
    pub container_id: &'a str,
    pub spec: &'a ContainerSpec,
    pub image: &'a ImageRuntimeConfig,
    pub image_name: &'a str,
    pub pod: &'a PodRecord,
    pub rootfs: &'a Path,
    pub pod_files: PodFilePaths,
    pub pod_shm: Option<&'a Path>,
    pub namespaces: NamespacePaths,
    pub cgroups_path: String,
    pub host: HostFacts,
}
pub struct BuiltSpec {
    pub spec: oci_spec::runtime::Spec,
    pub user: ResolvedUser,
    pub stop_signal: String,
    pub warnings: Vec<String>,
}
impl SpecError {
    pub fn is_invalid_request(&self) -> bool {
        true
    }
}
pub fn build_spec(_i: &SpecInputs) -> Result<BuiltSpec, SpecError> {
    Err(SpecError::Invalid("not yet".into()))
}
pub fn linux_resources(_r: &ResourcesSpec) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    Err(SpecError::Invalid("not yet".into()))
}
