//! Container cgroups for the OCI executor: cgroup v1, v2 (unified) and hybrid hosts.
//!
//! # Layouts
//!
//! [`CgroupLayout::detect`] reads `/proc/self/mountinfo`: `cgroup` mounts are v1
//! hierarchies (their controllers are the superblock options that `/proc/cgroups` names),
//! a `cgroup2` mount is the unified hierarchy (its controllers are its root's
//! `cgroup.controllers`). Only v1 is [`CgroupLayout::V1`], only v2 is
//! [`CgroupLayout::V2`], both is [`CgroupLayout::Hybrid`].
//!
//! A hybrid host is not "v1 with a decoration": each controller lives on exactly one
//! hierarchy, and on some hosts (this project's CI machine) the v2 mount at
//! `/sys/fs/cgroup/unified` holds real controllers (hugetlb) that no v1 hierarchy has.
//! crun 1.8 refuses that layout; Coracle does not. A [`ContainerCgroup`] has one
//! directory per hierarchy, named by the same cgroup path in each; every resource goes
//! to the hierarchy its controller is on (so hugetlb limits land in the v2
//! `hugetlb.<size>.max` files), and a task joins every hierarchy, the v2 one included.
//!
//! # cgroups-rs and direct writes
//!
//! Controller files are written through cgroups-rs 0.4's controllers
//! (`MemController`, `CpuController`, `HugeTlbController`, ...), built for each directory
//! with the version of *that* hierarchy. Its `Cgroup`/`Hierarchy` layer is not used: it
//! picks one version for the whole host (`hierarchies::auto()`), cannot do hybrid, and
//! panics on bad paths. Direct cgroupfs writes (module `fs`) are used for directory
//! creation and removal, joining (`cgroup.procs`), v2 `cgroup.subtree_control`, v1
//! cpuset inheritance, freezer state polling, `unified` keys and the few files cgroups-rs
//! has no setter for; each place says why.
//!
//! # Devices on cgroup v2
//!
//! cgroup v2 has no devices controller: device rules are an eBPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to the cgroup, which is not implemented yet.
//! On a host whose devices controller is on v2, rules other than the usual container
//! defaults are refused with [`CgroupError::Unsupported`], and the defaults are accepted
//! with a warning that they are not enforced. On v1 and on this hybrid host (devices is a
//! v1 controller) rules are written to `devices.allow`/`devices.deny` in order.

mod blkio;
mod cpu;
mod devices;
mod error;
mod freezer;
mod fs;
mod hugetlb;
mod layout;
mod memory;
mod network;
mod path;
mod pids;
mod stats;
mod unified;

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use cpu::shares_to_weight;
pub use error::CgroupError;
pub use layout::CgroupLayout;
use layout::{HostCgroups, Version};
pub use memory::{MemoryWriteOrder, memory_write_order, swap_to_v2};
pub use path::{DEFAULT_PARENT, resolve_cgroups_path};
pub use stats::{CgroupStats, CpuStats, MemoryStats, PidsStats, SwapStats};

/// Detects the host's cgroup layout (same as [`CgroupLayout::detect`]).
pub fn detect() -> Result<CgroupLayout, CgroupError> {
    CgroupLayout::detect()
}

/// How long `delete` waits for the tasks of a just-killed container to leave.
const DELETE_GRACE: Duration = Duration::from_secs(1);

/// A container's cgroup: one directory per mounted hierarchy, all named by the same path.
///
/// Serializable so the container state can persist it: a restarted daemon or monitor
/// operates on the recorded directories without detecting the layout again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCgroup {
    layout: CgroupLayout,
    /// The cgroup path below every hierarchy root, absolute ("/coracle/abc").
    path: PathBuf,
    hierarchies: Vec<HierarchyDir>,
}

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HierarchyDir {
    version: Version,
    mount_point: PathBuf,
    controllers: Vec<String>,
    dir: PathBuf,
}

impl HierarchyDir {
    fn is_v2(&self) -> bool {
        self.version == Version::V2
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// A source for a `cgroup` mount inside the container: one per host hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMountSource {
    /// v1: the hierarchy's controllers joined by ',' ("cpu,cpuacct", "memory"; a named
    /// hierarchy such as name=systemd gives "systemd"); v2: "unified" on a hybrid host,
    /// "" when v2 is the only hierarchy (it is then mounted at /sys/fs/cgroup itself).
    pub name: String,
    /// The container's cgroup directory in that hierarchy.
    pub host_path: PathBuf,
}

impl ContainerCgroup {
    /// Creates the cgroup for OCI `linux.cgroupsPath` (absolute: relative to each
    /// hierarchy root, e.g. "/kubepods/pod1/ctr"; relative: below `/coracle`; empty or
    /// absent: `/coracle/<container_id>`; the systemd "slice:prefix:name" form is mapped
    /// to the cgroupfs path systemd would have made, with a warning) and applies
    /// `resources`. Refuses a cgroup that already has processes. On failure, removes the
    /// directories it made.
    pub fn create(
        cgroups_path: Option<&Path>,
        container_id: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        let path = resolve_cgroups_path(cgroups_path, container_id)?;
        let host = HostCgroups::detect()?;
        let cg = Self::for_host(host, path);
        let created = cg.make_dirs()?;
        let result = cg.refuse_if_populated().and_then(|()| match resources {
            Some(r) => cg.update(r),
            None => Ok(()),
        });
        if let Err(e) = result {
            remove_created(&created);
            return Err(e);
        }
        Ok(cg)
    }

    fn for_host(host: HostCgroups, path: PathBuf) -> Self {
        let relative = path.strip_prefix("/").unwrap_or(&path).to_path_buf();
        let hierarchies = host
            .hierarchies
            .into_iter()
            .map(|h| HierarchyDir {
                dir: h.mount_point.join(&relative),
                version: h.version,
                mount_point: h.mount_point,
                controllers: h.controllers,
            })
            .collect();
        ContainerCgroup {
            layout: host.layout,
            path,
            hierarchies,
        }
    }

    /// The host layout this cgroup was made on.
    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    /// The cgroup path below every hierarchy root ("/coracle/abc").
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container's directory in the hierarchy that carries `controller` ("memory",
    /// "hugetlb", ...), if that controller is mounted anywhere.
    pub fn controller_dir(&self, controller: &str) -> Option<&Path> {
        self.hierarchy_for(controller).map(|h| h.dir.as_path())
    }

    /// The hierarchy `controller` is on: a v1 hierarchy naming it, else the v2 one if its
    /// root lists it.
    fn hierarchy_for(&self, controller: &str) -> Option<&HierarchyDir> {
        self.hierarchies
            .iter()
            .find(|h| !h.is_v2() && h.has(controller))
            .or_else(|| {
                self.hierarchies
                    .iter()
                    .find(|h| h.is_v2() && h.has(controller))
            })
    }

    fn v2(&self) -> Option<&HierarchyDir> {
        self.hierarchies.iter().find(|h| h.is_v2())
    }

    /// Makes the directory in every hierarchy, then what each hierarchy needs before a
    /// task can join or a limit can be set. Returns the directories it created.
    fn make_dirs(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let mut created = Vec::new();
        let result = self.hierarchies.iter().try_for_each(|h| {
            created.extend(fs::mkdir_all(&h.dir)?);
            if h.is_v2() {
                enable_v2_controllers(h)
            } else if h.has("cpuset") {
                cpu::inherit_cpuset_v1(&h.mount_point, &h.dir)
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => Ok(created),
            Err(e) => {
                remove_created(&created);
                Err(e)
            }
        }
    }

    /// runc 1.2 refuses a non-empty cgroup too: a container sharing a cgroup with
    /// strangers would be frozen, limited and killed together with them.
    fn refuse_if_populated(&self) -> Result<(), CgroupError> {
        let pids = self.pids()?;
        if pids.is_empty() {
            Ok(())
        } else {
            Err(CgroupError::NotEmpty {
                path: self.path.clone(),
                pids,
            })
        }
    }

    /// Moves process `pid` (all its threads) into the container's cgroup in every
    /// hierarchy.
    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            // Direct write, not cgroups-rs `add_task_by_tgid`: we need the errno (ESRCH
            // for a gone pid, ENOSPC for an empty cpuset) in the error.
            let procs = h.dir.join("cgroup.procs");
            fs::write_raw(&procs, &pid.to_string()).map_err(|source| CgroupError::AddTask {
                pid,
                path: procs.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Applies OCI `linux.resources`. Every value is checked before the first write, so a
    /// bad field leaves the cgroup as it was.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.validate(resources)?;
        // runc's v1 subsystem order: cpuset, devices, memory, cpu, pids, blkio, hugetlb,
        // network; unified keys last so they override.
        if let Some(c) = resources.cpu() {
            cpu::apply_cpuset(self, c)?;
        }
        if let Some(d) = resources.devices() {
            devices::apply(self, d)?;
        }
        if let Some(m) = resources.memory() {
            memory::apply(self, m)?;
        }
        if let Some(c) = resources.cpu() {
            cpu::apply(self, c)?;
        }
        if let Some(p) = resources.pids() {
            pids::apply(self, p)?;
        }
        if let Some(b) = resources.block_io() {
            blkio::apply(self, b)?;
        }
        if let Some(h) = resources.hugepage_limits() {
            hugetlb::apply(self, h)?;
        }
        if let Some(n) = resources.network() {
            network::apply(self, n);
        }
        if resources.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
            tracing::warn!(cgroup = %self.path.display(), "linux.resources.rdma is not supported: ignored");
        }
        if let Some(u) = resources.unified() {
            unified::apply(self, u)?;
        }
        Ok(())
    }

    fn validate(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(c) = r.cpu() {
            cpu::validate(self, c)?;
        }
        if let Some(d) = r.devices() {
            devices::validate(self, d)?;
        }
        if let Some(m) = r.memory() {
            memory::validate(self, m)?;
        }
        if let Some(b) = r.block_io() {
            blkio::validate(b)?;
        }
        if let Some(h) = r.hugepage_limits() {
            hugetlb::validate(self, h)?;
        }
        if let Some(u) = r.unified() {
            unified::validate(self, u)?;
        }
        Ok(())
    }

    /// Freezes every task and waits until the kernel reports the cgroup FROZEN
    /// (v1 `freezer.state`, v2 `cgroup.events` "frozen 1").
    pub fn freeze(&self) -> Result<(), CgroupError> {
        freezer::freeze(self)
    }

    /// Thaws the cgroup.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        freezer::thaw(self)
    }

    /// Whether the cgroup is (completely) frozen.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        freezer::is_frozen(self)
    }

    /// How many tasks of the cgroup the kernel's OOM killer has killed (0 without a
    /// memory controller). Read it before the cgroup is deleted.
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        memory::oom_kill_count(self)
    }

    /// Every process in the container's cgroup and the cgroups below it, in any
    /// hierarchy; sorted, no duplicates.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for h in &self.hierarchies {
            fs::procs_recursive(&h.dir, &mut pids)?;
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Removes the container's cgroup (and any cgroups the container made below it) in
    /// every hierarchy. Tasks that are exiting get up to a second to leave; live tasks make
    /// it fail with [`CgroupError::TasksRemain`] (the caller kills first: a delete that
    /// killed would hide a lifecycle bug). A cgroup already gone is fine.
    pub fn delete(&self) -> Result<(), CgroupError> {
        let outcome = fs::poll_until(DELETE_GRACE, || {
            if !self.pids()?.is_empty() {
                return Ok(None);
            }
            Ok(self.try_remove_all().map(Some).unwrap_or(None))
        })?;
        if outcome.is_some() {
            return Ok(());
        }
        let pids = self.pids()?;
        if !pids.is_empty() {
            return Err(CgroupError::TasksRemain {
                path: self.path.clone(),
                pids,
            });
        }
        // No task left, yet rmdir still fails: report the real error.
        match self.try_remove_all() {
            Ok(()) => Ok(()),
            Err((path, source)) => Err(CgroupError::Remove { path, source }),
        }
    }

    fn try_remove_all(&self) -> Result<(), (PathBuf, std::io::Error)> {
        // Try every hierarchy even after a failure, so a retry has less left to do.
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = fs::remove_tree(&h.dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// One source per hierarchy for a "cgroup" mount inside the container.
    pub fn mount_sources(&self) -> Vec<CgroupMountSource> {
        self.hierarchies
            .iter()
            .map(|h| CgroupMountSource {
                name: match (h.version, self.layout) {
                    (Version::V2, CgroupLayout::V2) => String::new(),
                    (Version::V2, _) => "unified".to_string(),
                    (Version::V1, _) => h
                        .controllers
                        .iter()
                        .map(|c| c.strip_prefix("name=").unwrap_or(c))
                        .collect::<Vec<_>>()
                        .join(","),
                },
                host_path: h.dir.clone(),
            })
            .collect()
    }
}

/// Enables, in every ancestor of the container's v2 directory (the hierarchy root
/// included), each controller that ancestor has: a v2 controller's files only appear in
/// a cgroup whose parent lists it in `cgroup.subtree_control` (cgroup-v2.rst "Enabling
/// and Disabling"). runc and crun do the same. One controller per write, so a refusal
/// names the controller.
fn enable_v2_controllers(h: &HierarchyDir) -> Result<(), CgroupError> {
    let Ok(relative) = h.dir.strip_prefix(&h.mount_point) else {
        return Ok(());
    };
    let mut level = h.mount_point.clone();
    for component in relative.components() {
        let available = fs::read(&level.join("cgroup.controllers"))?;
        let subtree_file = level.join("cgroup.subtree_control");
        let enabled = fs::read(&subtree_file)?;
        for c in available.split_whitespace() {
            if !enabled.split_whitespace().any(|e| e == c) {
                fs::write(&subtree_file, &format!("+{c}"))?;
            }
        }
        level.push(component);
    }
    Ok(())
}

/// Best-effort removal of directories a failed create made, innermost first.
fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if let Err(e) = std::fs::remove_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove cgroup directory after a failed create");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::layout::MountedHierarchy;
    use super::*;

    fn v1(mount: &str, controllers: &[&str]) -> MountedHierarchy {
        MountedHierarchy {
            version: Version::V1,
            mount_point: PathBuf::from(mount),
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn v2(mount: &str, controllers: &[&str]) -> MountedHierarchy {
        MountedHierarchy {
            version: Version::V2,
            ..v1(mount, controllers)
        }
    }

    fn cgroup(layout: CgroupLayout, hierarchies: Vec<MountedHierarchy>) -> ContainerCgroup {
        ContainerCgroup::for_host(
            HostCgroups {
                layout,
                hierarchies,
            },
            PathBuf::from("/coracle/c1"),
        )
    }

    fn hybrid() -> ContainerCgroup {
        cgroup(
            CgroupLayout::Hybrid,
            vec![
                v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
                v1("/sys/fs/cgroup/systemd", &["name=systemd"]),
                v2("/sys/fs/cgroup/unified", &["hugetlb"]),
            ],
        )
    }

    fn pure_v2() -> ContainerCgroup {
        cgroup(
            CgroupLayout::V2,
            vec![v2("/sys/fs/cgroup", &["cpu", "memory", "pids", "hugetlb"])],
        )
    }

    fn resources(v: serde_json::Value) -> LinuxResources {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn each_controller_goes_to_the_hierarchy_that_has_it() {
        let cg = hybrid();
        assert_eq!(
            cg.controller_dir("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/coracle/c1"))
        );
        assert_eq!(
            cg.controller_dir("hugetlb"),
            Some(Path::new("/sys/fs/cgroup/unified/coracle/c1"))
        );
        assert_eq!(cg.controller_dir("memory"), None);
    }

    #[test]
    fn mount_source_names() {
        let names: Vec<String> = hybrid()
            .mount_sources()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, vec!["cpu,cpuacct", "systemd", "unified"]);
        let names: Vec<String> = pure_v2()
            .mount_sources()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, vec![""]);
    }

    #[test]
    fn devices_on_v2_accept_only_the_defaults() {
        let cg = pure_v2();
        let defaults = resources(serde_json::json!({ "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" }
        ]}));
        cg.validate(&defaults).unwrap();
        let block = resources(serde_json::json!({ "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw" }
        ]}));
        let err = cg.validate(&block).unwrap_err();
        assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("devices[1]"), "{err}");
    }

    #[test]
    fn realtime_on_v2_is_unsupported() {
        let err = pure_v2()
            .validate(&resources(
                serde_json::json!({ "cpu": { "realtimeRuntime": 1000 } }),
            ))
            .unwrap_err();
        assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn unified_on_pure_v1_is_refused_naming_the_key() {
        let cg = cgroup(
            CgroupLayout::V1,
            vec![v1("/sys/fs/cgroup/memory", &["memory"])],
        );
        let err = cg
            .validate(&resources(
                serde_json::json!({ "unified": { "memory.high": "1" } }),
            ))
            .unwrap_err();
        assert!(matches!(err, CgroupError::UnifiedOnV1 { .. }), "{err}");
        assert!(err.to_string().contains("memory.high"), "{err}");
    }

    #[test]
    fn missing_controller_is_named() {
        let err = hybrid()
            .validate(&resources(
                serde_json::json!({ "memory": { "limit": 1024 } }),
            ))
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::ControllerUnavailable { ref controller, .. } if controller == "memory"),
            "{err}"
        );
    }
}
