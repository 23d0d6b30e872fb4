//! create/start/state/kill/delete through the library, the exec fifo, stale state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use common::*;
use coracle_oci::{Container, Status, Stdio};
use nix::sys::signal::Signal;

#[test]
fn create_start_state_kill_delete() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let id = unique_id("lifecycle");
    let c = b.create(&id, Stdio::Inherit).unwrap();
    let st = c.oci_state();
    assert_eq!(st.status, Status::Created);
    assert_eq!(st.id, id);
    assert!(st.pid.unwrap() > 0);
    // Another handle, as another process would load it.
    let mut other = Container::load(&b.state_root, &id).unwrap();
    other.start().unwrap();
    assert_eq!(c.status(), Status::Running);
    let json = serde_json::to_value(c.oci_state()).unwrap();
    assert_eq!(json["status"], "running");
    assert_eq!(json["ociVersion"], "1.0.2-dev");
    assert_eq!(
        json["bundle"],
        b.path().canonicalize().unwrap().to_str().unwrap()
    );
    c.kill(Signal::SIGKILL, false).unwrap();
    assert_eq!(c.wait().unwrap(), 128 + 9);
    assert_eq!(c.status(), Status::Stopped);
    assert!(c.oci_state().pid.is_none());
    c.delete(false).unwrap();
    assert!(!b.state_root.join(&id).exists());
    assert!(matches!(
        Container::load(&b.state_root, &id),
        Err(coracle_oci::ContainerError::State(_))
    ));
}

#[test]
fn exec_fifo_holds_init_until_start() {
    let b = TestBundle::new(&default_spec(&["sh", "-c", "echo started"]));
    let id = unique_id("fifo");
    let (stdio, mut out) = capture();
    let mut c = b.create(&id, stdio).unwrap();
    assert!(b.state_root.join(&id).join("exec.fifo").exists());
    // Still created after a while: the init is blocked, the program has not run.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.status(), Status::Created);
    nix::fcntl::fcntl(
        out.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(out.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "program ran before start"
    );
    // The init is still the runtime, not busybox.
    let exe = std::fs::read_link(format!("/proc/{}/exe", c.pid())).unwrap();
    assert_ne!(exe.file_name().unwrap(), "busybox");
    c.start().unwrap();
    assert!(!b.state_root.join(&id).join("exec.fifo").exists());
    assert_eq!(c.wait().unwrap(), 0);
    nix::fcntl::fcntl(
        out.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    assert_eq!(s, "started\n");
    // A second start is refused.
    assert!(c.start().is_err());
}

#[test]
fn stale_state_after_process_died_reads_stopped() {
    let b = TestBundle::new(&default_spec(&["true"]));
    let id = unique_id("stale");
    let mut c = b.create(&id, Stdio::Inherit).unwrap();
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), 0);
    assert_eq!(c.status(), Status::Stopped);
    // A recycled pid: point the state at a live process (ours) whose start time
    // differs from the recorded one.
    let path = b.state_root.join(&id).join("state.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["pid"] = serde_json::json!(std::process::id());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let reloaded = Container::load(&b.state_root, &id).unwrap();
    assert_eq!(reloaded.status(), Status::Stopped);
    assert!(
        reloaded.kill(Signal::SIGTERM, false).is_err(),
        "kill must not signal a recycled pid"
    );
    drop(reloaded);
    c.delete(false).unwrap();
}

#[test]
fn delete_force_kills_running_container() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let id = unique_id("force");
    let mut c = b.create(&id, Stdio::Inherit).unwrap();
    c.start().unwrap();
    let pid = c.pid();
    let err = Container::load(&b.state_root, &id)
        .unwrap()
        .delete(false)
        .unwrap_err();
    assert!(err.to_string().contains("running"), "{err}");
    c.delete(true).unwrap();
    let gone = coracle_oci::state::proc_stat(pid).is_none_or(|s| s.state == 'Z');
    assert!(gone, "init still alive after delete --force");
    assert!(!b.state_root.join(&id).exists());
}

#[test]
fn failed_create_reports_the_child_error_and_leaves_nothing() {
    let mut spec = default_spec(&["true"]);
    add_mount(
        &mut spec,
        bind_mount(
            std::path::Path::new("/nonexistent-coracle-src"),
            "/mnt",
            &["bind"],
        ),
    );
    let b = TestBundle::new(&spec);
    let id = unique_id("failcreate");
    let err = b
        .create(&id, Stdio::Inherit)
        .err()
        .expect("create must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("/nonexistent-coracle-src") && msg.contains("/mnt"),
        "{msg}"
    );
    assert!(!b.state_root.join(&id).exists());
}

#[test]
fn duplicate_id_is_refused() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let id = unique_id("dup");
    let _c = b.create(&id, Stdio::Inherit).unwrap();
    let err = b.create(&id, Stdio::Inherit).err().unwrap();
    assert!(err.to_string().contains("already exists"), "{err}");
}

/// A container process that stops answering (here a createContainer hook that hangs,
/// with no hook timeout) makes create fail after the sync timeout, never hang, and
/// the cleanup kills it.
#[test]
fn stuck_container_process_times_out_instead_of_hanging() {
    use oci_spec::runtime::{HookBuilder, HooksBuilder};
    let mut spec = default_spec(&["true"]);
    let hook = HookBuilder::default()
        .path("/bin/sleep")
        .args(vec!["sleep".to_string(), "30".to_string()])
        .build()
        .unwrap();
    spec.set_hooks(Some(
        HooksBuilder::default()
            .create_container(vec![hook])
            .build()
            .unwrap(),
    ));
    let b = TestBundle::new(&spec);
    let id = unique_id("stuck");
    let mut opts = b.options();
    opts.sync_timeout = Duration::from_secs(1);
    let t0 = std::time::Instant::now();
    let err = Container::create(&id, b.path(), opts).expect_err("must time out");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(err.to_string().contains("within 1s"), "{err}");
    assert!(!b.state_root.join(&id).exists());
}
