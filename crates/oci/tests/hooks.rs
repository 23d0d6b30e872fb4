//! Lifecycle hooks: order, namespaces they run in, state on stdin, timeout, failures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use coracle_oci::Stdio;
use oci_spec::runtime::{Hook, HookBuilder, HooksBuilder};

fn sh_hook(script: &str, timeout: Option<i64>) -> Hook {
    let mut b = HookBuilder::default().path("/bin/sh").args(vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
    ]);
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().unwrap()
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let host = host_dir("hooks");
    let h = host.path().display().to_string();
    let append = |name: &str, dir: &str| {
        sh_hook(
            &format!("cat > {dir}/{name}.json; echo {name} >> {dir}/order"),
            None,
        )
    };
    let hooks = HooksBuilder::default()
        .prestart(vec![append("prestart", &h)])
        .create_runtime(vec![append("createRuntime", &h)])
        .create_container(vec![append("createContainer", &h)])
        // Runs inside the container, after pivot_root: the host dir is bound at /hooks.
        .start_container(vec![append("startContainer", "/hooks")])
        .poststart(vec![append("poststart", &h)])
        .poststop(vec![append("poststop", &h)])
        .build()
        .unwrap();
    let mut spec = default_spec(&["true"]);
    spec.set_hooks(Some(hooks));
    add_mount(
        &mut spec,
        bind_mount(host.path(), "/hooks", &["rbind", "rw"]),
    );
    let b = TestBundle::new(&spec);
    let id = unique_id("hooks");
    let mut c = b.create(&id, Stdio::Inherit).unwrap();
    let order = || std::fs::read_to_string(host.path().join("order")).unwrap_or_default();
    assert_eq!(order(), "prestart\ncreateRuntime\ncreateContainer\n");
    c.start().unwrap();
    assert_eq!(
        order(),
        "prestart\ncreateRuntime\ncreateContainer\nstartContainer\npoststart\n"
    );
    assert_eq!(c.wait().unwrap(), 0);
    c.delete(false).unwrap();
    assert_eq!(
        order(),
        "prestart\ncreateRuntime\ncreateContainer\nstartContainer\npoststart\npoststop\n"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.path().join("createRuntime.json")).unwrap())
            .unwrap();
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["status"], "creating");
    assert!(state["pid"].as_i64().unwrap() > 0);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.path().join("poststop.json")).unwrap()).unwrap();
    assert_eq!(state["status"], "stopped");
}

#[test]
fn hook_timeout_kills_it_and_fails_create() {
    let mut spec = default_spec(&["true"]);
    spec.set_hooks(Some(
        HooksBuilder::default()
            .create_runtime(vec![sh_hook("sleep 30", Some(1))])
            .build()
            .unwrap(),
    ));
    let b = TestBundle::new(&spec);
    let id = unique_id("hooktimeout");
    let t0 = Instant::now();
    let err = b.create(&id, Stdio::Inherit).err().expect("must fail");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        err.to_string()
            .contains("createRuntime hook /bin/sh: timed out after 1s"),
        "{err}"
    );
    assert!(!b.state_root.join(&id).exists());
}

#[test]
fn failing_create_container_hook_fails_create_but_poststart_only_warns() {
    let mut spec = default_spec(&["true"]);
    spec.set_hooks(Some(
        HooksBuilder::default()
            .create_container(vec![sh_hook("exit 3", None)])
            .build()
            .unwrap(),
    ));
    let b = TestBundle::new(&spec);
    let err = b
        .create(&unique_id("hookfail"), Stdio::Inherit)
        .err()
        .expect("must fail");
    assert!(
        err.to_string()
            .contains("createContainer hook /bin/sh: exit status 3"),
        "{err}"
    );

    spec.set_hooks(Some(
        HooksBuilder::default()
            .poststart(vec![sh_hook("exit 4", None)])
            .build()
            .unwrap(),
    ));
    b.write_spec(&spec);
    let (code, _) = b.run(&unique_id("poststartfail"));
    assert_eq!(code, 0);
}
