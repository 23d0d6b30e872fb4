//! The daemon as kubelet and crictl see it: versions, status, wiring, the socket,
//! the store across restarts, logs and shutdown.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use coracle_e2e::{Daemon, DaemonOptions};
use coracle_runtime::model::{PodMetadata, PodRecord, PodSpec, PodState};
use coracle_runtime::store::RecordStore;
use k8s_cri::{v1, v1alpha2};
use tonic::Code;

#[tokio::test]
async fn version_answers_in_the_api_version_asked() {
    let mut daemon = Daemon::start().await.unwrap();
    let v1 = daemon
        .runtime_client()
        .await
        .unwrap()
        .version(v1::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.runtime_name, "coracle");
    assert_eq!(v1.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v1.runtime_api_version, "v1");
    assert_eq!(v1.version, "0.1.0");

    let alpha = daemon
        .runtime_client_v1alpha2()
        .await
        .unwrap()
        .version(v1alpha2::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alpha.runtime_name, "coracle");
    assert_eq!(alpha.runtime_api_version, "v1alpha2");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn status_reports_both_conditions_on_both_versions() {
    let mut daemon = Daemon::start().await.unwrap();
    let status = daemon
        .runtime_client()
        .await
        .unwrap()
        .status(v1::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.info.is_empty(),
        "info without verbose: {:?}",
        status.info
    );
    let conditions: HashMap<_, _> = status
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| (c.r#type.clone(), c))
        .collect();
    assert!(conditions["RuntimeReady"].status);
    assert!(
        conditions["NetworkReady"].status,
        "{:?}",
        conditions["NetworkReady"]
    );

    let alpha = daemon
        .runtime_client_v1alpha2()
        .await
        .unwrap()
        .status(v1alpha2::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let alpha_types: Vec<_> = alpha
        .status
        .unwrap()
        .conditions
        .iter()
        .map(|c| (c.r#type.clone(), c.status))
        .collect();
    assert_eq!(
        alpha_types,
        vec![
            ("RuntimeReady".to_string(), true),
            ("NetworkReady".to_string(), true)
        ]
    );
    daemon.stop().await.unwrap();
}

/// NetworkReady follows the bridge: false with a reason when it is gone, true again
/// once a RunPodSandbox has made it anew.
#[tokio::test]
async fn network_ready_follows_the_bridge() {
    coracle_e2e::require_root();
    let mut daemon = Daemon::start().await.unwrap();
    assert!(daemon.condition("NetworkReady").await.unwrap().status);
    let bridge = daemon.network().bridge();
    let deleted = std::process::Command::new("ip")
        .args(["link", "del", &bridge])
        .status()
        .unwrap();
    assert!(deleted.success());
    let condition = daemon.condition("NetworkReady").await.unwrap();
    assert!(!condition.status);
    assert_eq!(condition.reason, "NetworkPluginNotReady");
    assert!(condition.message.contains(&bridge), "{}", condition.message);

    let mut client = daemon.runtime_client().await.unwrap();
    let id = client
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(v1::PodSandboxConfig {
                metadata: Some(v1::PodSandboxMetadata {
                    name: "heal".into(),
                    uid: "uid-heal".into(),
                    namespace: "e2e".into(),
                    attempt: 0,
                }),
                hostname: "heal".into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert!(daemon.condition("NetworkReady").await.unwrap().status);
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn verbose_status_holds_the_effective_config_as_json() {
    let mut daemon = Daemon::start_with(DaemonOptions {
        config_toml: Some("shutdown_timeout_seconds = 7\n[network]\nmode = \"cni\"\n".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = daemon
        .runtime_client()
        .await
        .unwrap()
        .status(v1::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    // File values, flag overrides and defaults all show.
    assert_eq!(config["shutdown_timeout_seconds"], 7);
    assert_eq!(config["network"]["mode"], "cni");
    assert_eq!(
        config["socket_path"],
        daemon.socket_path().to_string_lossy().as_ref()
    );
    assert_eq!(config["log"]["level"], "debug");
    assert_eq!(config["cgroup_driver"], "cgroupfs");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn runtime_config_reports_the_cgroupfs_driver() {
    let mut daemon = Daemon::start().await.unwrap();
    let response = daemon
        .runtime_client()
        .await
        .unwrap()
        .runtime_config(v1::RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.linux.unwrap().cgroup_driver,
        v1::CgroupDriver::Cgroupfs as i32
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn checkpoint_says_it_is_unimplemented_and_v1alpha2_updates_runtime_config() {
    let mut daemon = Daemon::start().await.unwrap();
    let err = daemon
        .runtime_client()
        .await
        .unwrap()
        .checkpoint_container(v1::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );

    // UpdateRuntimeConfig is served on v1alpha2 too; an empty config changes nothing.
    daemon
        .runtime_client_v1alpha2()
        .await
        .unwrap()
        .update_runtime_config(v1alpha2::UpdateRuntimeConfigRequest::default())
        .await
        .unwrap();
    daemon.stop().await.unwrap();
}

/// Runs a second `coracled` by hand (no config file) and waits for it to exit.
async fn run_coracled(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let output = tokio::process::Command::new(coracle_e2e::daemon::coracled_binary())
        .arg("--config")
        .arg("/dev/null")
        .args(args)
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("coracled did not exit")
        .unwrap()
}

#[tokio::test]
async fn second_daemon_on_a_live_socket_exits_non_zero() {
    let mut daemon = Daemon::start().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let output = run_coracled(&[
        "--socket".as_ref(),
        daemon.socket_path().as_os_str(),
        "--root".as_ref(),
        other.path().join("root").as_os_str(),
        "--state".as_ref(),
        other.path().join("state").as_os_str(),
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already served"), "{stderr}");
    assert!(
        !other.path().join("root").exists(),
        "the refused daemon touched its root dir"
    );
    // The first daemon is unharmed.
    daemon
        .runtime_client()
        .await
        .unwrap()
        .version(v1::VersionRequest::default())
        .await
        .unwrap();
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn second_daemon_on_the_same_root_dir_exits_non_zero() {
    let mut daemon = Daemon::start().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let output = run_coracled(&[
        "--socket".as_ref(),
        other.path().join("other.sock").as_os_str(),
        "--root".as_ref(),
        daemon.root_dir().as_os_str(),
        "--state".as_ref(),
        other.path().join("state").as_os_str(),
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("one daemon per root dir"), "{stderr}");
    assert!(!other.path().join("other.sock").exists());
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn stale_socket_from_a_crash_is_replaced() {
    let mut daemon = Daemon::start().await.unwrap();
    daemon.crash().await.unwrap();
    assert!(
        daemon.socket_path().exists(),
        "SIGKILL should leave the socket"
    );
    daemon.restart().await.unwrap();
    daemon
        .runtime_client()
        .await
        .unwrap()
        .version(v1::VersionRequest::default())
        .await
        .unwrap();
    daemon.stop().await.unwrap();
}

fn pod_record(id: &str, name: &str) -> PodRecord {
    PodRecord {
        id: id.into(),
        spec: PodSpec {
            metadata: PodMetadata {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                attempt: 1,
            },
            labels: [("app".to_string(), name.to_string())].into(),
            annotations: [("note".to_string(), "kept".to_string())].into(),
            ..Default::default()
        },
        state: PodState::NotReady,
        created_at: 1_700_000_000_000_000_000,
        namespace_dir: None,
        pinned: Vec::new(),
        cgroup: None,
        cgroup_created: false,
        network: None,
        init: None,
    }
}

/// A pod record written by the store (as RunPodSandbox will write it) is listed after
/// a restart, and one after a crash; a torn temp file beside it is cleaned, not read.
#[tokio::test]
async fn record_survives_restart_and_crash() {
    let mut daemon = Daemon::start().await.unwrap();
    assert!(daemon.list_pods().await.unwrap().is_empty());
    daemon.stop().await.unwrap();

    let pods_dir = daemon.root_dir().join("pods");
    {
        let (store, _) = RecordStore::<PodRecord>::open(&pods_dir).unwrap();
        drop(store.insert(pod_record("p1", "web")).await.unwrap());
    }
    let torn = pods_dir.join(".p2.json.tmp-999-0");
    std::fs::write(&torn, b"{\"id\":\"p2\",\"meta").unwrap();

    daemon.restart().await.unwrap();
    let pods = daemon.list_pods().await.unwrap();
    assert_eq!(pods.len(), 1, "{pods:?}");
    let pod = &pods[0];
    assert_eq!(pod.id, "p1");
    assert_eq!(pod.metadata.as_ref().unwrap().name, "web");
    assert_eq!(pod.metadata.as_ref().unwrap().attempt, 1);
    assert_eq!(pod.labels["app"], "web");
    assert_eq!(pod.annotations["note"], "kept");
    assert_eq!(pod.state, v1::PodSandboxState::SandboxNotready as i32);
    assert!(!torn.exists(), "torn temp file was not cleaned");

    daemon.crash().await.unwrap();
    daemon.restart().await.unwrap();
    let pods = daemon.list_pods().await.unwrap();
    assert_eq!(
        pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["p1"]
    );

    // The same record through the v1alpha2 API.
    let alpha = daemon
        .runtime_client_v1alpha2()
        .await
        .unwrap()
        .list_pod_sandbox(v1alpha2::ListPodSandboxRequest {
            filter: Some(v1alpha2::PodSandboxFilter {
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alpha.items.len(), 1);
    assert_eq!(alpha.items[0].metadata.as_ref().unwrap().uid, "uid-web");
    daemon.stop().await.unwrap();
}

/// kubelet's client allows 16 MiB; a request just under it is served, a larger one
/// refused (tonic answers OUT_OF_RANGE, naming the limit) rather than crashing anything.
#[tokio::test]
async fn message_limit_is_16_mib() {
    let mut daemon = Daemon::start().await.unwrap();
    let request_of = |bytes: usize| v1::ListPodSandboxRequest {
        filter: Some(v1::PodSandboxFilter {
            label_selector: [("big".to_string(), "x".repeat(bytes))].into(),
            ..Default::default()
        }),
    };
    let mut client = daemon.runtime_client().await.unwrap();
    let ok = client.list_pod_sandbox(request_of(15 * 1024 * 1024)).await;
    assert!(ok.is_ok(), "{ok:?}");
    let err = client
        .list_pod_sandbox(request_of(17 * 1024 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("16777216"), "{err:?}");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn each_rpc_is_logged_with_its_duration_and_errors_at_warn() {
    let mut daemon = Daemon::start().await.unwrap();
    let mut client = daemon.runtime_client().await.unwrap();
    client.status(v1::StatusRequest::default()).await.unwrap();
    let _ = client
        .container_stats(v1::ContainerStatsRequest::default())
        .await;
    daemon.stop().await.unwrap();
    let log = daemon.log();
    let status_line = log
        .lines()
        .find(|line| line.contains("/runtime.v1.RuntimeService/Status"))
        .unwrap_or_else(|| panic!("no Status line in log:\n{log}"));
    assert!(
        status_line.contains("DEBUG") && status_line.contains("duration_ms"),
        "{status_line}"
    );
    let error_line = log
        .lines()
        .find(|line| line.contains("/runtime.v1.RuntimeService/ContainerStats"))
        .unwrap_or_else(|| panic!("no ContainerStats line in log:\n{log}"));
    assert!(error_line.contains("WARN"), "{error_line}");
    assert!(
        error_line.contains("InvalidArgument") && error_line.contains("container_id"),
        "{error_line}"
    );
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    let mut daemon = Daemon::start_with(DaemonOptions {
        args: vec!["--log-format".into(), "json".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    daemon.stop().await.unwrap();
    let log = daemon.log();
    let lines: Vec<_> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
    assert!(
        log.contains("\"rpc\":\"/runtime.v1.RuntimeService/Version\""),
        "{log}"
    );
}

#[tokio::test]
async fn bad_config_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[log]\nformat = \"yaml\"\n").unwrap();
    let output = tokio::process::Command::new(coracle_e2e::daemon::coracled_binary())
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(dir.path().join("c.sock"))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("format") && stderr.contains("yaml"),
        "{stderr}"
    );
    assert!(!dir.path().join("c.sock").exists());
}

#[tokio::test]
async fn print_config_shows_flags_over_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "root_dir = \"/srv/coracle\"\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let output = tokio::process::Command::new(coracle_e2e::daemon::coracled_binary())
        .arg("--config")
        .arg(&config)
        .arg("--log-level")
        .arg("trace")
        .arg("--print-config")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let printed: toml::Value = toml::from_str(&String::from_utf8_lossy(&output.stdout)).unwrap();
    assert_eq!(printed["root_dir"].as_str(), Some("/srv/coracle"));
    assert_eq!(printed["log"]["level"].as_str(), Some("trace"));
    assert_eq!(printed["state_dir"].as_str(), Some("/run/coracle"));
}

/// kubelet keeps its connection open; shutdown must not wait out the grace period
/// for an idle connection, and must exit 0 on SIGINT as on SIGTERM.
#[tokio::test]
async fn shutdown_with_a_connected_client_is_prompt_and_clean() {
    let mut daemon = Daemon::start_with(DaemonOptions {
        // Longer than the harness waits for an exit: a shutdown that waited for the
        // idle connection to go away would fail `stop`.
        config_toml: Some("shutdown_timeout_seconds = 120\n".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut client = daemon.runtime_client().await.unwrap();
    client.version(v1::VersionRequest::default()).await.unwrap();
    daemon.stop().await.unwrap();
    // The connection is gone with the daemon.
    assert!(client.version(v1::VersionRequest::default()).await.is_err());
    assert!(daemon.log().contains("SIGTERM received"));
}

#[tokio::test]
async fn sigint_exits_zero_and_removes_the_socket() {
    let mut daemon = Daemon::start().await.unwrap();
    let pid = nix::unistd::Pid::from_raw(daemon.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while daemon.socket_path().exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !daemon.socket_path().exists(),
        "socket still there after SIGINT"
    );
    // stop() now finds the process exited: its status must still be 0.
    daemon.stop().await.unwrap();
    assert!(daemon.log().contains("SIGINT received"));
}
