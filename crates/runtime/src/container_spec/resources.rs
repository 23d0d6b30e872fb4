//! `linux.resources` (cpu, memory, hugepages, unified) and `process.oomScoreAdj`, as
//! containerd's `WithResources` and `WithOOMScoreAdj` set them.

use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::{HostFacts, SpecError};
use crate::model::ResourcesSpec;

const OOM_SCORE_ADJ_MIN: i32 = -1000;
const OOM_SCORE_ADJ_MAX: i32 = 1000;
/// Bit of CAP_SYS_RESOURCE in the `CapEff` mask of /proc/self/status.
const CAP_SYS_RESOURCE_BIT: u32 = 24;

pub(super) fn build_resources(
    r: &ResourcesSpec,
    host: &HostFacts,
    warnings: &mut Vec<String>,
) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResources::default();
    out.set_cpu(cpu(r)?);
    out.set_memory(memory(r, host.swap_controller, warnings)?);
    out.set_hugepage_limits(hugepages(r)?);
    if !r.unified.is_empty() {
        out.set_unified(Some(r.unified.clone().into_iter().collect()));
    }
    Ok(out)
}

fn non_negative(value: i64, field: &'static str) -> Result<Option<u64>, SpecError> {
    match u64::try_from(value) {
        Ok(0) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(SpecError::invalid(field, format!("{value} is negative"))),
    }
}

/// Zero means "not set", -1 means "no limit"; anything below is invalid.
fn limit_or_unlimited(value: i64, field: &'static str) -> Result<Option<i64>, SpecError> {
    match value {
        0 => Ok(None),
        v if v < -1 => Err(SpecError::invalid(field, format!("{v} is below -1"))),
        v => Ok(Some(v)),
    }
}

fn cpu(r: &ResourcesSpec) -> Result<Option<LinuxCpu>, SpecError> {
    let shares = non_negative(r.cpu_shares, "resources.cpu_shares")?;
    let period = non_negative(r.cpu_period, "resources.cpu_period")?;
    let quota = limit_or_unlimited(r.cpu_quota, "resources.cpu_quota")?;
    let cpus = Some(r.cpuset_cpus.clone()).filter(|s| !s.is_empty());
    let mems = Some(r.cpuset_mems.clone()).filter(|s| !s.is_empty());
    if shares.is_none() && period.is_none() && quota.is_none() && cpus.is_none() && mems.is_none() {
        return Ok(None);
    }
    let mut c = LinuxCpu::default();
    c.set_shares(shares);
    c.set_period(period);
    c.set_quota(quota);
    c.set_cpus(cpus);
    c.set_mems(mems);
    Ok(Some(c))
}

/// The CRI swap limit is memory+swap (the v1 meaning, which OCI `memory.swap` has too).
/// With a memory limit and no swap limit, swap is capped at the memory limit so the
/// container does not swap by default (containerd); without a swap controller neither
/// is set.
fn memory(
    r: &ResourcesSpec,
    swap_controller: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<LinuxMemory>, SpecError> {
    let limit = non_negative(r.memory_limit_in_bytes, "resources.memory_limit_in_bytes")?
        .map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    let swap = limit_or_unlimited(
        r.memory_swap_limit_in_bytes,
        "resources.memory_swap_limit_in_bytes",
    )?;
    let swap = match (swap, swap_controller) {
        (Some(s), true) => Some(s),
        (Some(s), false) => {
            warnings.push(format!(
                "memory+swap limit {s} ignored: no swap controller on this host"
            ));
            None
        }
        (None, true) => limit,
        (None, false) => None,
    };
    if limit.is_none() && swap.is_none() {
        return Ok(None);
    }
    let mut m = LinuxMemory::default();
    m.set_limit(limit);
    m.set_swap(swap);
    Ok(Some(m))
}

fn hugepages(r: &ResourcesSpec) -> Result<Option<Vec<LinuxHugepageLimit>>, SpecError> {
    if r.hugepage_limits.is_empty() {
        return Ok(None);
    }
    r.hugepage_limits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if h.page_size.is_empty() {
                return Err(SpecError::invalid(
                    format!("resources.hugepage_limits[{i}].page_size"),
                    "is empty",
                ));
            }
            let limit = i64::try_from(h.limit).map_err(|_| {
                SpecError::invalid(
                    format!("resources.hugepage_limits[{i}].limit"),
                    format!("{} is too large", h.limit),
                )
            })?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone());
            l.set_limit(limit);
            Ok(l)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The request's oom_score_adj, raised to what this process may set
/// (containerd's `restrictOOMScoreAdj`), with a warning when it had to be.
pub(super) fn oom_score_adj(
    requested: i64,
    min_allowed: i32,
    warnings: &mut Vec<String>,
) -> Result<i32, SpecError> {
    let adj = i32::try_from(requested)
        .ok()
        .filter(|a| (OOM_SCORE_ADJ_MIN..=OOM_SCORE_ADJ_MAX).contains(a))
        .ok_or_else(|| {
            SpecError::invalid(
                "resources.oom_score_adj",
                format!("{requested} is outside {OOM_SCORE_ADJ_MIN}..={OOM_SCORE_ADJ_MAX}"),
            )
        })?;
    if adj < min_allowed {
        warnings.push(format!(
            "oom_score_adj {adj} raised to {min_allowed}: this runtime may not set lower"
        ));
        return Ok(min_allowed);
    }
    Ok(adj)
}

/// -1000 with CAP_SYS_RESOURCE; otherwise our own oom_score_adj (a process can only
/// raise a child's).
pub(super) fn probe_min_oom_score_adj() -> Result<i32, SpecError> {
    const STATUS: &str = "/proc/self/status";
    const ADJ: &str = "/proc/self/oom_score_adj";
    let status = std::fs::read_to_string(STATUS).map_err(SpecError::io("read", STATUS))?;
    if has_cap_sys_resource(&status) {
        return Ok(OOM_SCORE_ADJ_MIN);
    }
    let text = std::fs::read_to_string(ADJ).map_err(SpecError::io("read", ADJ))?;
    text.trim().parse::<i32>().map_err(|e| {
        SpecError::io("parse", ADJ)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })
}

/// Whether the `CapEff:` line of a /proc/<pid>/status text has CAP_SYS_RESOURCE.
fn has_cap_sys_resource(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_SYS_RESOURCE_BIT) != 0)
}

/// Whether /sys/fs/cgroup is a cgroup2 mount (pure v2, not hybrid).
pub(super) fn probe_cgroup2_unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// containerd's `SwapControllerAvailable`: v1 `memory.memsw.limit_in_bytes`, or v2
/// `memory.swap.max` in our own cgroup (the root cgroup has none).
pub(super) fn probe_swap_controller() -> bool {
    if !probe_cgroup2_unified() {
        return Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    }
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| unified_cgroup_path(&text))
        .is_some_and(|p| {
            Path::new("/sys/fs/cgroup")
                .join(p.trim_start_matches('/'))
                .join("memory.swap.max")
                .exists()
        })
}

/// The `0::/path` line of /proc/self/cgroup.
fn unified_cgroup_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HugepageLimit;

    fn host(swap: bool) -> HostFacts {
        HostFacts {
            min_oom_score_adj: -1000,
            all_capabilities: Vec::new(),
            hostname: "node".into(),
            cgroup2_unified: false,
            swap_controller: swap,
        }
    }

    #[test]
    fn cpu_and_cpuset_are_set_when_given() {
        let r = ResourcesSpec {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            ..Default::default()
        };
        let out = build_resources(&r, &host(true), &mut Vec::new()).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
    }

    #[test]
    fn nothing_set_means_no_cpu_or_memory_section() {
        let out = build_resources(&ResourcesSpec::default(), &host(true), &mut Vec::new()).unwrap();
        assert!(out.cpu().is_none() && out.memory().is_none() && out.hugepage_limits().is_none());
        assert!(out.unified().is_none());
    }

    #[test]
    fn memory_limit_caps_swap_at_the_limit_by_default() {
        let r = ResourcesSpec {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let m = build_resources(&r, &host(true), &mut Vec::new())
            .unwrap()
            .memory()
            .unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(64 << 20), Some(64 << 20)));
    }

    #[test]
    fn swap_limit_is_memory_plus_swap_as_given() {
        let r = ResourcesSpec {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        let m = build_resources(&r, &host(true), &mut Vec::new())
            .unwrap()
            .memory()
            .unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(64 << 20), Some(128 << 20)));
    }

    #[test]
    fn without_swap_controller_swap_is_dropped_with_a_warning() {
        let r = ResourcesSpec {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            ..Default::default()
        };
        let mut warnings = Vec::new();
        let m = build_resources(&r, &host(false), &mut warnings)
            .unwrap()
            .memory()
            .unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(64 << 20), None));
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn negative_resources_are_invalid() {
        for r in [
            ResourcesSpec {
                cpu_shares: -1,
                ..Default::default()
            },
            ResourcesSpec {
                memory_limit_in_bytes: -5,
                ..Default::default()
            },
            ResourcesSpec {
                cpu_quota: -2,
                ..Default::default()
            },
        ] {
            let err = build_resources(&r, &host(true), &mut Vec::new()).unwrap_err();
            assert!(err.is_invalid_argument(), "{err}");
        }
    }

    #[test]
    fn hugepages_and_unified_are_copied() {
        let mut r = ResourcesSpec {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            ..Default::default()
        };
        r.unified.insert("memory.high".into(), "1G".into());
        let out = build_resources(&r, &host(true), &mut Vec::new()).unwrap();
        let h = out.hugepage_limits().clone().unwrap();
        assert_eq!((h[0].page_size().as_str(), h[0].limit()), ("2MB", 4 << 20));
        assert_eq!(
            out.unified()
                .as_ref()
                .and_then(|u| u.get("memory.high"))
                .map(String::as_str),
            Some("1G")
        );
    }

    #[test]
    fn oom_score_adj_is_raised_to_what_we_may_set() {
        let mut warnings = Vec::new();
        assert_eq!(oom_score_adj(-998, -999, &mut warnings).unwrap(), -998);
        assert!(warnings.is_empty());
        assert_eq!(oom_score_adj(-1000, -500, &mut warnings).unwrap(), -500);
        assert_eq!(warnings.len(), 1);
        assert!(oom_score_adj(1001, -1000, &mut warnings).is_err());
        assert!(oom_score_adj(i64::MIN, -1000, &mut warnings).is_err());
    }

    #[test]
    fn cap_sys_resource_is_read_from_capeff() {
        assert!(has_cap_sys_resource(
            "Name:\tx\nCapEff:\t000001ffffffffff\n"
        ));
        assert!(!has_cap_sys_resource("CapEff:\t0000000000000000\n"));
        assert!(!has_cap_sys_resource("CapEff:\t00000000a80425fb\n"));
        assert!(!has_cap_sys_resource("garbage"));
    }

    #[test]
    fn unified_cgroup_path_is_the_zero_line() {
        assert_eq!(
            unified_cgroup_path("1:name=systemd:/a\n0::/kubepods/x\n").as_deref(),
            Some("/kubepods/x")
        );
        assert_eq!(unified_cgroup_path("1:cpu:/a\n"), None);
    }
}
