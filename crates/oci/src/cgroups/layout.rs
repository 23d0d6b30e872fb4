//! Which cgroup hierarchies this host has, and which controller lives on which.
//!
//! cgroups-rs (`hierarchies::auto()`) decides v1 or v2 from one `statfs` of `/sys/fs/cgroup`
//! and then assumes every controller is on that version: on a hybrid host (v1 controllers
//! plus a cgroup2 mount at `/sys/fs/cgroup/unified` holding some controllers, such as
//! hugetlb here) it never sees the v2 controllers. So the detection is ours: every cgroup
//! and cgroup2 mount from `/proc/self/mountinfo`, the v1 controllers from each mount's
//! superblock options (checked against the names in `/proc/cgroups`), the v2 controllers
//! from the v2 mount's `cgroup.controllers`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::CgroupError;
use super::fs;

pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_CGROUPS: &str = "/proc/cgroups";

/// Controller names used when `/proc/cgroups` cannot be read (recent kernels may drop it).
const KNOWN_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "io",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// How the host's cgroup hierarchies are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupLayout {
    /// Only cgroup v1 hierarchies (one per controller or controller group).
    V1,
    /// Only the unified cgroup v2 hierarchy.
    V2,
    /// cgroup v1 hierarchies and a cgroup v2 hierarchy side by side; each controller is on
    /// at most one of them.
    Hybrid,
}

impl CgroupLayout {
    /// Detects the layout from this process's mount table.
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        Ok(HostCgroups::detect()?.layout)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            CgroupLayout::V1 => "cgroup v1",
            CgroupLayout::V2 => "cgroup v2",
            CgroupLayout::Hybrid => "hybrid cgroup v1/v2",
        }
    }
}

impl std::fmt::Display for CgroupLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// cgroup v1 or the unified v2 hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Version {
    V1,
    V2,
}

/// One mounted hierarchy: where it is and which controllers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountedHierarchy {
    pub version: Version,
    pub mount_point: PathBuf,
    /// v1: controller names as in the superblock options ("cpu", "memory", "name=systemd");
    /// v2: the root's `cgroup.controllers`.
    pub controllers: Vec<String>,
}

/// The host's cgroup layout and every hierarchy a container cgroup goes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostCgroups {
    pub layout: CgroupLayout,
    pub hierarchies: Vec<MountedHierarchy>,
}

impl HostCgroups {
    pub fn detect() -> Result<Self, CgroupError> {
        let mountinfo = fs::read(Path::new(MOUNTINFO))?;
        // /proc/cgroups only helps to tell controller names from other superblock options.
        let names = match std::fs::read_to_string(PROC_CGROUPS) {
            Ok(text) => parse_proc_cgroups(&text),
            Err(_) => KNOWN_CONTROLLERS.iter().map(|s| s.to_string()).collect(),
        };
        let mounts = parse_mountinfo(&mountinfo);
        from_mounts(&mounts, &names, |dir| {
            let path = dir.join("cgroup.controllers");
            Ok(fs::read(&path)?
                .split_whitespace()
                .map(str::to_string)
                .collect())
        })
    }
}

/// One line of `/proc/self/mountinfo`, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// "major:minor" of the superblock: the same hierarchy mounted twice shares it.
    pub device: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let tail: Vec<&str> = after.split(' ').collect();
    if fields.len() < 6 || tail.len() < 3 {
        return None;
    }
    Some(MountEntry {
        device: fields[2].to_string(),
        mount_point: PathBuf::from(unescape_octal(fields[4])),
        fs_type: tail[0].to_string(),
        super_options: tail[2].split(',').map(str::to_string).collect(),
    })
}

/// The kernel escapes space, tab, newline and backslash in mountinfo paths as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| s.get(i + 1..i + 4))
            .flatten()
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        if let Some(v) = escaped {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Controller names from `/proc/cgroups` ("#subsys_name hierarchy num_cgroups enabled").
pub(crate) fn parse_proc_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Builds the host's hierarchies from its cgroup mounts. `v2_controllers` reads a v2
/// mount's `cgroup.controllers` (a parameter so unit tests need no real mount).
pub(crate) fn from_mounts(
    mounts: &[MountEntry],
    controller_names: &[String],
    v2_controllers: impl Fn(&Path) -> Result<Vec<String>, CgroupError>,
) -> Result<HostCgroups, CgroupError> {
    let mut v1: Vec<(String, MountedHierarchy)> = Vec::new();
    let mut v2: Option<(String, PathBuf)> = None;
    for m in mounts {
        match m.fs_type.as_str() {
            "cgroup" => {
                let controllers: Vec<String> = m
                    .super_options
                    .iter()
                    .filter(|o| o.starts_with("name=") || controller_names.contains(o))
                    .cloned()
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                let h = MountedHierarchy {
                    version: Version::V1,
                    mount_point: m.mount_point.clone(),
                    controllers,
                };
                match v1.iter_mut().find(|(dev, _)| *dev == m.device) {
                    // The same hierarchy mounted twice: keep the /sys/fs/cgroup one.
                    Some((_, existing)) => {
                        if prefer_mount(&h.mount_point, &existing.mount_point) {
                            *existing = h;
                        }
                    }
                    None => v1.push((m.device.clone(), h)),
                }
            }
            "cgroup2" => match &v2 {
                Some((_, existing)) if !prefer_mount(&m.mount_point, existing) => {}
                _ => v2 = Some((m.device.clone(), m.mount_point.clone())),
            },
            _ => {}
        }
    }

    let layout = match (v1.is_empty(), v2.is_none()) {
        (false, true) => CgroupLayout::V1,
        (true, false) => CgroupLayout::V2,
        (false, false) => CgroupLayout::Hybrid,
        (true, true) => {
            return Err(CgroupError::NoCgroupMounts {
                mountinfo: PathBuf::from(MOUNTINFO),
            });
        }
    };

    let mut hierarchies: Vec<MountedHierarchy> = v1.into_iter().map(|(_, h)| h).collect();
    // blkio before memory when moving a task: cgroup writeback pairs a memcg with a blkcg
    // and wants the blkcg in place first (the order cgroups-rs uses too).
    hierarchies.sort_by_key(|h| !h.controllers.iter().any(|c| c == "blkio"));
    if let Some((_, mount_point)) = v2 {
        let controllers = v2_controllers(&mount_point)?;
        hierarchies.push(MountedHierarchy {
            version: Version::V2,
            mount_point,
            controllers,
        });
    }
    Ok(HostCgroups {
        layout,
        hierarchies,
    })
}

/// Whether mount point `a` is a better pick than `b` for the same hierarchy.
fn prefer_mount(a: &Path, b: &Path) -> bool {
    let standard = Path::new("/sys/fs/cgroup");
    a.starts_with(standard) && !b.starts_with(standard)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's mount table (cgroup lines plus noise).
    const HYBRID: &str = "\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn names() -> Vec<String> {
        KNOWN_CONTROLLERS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hybrid_mount_table_is_hybrid_with_hugetlb_on_v2() {
        let host = from_mounts(&parse_mountinfo(HYBRID), &names(), |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup/unified"));
            Ok(vec!["hugetlb".to_string()])
        })
        .unwrap();
        assert_eq!(host.layout, CgroupLayout::Hybrid);
        assert_eq!(host.hierarchies.len(), 6);
        assert_eq!(host.hierarchies[0].controllers, vec!["blkio"]);
        let v2 = host.hierarchies.last().unwrap();
        assert_eq!(v2.version, Version::V2);
        assert_eq!(v2.controllers, vec!["hugetlb"]);
        assert!(
            host.hierarchies
                .iter()
                .any(|h| h.controllers == vec!["name=systemd"])
        );
    }

    #[test]
    fn pure_v2_and_pure_v1_are_told_apart() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let host = from_mounts(&parse_mountinfo(v2), &names(), |_| {
            Ok(vec!["cpu".into(), "memory".into()])
        })
        .unwrap();
        assert_eq!(host.layout, CgroupLayout::V2);

        let v1 = "29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct,clone_children\n";
        let host = from_mounts(&parse_mountinfo(v1), &names(), |_| unreachable!()).unwrap();
        assert_eq!(host.layout, CgroupLayout::V1);
        // "rw" and "clone_children" are options, not controllers.
        assert_eq!(host.hierarchies[0].controllers, vec!["cpu", "cpuacct"]);
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let err = from_mounts(
            &parse_mountinfo(HYBRID.lines().next().unwrap()),
            &names(),
            |_| unreachable!(),
        )
        .unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroupMounts { .. }), "{err}");
    }

    #[test]
    fn same_hierarchy_mounted_twice_prefers_sys_fs_cgroup() {
        let text = "\
50 1 0:32 / /mnt/mem rw - cgroup cgroup rw,memory
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let host = from_mounts(&parse_mountinfo(text), &names(), |_| unreachable!()).unwrap();
        assert_eq!(host.hierarchies.len(), 1);
        assert_eq!(
            host.hierarchies[0].mount_point,
            Path::new("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn mountinfo_octal_escapes_are_decoded() {
        let e = parse_mountinfo("1 2 0:1 / /a\\040b rw - cgroup cgroup rw,pids\n");
        assert_eq!(e[0].mount_point, Path::new("/a b"));
    }

    #[test]
    fn proc_cgroups_names_skip_the_header() {
        let names = parse_proc_cgroups(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nhugetlb\t0\t1\t1\n",
        );
        assert_eq!(names, vec!["cpuset", "hugetlb"]);
    }
}
