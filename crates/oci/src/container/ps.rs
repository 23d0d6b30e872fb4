//! `ps`: the pids of the container's processes (host pid namespace).

use super::{Container, ContainerError};

impl Container {
    pub fn pids(&self) -> Result<Vec<i32>, ContainerError> {
        let mut pids = self.all_pids()?;
        pids.sort_unstable();
        Ok(pids)
    }
}
