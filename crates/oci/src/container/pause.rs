//! `pause` / `resume`: freeze and thaw the container's cgroup.

use super::{Container, ContainerError};
use crate::process::resources::ResourceError;
use crate::state::Status;

impl Container {
    pub fn pause(&self) -> Result<(), ContainerError> {
        self.require(
            "pause",
            &[Status::Running, Status::Created],
            "running or created",
        )?;
        self.cgroup()?.ok_or_else(no_cgroup)?.freeze()?;
        Ok(())
    }

    pub fn resume(&self) -> Result<(), ContainerError> {
        self.require("resume", &[Status::Paused], "paused")?;
        self.cgroup()?.ok_or_else(no_cgroup)?.thaw()?;
        Ok(())
    }
}

pub(super) fn no_cgroup() -> ContainerError {
    ContainerError::Resource(ResourceError::Cgroup {
        op: "lookup",
        msg: "container has no cgroup".into(),
    })
}
