//! `state`: the OCI state of a container, its status derived from the kernel, not
//! from what was last written (the init may have exited or been replaced).

use super::Container;
use crate::state::{EXEC_FIFO, OciState, Status, process_alive};

impl Container {
    /// created: init alive and still blocked on the exec fifo; running: alive, fifo
    /// consumed; paused: its cgroup is frozen; stopped: the recorded pid is gone, a
    /// zombie, or now another process (start time differs).
    pub fn status(&self) -> Status {
        if !process_alive(self.state.pid, self.state.pid_start_time) {
            return Status::Stopped;
        }
        if let Ok(Some(cg)) = self.cgroup() {
            if cg.is_frozen() {
                return Status::Paused;
            }
        }
        if self.dir().join(EXEC_FIFO).exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The OCI state (runtime spec "State"), status derived as in [`Container::status`].
    pub fn state(&self) -> OciState {
        self.oci_state()
    }

    pub fn oci_state(&self) -> OciState {
        let status = self.status();
        OciState {
            oci_version: self.state.config.version().clone(),
            id: self.state.id.clone(),
            status,
            pid: (status != Status::Stopped).then_some(self.state.pid),
            bundle: self.state.bundle.clone(),
            annotations: self.state.config.annotations().clone().unwrap_or_default(),
            rootfs: Some(self.state.rootfs.clone()),
            created: Some(self.state.created.clone()),
        }
    }
}
