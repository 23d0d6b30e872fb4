//! Container cgroups against the real kernel. Needs root; each test makes a cgroup named
//! `coracle-test-<test>-<pid>` and a Drop guard removes it (and kills the processes the
//! test started), also when the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coracle_oci::cgroups::{CgroupError, CgroupLayout, ContainerCgroup};
use oci_spec::runtime::LinuxResources;
use serde_json::json;

const MIB: u64 = 1024 * 1024;

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests use the real cgroup filesystem and must run as root"
    );
}

fn resources(v: serde_json::Value) -> LinuxResources {
    serde_json::from_value(v).expect("valid OCI linux.resources")
}

/// A test's cgroup and processes, removed on drop.
struct Guard {
    path: PathBuf,
    cg: Option<ContainerCgroup>,
    children: Vec<Child>,
}

impl Guard {
    fn new(test: &str) -> Self {
        assert_root();
        Guard {
            path: PathBuf::from(format!("/coracle-test-{test}-{}", std::process::id())),
            cg: None,
            children: Vec::new(),
        }
    }

    fn create(&mut self, r: Option<&LinuxResources>) -> Result<&ContainerCgroup, CgroupError> {
        let cg = ContainerCgroup::create(Some(&self.path), "unused", r)?;
        Ok(self.cg.insert(cg))
    }

    fn cg(&self) -> &ContainerCgroup {
        self.cg.as_ref().expect("cgroup created")
    }

    /// Starts `busybox <args>` and moves it into the cgroup.
    fn spawn_in(&mut self, args: &[&str]) -> i32 {
        let child = Command::new("/bin/busybox")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn busybox");
        let pid = child.id() as i32;
        self.children.push(child);
        self.cg().add_task(pid).expect("add_task");
        pid
    }

    fn kill_children(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every directory the cgroup would have, from the mount table (independent of the
    /// code under test).
    fn all_dirs(&self) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(self.path.strip_prefix("/").unwrap()))
            .collect()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cg) = &self.cg {
            let _ = cg.thaw();
        }
        self.kill_children();
        if let Some(cg) = &self.cg {
            let _ = cg.delete();
        }
        for d in self.all_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let fstype = b.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| PathBuf::from(a.split(' ').nth(4).unwrap()))
        })
        .collect()
}

fn read(cg: &ContainerCgroup, controller: &str, file: &str) -> String {
    let dir = cg
        .controller_dir(controller)
        .unwrap_or_else(|| panic!("no {controller} hierarchy"));
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// The state letter of /proc/<pid>/stat (R, S, D, ...).
fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.chars().next().unwrap()
}

fn hugepage_size_names() -> Vec<String> {
    // /sys/kernel/mm/hugepages/hugepages-2048kB -> the cgroup name "2MB".
    let mut names = Vec::new();
    for e in std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().into_string().unwrap();
        let kb: u64 = name
            .trim_start_matches("hugepages-")
            .trim_end_matches("kB")
            .parse()
            .unwrap();
        names.push(match kb {
            kb if kb >= 1024 * 1024 => format!("{}GB", kb / (1024 * 1024)),
            kb if kb >= 1024 => format!("{}MB", kb / 1024),
            kb => format!("{kb}KB"),
        });
    }
    names.sort();
    names
}

fn baseline() -> LinuxResources {
    resources(json!({
        "memory": { "limit": 64 * MIB },
        "pids": { "limit": 32 },
        "cpu": { "shares": 512, "quota": 50000, "period": 100000, "cpus": "0" }
    }))
}

#[test]
fn layout_on_this_machine_is_hybrid() {
    assert_root();
    assert_eq!(CgroupLayout::detect().unwrap(), CgroupLayout::Hybrid);
    assert_eq!(
        coracle_oci::cgroups::detect().unwrap(),
        CgroupLayout::Hybrid
    );
}

#[test]
fn create_applies_memory_pids_cpu_and_cpuset() {
    let mut g = Guard::new("create");
    let cg = g.create(Some(&baseline())).unwrap();
    assert_eq!(cg.layout(), CgroupLayout::Hybrid);
    assert_eq!(
        read(cg, "memory", "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
    assert_eq!(read(cg, "pids", "pids.max"), "32");
    assert_eq!(read(cg, "cpu", "cpu.shares"), "512");
    assert_eq!(read(cg, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(cg, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(read(cg, "cpuset", "cpuset.cpus"), "0");
    // mems inherited from the parent, or no task could join.
    assert!(!read(cg, "cpuset", "cpuset.mems").is_empty());
    for d in g.all_dirs() {
        assert!(d.is_dir(), "{} was not created", d.display());
    }
}

#[test]
fn update_changes_the_limits() {
    let mut g = Guard::new("update");
    g.create(Some(&baseline())).unwrap();
    let cg = g.cg();
    cg.update(&resources(json!({
        "memory": { "limit": 128 * MIB },
        "pids": { "limit": 64 },
        "cpu": { "shares": 256, "quota": 20000, "period": 50000, "cpus": "0-1" }
    })))
    .unwrap();
    assert_eq!(
        read(cg, "memory", "memory.limit_in_bytes"),
        (128 * MIB).to_string()
    );
    assert_eq!(read(cg, "pids", "pids.max"), "64");
    assert_eq!(read(cg, "cpu", "cpu.shares"), "256");
    assert_eq!(read(cg, "cpu", "cpu.cfs_quota_us"), "20000");
    assert_eq!(read(cg, "cpu", "cpu.cfs_period_us"), "50000");
    assert_eq!(read(cg, "cpuset", "cpuset.cpus"), "0-1");

    // The rest of the cpu fields: realtime bandwidth, SCHED_IDLE, CFS burst.
    cg.update(&resources(json!({ "cpu": {
        "realtimePeriod": 1000000, "realtimeRuntime": 10000, "idle": 1, "burst": 1000
    } })))
    .unwrap();
    assert_eq!(read(cg, "cpu", "cpu.rt_period_us"), "1000000");
    assert_eq!(read(cg, "cpu", "cpu.rt_runtime_us"), "10000");
    assert_eq!(read(cg, "cpu", "cpu.idle"), "1");
    assert_eq!(read(cg, "cpu", "cpu.cfs_burst_us"), "1000");

    // Unlimited again.
    cg.update(&resources(
        json!({ "pids": { "limit": -1 }, "cpu": { "quota": -1 } }),
    ))
    .unwrap();
    assert_eq!(read(cg, "pids", "pids.max"), "max");
    assert_eq!(read(cg, "cpu", "cpu.cfs_quota_us"), "-1");
}

#[test]
fn added_task_shows_in_pids_and_in_every_hierarchy() {
    let mut g = Guard::new("addtask");
    g.create(Some(&baseline())).unwrap();
    let pid = g.spawn_in(&["sleep", "1000"]);
    assert_eq!(g.cg().pids().unwrap(), vec![pid]);
    // /proc/<pid>/cgroup names the container's path on every line, the v2 one ("0::")
    // included.
    let lines = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = g.path.to_str().unwrap().to_string();
    for line in lines.lines() {
        assert!(
            line.ends_with(&format!(":{want}")),
            "{line} is not in {want}"
        );
    }
    assert!(lines.lines().any(|l| l.starts_with("0::")));
}

#[test]
fn freeze_stops_a_busy_task_and_thaw_resumes_it() {
    let mut g = Guard::new("freeze");
    // A busy loop, held to 10% of a CPU on this shared machine.
    g.create(Some(&resources(
        json!({ "cpu": { "quota": 10000, "period": 100000 } }),
    )))
    .unwrap();
    let pid = g.spawn_in(&["sh", "-c", "while :; do :; done"]);
    let cg = g.cg();
    assert!(!cg.is_frozen().unwrap());
    cg.freeze().unwrap();
    assert!(cg.is_frozen().unwrap());
    assert_eq!(read(cg, "freezer", "freezer.state"), "FROZEN");
    std::thread::sleep(Duration::from_millis(50));
    assert_ne!(proc_state(pid), 'R', "a frozen task is not running");

    cg.thaw().unwrap();
    assert!(!cg.is_frozen().unwrap());
    assert_eq!(read(cg, "freezer", "freezer.state"), "THAWED");
    // Thawed, the busy loop runs (or waits for its CPU quota) again: never frozen 'D'.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proc_state(pid) != 'R' {
        assert!(
            Instant::now() < deadline,
            "task did not run again after thaw"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn delete_fails_while_a_task_remains_and_succeeds_after_it_exits() {
    let mut g = Guard::new("delete");
    g.create(None).unwrap();
    let pid = g.spawn_in(&["sleep", "1000"]);
    let err = g.cg().delete().unwrap_err();
    match &err {
        CgroupError::TasksRemain { pids, path } => {
            assert_eq!(pids, &vec![pid]);
            assert_eq!(path, &g.path);
        }
        other => panic!("expected TasksRemain, got {other}"),
    }
    assert!(err.to_string().contains(&pid.to_string()), "{err}");
    for d in g.all_dirs() {
        assert!(d.is_dir(), "{} removed despite a live task", d.display());
    }

    g.kill_children();
    g.cg().delete().unwrap();
    for d in g.all_dirs() {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    // Deleting what is already gone is fine.
    g.cg().delete().unwrap();
}

#[test]
fn hugetlb_limit_lands_on_the_v2_hugetlb_file() {
    let mut g = Guard::new("hugetlb");
    let sizes = hugepage_size_names();
    assert!(!sizes.is_empty(), "this machine has huge page sizes");
    let limits: Vec<_> = sizes
        .iter()
        .map(|s| json!({ "pageSize": s, "limit": 4 * 1024 * MIB }))
        .collect();
    let cg = g
        .create(Some(&resources(json!({ "hugepageLimits": limits }))))
        .unwrap();
    let dir = cg.controller_dir("hugetlb").unwrap().to_path_buf();
    assert!(
        dir.starts_with("/sys/fs/cgroup/unified"),
        "hugetlb is on the v2 mount here, not {}",
        dir.display()
    );
    for s in &sizes {
        let v = std::fs::read_to_string(dir.join(format!("hugetlb.{s}.max"))).unwrap();
        assert_eq!(v.trim(), (4 * 1024 * MIB).to_string(), "hugetlb.{s}.max");
    }

    // An unknown size is refused by name.
    let err = cg
        .update(&resources(
            json!({ "hugepageLimits": [{ "pageSize": "3MB", "limit": 1 }] }),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("pageSize"), "{err}");
    assert!(err.to_string().contains("3MB"), "{err}");
}

#[test]
fn unified_keys_go_to_v2_and_unknown_ones_are_refused_by_name() {
    let mut g = Guard::new("unified");
    let size = hugepage_size_names().into_iter().next().unwrap();
    let key = format!("hugetlb.{size}.max");
    let cg = g
        .create(Some(&resources(
            json!({ "unified": { key.clone(): "4294967296" } }),
        )))
        .unwrap();
    let dir = cg.controller_dir("hugetlb").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join(&key)).unwrap().trim(),
        "4294967296"
    );

    for bad in ["memory.max", "no.such.key"] {
        let err = cg
            .update(&resources(json!({ "unified": { bad: "1" } })))
            .unwrap_err();
        assert!(
            matches!(err, CgroupError::UnknownUnifiedKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(bad), "{err}");
    }
    let err = cg
        .update(&resources(json!({ "unified": { "cgroup.procs": "1" } })))
        .unwrap_err();
    assert!(err.to_string().contains("cgroup.procs"), "{err}");
    let err = cg
        .update(&resources(json!({ "unified": { "../x": "1" } })))
        .unwrap_err();
    assert!(err.to_string().contains("../x"), "{err}");
}

#[test]
fn invalid_cpuset_is_refused_naming_the_field_and_leaves_nothing_behind() {
    let mut g = Guard::new("badcpuset");
    let err = g
        .create(Some(&resources(json!({ "cpu": { "cpus": "0-x" } }))))
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidResource { .. }), "{err}");
    assert!(
        err.to_string().contains("linux.resources.cpu.cpus"),
        "{err}"
    );
    assert!(err.to_string().contains("0-x"), "{err}");
    for d in g.all_dirs() {
        assert!(
            !d.exists(),
            "{} left behind by a failed create",
            d.display()
        );
    }

    let err = g
        .create(Some(&resources(json!({ "cpu": { "quota": 0 } }))))
        .unwrap_err();
    assert!(
        err.to_string().contains("linux.resources.cpu.quota"),
        "{err}"
    );
}

#[test]
fn memory_and_swap_can_be_lowered_and_raised() {
    let mut g = Guard::new("memswap");
    g.create(Some(&resources(
        json!({ "memory": { "limit": 64 * MIB, "swap": 128 * MIB } }),
    )))
    .unwrap();
    let cg = g.cg();
    let check = |limit: u64, memsw: u64| {
        assert_eq!(
            read(cg, "memory", "memory.limit_in_bytes"),
            limit.to_string()
        );
        assert_eq!(
            read(cg, "memory", "memory.memsw.limit_in_bytes"),
            memsw.to_string()
        );
    };
    check(64 * MIB, 128 * MIB);
    // Lowering both below the old limit: needs memory first (memsw first would be EINVAL).
    cg.update(&resources(
        json!({ "memory": { "limit": 32 * MIB, "swap": 32 * MIB } }),
    ))
    .unwrap();
    check(32 * MIB, 32 * MIB);
    // Raising both above the old memsw: needs memsw first.
    cg.update(&resources(
        json!({ "memory": { "limit": 256 * MIB, "swap": 512 * MIB } }),
    ))
    .unwrap();
    check(256 * MIB, 512 * MIB);
    // Swap below the limit is refused by name before any write.
    let err = cg
        .update(&resources(
            json!({ "memory": { "limit": 256 * MIB, "swap": 64 * MIB } }),
        ))
        .unwrap_err();
    assert!(
        err.to_string().contains("linux.resources.memory.swap"),
        "{err}"
    );
    check(256 * MIB, 512 * MIB);
    // Kernel memory is ignored with a warning, not an error.
    cg.update(&resources(json!({ "memory": {
        "kernel": 16 * MIB, "kernelTCP": MIB, "swappiness": 10, "disableOOMKiller": true,
        "reservation": 16 * MIB
    } })))
    .unwrap();
    assert_eq!(read(cg, "memory", "memory.swappiness"), "10");
    assert_eq!(
        read(cg, "memory", "memory.soft_limit_in_bytes"),
        (16 * MIB).to_string()
    );
    assert!(read(cg, "memory", "memory.oom_control").contains("oom_kill_disable 1"));
    let err = cg
        .update(&resources(json!({ "memory": { "swappiness": 101 } })))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("linux.resources.memory.swappiness"),
        "{err}"
    );
}

/// A task holds 24 MiB of shmem (not reclaimable: this host has no swap); a 4 MiB limit
/// must fail with the usage in the message, not silently or with a bare EBUSY.
#[test]
fn memory_limit_below_usage_is_reported() {
    let mut g = Guard::new("belowusage");
    let shm = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
    g.create(Some(&resources(json!({ "memory": { "limit": 64 * MIB } }))))
        .unwrap();
    let script = format!(
        "read go; busybox dd if=/dev/zero of={} bs=1048576 count=24 2>/dev/null; echo filled; busybox sleep 1000",
        shm.path().display()
    );
    g.spawn_in(&["sh", "-c", &script]);
    let child = g.children.last_mut().unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "filled");

    let err = g
        .cg()
        .update(&resources(
            json!({ "memory": { "limit": 4 * MIB, "swap": 4 * MIB } }),
        ))
        .unwrap_err();
    match &err {
        CgroupError::MemoryBelowUsage { limit, usage, .. } => {
            assert_eq!(*limit, (4 * MIB) as i64);
            assert!(*usage >= 24 * MIB, "usage {usage}");
        }
        other => panic!("expected MemoryBelowUsage, got {other}"),
    }
    // checkBeforeUpdate refuses without asking the kernel.
    let err = g
        .cg()
        .update(&resources(
            json!({ "memory": { "limit": 8 * MIB, "checkBeforeUpdate": true } }),
        ))
        .unwrap_err();
    assert!(matches!(err, CgroupError::MemoryBelowUsage { .. }), "{err}");
    assert_eq!(
        read(g.cg(), "memory", "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
}

#[test]
fn create_refuses_a_cgroup_that_already_has_processes() {
    let mut g = Guard::new("notempty");
    g.create(None).unwrap();
    let pid = g.spawn_in(&["sleep", "1000"]);
    let err = ContainerCgroup::create(Some(&g.path), "unused", None).unwrap_err();
    match err {
        CgroupError::NotEmpty { pids, .. } => assert_eq!(pids, vec![pid]),
        other => panic!("expected NotEmpty, got {other}"),
    }
    // The refused create did not remove the existing cgroup.
    assert_eq!(g.cg().pids().unwrap(), vec![pid]);
}

#[test]
fn mount_sources_cover_every_hierarchy() {
    let mut g = Guard::new("mounts");
    let cg = g.create(None).unwrap();
    let sources = cg.mount_sources();
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "memory", "cpu", "pids", "freezer", "devices", "unified", "systemd",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(sources.len(), g.all_dirs().len());
    for s in &sources {
        assert!(s.host_path.is_dir(), "{}", s.host_path.display());
        assert!(s.host_path.ends_with(g.path.strip_prefix("/").unwrap()));
    }
    let unified = sources.iter().find(|s| s.name == "unified").unwrap();
    assert!(unified.host_path.starts_with("/sys/fs/cgroup/unified"));
}

#[test]
fn device_rules_are_written_in_order() {
    let mut g = Guard::new("devices");
    let cg = g
        .create(Some(&resources(json!({ "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" },
            { "allow": true, "type": "c", "major": 136, "access": "rw" }
        ]}))))
        .unwrap();
    let list = read(cg, "devices", "devices.list");
    let mut lines: Vec<&str> = list.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["c 136:* rw", "c 1:3 rwm"]);
}

#[test]
fn state_round_trips_through_serde() {
    let mut g = Guard::new("serde");
    let cg = g.create(None).unwrap();
    let json = serde_json::to_string(cg).unwrap();
    let back: ContainerCgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, cg);
    assert_eq!(back.path(), Path::new(&g.path));
}

#[test]
fn empty_cgroups_path_goes_under_coracle() {
    assert_root();
    let id = format!("coracle-test-default-{}", std::process::id());
    let parent_existed = Path::new("/sys/fs/cgroup/memory/coracle").exists();
    let cg = ContainerCgroup::create(None, &id, None).unwrap();
    let path = cg.path().to_path_buf();
    let dir = cg.controller_dir("memory").unwrap().to_path_buf();
    let result = cg.delete();
    if !parent_existed {
        for m in cgroup_mounts() {
            let _ = std::fs::remove_dir(m.join("coracle"));
        }
    }
    result.unwrap();
    assert_eq!(path, Path::new("/coracle").join(&id));
    assert_eq!(dir, Path::new("/sys/fs/cgroup/memory/coracle").join(&id));
}

/// The major:minor of the first virtio or SCSI disk.
fn a_disk() -> (u64, u64) {
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.starts_with("vd") || name.starts_with("sd") || name.starts_with("nvme") {
            let dev = std::fs::read_to_string(e.path().join("dev")).unwrap();
            let (a, b) = dev.trim().split_once(':').unwrap();
            return (a.parse().unwrap(), b.parse().unwrap());
        }
    }
    panic!("no disk in /sys/block");
}

#[test]
fn blkio_throttles_and_weights_apply_and_missing_weight_files_are_skipped() {
    let mut g = Guard::new("blkio");
    let (major, minor) = a_disk();
    let cg = g
        .create(Some(&resources(json!({ "blockIO": {
            "weight": 500,
            // blkio.leaf_weight does not exist on this kernel: skipped with a warning.
            "leafWeight": 300,
            "throttleReadBpsDevice": [{ "major": major, "minor": minor, "rate": 1048576 }],
            "throttleWriteIOPSDevice": [{ "major": major, "minor": minor, "rate": 100 }]
        }}))))
        .unwrap();
    assert_eq!(
        read(cg, "blkio", "blkio.throttle.read_bps_device"),
        format!("{major}:{minor} 1048576")
    );
    assert_eq!(
        read(cg, "blkio", "blkio.throttle.write_iops_device"),
        format!("{major}:{minor} 100")
    );
    // With BFQ built in the weight goes to blkio.bfq.weight ("default 500").
    let dir = cg.controller_dir("blkio").unwrap();
    let weight = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok());
    if let Some(w) = weight {
        assert!(w.contains("500"), "{w}");
    }
    let err = cg
        .update(&resources(json!({ "blockIO": { "weight": 5 } })))
        .unwrap_err();
    assert!(
        err.to_string().contains("linux.resources.blockIO.weight"),
        "{err}"
    );
}

#[test]
fn network_classid_without_net_cls_is_skipped_not_fatal() {
    let mut g = Guard::new("network");
    let cg = g
        .create(Some(&resources(json!({ "network": {
            "classID": 1048577, "priorities": [{ "name": "eth0", "priority": 5 }]
        }}))))
        .unwrap();
    // This host has neither net_cls nor net_prio mounted.
    assert!(cg.controller_dir("net_cls").is_none());
    assert!(cg.controller_dir("net_prio").is_none());
}

/// The v2 core freezer (cgroup.freeze + cgroup.events), exercised on this host's v2
/// mount: the persisted state is narrowed to the v2 hierarchy, as if v2 were all there is.
#[test]
fn v2_freezer_freezes_through_cgroup_freeze_and_events() {
    let mut g = Guard::new("v2freeze");
    g.create(Some(&resources(
        json!({ "cpu": { "quota": 10000, "period": 100000 } }),
    )))
    .unwrap();
    let pid = g.spawn_in(&["sh", "-c", "while :; do :; done"]);
    let mut state = serde_json::to_value(g.cg()).unwrap();
    state["hierarchies"]
        .as_array_mut()
        .unwrap()
        .retain(|h| h["version"] == "V2");
    assert_eq!(state["hierarchies"].as_array().unwrap().len(), 1);
    let v2_only: ContainerCgroup = serde_json::from_value(state).unwrap();
    let v2_dir = g
        .all_dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/unified"))
        .unwrap();

    assert!(!v2_only.is_frozen().unwrap());
    v2_only.freeze().unwrap();
    assert!(v2_only.is_frozen().unwrap());
    let events = std::fs::read_to_string(v2_dir.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    std::thread::sleep(Duration::from_millis(50));
    assert_ne!(proc_state(pid), 'R', "a frozen task is not running");
    // The v1 freezer knows nothing of it.
    assert!(!g.cg().is_frozen().unwrap());

    v2_only.thaw().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while v2_only.is_frozen().unwrap() {
        assert!(Instant::now() < deadline, "still frozen after thaw");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A container may make cgroups below its own (systemd inside, nested runtimes): pids()
/// sees their processes and delete() removes them.
#[test]
fn nested_cgroups_are_listed_and_removed() {
    let mut g = Guard::new("nested");
    g.create(None).unwrap();
    let pid = g.spawn_in(&["sleep", "1000"]);
    let sub = g.cg().controller_dir("memory").unwrap().join("inner");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("cgroup.procs"), pid.to_string()).unwrap();
    assert_eq!(g.cg().pids().unwrap(), vec![pid]);
    assert!(matches!(
        g.cg().delete().unwrap_err(),
        CgroupError::TasksRemain { .. }
    ));

    g.kill_children();
    g.cg().delete().unwrap();
    assert!(!sub.exists());
    for d in g.all_dirs() {
        assert!(!d.exists(), "{} still exists", d.display());
    }
}
