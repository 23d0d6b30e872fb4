//! `linux.resources.network`: v1 net_cls and net_prio only (cgroup v2 has neither; its
//! answer is eBPF socket programs). A missing controller is warned about and skipped:
//! classid and priorities only tag traffic for tc/iptables rules the host may not have,
//! and this project's host has neither controller.

use cgroups_rs::fs::net_cls::NetClsController;
use cgroups_rs::fs::net_prio::NetPrioController;
use oci_spec::runtime::LinuxNetwork;

use super::ContainerCgroup;
use super::error::CgroupError;

pub(crate) fn apply(cg: &ContainerCgroup, n: &LinuxNetwork) {
    if let Err(e) = try_apply(cg, n) {
        // Never fatal: see the module comment.
        tracing::warn!(cgroup = %cg.path.display(), error = %e, "linux.resources.network not applied");
    }
}

fn try_apply(cg: &ContainerCgroup, n: &LinuxNetwork) -> Result<(), CgroupError> {
    if let Some(class_id) = n.class_id() {
        match cg.hierarchy_for("net_cls").filter(|h| !h.is_v2()) {
            Some(h) => {
                let ctl = NetClsController::new(h.dir.clone(), h.mount_point.clone());
                super::fs::via_cgroups_rs(
                    &h.dir,
                    "net_cls.classid",
                    class_id,
                    ctl.set_class(u64::from(class_id)),
                )?;
            }
            None => {
                tracing::warn!(cgroup = %cg.path.display(), "no net_cls controller: linux.resources.network.classID skipped")
            }
        }
    }
    let priorities = n.priorities().as_deref().unwrap_or_default();
    if priorities.is_empty() {
        return Ok(());
    }
    let Some(h) = cg.hierarchy_for("net_prio").filter(|h| !h.is_v2()) else {
        tracing::warn!(cgroup = %cg.path.display(), "no net_prio controller: linux.resources.network.priorities skipped");
        return Ok(());
    };
    let ctl = NetPrioController::new(h.dir.clone(), h.mount_point.clone());
    for p in priorities {
        let name = p.name();
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(CgroupError::InvalidResource {
                field: "linux.resources.network.priorities[].name".to_string(),
                value: name.clone(),
                reason: "not an interface name".to_string(),
            });
        }
        super::fs::via_cgroups_rs(
            &h.dir,
            "net_prio.ifpriomap",
            format!("{name} {}", p.priority()),
            ctl.set_if_prio(name, u64::from(p.priority())),
        )?;
    }
    Ok(())
}
