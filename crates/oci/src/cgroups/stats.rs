//! Resource usage of a cgroup, read from the controller files of whichever hierarchy
//! carries each controller (v1, v2, or a mix on a hybrid host), in the units the CRI
//! and cAdvisor report: nanoseconds of CPU, bytes of memory.
//!
//! What each figure means follows containerd and cAdvisor, because kubelet's eviction
//! and `kubectl top` were tuned against them:
//! - working set = usage - inactive file pages (page cache the kernel can drop at once),
//!   never below zero;
//! - rss = anonymous memory (v1 `total_rss`, v2 `anon`);
//! - on v1 the `total_*` keys of `memory.stat` are read: they include descendants,
//!   which matters for a pod cgroup holding its containers' cgroups.
//!
//! A missing controller or file leaves that part `None`: usage that cannot be read is
//! not reported as zero.

use std::collections::HashMap;
use std::path::Path;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

/// Limits at or above this are "no limit": v1 reports PAGE_COUNTER_MAX pages rounded
/// to the page size (9223372036854771712), v2 writes "max".
const UNLIMITED: u64 = 1 << 62;

/// USER_HZ: the unit of v1 `cpuacct.stat`. Fixed at 100 by the kernel ABI on every
/// architecture Linux supports.
const USER_HZ: u64 = 100;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub swap: Option<SwapStats>,
    pub pids: Option<PidsStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Cumulative CPU time of every task, all cores, in nanoseconds.
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// Periods in which the cgroup was throttled by its CFS quota, and for how long.
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage_bytes: u64,
    pub working_set_bytes: u64,
    pub rss_bytes: u64,
    /// Page cache.
    pub cache_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The memory limit; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// How often usage hit the limit (v1 `memory.failcnt`, v2 `max` in memory.events).
    pub fail_count: u64,
    /// Tasks the OOM killer killed.
    pub oom_kills: u64,
}

impl MemoryStats {
    /// What may still be used before the limit: limit - working set; `None` without a
    /// limit (kubelet then reads the node's available memory).
    pub fn available_bytes(&self) -> Option<u64> {
        self.limit_bytes
            .map(|limit| limit.saturating_sub(self.working_set_bytes))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapStats {
    pub usage_bytes: u64,
    /// The swap limit; `None` when unlimited.
    pub limit_bytes: Option<u64>,
}

impl SwapStats {
    pub fn available_bytes(&self) -> Option<u64> {
        self.limit_bytes
            .map(|limit| limit.saturating_sub(self.usage_bytes))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// Tasks (threads included) in the cgroup and below.
    pub current: u64,
    pub limit: Option<u64>,
}

impl ContainerCgroup {
    /// CPU, memory, swap and pids usage of the cgroup (descendants included). A
    /// controller that is not mounted gives `None`; a cgroup that is gone is an error.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let (memory, swap) = match self.hierarchy_for("memory") {
            Some(h) => {
                let memory = memory_stats(h)?;
                let swap = swap_stats(h, &memory)?;
                (Some(memory), swap)
            }
            None => (None, None),
        };
        Ok(CgroupStats {
            cpu: self.cpu_stats()?,
            memory,
            swap,
            pids: self.hierarchy_for("pids").map(pids_stats).transpose()?,
        })
    }

    fn cpu_stats(&self) -> Result<Option<CpuStats>, CgroupError> {
        if let Some(h) = self
            .hierarchies
            .iter()
            .find(|h| !h.is_v2() && h.has("cpuacct"))
        {
            let mut stats = cpuacct_v1(h)?;
            if let Some(cpu) = self.hierarchies.iter().find(|h| !h.is_v2() && h.has("cpu")) {
                add_throttling(&mut stats, &fs::read(&cpu.dir.join("cpu.stat"))?, 1);
            }
            return Ok(Some(stats));
        }
        // v2 keeps cpu.stat in every cgroup, whether or not the cpu controller is on.
        match self.v2() {
            Some(h) => Ok(Some(cpu_v2(&fs::read(&h.dir.join("cpu.stat"))?))),
            None => Ok(None),
        }
    }
}

fn cpuacct_v1(h: &HierarchyDir) -> Result<CpuStats, CgroupError> {
    let usage_ns = fs::read_u64(&h.dir.join("cpuacct.usage"))?;
    let ticks = fs::flat_keyed(&fs::read(&h.dir.join("cpuacct.stat"))?);
    let to_ns = |key: &str| ticks.get(key).copied().unwrap_or(0) * (1_000_000_000 / USER_HZ);
    Ok(CpuStats {
        usage_ns,
        user_ns: to_ns("user"),
        system_ns: to_ns("system"),
        ..CpuStats::default()
    })
}

/// v1 cpu.stat counts throttled time in ns, v2 in µs (`scale` 1000).
fn add_throttling(stats: &mut CpuStats, cpu_stat: &str, scale: u64) {
    let keys = fs::flat_keyed(cpu_stat);
    stats.throttled_periods = keys.get("nr_throttled").copied().unwrap_or(0);
    let throttled = keys
        .get("throttled_time")
        .or_else(|| keys.get("throttled_usec"))
        .copied()
        .unwrap_or(0);
    stats.throttled_ns = throttled * scale;
}

fn cpu_v2(cpu_stat: &str) -> CpuStats {
    let keys = fs::flat_keyed(cpu_stat);
    let usec = |key: &str| keys.get(key).copied().unwrap_or(0) * 1000;
    let mut stats = CpuStats {
        usage_ns: usec("usage_usec"),
        user_ns: usec("user_usec"),
        system_ns: usec("system_usec"),
        ..CpuStats::default()
    };
    add_throttling(&mut stats, cpu_stat, 1000);
    stats
}

fn memory_stats(h: &HierarchyDir) -> Result<MemoryStats, CgroupError> {
    let stat = fs::flat_keyed(&fs::read(&h.dir.join("memory.stat"))?);
    if h.is_v2() {
        let events = fs::flat_keyed(&fs::read(&h.dir.join("memory.events"))?);
        Ok(memory_v2(
            fs::read_u64(&h.dir.join("memory.current"))?,
            read_limit(&h.dir.join("memory.max"))?,
            &stat,
            &events,
        ))
    } else {
        let oom_control = fs::flat_keyed(&fs::read(&h.dir.join("memory.oom_control"))?);
        Ok(memory_v1(
            fs::read_u64(&h.dir.join("memory.usage_in_bytes"))?,
            read_limit(&h.dir.join("memory.limit_in_bytes"))?,
            fs::read_u64(&h.dir.join("memory.failcnt"))?,
            &stat,
            &oom_control,
        ))
    }
}

fn memory_v1(
    usage: u64,
    limit: Option<u64>,
    fail_count: u64,
    stat: &HashMap<String, u64>,
    oom_control: &HashMap<String, u64>,
) -> MemoryStats {
    let key = |k: &str| stat.get(k).copied().unwrap_or(0);
    MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(key("total_inactive_file")),
        rss_bytes: key("total_rss"),
        cache_bytes: key("total_cache"),
        page_faults: key("total_pgfault"),
        major_page_faults: key("total_pgmajfault"),
        limit_bytes: limit,
        fail_count,
        oom_kills: oom_control.get("oom_kill").copied().unwrap_or(0),
    }
}

fn memory_v2(
    usage: u64,
    limit: Option<u64>,
    stat: &HashMap<String, u64>,
    events: &HashMap<String, u64>,
) -> MemoryStats {
    let key = |k: &str| stat.get(k).copied().unwrap_or(0);
    MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(key("inactive_file")),
        rss_bytes: key("anon"),
        cache_bytes: key("file"),
        page_faults: key("pgfault"),
        major_page_faults: key("pgmajfault"),
        limit_bytes: limit,
        fail_count: events.get("max").copied().unwrap_or(0),
        oom_kills: events.get("oom_kill").copied().unwrap_or(0),
    }
}

/// v1 swap is memory+swap minus memory (`memsw` files exist only with swap accounting);
/// v2 has its own files (absent without swap accounting). `None` without accounting.
/// `memory` is what [`memory_stats`] read of the same cgroup.
fn swap_stats(h: &HierarchyDir, memory: &MemoryStats) -> Result<Option<SwapStats>, CgroupError> {
    if h.is_v2() {
        let current = h.dir.join("memory.swap.current");
        if !current.exists() {
            return Ok(None);
        }
        return Ok(Some(SwapStats {
            usage_bytes: fs::read_u64(&current)?,
            limit_bytes: read_limit(&h.dir.join("memory.swap.max"))?,
        }));
    }
    let memsw_usage = h.dir.join("memory.memsw.usage_in_bytes");
    if !memsw_usage.exists() {
        return Ok(None);
    }
    let memsw_limit = read_limit(&h.dir.join("memory.memsw.limit_in_bytes"))?;
    Ok(Some(SwapStats {
        usage_bytes: fs::read_u64(&memsw_usage)?.saturating_sub(memory.usage_bytes),
        limit_bytes: match (memsw_limit, memory.limit_bytes) {
            (Some(memsw), Some(memory)) => Some(memsw.saturating_sub(memory)),
            _ => None,
        },
    }))
}

fn pids_stats(h: &HierarchyDir) -> Result<PidsStats, CgroupError> {
    Ok(PidsStats {
        current: fs::read_u64(&h.dir.join("pids.current"))?,
        limit: read_limit(&h.dir.join("pids.max"))?,
    })
}

/// A limit file: "max" (v2) or a value at or above [`UNLIMITED`] is no limit.
fn read_limit(path: &Path) -> Result<Option<u64>, CgroupError> {
    let text = fs::read_trimmed(path)?;
    if text == "max" {
        return Ok(None);
    }
    let value = fs::parse_u64(path, &text)?;
    Ok((value < UNLIMITED).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_working_set_leaves_out_inactive_file_pages() {
        let stat = fs::flat_keyed(
            "cache 100\nrss 7\ntotal_cache 4096\ntotal_rss 8192\ntotal_inactive_file 1000\n\
             total_pgfault 55\ntotal_pgmajfault 3\n",
        );
        let oom = fs::flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        let m = memory_v1(20_000, Some(50_000), 4, &stat, &oom);
        assert_eq!(m.working_set_bytes, 19_000);
        assert_eq!(
            m.rss_bytes, 8192,
            "the hierarchical total, not the cgroup's own"
        );
        assert_eq!(m.cache_bytes, 4096);
        assert_eq!((m.page_faults, m.major_page_faults), (55, 3));
        assert_eq!((m.fail_count, m.oom_kills), (4, 2));
        assert_eq!(m.available_bytes(), Some(31_000));
    }

    #[test]
    fn working_set_never_goes_below_zero() {
        let stat = fs::flat_keyed("total_inactive_file 5000\n");
        let m = memory_v1(1000, None, 0, &stat, &HashMap::new());
        assert_eq!(m.working_set_bytes, 0);
        assert_eq!(
            m.available_bytes(),
            None,
            "no limit, nothing to subtract from"
        );
    }

    #[test]
    fn v2_memory_reads_anon_file_and_events() {
        let stat =
            fs::flat_keyed("anon 300\nfile 700\ninactive_file 200\npgfault 9\npgmajfault 1\n");
        let events = fs::flat_keyed("low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\n");
        let m = memory_v2(1000, None, &stat, &events);
        assert_eq!(m.working_set_bytes, 800);
        assert_eq!((m.rss_bytes, m.cache_bytes), (300, 700));
        assert_eq!((m.page_faults, m.major_page_faults), (9, 1));
        assert_eq!((m.fail_count, m.oom_kills), (6, 1));
    }

    #[test]
    fn v2_cpu_stat_is_in_microseconds() {
        let cpu = cpu_v2(
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\n\
             nr_throttled 2\nthrottled_usec 40\n",
        );
        assert_eq!(cpu.usage_ns, 1_500_000);
        assert_eq!((cpu.user_ns, cpu.system_ns), (1_000_000, 500_000));
        assert_eq!((cpu.throttled_periods, cpu.throttled_ns), (2, 40_000));
    }

    #[test]
    fn v1_throttled_time_is_in_nanoseconds() {
        let mut cpu = CpuStats::default();
        add_throttling(
            &mut cpu,
            "nr_periods 5\nnr_throttled 1\nthrottled_time 777\n",
            1,
        );
        assert_eq!((cpu.throttled_periods, cpu.throttled_ns), (1, 777));
    }

    #[test]
    fn huge_limits_and_max_are_no_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("limit");
        for (text, want) in [
            ("max\n", None),
            ("9223372036854771712\n", None),
            ("52428800\n", Some(52_428_800)),
        ] {
            std::fs::write(&file, text).unwrap();
            assert_eq!(read_limit(&file).unwrap(), want, "{text:?}");
        }
        std::fs::write(&file, "lots\n").unwrap();
        assert!(read_limit(&file).is_err());
    }
}
