//! `oom_kill_count`: whether the kernel's OOM killer hit the container, for the exit
//! record (CRI's `reason: OOMKilled`). The monitor reads it after the init exits and
//! before anyone deletes the cgroup.

use super::{Container, ContainerError};

impl Container {
    /// How many tasks of the container's cgroup the OOM killer has killed (v1
    /// `memory.oom_control`, v2 `memory.events`, key `oom_kill`); 0 when the container
    /// has no cgroup or no memory controller.
    pub fn oom_kill_count(&self) -> Result<u64, ContainerError> {
        match self.cgroup()? {
            Some(cg) => Ok(cg.oom_kill_count()?),
            None => Ok(0),
        }
    }
}

impl Container {
    /// CPU, memory, swap and pids usage of the container's cgroup; `None` when the
    /// container has no cgroup.
    pub fn cgroup_stats(&self) -> Result<Option<crate::cgroups::CgroupStats>, ContainerError> {
        match self.cgroup()? {
            Some(cg) => Ok(Some(cg.stats()?)),
            None => Ok(None),
        }
    }
}
