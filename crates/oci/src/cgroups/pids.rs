//! `linux.resources.pids`.

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::pid::PidController;
use oci_spec::runtime::LinuxPids;

use super::error::CgroupError;
use super::{ContainerCgroup, fs};

/// `limit` > 0 is the limit, < 0 is "max", 0 leaves the file alone (runc's reading of
/// the OCI field, which serde defaults to 0 when absent).
pub(crate) fn apply(cg: &ContainerCgroup, p: &LinuxPids) -> Result<(), CgroupError> {
    let value = match p.limit() {
        0 => return Ok(()),
        l if l > 0 => MaxValue::Value(l),
        _ => MaxValue::Max,
    };
    let Some(h) = cg.hierarchy_for("pids") else {
        return Err(CgroupError::ControllerUnavailable {
            controller: "pids".to_string(),
            field: "linux.resources.pids.limit".to_string(),
        });
    };
    let ctl = PidController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2());
    fs::via_cgroups_rs(
        &h.dir,
        "pids.max",
        value.to_string(),
        ctl.set_pid_max(value),
    )
}
