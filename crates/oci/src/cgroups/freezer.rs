//! Freezing: the v1 freezer controller where it is mounted, else the v2 core freezer
//! (`cgroup.freeze`, Linux 5.2).
//!
//! Both are asynchronous: a write starts freezing, and the state file says when every task
//! is frozen. v1 reports FREEZING meanwhile; a task stuck in an uninterruptible sleep (a
//! vfork parent, for example) can keep it there, so, as runc does, the write is repeated
//! and the cgroup briefly thawed now and then to let such tasks move on.

use std::time::Duration;

use cgroups_rs::FreezerState;
use cgroups_rs::fs::freezer::FreezerController;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

const V2_FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

enum Freezer<'a> {
    V1(&'a HierarchyDir),
    V2(&'a HierarchyDir),
}

fn freezer(cg: &ContainerCgroup) -> Result<Freezer<'_>, CgroupError> {
    if let Some(h) = cg
        .hierarchies
        .iter()
        .find(|h| !h.is_v2() && h.has("freezer"))
    {
        return Ok(Freezer::V1(h));
    }
    match cg.v2() {
        Some(h) if h.dir.join("cgroup.freeze").exists() => Ok(Freezer::V2(h)),
        _ => Err(CgroupError::Unsupported {
            what: "freezing".to_string(),
            layout: cg.layout.to_string(),
            reason: "no v1 freezer controller and no v2 cgroup.freeze file".to_string(),
        }),
    }
}

fn controller(h: &HierarchyDir) -> FreezerController {
    FreezerController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2())
}

pub(crate) fn freeze(cg: &ContainerCgroup) -> Result<(), CgroupError> {
    match freezer(cg)? {
        Freezer::V1(h) => freeze_v1(h),
        Freezer::V2(h) => freeze_v2(h),
    }
}

/// runc's v1 loop (opencontainers/cgroups `fs/freezer.go`): up to 1000 rounds; every
/// 25th round sleeps 10 ms, every 50th thaws for 10 ms first.
fn freeze_v1(h: &HierarchyDir) -> Result<(), CgroupError> {
    let ctl = controller(h);
    let state_file = "freezer.state";
    let mut last = String::new();
    for round in 0..1000 {
        if round % 50 == 49 {
            fs::via_cgroups_rs(&h.dir, state_file, "THAWED", ctl.thaw())?;
            std::thread::sleep(Duration::from_millis(10));
        }
        fs::via_cgroups_rs(&h.dir, state_file, "FROZEN", ctl.freeze())?;
        if round % 25 == 24 {
            std::thread::sleep(Duration::from_millis(10));
        }
        last = fs::read_trimmed(&h.dir.join(state_file))?;
        if last == "FROZEN" {
            return Ok(());
        }
    }
    fs::via_cgroups_rs(&h.dir, state_file, "THAWED", ctl.thaw())?;
    Err(CgroupError::FreezeTimeout {
        path: h.dir.clone(),
        state: last,
    })
}

/// Writes cgroup.freeze=1 and waits for "frozen 1" in cgroup.events.
fn freeze_v2(h: &HierarchyDir) -> Result<(), CgroupError> {
    let ctl = controller(h);
    fs::via_cgroups_rs(&h.dir, "cgroup.freeze", "1", ctl.freeze())?;
    let frozen = fs::poll_until(V2_FREEZE_TIMEOUT, || Ok(events_frozen(h)?.then_some(())))?;
    if frozen.is_some() {
        return Ok(());
    }
    fs::via_cgroups_rs(&h.dir, "cgroup.freeze", "0", ctl.thaw())?;
    Err(CgroupError::FreezeTimeout {
        path: h.dir.clone(),
        state: "frozen 0".to_string(),
    })
}

/// The "frozen" line of v2 `cgroup.events`: the kernel's word that every task stopped.
fn events_frozen(h: &HierarchyDir) -> Result<bool, CgroupError> {
    let events = fs::read(&h.dir.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l.trim() == "frozen 1"))
}

pub(crate) fn thaw(cg: &ContainerCgroup) -> Result<(), CgroupError> {
    match freezer(cg)? {
        Freezer::V1(h) => {
            fs::via_cgroups_rs(&h.dir, "freezer.state", "THAWED", controller(h).thaw())
        }
        Freezer::V2(h) => fs::via_cgroups_rs(&h.dir, "cgroup.freeze", "0", controller(h).thaw()),
    }
}

pub(crate) fn is_frozen(cg: &ContainerCgroup) -> Result<bool, CgroupError> {
    match freezer(cg)? {
        Freezer::V1(h) => {
            let state = controller(h).state();
            let state = fs::via_cgroups_rs(&h.dir, "freezer.state", "(read)", state)?;
            Ok(matches!(state, FreezerState::Frozen))
        }
        Freezer::V2(h) => events_frozen(h),
    }
}
