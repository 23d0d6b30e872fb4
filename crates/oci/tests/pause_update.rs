//! pause/resume through the freezer, ps through the cgroup, update of resources, and
//! the cgroup removed with the container.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use coracle_oci::{Status, Stdio};
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder};

fn memory_cgroup(path: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
}

#[test]
fn pause_resume_ps_update_and_cgroup_cleanup() {
    assert_root();
    let id = unique_id("pause");
    let cgroup = format!("/coracle-oci-test/{id}");
    let mut spec = default_spec(&["sh", "-c", "sleep 100 & sleep 100"]);
    let limit: i64 = 64 * 1024 * 1024;
    set_linux(&mut spec, |linux| {
        linux.set_cgroups_path(Some(PathBuf::from(&cgroup)));
        linux.set_resources(Some(
            LinuxResourcesBuilder::default()
                .memory(LinuxMemoryBuilder::default().limit(limit).build().unwrap())
                .build()
                .unwrap(),
        ));
    });
    let b = TestBundle::new(&spec);
    let mut c = b.create(&id, Stdio::Inherit).unwrap();
    let read_limit = || {
        std::fs::read_to_string(memory_cgroup(&cgroup).join("memory.limit_in_bytes"))
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(read_limit(), limit);
    c.start().unwrap();

    // Both sleeps are in the container's cgroup (busybox sh execs the last command,
    // so the init is the second sleep).
    let mut pids = c.pids().unwrap();
    for _ in 0..50 {
        if pids.len() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        pids = c.pids().unwrap();
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&c.pid()));

    c.pause().unwrap();
    assert_eq!(c.status(), Status::Paused);
    let freezer = Path::new("/sys/fs/cgroup/freezer").join(&cgroup[1..]);
    assert_eq!(
        std::fs::read_to_string(freezer.join("freezer.state"))
            .unwrap()
            .trim(),
        "FROZEN"
    );
    c.resume().unwrap();
    assert_eq!(c.status(), Status::Running);

    let doubled = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(2 * limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    c.update(&doubled).unwrap();
    assert_eq!(read_limit(), 2 * limit);

    c.kill(Signal::SIGKILL, true).unwrap();
    c.wait().unwrap();
    c.delete(true).unwrap();
    assert!(
        !memory_cgroup(&cgroup).exists(),
        "container cgroup left behind"
    );
    for controller in std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
    {
        let _ = std::fs::remove_dir(controller.path().join("coracle-oci-test"));
    }
}
