//! Containers through CRI, as kubelet drives them: create, start, status, list,
//! exec, logs, stop, remove; security context; a daemon crash in the middle.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coracle_e2e::fixtures::{container_config, pod_config};
use coracle_e2e::{Daemon, Registry, require_root};
use k8s_cri::v1;
use tonic::Code;

/// A daemon with the test registry's images pulled and one ready pod whose logs go
/// to a temp dir.
struct Setup {
    daemon: Daemon,
    registry: Registry,
    pod_id: String,
    pod_config: v1::PodSandboxConfig,
    logs: tempfile::TempDir,
}

impl Setup {
    async fn new(name: &str) -> Setup {
        Self::with_pod(name, |_| {}).await
    }

    async fn with_pod(name: &str, adjust: impl FnOnce(&mut v1::PodSandboxConfig)) -> Setup {
        require_root();
        let registry = Registry::start().unwrap();
        let daemon = Daemon::start().await.unwrap();
        for (repo, tag) in [("busybox", "latest"), ("user", "latest")] {
            daemon
                .pull_image(&registry.reference(repo, tag))
                .await
                .unwrap();
        }
        let logs = tempfile::tempdir().unwrap();
        let mut pod_config = pod_config(name, logs.path());
        adjust(&mut pod_config);
        let pod_id = daemon.run_pod(pod_config.clone()).await.unwrap();
        Setup {
            daemon,
            registry,
            pod_id,
            pod_config,
            logs,
        }
    }

    fn busybox(&self) -> String {
        self.registry.reference("busybox", "latest")
    }

    fn config(&self, name: &str, command: &[&str]) -> v1::ContainerConfig {
        container_config(name, &self.busybox(), command)
    }

    async fn create(&self, config: v1::ContainerConfig) -> String {
        self.daemon
            .create_container(&self.pod_id, config, &self.pod_config)
            .await
            .unwrap()
    }

    async fn run(&self, config: v1::ContainerConfig) -> String {
        let id = self.create(config).await;
        self.daemon.start_container(&id).await.unwrap();
        id
    }

    fn log_file(&self, config: &v1::ContainerConfig) -> PathBuf {
        self.logs.path().join(&config.log_path)
    }

    /// Removes the pod (and with it every container) and stops the daemon cleanly.
    async fn finish(mut self) {
        self.daemon.stop_pod(&self.pod_id).await.unwrap();
        self.daemon.remove_pod(&self.pod_id).await.unwrap();
        assert!(
            self.daemon.list_containers(None).await.unwrap().is_empty(),
            "removing the pod removes its containers"
        );
        self.daemon.stop().await.unwrap();
    }
}

fn security(config: &mut v1::ContainerConfig) -> &mut v1::LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn stdout(response: &v1::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&response.stdout).into_owned()
}

/// One parsed CRI log record: (timestamp, stream, tag, content).
fn log_records(path: &Path) -> Vec<(String, String, String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let mut next = || parts.next().unwrap_or_default().to_owned();
            (next(), next(), next(), next())
        })
        .collect()
}

/// RFC 3339 with nanoseconds in UTC, as kubelet's parser wants.
fn is_cri_timestamp(ts: &str) -> bool {
    let bytes = ts.as_bytes();
    ts.len() >= 21
        && ts.ends_with('Z')
        && bytes[4] == b'-'
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && ts[20..ts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn exit_code_reason_and_cri_logs() {
    let setup = Setup::new("exit3").await;
    let config = setup.config("exit3", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let log = setup.log_file(&config);
    let id = setup.run(config).await;
    let status = setup
        .daemon
        .wait_container_exited(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(status.started_at > 0 && status.finished_at >= status.started_at);
    assert_eq!(status.log_path, log.to_string_lossy());
    let records = log_records(&log);
    assert_eq!(records.len(), 2, "{records:?}");
    let mut lines: Vec<(String, String, String)> = records
        .iter()
        .map(|(ts, stream, tag, content)| {
            assert!(is_cri_timestamp(ts), "bad timestamp {ts:?}");
            (stream.clone(), tag.clone(), content.clone())
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            ("stderr".into(), "F".into(), "err".into()),
            ("stdout".into(), "F".into(), "out".into()),
        ]
    );
    // Exit 0 is Completed.
    let config = setup.config("exit0", &["true"]);
    let id = setup.run(config).await;
    let status = setup
        .daemon
        .wait_container_exited(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    setup.finish().await;
}

#[tokio::test]
async fn lifecycle_status_list_and_verbose_info() {
    let setup = Setup::new("life").await;
    let config = setup.config("sleeper", &["sleep", "1000"]);
    let log = setup.log_file(&config);
    let id = setup.create(config.clone()).await;

    // A repeat of the same request gets the same container; another config under
    // the same name is refused.
    assert_eq!(setup.create(config.clone()).await, id);
    let mut other = config.clone();
    other.command = vec!["true".into()];
    let err = setup
        .daemon
        .create_container(&setup.pod_id, other, &setup.pod_config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    let status = setup.daemon.container_state(&id).await.unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerCreated as i32);
    assert_eq!(status.labels["app"], "sleeper");
    assert_eq!(status.annotations["note"], "sleeper-note");
    assert!(status.image_ref.contains("sha256:"), "{}", status.image_ref);

    setup.daemon.start_container(&id).await.unwrap();
    let response = setup.daemon.container_status(&id).await.unwrap();
    let status = response.status.unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerRunning as i32);
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
    let pid = info["pid"].as_i64().unwrap();
    assert!(pid > 1, "{info}");
    assert_eq!(info["sandboxID"], setup.pod_id.as_str());
    assert_eq!(
        info["runtimeSpec"]["process"]["args"],
        serde_json::json!(["sleep", "1000"])
    );
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"sleep\x001000"), "{cmdline:?}");
    // Starting twice is a wrong-state error.
    let err = setup.daemon.start_container(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Filters: pod, state, labels, id.
    let by_pod = v1::ContainerFilter {
        pod_sandbox_id: setup.pod_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        setup
            .daemon
            .list_containers(Some(by_pod))
            .await
            .unwrap()
            .len(),
        1
    );
    let exited = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue {
            state: v1::ContainerState::ContainerExited as i32,
        }),
        ..Default::default()
    };
    assert!(
        setup
            .daemon
            .list_containers(Some(exited.clone()))
            .await
            .unwrap()
            .is_empty()
    );
    let other_label = v1::ContainerFilter {
        label_selector: [("app".to_string(), "nope".to_string())].into(),
        ..Default::default()
    };
    assert!(
        setup
            .daemon
            .list_containers(Some(other_label))
            .await
            .unwrap()
            .is_empty()
    );

    // Stop with timeout 0 kills at once; stop again is fine.
    let started = Instant::now();
    setup.daemon.stop_container(&id, 0).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = setup.daemon.container_state(&id).await.unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137);
    setup.daemon.stop_container(&id, 0).await.unwrap();
    assert_eq!(
        setup
            .daemon
            .list_containers(Some(exited))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(!process_alive(pid), "init is gone");

    // Remove keeps kubelet's log file; removing again is fine; status is NotFound.
    fs::write(&log, "kept\n").unwrap();
    setup.daemon.remove_container(&id).await.unwrap();
    setup.daemon.remove_container(&id).await.unwrap();
    assert!(log.exists(), "the log file stays for kubelet");
    let err = setup.daemon.container_status(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = setup.daemon.start_container(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    setup.finish().await;
}

#[tokio::test]
async fn oom_killed_container_is_reported() {
    let setup = Setup::new("oom").await;
    let mut config = setup.config("oom", &["sh", "-c", "x=a; while :; do x=$x$x; done"]);
    config.linux.as_mut().unwrap().resources = Some(v1::LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        memory_swap_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = setup.run(config).await;
    let status = setup
        .daemon
        .wait_container_exited(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    assert_eq!(status.exit_code, 137);
    setup.finish().await;
}

#[tokio::test]
async fn stop_timeout_kills_a_process_that_ignores_sigterm() {
    let setup = Setup::new("stubborn").await;
    let config = setup.config(
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ],
    );
    let log = setup.log_file(&config);
    let id = setup.run(config).await;
    wait_for("the trap to be set", Duration::from_secs(10), || {
        log_records(&log).iter().any(|r| r.3 == "ready")
    })
    .await;
    let started = Instant::now();
    setup.daemon.stop_container(&id, 2).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let status = setup.daemon.container_state(&id).await.unwrap();
    assert_eq!(status.exit_code, 137, "SIGKILL at the timeout");

    // A process that honours SIGTERM stops at once.
    let config = setup.config(
        "polite",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    );
    let log = setup.log_file(&config);
    let id = setup.run(config).await;
    wait_for("the trap to be set", Duration::from_secs(10), || {
        log_records(&log).iter().any(|r| r.3 == "ready")
    })
    .await;
    let started = Instant::now();
    setup.daemon.stop_container(&id, 30).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        setup.daemon.container_state(&id).await.unwrap().exit_code,
        0
    );
    setup.finish().await;
}

#[tokio::test]
async fn readonly_rootfs_refuses_writes() {
    let setup = Setup::new("rofs").await;
    let mut config = setup.config("rofs", &["sleep", "1000"]);
    security(&mut config).readonly_rootfs = true;
    let id = setup.run(config).await;
    let response = setup
        .daemon
        .exec_sync(&id, &["sh", "-c", "echo x > /written"], 10)
        .await
        .unwrap();
    assert_ne!(response.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&response.stderr).contains("Read-only file system"),
        "{response:?}"
    );
    // The writable rootfs of another container takes the same write.
    let id = setup.run(setup.config("rwfs", &["sleep", "1000"])).await;
    let response = setup
        .daemon
        .exec_sync(&id, &["sh", "-c", "echo x > /written && cat /written"], 10)
        .await
        .unwrap();
    assert_eq!((response.exit_code, stdout(&response)), (0, "x\n".into()));
    setup.finish().await;
}

#[tokio::test]
async fn run_as_user_and_image_user_name() {
    let setup = Setup::new("users").await;
    let mut config = setup.config("uid1000", &["sleep", "1000"]);
    security(&mut config).run_as_user = Some(v1::Int64Value { value: 1000 });
    let id = setup.run(config).await;
    let response = setup.daemon.exec_sync(&id, &["id"], 10).await.unwrap();
    assert!(
        stdout(&response).starts_with("uid=1000 gid=0"),
        "{response:?}"
    );
    let status = setup.daemon.container_state(&id).await.unwrap();
    let user = status.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (1000, 0));

    // The image's USER is a name (coracle 1234:5678, also in group extra 4321).
    let image = setup.registry.reference("user", "latest");
    let config = container_config("named", &image, &["sleep", "1000"]);
    let id = setup.run(config).await;
    let out = stdout(&setup.daemon.exec_sync(&id, &["id"], 10).await.unwrap());
    assert!(
        out.starts_with("uid=1234(coracle) gid=5678(coracle)"),
        "{out}"
    );
    assert!(out.contains("4321(extra)"), "{out}");
    let home = setup
        .daemon
        .exec_sync(&id, &["sh", "-c", "echo $HOME"], 10)
        .await
        .unwrap();
    assert_eq!(stdout(&home), "/home/coracle\n");

    // A uid that does not fit is refused at create.
    let mut config = setup.config("huge", &["true"]);
    security(&mut config).run_as_user = Some(v1::Int64Value { value: 1 << 40 });
    let err = setup
        .daemon
        .create_container(&setup.pod_id, config, &setup.pod_config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    setup.finish().await;
}

#[tokio::test]
async fn capabilities_dropped_to_none() {
    let setup = Setup::new("caps").await;
    let cap_eff = |response: v1::ExecSyncResponse| {
        stdout(&response)
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
            .unwrap()
    };
    let default = setup.run(setup.config("default", &["sleep", "1000"])).await;
    let caps = cap_eff(
        setup
            .daemon
            .exec_sync(&default, &["cat", "/proc/self/status"], 10)
            .await
            .unwrap(),
    );
    // containerd's default set: chown, dac_override, fowner, fsetid, kill, setgid,
    // setuid, setpcap, net_bind_service, net_raw, sys_chroot, mknod, audit_write, setfcap.
    assert_eq!(caps, "00000000a80425fb");

    let mut config = setup.config("none", &["sleep", "1000"]);
    security(&mut config).capabilities = Some(v1::Capability {
        drop_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    let none = setup.run(config).await;
    let caps = cap_eff(
        setup
            .daemon
            .exec_sync(&none, &["cat", "/proc/self/status"], 10)
            .await
            .unwrap(),
    );
    assert_eq!(caps, "0000000000000000");
    // Without CAP_CHOWN, root cannot give a file away.
    let response = setup
        .daemon
        .exec_sync(&none, &["sh", "-c", "touch /tmp/f && chown 1:1 /tmp/f"], 10)
        .await
        .unwrap();
    assert_ne!(response.exit_code, 0, "{response:?}");
    setup.finish().await;
}

/// A block device of the host that a default container does not get.
fn host_block_device() -> String {
    fs::read_dir("/sys/class/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| Path::new("/dev").join(name).exists())
        .expect("the host has a block device")
}

#[tokio::test]
async fn privileged_container_sees_host_devices() {
    let setup = Setup::with_pod("priv", |pod| {
        let context = pod
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        context.privileged = true;
    })
    .await;
    let device = format!("/dev/{}", host_block_device());
    let plain = setup.run(setup.config("plain", &["sleep", "1000"])).await;
    let response = setup
        .daemon
        .exec_sync(&plain, &["test", "-b", &device], 10)
        .await
        .unwrap();
    assert_ne!(response.exit_code, 0, "{device} in a plain container");

    let mut config = setup.config("privileged", &["sleep", "1000"]);
    security(&mut config).privileged = true;
    let privileged = setup.run(config).await;
    let response = setup
        .daemon
        .exec_sync(&privileged, &["test", "-b", &device], 10)
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0, "{device} in a privileged container");
    let caps = stdout(
        &setup
            .daemon
            .exec_sync(&privileged, &["cat", "/proc/self/status"], 10)
            .await
            .unwrap(),
    );
    assert!(
        !caps.contains("CapEff:\t00000000a80425fb"),
        "privileged gets every capability"
    );
    setup.finish().await;
}

#[tokio::test]
async fn exec_sync_timeout_output_cap_and_background_children() {
    let setup = Setup::new("exec").await;
    let id = setup.run(setup.config("exec", &["sleep", "1000"])).await;

    let response = setup
        .daemon
        .exec_sync(&id, &["sh", "-c", "echo hi; echo oops >&2; exit 7"], 10)
        .await
        .unwrap();
    assert_eq!(response.exit_code, 7);
    assert_eq!(stdout(&response), "hi\n");
    assert_eq!(response.stderr, b"oops\n");

    // Timeout: an error (kubelet's probes need one) and the process group is gone.
    let started = Instant::now();
    let err = setup
        .daemon
        .exec_sync(&id, &["sh", "-c", "sleep 30; echo late"], 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let ps = stdout(
        &setup
            .daemon
            .exec_sync(&id, &["ps", "-o", "args"], 10)
            .await
            .unwrap(),
    );
    assert!(!ps.contains("sleep 30"), "{ps}");

    // 17 MiB of output: 16 MiB kept.
    let response = setup
        .daemon
        .exec_sync(&id, &["head", "-c", "17825792", "/dev/zero"], 30)
        .await
        .unwrap();
    assert_eq!(response.exit_code, 0);
    assert_eq!(response.stdout.len(), 16 << 20);

    // A background child holding stdout open does not hang the call.
    let started = Instant::now();
    let response = setup
        .daemon
        .exec_sync(&id, &["sh", "-c", "sleep 20 & echo done"], 10)
        .await
        .unwrap();
    assert_eq!(stdout(&response), "done\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Exec in a stopped container is a wrong-state error.
    setup.daemon.stop_container(&id, 0).await.unwrap();
    let err = setup
        .daemon
        .exec_sync(&id, &["true"], 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    setup.finish().await;
}

#[tokio::test]
async fn logs_go_on_across_reopen_container_log() {
    let setup = Setup::new("logs").await;
    let config = setup.config(
        "chatty",
        &[
            "sh",
            "-c",
            "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    let log = setup.log_file(&config);
    let id = setup.run(config).await;
    wait_for("first lines", Duration::from_secs(10), || {
        log_records(&log).len() >= 3
    })
    .await;
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    setup.daemon.reopen_container_log(&id).await.unwrap();
    assert!(log.exists(), "reopen creates the file again");
    wait_for("lines in the new file", Duration::from_secs(10), || {
        log_records(&log).len() >= 3
    })
    .await;
    let old = log_records(&rotated).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        log_records(&rotated).len(),
        old,
        "the old file stopped growing"
    );
    // No line lost or doubled across the two files.
    let numbers: Vec<u64> = log_records(&rotated)
        .into_iter()
        .chain(log_records(&log))
        .map(|(ts, stream, tag, content)| {
            assert!(is_cri_timestamp(&ts) && stream == "stdout" && tag == "F");
            content.strip_prefix("line").unwrap().parse().unwrap()
        })
        .collect();
    let expected: Vec<u64> = (0..numbers.len() as u64).collect();
    assert_eq!(numbers, expected);

    setup.daemon.stop_container(&id, 0).await.unwrap();
    let err = setup.daemon.reopen_container_log(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    setup.finish().await;
}

#[tokio::test]
async fn restart_recovery_keeps_containers_and_reports_exits() {
    let mut setup = Setup::new("restart").await;
    let long = setup.config(
        "long",
        &[
            "sh",
            "-c",
            "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let long_log = setup.log_file(&long);
    let long_id = setup.run(long).await;
    let short_id = setup
        .run(setup.config("short", &["sh", "-c", "sleep 1; exit 4"]))
        .await;
    let created_id = setup
        .create(setup.config("later", &["sleep", "1000"]))
        .await;
    let info = setup.daemon.container_status(&long_id).await.unwrap().info;
    let pid_before = serde_json::from_str::<serde_json::Value>(&info["info"]).unwrap()["pid"]
        .as_i64()
        .unwrap();

    setup.daemon.crash().await.unwrap();
    let crashed_at = coracle_runtime::now_nanos();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines_while_down = log_records(&long_log).len();
    setup.daemon.restart().await.unwrap();

    let long = setup.daemon.container_status(&long_id).await.unwrap();
    assert_eq!(
        long.status.as_ref().unwrap().state,
        v1::ContainerState::ContainerRunning as i32
    );
    let pid_after = serde_json::from_str::<serde_json::Value>(&long.info["info"]).unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert_eq!(
        pid_before, pid_after,
        "the running container was not disturbed"
    );
    let short = setup.daemon.container_state(&short_id).await.unwrap();
    assert_eq!(short.state, v1::ContainerState::ContainerExited as i32);
    assert_eq!(short.exit_code, 4, "the exit while the daemon was down");
    assert!(short.finished_at > crashed_at - 5_000_000_000);
    // The created container can still be started; logs went on all along.
    setup.daemon.start_container(&created_id).await.unwrap();
    wait_for("more log lines", Duration::from_secs(10), || {
        log_records(&long_log).len() > lines_while_down + 2
    })
    .await;
    // And the new daemon learns of exits too.
    setup.daemon.stop_container(&long_id, 1).await.unwrap();
    assert_eq!(
        setup.daemon.container_state(&long_id).await.unwrap().state,
        v1::ContainerState::ContainerExited as i32
    );
    setup.finish().await;
}

#[tokio::test]
async fn ten_containers_start_in_parallel_in_one_pod() {
    let setup = Setup::new("parallel").await;
    let configs: Vec<v1::ContainerConfig> = (0..10)
        .map(|i| setup.config(&format!("c{i}"), &["sleep", "1000"]))
        .collect();
    let ids =
        futures_util::future::join_all(configs.into_iter().map(|config| setup.run(config))).await;
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
    let running = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue {
            state: v1::ContainerState::ContainerRunning as i32,
        }),
        pod_sandbox_id: setup.pod_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        setup
            .daemon
            .list_containers(Some(running))
            .await
            .unwrap()
            .len(),
        10
    );
    // StopPodSandbox kills them all.
    setup.daemon.stop_pod(&setup.pod_id).await.unwrap();
    for id in &ids {
        let status = setup.daemon.container_state(id).await.unwrap();
        assert_eq!(status.state, v1::ContainerState::ContainerExited as i32);
    }
    setup.finish().await;
}

#[tokio::test]
async fn update_container_resources_reaches_the_cgroup() {
    let setup = Setup::new("update").await;
    let mut config = setup.config("limited", &["sleep", "1000"]);
    config.linux.as_mut().unwrap().resources = Some(v1::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    });
    let id = setup.run(config).await;
    let limit_file = format!("/sys/fs/cgroup/memory/coracle/{id}/memory.limit_in_bytes");
    assert_eq!(fs::read_to_string(&limit_file).unwrap().trim(), "67108864");
    setup
        .daemon
        .update_container_resources(
            &id,
            v1::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_shares: 512,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(fs::read_to_string(&limit_file).unwrap().trim(), "100663296");
    let shares = format!("/sys/fs/cgroup/cpu/coracle/{id}/cpu.shares");
    assert_eq!(fs::read_to_string(shares).unwrap().trim(), "512");
    let status = setup.daemon.container_state(&id).await.unwrap();
    let resources = status.resources.unwrap().linux.unwrap();
    assert_eq!(resources.memory_limit_in_bytes, 96 << 20);
    setup.finish().await;
}

#[tokio::test]
async fn bad_container_configs_are_refused_and_leave_nothing() {
    let setup = Setup::new("bad").await;
    let unknown_image = container_config("ghost", "127.0.0.1:1/nope:latest", &["true"]);
    let err = setup
        .daemon
        .create_container(&setup.pod_id, unknown_image, &setup.pod_config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let mut no_name = setup.config("x", &["true"]);
    no_name.metadata = None;
    let err = setup
        .daemon
        .create_container(&setup.pod_id, no_name, &setup.pod_config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = setup
        .daemon
        .create_container(
            "no-such-pod",
            setup.config("y", &["true"]),
            &setup.pod_config,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A missing binary fails at create (as runc) and rolls back.
    let missing = setup.config("missing", &["/no/such/binary"]);
    let err = setup
        .daemon
        .create_container(&setup.pod_id, missing, &setup.pod_config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("/no/such/binary"), "{err:?}");
    assert!(setup.daemon.list_containers(None).await.unwrap().is_empty());
    let leftovers: Vec<_> = fs::read_dir(setup.daemon.state_dir().join("containers"))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    setup.finish().await;
}

#[tokio::test]
async fn shared_pid_namespace_has_an_init_and_sees_all_containers() {
    let setup = Setup::with_pod("sharedpid", |pod| {
        let options = pod
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options
            .as_mut()
            .unwrap();
        options.pid = v1::NamespaceMode::Pod as i32;
    })
    .await;
    let info = setup.daemon.pod_status(&setup.pod_id).await.unwrap().info;
    let init = serde_json::from_str::<serde_json::Value>(&info["info"]).unwrap()["pid"]
        .as_i64()
        .unwrap();
    assert!(init > 1, "the pod has an init: {info:?}");
    // The containers' configs name POD too (the CRI default).
    let first = setup.run(setup.config("first", &["sleep", "1000"])).await;
    let second = setup.run(setup.config("second", &["sleep", "2000"])).await;
    let ps = stdout(
        &setup
            .daemon
            .exec_sync(&second, &["ps", "-o", "pid,args"], 10)
            .await
            .unwrap(),
    );
    assert!(
        ps.contains("sleep 1000") && ps.contains("sleep 2000"),
        "{ps}"
    );
    let pid_one = ps
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_default()
        .to_owned();
    assert!(
        pid_one.contains("coracle-monitor"),
        "pid 1 is the pod's init: {ps}"
    );
    assert!(!first.is_empty());
    // Stopping the pod ends its init and every process in the namespace.
    setup.daemon.stop_pod(&setup.pod_id).await.unwrap();
    assert!(!process_alive(init), "init is gone");
    setup.finish().await;
}

/// Running (a zombie waiting for a slow reaper counts as ended).
fn process_alive(pid: i64) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(coracle_oci::state::proc_stat)
        .is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}
