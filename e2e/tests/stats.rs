//! What kubelet reads to keep pods healthy, through CRI against the real daemon:
//! container and pod stats from the kernel's cgroup and network counters, container
//! events on several streams at once, the metric descriptors and pod metrics, and the
//! Prometheus endpoint.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::time::Duration;

use coracle_e2e::fixtures::{container_config, pod_config};
use coracle_e2e::{Daemon, DaemonOptions, Registry, require_root};
use k8s_cri::v1;
use tonic::Code;

const MIB: u64 = 1024 * 1024;

struct Setup {
    daemon: Daemon,
    registry: Registry,
    logs: tempfile::TempDir,
}

impl Setup {
    async fn new(options: DaemonOptions) -> Setup {
        require_root();
        let registry = Registry::start().unwrap();
        let daemon = Daemon::start_with(options).await.unwrap();
        for repo in ["busybox", "httpd"] {
            daemon
                .pull_image(&registry.reference(repo, "latest"))
                .await
                .unwrap();
        }
        Setup {
            daemon,
            registry,
            logs: tempfile::tempdir().unwrap(),
        }
    }

    async fn pod(&self, name: &str) -> (String, v1::PodSandboxConfig) {
        let mut config = pod_config(name, self.logs.path());
        // As kubelet does: the pod gets a cgroup of its own, the containers go below.
        // One level, so the daemon makes (and removes) the whole path.
        config
            .linux
            .get_or_insert_with(Default::default)
            .cgroup_parent = format!("/coracle-e2e-{}-{name}", std::process::id());
        let id = self.daemon.run_pod(config.clone()).await.unwrap();
        (id, config)
    }

    async fn run(
        &self,
        pod: &(String, v1::PodSandboxConfig),
        name: &str,
        repo: &str,
        command: &[&str],
    ) -> String {
        let image = self.registry.reference(repo, "latest");
        let config = container_config(name, &image, command);
        let id = self
            .daemon
            .create_container(&pod.0, config, &pod.1)
            .await
            .unwrap();
        self.daemon.start_container(&id).await.unwrap();
        id
    }

    async fn finish(mut self, pods: &[&str]) {
        for pod in pods {
            self.daemon.stop_pod(pod).await.unwrap();
            self.daemon.remove_pod(pod).await.unwrap();
        }
        self.daemon.stop().await.unwrap();
    }
}

fn value(v: &Option<v1::UInt64Value>) -> u64 {
    v.as_ref().expect("a value the runtime must report").value
}

fn cpu_usage(stats: &v1::ContainerStats) -> u64 {
    value(&stats.cpu.as_ref().unwrap().usage_core_nano_seconds)
}

#[tokio::test]
async fn a_busy_container_uses_cpu_and_a_filled_one_holds_memory() {
    let setup = Setup::new(DaemonOptions::default()).await;
    let pod = setup.pod("stats-cpu").await;
    let busy = setup
        .run(
            &pod,
            "busy",
            "busybox",
            &["sh", "-c", "while :; do :; done"],
        )
        .await;
    // /dev/shm is the pod's tmpfs: its pages are charged to the container that
    // writes them and cannot be reclaimed as page cache.
    let fill = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=50 && touch /tmp/ready && sleep 600";
    let filled = setup
        .run(&pod, "filled", "busybox", &["sh", "-c", fill])
        .await;

    let first = setup.daemon.container_stats(&busy).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = setup.daemon.container_stats(&busy).await.unwrap();
    let grew = cpu_usage(&second) - cpu_usage(&first);
    assert!(
        grew > 300_000_000,
        "a busy loop used only {grew} ns of CPU in 1.5 s"
    );
    let cores = value(&second.cpu.as_ref().unwrap().usage_nano_cores);
    assert!(
        cores > 200_000_000,
        "usage_nano_cores {cores} for a busy loop"
    );
    let attributes = second.attributes.as_ref().unwrap();
    assert_eq!(attributes.id, busy);
    assert_eq!(attributes.metadata.as_ref().unwrap().name, "busy");
    assert_eq!(
        attributes.labels.get("app").map(String::as_str),
        Some("busy")
    );
    let layer = second.writable_layer.as_ref().unwrap();
    assert!(
        value(&layer.inodes_used) >= 1,
        "the upper dir itself at least"
    );

    let mut waited = 0;
    while setup
        .daemon
        .exec_sync(&filled, &["test", "-e", "/tmp/ready"], 5)
        .await
        .unwrap()
        .exit_code
        != 0
    {
        waited += 1;
        assert!(waited < 100, "the filler never finished writing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = setup.daemon.container_stats(&filled).await.unwrap();
    let memory = stats.memory.as_ref().unwrap();
    let working_set = value(&memory.working_set_bytes);
    assert!(
        working_set >= 50 * MIB,
        "working set {} MiB for a container holding 50 MiB",
        working_set / MIB
    );
    assert!(value(&memory.usage_bytes) >= working_set);
    assert!(value(&memory.page_faults) > 0);
    // The file the filler made in its writable layer counts there.
    let written = setup
        .daemon
        .container_stats(&filled)
        .await
        .unwrap()
        .writable_layer
        .unwrap();
    assert!(value(&written.inodes_used) >= 2, "/tmp and /tmp/ready");

    let listed = setup
        .daemon
        .list_container_stats(Some(v1::ContainerStatsFilter {
            pod_sandbox_id: pod.0.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut ids: Vec<_> = listed
        .iter()
        .map(|s| s.attributes.as_ref().unwrap().id.clone())
        .collect();
    ids.sort();
    let mut want = vec![busy.clone(), filled.clone()];
    want.sort();
    assert_eq!(ids, want);
    let by_label = setup
        .daemon
        .list_container_stats(Some(v1::ContainerStatsFilter {
            label_selector: [("app".to_string(), "busy".to_string())].into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(by_label.len(), 1);

    let pod_stats = setup.daemon.pod_stats(&pod.0).await.unwrap();
    let linux = pod_stats.linux.as_ref().unwrap();
    assert!(
        value(&linux.memory.as_ref().unwrap().working_set_bytes) >= 50 * MIB,
        "the pod cgroup holds its containers' memory"
    );
    assert!(value(&linux.cpu.as_ref().unwrap().usage_core_nano_seconds) >= cpu_usage(&second));
    assert!(value(&linux.process.as_ref().unwrap().process_count) >= 2);
    assert_eq!(linux.containers.len(), 2);

    let missing = setup.daemon.container_stats("no-such-container").await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let missing = setup.daemon.pod_stats("no-such-pod").await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    setup.finish(&[&pod.0]).await;
}

#[tokio::test]
async fn a_pod_downloading_from_another_pod_shows_its_rx_bytes_grow() {
    let setup = Setup::new(DaemonOptions::default()).await;
    let server_pod = setup.pod("stats-server").await;
    let server = setup.run(&server_pod, "httpd", "httpd", &[]).await;
    let made = setup
        .daemon
        .exec_sync(
            &server,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/www/big bs=1M count=4 2>/dev/null",
            ],
            10,
        )
        .await
        .unwrap();
    assert_eq!(made.exit_code, 0, "{made:?}");
    let server_ip = setup
        .daemon
        .pod_status(&server_pod.0)
        .await
        .unwrap()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;

    let client_pod = setup.pod("stats-client").await;
    let client = setup
        .run(&client_pod, "client", "busybox", &["sleep", "600"])
        .await;
    let rx = |stats: &v1::PodSandboxStats| {
        let network = stats.linux.as_ref().unwrap().network.as_ref().unwrap();
        let eth0 = network.default_interface.as_ref().unwrap();
        assert_eq!(eth0.name, "eth0");
        value(&eth0.rx_bytes)
    };
    let before = rx(&setup.daemon.pod_stats(&client_pod.0).await.unwrap());
    let url = format!("http://{server_ip}/big");
    let mut fetched = None;
    for _ in 0..50 {
        let got = setup
            .daemon
            .exec_sync(&client, &["wget", "-q", "-O", "/dev/null", &url], 10)
            .await
            .unwrap();
        if got.exit_code == 0 {
            fetched = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // httpd still starting
    }
    assert!(fetched.is_some(), "wget {url} never succeeded");
    let listed = setup
        .daemon
        .list_pod_stats(Some(v1::PodSandboxStatsFilter {
            id: client_pod.0.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let after = rx(&listed[0]);
    assert!(
        after >= before + 4 * MIB,
        "rx bytes went from {before} to {after} for a 4 MiB download"
    );
    setup.finish(&[&client_pod.0, &server_pod.0]).await;
}

fn event_summary(event: &v1::ContainerEventResponse) -> (String, i32) {
    (event.container_id.clone(), event.container_event_type)
}

#[tokio::test]
async fn lifecycle_events_arrive_in_order_on_two_streams() {
    let setup = Setup::new(DaemonOptions::default()).await;
    let pod = setup.pod("stats-events").await;
    let mut first = setup.daemon.container_events().await.unwrap();
    let mut second = setup.daemon.container_events().await.unwrap();

    let id = setup.run(&pod, "short", "busybox", &["sleep", "600"]).await;
    setup.daemon.stop_container(&id, 0).await.unwrap();
    setup.daemon.remove_container(&id).await.unwrap();

    use v1::ContainerEventType as T;
    let want: Vec<(String, i32)> = [
        T::ContainerCreatedEvent,
        T::ContainerStartedEvent,
        T::ContainerStoppedEvent,
        T::ContainerDeletedEvent,
    ]
    .iter()
    .map(|kind| (id.clone(), *kind as i32))
    .collect();
    for stream in [&mut first, &mut second] {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            assert!(event.created_at > 0);
            let pod_status = event.pod_sandbox_status.as_ref().unwrap();
            assert_eq!(pod_status.id, pod.0);
            if event.container_event_type == T::ContainerStartedEvent as i32 {
                let status = event
                    .containers_statuses
                    .iter()
                    .find(|s| s.id == id)
                    .unwrap();
                assert_eq!(status.state, v1::ContainerState::ContainerRunning as i32);
            }
            if event.container_event_type == T::ContainerStoppedEvent as i32 {
                let status = event
                    .containers_statuses
                    .iter()
                    .find(|s| s.id == id)
                    .unwrap();
                assert_eq!(status.state, v1::ContainerState::ContainerExited as i32);
            }
            if event.container_event_type == T::ContainerDeletedEvent as i32 {
                assert!(event.containers_statuses.iter().all(|s| s.id != id));
            }
            got.push(event_summary(&event));
        }
        assert_eq!(got, want);
    }
    setup.finish(&[&pod.0]).await;
}

#[tokio::test]
async fn metric_descriptors_and_pod_metrics_agree() {
    let setup = Setup::new(DaemonOptions::default()).await;
    let pod = setup.pod("stats-metrics").await;
    let id = setup
        .run(&pod, "sleeper", "busybox", &["sleep", "600"])
        .await;
    let mut client = setup.daemon.runtime_client().await.unwrap();
    let descriptors = client
        .list_metric_descriptors(v1::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let pods = client
        .list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let ours = pods.iter().find(|p| p.pod_sandbox_id == pod.0).unwrap();
    let container = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .unwrap();
    let all = ours.metrics.iter().chain(&container.metrics);
    for metric in all {
        let descriptor = descriptors
            .iter()
            .find(|d| d.name == metric.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", metric.name));
        assert_eq!(descriptor.label_keys.len(), metric.label_values.len());
    }
    let working_set = container
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .unwrap();
    assert!(working_set.value.as_ref().unwrap().value > 0);
    assert_eq!(working_set.label_values[0], id);
    assert!(
        ours.metrics
            .iter()
            .any(|m| m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0"))
    );
    let checkpoint = client
        .checkpoint_container(v1::CheckpointContainerRequest {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(checkpoint.code(), Code::Unimplemented);
    assert!(
        checkpoint.message().contains("CheckpointContainer"),
        "{}",
        checkpoint.message()
    );
    setup.finish(&[&pod.0]).await;
}

/// One sample line of the Prometheus text format: `name{labels} value`.
fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let (series, value) = line.rsplit_once(' ').unwrap();
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
            let labels = body
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    (key.to_owned(), value.trim_end_matches('"').to_owned())
                })
                .collect();
            (name, labels)
        }
    };
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
    (name.to_owned(), labels, value)
}

#[tokio::test]
async fn the_metrics_endpoint_serves_prometheus_text() {
    let options = DaemonOptions {
        config_toml: Some("metrics_address = \"127.0.0.1:0\"\n".into()),
        ..Default::default()
    };
    let setup = Setup::new(options).await;
    let pod = setup.pod("stats-prom").await;
    setup
        .run(&pod, "sleeper", "busybox", &["sleep", "600"])
        .await;
    let log = setup.daemon.log();
    let address = log
        .lines()
        .find(|line| line.contains("metrics endpoint serving"))
        // The log may carry colour codes around the field name: take the value.
        .and_then(|line| line.split("127.0.0.1:").nth(1))
        .map(|rest| {
            let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("127.0.0.1:{port}")
        })
        .unwrap_or_else(|| panic!("no metrics endpoint in the log:\n{log}"));

    let text = http_get(&address, "/metrics").await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
        } else if line.starts_with("# HELP ") || line == "# EOF" || line.is_empty() {
        } else {
            samples.push(parse_sample(line));
        }
    }
    let find = |name: &str, label: Option<(&str, &str)>| {
        samples
            .iter()
            .find(|(n, labels, _)| {
                n == name
                    && label.is_none_or(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| *value)
            .unwrap_or_else(|| panic!("no {name} {label:?} in\n{body}"))
    };
    assert!(find("coracle_rpc_requests_total", Some(("rpc", "RunPodSandbox"))) >= 1.0);
    assert!(
        find(
            "coracle_rpc_duration_seconds_count",
            Some(("rpc", "CreateContainer"))
        ) >= 1.0
    );
    assert_eq!(find("coracle_containers", Some(("state", "running"))), 1.0);
    assert_eq!(find("coracle_pods", Some(("state", "ready"))), 1.0);
    assert_eq!(find("coracle_monitors_alive", None), 1.0);
    assert!(find("coracle_image_pulls_total", Some(("outcome", "success"))) >= 2.0);
    assert!(find("coracle_image_pull_bytes_total", None) > 0.0);
    assert!(typed.contains("coracle_rpc_duration_seconds"));

    let missing = setup.daemon.container_stats("nope").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let text = http_get(&address, "/metrics").await;
    assert!(
        text.contains("coracle_rpc_errors_total{rpc=\"ContainerStats\",code=\"NotFound\"} 1"),
        "{text}"
    );
    let not_found = http_get(&address, "/other").await;
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
    setup.finish(&[&pod.0]).await;
}

/// A plain HTTP/1.1 GET with `Connection: close`; the whole response as text.
async fn http_get(address: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}
