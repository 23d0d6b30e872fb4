//! `linux.resources.cpu`: the cpu controller (shares/weight, CFS quota, realtime, idle,
//! burst) and the cpuset controller (cpus, mems).

use std::path::Path;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuset::CpuSetController;
use oci_spec::runtime::LinuxCpu;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

/// v1 cpu.shares bounds (kernel `MIN_SHARES`/`MAX_SHARES`).
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;

/// v1 `cpu.shares` to v2 `cpu.weight`, as runc does (`ConvertCPUSharesToCgroupV2Value`):
/// maps [2, 262144] linearly onto [1, 10000]; 0 stays 0, meaning "not set". Shares outside
/// the v1 range are clamped to it first, as the v1 kernel would.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Checks a cpuset list ("0-3,5,7"): comma-separated numbers or ascending ranges.
/// Empty means "not set". The kernel would also take its stride form ("0-7:2/4"); no
/// container tool sends that, so it is refused here rather than half-parsed.
pub(crate) fn validate_cpuset_list(field: &str, value: &str) -> Result<(), CgroupError> {
    let invalid = |reason: String| CgroupError::InvalidResource {
        field: field.to_string(),
        value: value.to_string(),
        reason,
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(());
    }
    for item in trimmed.split(',') {
        let number = |s: &str| -> Result<u32, CgroupError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "{item:?} is not a number or a range like 0-3"
                )));
            }
            s.parse::<u32>()
                .map_err(|_| invalid(format!("{s:?} is out of range")))
        };
        match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(invalid(format!("range {item:?} goes backwards")));
                }
            }
            None => {
                number(item)?;
            }
        }
    }
    Ok(())
}

pub(crate) fn validate(cg: &ContainerCgroup, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let invalid = |field: &str, value: String, reason: &str| CgroupError::InvalidResource {
        field: format!("linux.resources.cpu.{field}"),
        value,
        reason: reason.to_string(),
    };
    if let Some(cpus) = cpu.cpus() {
        validate_cpuset_list("linux.resources.cpu.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems() {
        validate_cpuset_list("linux.resources.cpu.mems", mems)?;
    }
    if let Some(q) = cpu.quota().filter(|q| *q == 0 || *q < -1) {
        return Err(invalid(
            "quota",
            q.to_string(),
            "must be > 0 (microseconds per period), or -1 for no limit",
        ));
    }
    // Kernel bounds for cpu.cfs_period_us (kernel/sched/core.c: 1 ms .. 1 s).
    if let Some(p) = cpu.period().filter(|p| !(1_000..=1_000_000).contains(p)) {
        return Err(invalid(
            "period",
            p.to_string(),
            "must be between 1000 and 1000000 microseconds",
        ));
    }
    if let Some(r) = cpu.realtime_runtime().filter(|r| *r < -1) {
        return Err(invalid(
            "realtimeRuntime",
            r.to_string(),
            "must be >= 0, or -1 for no limit",
        ));
    }
    if let Some(0) = cpu.realtime_period() {
        return Err(invalid("realtimePeriod", "0".to_string(), "must be > 0"));
    }
    if let Some(i) = cpu.idle().filter(|i| !(0..=1).contains(i)) {
        return Err(invalid("idle", i.to_string(), "must be 0 or 1"));
    }
    let wants_cpuset = [cpu.cpus(), cpu.mems()]
        .iter()
        .any(|v| v.as_deref().is_some_and(|s| !s.trim().is_empty()));
    if wants_cpuset && cg.hierarchy_for("cpuset").is_none() {
        return Err(CgroupError::ControllerUnavailable {
            controller: "cpuset".to_string(),
            field: "linux.resources.cpu.cpus/mems".to_string(),
        });
    }
    let wants_cpu = cpu.shares().is_some_and(|s| s != 0)
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some()
        || cpu.idle().is_some()
        || cpu.burst().is_some();
    match cg.hierarchy_for("cpu") {
        None if wants_cpu => Err(CgroupError::ControllerUnavailable {
            controller: "cpu".to_string(),
            field: "linux.resources.cpu".to_string(),
        }),
        // cgroup v2 has no realtime group scheduling interface (cgroup-v2.rst, "CPU").
        Some(h)
            if h.is_v2()
                && (cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some()) =>
        {
            Err(CgroupError::Unsupported {
                what: "linux.resources.cpu.realtimeRuntime/realtimePeriod".to_string(),
                layout: "cgroup v2 cpu controller".to_string(),
                reason: "cgroup v2 has no realtime bandwidth files".to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Fills an empty `cpuset.cpus`/`cpuset.mems` in every v1 cpuset cgroup from `mount` down
/// to `dir` from its parent: a new v1 cpuset cgroup starts empty, and the kernel refuses
/// to move a task into it (ENOSPC). cgroups-rs does this only inside its panicking
/// `Controller::create`, so it is done here, as runc's `cpusetEnsureParent` does.
pub(crate) fn inherit_cpuset_v1(mount: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(relative) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for component in relative.components() {
        let child = parent.join(component);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let child_file = child.join(file);
            if fs::read_trimmed(&child_file)?.is_empty() {
                let value = fs::read_trimmed(&parent.join(file))?;
                fs::write(&child_file, &value)?;
            }
        }
        parent = child;
    }
    Ok(())
}

pub(crate) fn apply_cpuset(cg: &ContainerCgroup, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let Some(h) = cg.hierarchy_for("cpuset") else {
        return Ok(());
    };
    let ctl = CpuSetController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2());
    if let Some(cpus) = cpu
        .cpus()
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        fs::via_cgroups_rs(&h.dir, "cpuset.cpus", cpus, ctl.set_cpus(cpus))?;
    }
    if let Some(mems) = cpu
        .mems()
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        fs::via_cgroups_rs(&h.dir, "cpuset.mems", mems, ctl.set_mems(mems))?;
    }
    Ok(())
}

pub(crate) fn apply(cg: &ContainerCgroup, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let Some(h) = cg.hierarchy_for("cpu") else {
        return Ok(());
    };
    let ctl = CpuController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2());
    if h.is_v2() {
        apply_v2(h, &ctl, cpu)
    } else {
        apply_v1(h, &ctl, cpu)
    }
}

fn apply_v1(h: &HierarchyDir, ctl: &CpuController, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let dir = &h.dir;
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        fs::via_cgroups_rs(dir, "cpu.shares", shares, ctl.set_shares(shares))?;
    }
    set_quota_and_period_v1(dir, ctl, cpu.quota(), cpu.period())?;
    if let Some(burst) = cpu.burst() {
        // No cgroups-rs setter for the CFS burst.
        fs::write(&dir.join("cpu.cfs_burst_us"), &burst.to_string())?;
    }
    if let Some(rt_period) = cpu.realtime_period() {
        fs::via_cgroups_rs(
            dir,
            "cpu.rt_period_us",
            rt_period,
            ctl.set_rt_period_us(rt_period),
        )?;
    }
    if let Some(rt_runtime) = cpu.realtime_runtime() {
        fs::via_cgroups_rs(
            dir,
            "cpu.rt_runtime_us",
            rt_runtime,
            ctl.set_rt_runtime(rt_runtime),
        )?;
    }
    write_idle(dir, cpu)
}

/// The kernel checks quota/period against each other on every write, so the order
/// matters when both change. Period first, as runc does; if the kernel refuses the period
/// (EINVAL: old quota with the new period breaks the parent's bandwidth), quota first.
fn set_quota_and_period_v1(
    dir: &Path,
    ctl: &CpuController,
    quota: Option<i64>,
    period: Option<u64>,
) -> Result<(), CgroupError> {
    let set_quota = |q: i64| fs::via_cgroups_rs(dir, "cpu.cfs_quota_us", q, ctl.set_cfs_quota(q));
    match (quota, period) {
        (q, Some(p)) => match ctl.set_cfs_period(p) {
            Ok(()) => q.map_or(Ok(()), set_quota),
            Err(e) if fs::cgroups_rs_errno(&e) == Some(libc::EINVAL) && q.is_some() => {
                q.map_or(Ok(()), set_quota)?;
                fs::via_cgroups_rs(dir, "cpu.cfs_period_us", p, ctl.set_cfs_period(p))
            }
            Err(e) => fs::via_cgroups_rs(dir, "cpu.cfs_period_us", p, Err(e)),
        },
        (Some(q), None) => set_quota(q),
        (None, None) => Ok(()),
    }
}

fn apply_v2(h: &HierarchyDir, ctl: &CpuController, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let dir = &h.dir;
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        let weight = shares_to_weight(shares);
        fs::via_cgroups_rs(dir, "cpu.weight", weight, ctl.set_shares(weight))?;
    }
    if cpu.quota().is_some() || cpu.period().is_some() {
        // cgroups-rs reads cpu.max and rewrites "$MAX $PERIOD"; a quota <= 0 becomes "max".
        fs::via_cgroups_rs(
            dir,
            "cpu.max",
            format!("{:?} {:?}", cpu.quota(), cpu.period()),
            ctl.set_cfs_quota_and_period(cpu.quota(), cpu.period()),
        )?;
    }
    if let Some(burst) = cpu.burst() {
        fs::write(&dir.join("cpu.max.burst"), &burst.to_string())?;
    }
    write_idle(dir, cpu)
}

/// `cpu.idle` (SCHED_IDLE for the whole group, Linux 5.15): same file on v1 and v2, and
/// no cgroups-rs setter.
fn write_idle(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    let Some(idle) = cpu.idle() else {
        return Ok(());
    };
    let file = dir.join("cpu.idle");
    if !file.exists() {
        return Err(CgroupError::Unsupported {
            what: "linux.resources.cpu.idle".to_string(),
            layout: "this kernel's cpu controller".to_string(),
            reason: format!("{} does not exist", file.display()),
        });
    }
    fs::write(&file, &idle.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out of the v1 range: clamped like the v1 kernel would.
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn cpuset_lists_are_checked() {
        for ok in ["0", "0-3", "0,2,4-7", " 1 ", ""] {
            validate_cpuset_list("f", ok).unwrap();
        }
        for bad in [
            "a",
            "3-1",
            "0-",
            ",",
            "1,,2",
            "0-3:1/2",
            "-1",
            "99999999999",
        ] {
            let err = validate_cpuset_list("linux.resources.cpu.cpus", bad).unwrap_err();
            assert!(
                err.to_string().contains("linux.resources.cpu.cpus"),
                "{bad}: {err}"
            );
        }
    }
}
