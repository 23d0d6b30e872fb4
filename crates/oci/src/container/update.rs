//! `update`: change the resources of a running container through its cgroup.

use oci_spec::runtime::LinuxResources;

use super::pause::no_cgroup;
use super::{Container, ContainerError};

impl Container {
    pub fn update(&self, resources: &LinuxResources) -> Result<(), ContainerError> {
        self.cgroup()?.ok_or_else(no_cgroup)?.update(resources)?;
        Ok(())
    }
}
