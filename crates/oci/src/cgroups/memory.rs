//! `linux.resources.memory`.
//!
//! OCI `swap` is memory+swap (the v1 `memory.memsw.limit_in_bytes` meaning). v1 keeps
//! `limit_in_bytes <= memsw.limit_in_bytes` at every write, so the order of the two
//! writes depends on the direction of the change ([`memory_write_order`]); v2 has a
//! separate `memory.swap.max` that holds swap alone ([`swap_to_v2`]).

use cgroups_rs::fs::memory::MemController;
use oci_spec::runtime::LinuxMemory;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

/// Which of memory limit and memory+swap limit to write first on cgroup v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryWriteOrder {
    /// Raising: memsw first, so the new limit never exceeds the old memsw.
    SwapFirst,
    /// Lowering: memory first, so the new memsw never falls below the old limit.
    MemoryFirst,
}

/// runc's rule (opencontainers/cgroups `fs/memory.go`, `setMemoryAndSwap`), used when
/// both limits are given: if the new memory+swap is unlimited (-1) or above the current
/// memory limit, write memsw first; otherwise memory first.
pub fn memory_write_order(current_limit: u64, new_swap: i64) -> MemoryWriteOrder {
    if new_swap == -1 || u64::try_from(new_swap).is_ok_and(|s| current_limit < s) {
        MemoryWriteOrder::SwapFirst
    } else {
        MemoryWriteOrder::MemoryFirst
    }
}

/// OCI memory+swap to the v2 `memory.swap.max` value (swap alone), as runc's
/// `ConvertMemorySwapToCgroupV2Value`: `None` leaves the file alone, `Some(-1)` is "max".
pub fn swap_to_v2(swap: i64, limit: i64) -> Result<Option<i64>, String> {
    // v1 compatibility: an unlimited memory with no swap given means both unlimited.
    if limit == -1 && swap == 0 {
        return Ok(Some(-1));
    }
    match swap {
        0 => Ok(None),
        -1 => Ok(Some(-1)),
        _ if limit == 0 || limit == -1 => {
            Err("a swap limit needs a memory limit (memory+swap is relative to it)".to_string())
        }
        _ if limit < 0 => Err(format!("invalid memory limit {limit}")),
        _ if swap < limit => Err("memory+swap limit must be >= the memory limit".to_string()),
        _ => Ok(Some(swap - limit)),
    }
}

fn invalid(field: &str, value: impl ToString, reason: &str) -> CgroupError {
    CgroupError::InvalidResource {
        field: format!("linux.resources.memory.{field}"),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

pub(crate) fn validate(cg: &ContainerCgroup, m: &LinuxMemory) -> Result<(), CgroupError> {
    for (field, v) in [
        ("limit", m.limit()),
        ("reservation", m.reservation()),
        ("swap", m.swap()),
    ] {
        if let Some(v) = v.filter(|v| *v < -1) {
            return Err(invalid(field, v, "must be >= 0, or -1 for no limit"));
        }
    }
    let limit = m.limit().unwrap_or(0);
    if let Some(swap) = m.swap().filter(|s| limit > 0 && *s > 0 && *s < limit) {
        return Err(invalid(
            "swap",
            swap,
            "memory+swap limit must be >= the memory limit",
        ));
    }
    if let Some(s) = m.swappiness().filter(|s| *s > 100) {
        return Err(invalid("swappiness", s, "must be between 0 and 100"));
    }
    let wants_memory = m.limit().is_some()
        || m.reservation().is_some()
        || m.swap().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer() == Some(true);
    match cg.hierarchy_for("memory") {
        None if wants_memory => Err(CgroupError::ControllerUnavailable {
            controller: "memory".to_string(),
            field: "linux.resources.memory".to_string(),
        }),
        Some(h) if h.is_v2() => {
            swap_to_v2(m.swap().unwrap_or(0), m.limit().unwrap_or(0))
                .map_err(|reason| invalid("swap", m.swap().unwrap_or(0), &reason))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

pub(crate) fn apply(cg: &ContainerCgroup, m: &LinuxMemory) -> Result<(), CgroupError> {
    warn_ignored(cg, m);
    let Some(h) = cg.hierarchy_for("memory") else {
        return Ok(());
    };
    let ctl = MemController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2());
    if m.check_before_update() == Some(true) {
        check_not_below_usage(h, m.limit().unwrap_or(0))?;
    }
    if h.is_v2() {
        apply_v2(h, &ctl, m)
    } else {
        apply_v1(h, &ctl, m)
    }
}

/// Settings this kernel or this cgroup version has no file for: warned about, not
/// failed on, as runc does.
fn warn_ignored(cg: &ContainerCgroup, m: &LinuxMemory) {
    let path = cg.path.display();
    // Kernel memory limits: memory.kmem.limit_in_bytes writes fail with EOPNOTSUPP since
    // Linux 6.1 (and v2 never had them); runc ignores them as well.
    if m.kernel().is_some() {
        tracing::warn!(cgroup = %path, "linux.resources.memory.kernel is not supported by this kernel: ignored");
    }
    if m.kernel_tcp().is_some() {
        tracing::warn!(cgroup = %path, "linux.resources.memory.kernelTCP is not supported: ignored");
    }
    if m.use_hierarchy() == Some(false) {
        tracing::warn!(cgroup = %path, "linux.resources.memory.useHierarchy=false: memory cgroups are always hierarchical on this kernel");
    }
}

fn usage_file(h: &HierarchyDir) -> &'static str {
    if h.is_v2() {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    }
}

fn usage(h: &HierarchyDir) -> Result<u64, CgroupError> {
    let file = h.dir.join(usage_file(h));
    let text = fs::read_trimmed(&file)?;
    text.parse().map_err(|_| CgroupError::Read {
        path: file,
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}

/// OCI `checkBeforeUpdate`: refuse a limit below the current usage instead of letting the
/// kernel reclaim or OOM-kill (v2 kills rather than failing the write).
fn check_not_below_usage(h: &HierarchyDir, limit: i64) -> Result<(), CgroupError> {
    if limit <= 0 {
        return Ok(());
    }
    let used = usage(h)?;
    if (limit as u64) < used {
        return Err(CgroupError::MemoryBelowUsage {
            path: h.dir.clone(),
            limit,
            usage: used,
        });
    }
    Ok(())
}

fn apply_v1(h: &HierarchyDir, ctl: &MemController, m: &LinuxMemory) -> Result<(), CgroupError> {
    let dir = &h.dir;
    let limit = m.limit().unwrap_or(0);
    let mut swap = m.swap().unwrap_or(0);
    let memsw_exists = dir.join("memory.memsw.limit_in_bytes").exists();
    if limit == -1 && swap == 0 && memsw_exists {
        swap = -1;
    }
    if swap != 0 && !memsw_exists {
        tracing::warn!(cgroup = %dir.display(), "swap accounting is off in this kernel (no memory.memsw.limit_in_bytes): linux.resources.memory.swap ignored");
        swap = 0;
    }
    let set_swap = |s: i64| {
        fs::via_cgroups_rs(
            dir,
            "memory.memsw.limit_in_bytes",
            s,
            ctl.set_memswap_limit(s),
        )
    };
    let set_limit = |l: i64| set_limit_v1(h, ctl, l);
    if limit != 0 && swap != 0 {
        let current = fs::read_u64(&dir.join("memory.limit_in_bytes"))?;
        match memory_write_order(current, swap) {
            MemoryWriteOrder::SwapFirst => {
                set_swap(swap)?;
                set_limit(limit)?;
            }
            MemoryWriteOrder::MemoryFirst => {
                set_limit(limit)?;
                set_swap(swap)?;
            }
        }
    } else if limit != 0 {
        set_limit(limit)?;
    } else if swap != 0 {
        set_swap(swap)?;
    }
    if let Some(r) = m.reservation() {
        fs::via_cgroups_rs(dir, "memory.soft_limit_in_bytes", r, ctl.set_soft_limit(r))?;
    }
    if let Some(s) = m.swappiness() {
        fs::via_cgroups_rs(dir, "memory.swappiness", s, ctl.set_swappiness(s))?;
    }
    if m.disable_oom_killer() == Some(true) {
        fs::via_cgroups_rs(dir, "memory.oom_control", 1, ctl.disable_oom_killer())?;
    }
    Ok(())
}

/// v1 answers EBUSY when it cannot reclaim down to a lower limit: say so with the usage.
fn set_limit_v1(h: &HierarchyDir, ctl: &MemController, limit: i64) -> Result<(), CgroupError> {
    match ctl.set_limit(limit) {
        Err(e) if fs::cgroups_rs_errno(&e) == Some(libc::EBUSY) => {
            Err(CgroupError::MemoryBelowUsage {
                path: h.dir.clone(),
                limit,
                usage: usage(h)?,
            })
        }
        r => fs::via_cgroups_rs(&h.dir, "memory.limit_in_bytes", limit, r),
    }
}

fn apply_v2(h: &HierarchyDir, ctl: &MemController, m: &LinuxMemory) -> Result<(), CgroupError> {
    let dir = &h.dir;
    let limit = m.limit().unwrap_or(0);
    let swap = swap_to_v2(m.swap().unwrap_or(0), limit)
        .map_err(|reason| invalid("swap", m.swap().unwrap_or(0), &reason))?;
    if let Some(s) = swap {
        if dir.join("memory.swap.max").exists() {
            fs::via_cgroups_rs(dir, "memory.swap.max", s, ctl.set_memswap_limit(s))?;
        } else if s != -1 && s != 0 {
            // No swap accounting: "max" and "no swap" need no file, a real limit does.
            return Err(CgroupError::Unsupported {
                what: "linux.resources.memory.swap".to_string(),
                layout: "cgroup v2 without swap accounting".to_string(),
                reason: format!("{} does not exist", dir.join("memory.swap.max").display()),
            });
        }
    }
    if limit != 0 {
        fs::via_cgroups_rs(dir, "memory.max", limit, ctl.set_limit(limit))?;
    }
    if let Some(r) = m.reservation() {
        // Direct: cgroups-rs writes "-1" to memory.low, which v2 refuses; "max" is right.
        let value = if r == -1 {
            "max".to_string()
        } else {
            r.to_string()
        };
        fs::write(&dir.join("memory.low"), &value)?;
    }
    if m.swappiness().is_some() {
        tracing::warn!(cgroup = %dir.display(), "cgroup v2 has no per-cgroup swappiness: linux.resources.memory.swappiness ignored");
    }
    if m.disable_oom_killer() == Some(true) {
        tracing::warn!(cgroup = %dir.display(), "cgroup v2 cannot disable the OOM killer: linux.resources.memory.disableOOMKiller ignored");
    }
    Ok(())
}

/// How many times the kernel's OOM killer killed a task of this cgroup: the `oom_kill`
/// key of v1 `memory.oom_control` (Linux 4.13+) or of v2 `memory.events` (which counts
/// the cgroup and its descendants). No memory controller: 0.
pub(crate) fn oom_kill_count(cg: &ContainerCgroup) -> Result<u64, CgroupError> {
    let Some(h) = cg.hierarchy_for("memory") else {
        return Ok(0);
    };
    let file = if h.is_v2() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    let path = h.dir.join(file);
    Ok(oom_kill_key(&fs::read(&path)?).unwrap_or(0))
}

/// The value of the `oom_kill` line of a flat-keyed cgroup file.
fn oom_kill_key(text: &str) -> Option<u64> {
    fs::flat_keyed(text).get("oom_kill").copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1024 * 1024;

    #[test]
    fn raising_writes_swap_first_lowering_writes_memory_first() {
        // 64M/128M -> 256M/512M: memsw first keeps limit <= memsw at each step.
        assert_eq!(
            memory_write_order(64 * MIB as u64, 512 * MIB),
            MemoryWriteOrder::SwapFirst
        );
        // 256M/512M -> 32M/32M: memory first.
        assert_eq!(
            memory_write_order(256 * MIB as u64, 32 * MIB),
            MemoryWriteOrder::MemoryFirst
        );
        // Unlimited memsw always goes first.
        assert_eq!(
            memory_write_order(256 * MIB as u64, -1),
            MemoryWriteOrder::SwapFirst
        );
        // Currently unlimited (v1 reads back a huge number): memory first.
        assert_eq!(
            memory_write_order(9_223_372_036_854_771_712, 64 * MIB),
            MemoryWriteOrder::MemoryFirst
        );
    }

    /// Both orders, simulated against the kernel's invariant, for a grid of changes: the
    /// chosen order never breaks `limit <= memsw` in between.
    #[test]
    fn chosen_order_keeps_the_v1_invariant() {
        let sizes = [16 * MIB, 64 * MIB, 128 * MIB, 512 * MIB];
        for &(old_l, old_s) in &[
            (64 * MIB, 128 * MIB),
            (512 * MIB, 512 * MIB),
            (16 * MIB, 64 * MIB),
        ] {
            for &new_l in &sizes {
                for &new_s in sizes.iter().filter(|s| **s >= new_l) {
                    let ok = match memory_write_order(old_l as u64, new_s) {
                        MemoryWriteOrder::SwapFirst => new_s >= old_l,
                        MemoryWriteOrder::MemoryFirst => new_l <= old_s,
                    };
                    assert!(ok, "{old_l}/{old_s} -> {new_l}/{new_s}");
                }
            }
        }
    }

    #[test]
    fn oom_kill_key_is_read_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(oom_kill_key(v1), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(oom_kill_key(v2), Some(1));
        assert_eq!(oom_kill_key("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn swap_to_v2_follows_runc() {
        assert_eq!(swap_to_v2(0, -1), Ok(Some(-1)));
        assert_eq!(swap_to_v2(0, 64), Ok(None));
        assert_eq!(swap_to_v2(-1, 64), Ok(Some(-1)));
        assert_eq!(swap_to_v2(128, 64), Ok(Some(64)));
        assert_eq!(swap_to_v2(64, 64), Ok(Some(0)));
        assert!(swap_to_v2(32, 64).is_err());
        assert!(swap_to_v2(64, 0).is_err());
        assert!(swap_to_v2(64, -1).is_err());
    }
}
