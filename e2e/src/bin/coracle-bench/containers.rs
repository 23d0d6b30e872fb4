//! `coracle-bench containers`: from nothing to a started busybox `sleep` through
//! CRI (RunPodSandbox + CreateContainer + StartContainer), sequential and in
//! parallel; StopContainer; and the memory a container costs (the monitor's PSS plus
//! what the daemon grows), with 50 pods of one container each.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use coracle_e2e::daemon::connect_unix;
use coracle_e2e::{Daemon, Registry};
use k8s_cri::v1;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::task::JoinSet;

use crate::{Options, percentile_ms, pod_config};

#[derive(Default)]
struct Steps {
    run_pod: Vec<Duration>,
    create: Vec<Duration>,
    start: Vec<Duration>,
    total: Vec<Duration>,
    stop: Vec<Duration>,
}

impl Steps {
    fn extend(&mut self, other: Steps) {
        self.run_pod.extend(other.run_pod);
        self.create.extend(other.create);
        self.start.extend(other.start);
        self.total.extend(other.total);
        self.stop.extend(other.stop);
    }
}

fn container_config(image: &str) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "sleep".into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        linux: Some(v1::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// A pod with one started container; returns the pod and container ids and timings.
async fn start_one(
    client: &mut RuntimeServiceClient<tonic::transport::Channel>,
    name: &str,
    image: &str,
) -> anyhow::Result<(String, String, Steps)> {
    let pod = pod_config(name);
    let began = Instant::now();
    let pod_id = client
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let run_pod = began.elapsed();
    let step = Instant::now();
    let container_id = client
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(pod),
        })
        .await?
        .into_inner()
        .container_id;
    let create = step.elapsed();
    let step = Instant::now();
    client
        .start_container(v1::StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await?;
    let start = step.elapsed();
    let steps = Steps {
        run_pod: vec![run_pod],
        create: vec![create],
        start: vec![start],
        total: vec![began.elapsed()],
        stop: Vec::new(),
    };
    Ok((pod_id, container_id, steps))
}

async fn tear_down(
    client: &mut RuntimeServiceClient<tonic::transport::Channel>,
    pod_id: String,
    container_id: String,
) -> anyhow::Result<Duration> {
    let step = Instant::now();
    client
        .stop_container(v1::StopContainerRequest {
            container_id: container_id.clone(),
            timeout: 0,
        })
        .await?;
    let stop = step.elapsed();
    client
        .remove_container(v1::RemoveContainerRequest { container_id })
        .await?;
    client
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await?;
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await?;
    Ok(stop)
}

async fn cycle(socket: PathBuf, name: String, image: String) -> anyhow::Result<Steps> {
    let mut client = RuntimeServiceClient::new(connect_unix(socket).await?);
    let (pod_id, container_id, mut steps) = start_one(&mut client, &name, &image).await?;
    steps
        .stop
        .push(tear_down(&mut client, pod_id, container_id).await?);
    Ok(steps)
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read smaps_rollup of {pid}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no Pss line")
}

fn rss_kib(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// The parent of a process (the monitor of a container init).
fn parent_pid(pid: i32) -> anyhow::Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    rest.split(' ')
        .nth(1)
        .context("ppid")?
        .parse()
        .context("ppid")
}

async fn container_pid(
    client: &mut RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> anyhow::Result<i32> {
    let response = client
        .container_status(v1::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(
        response
            .info
            .get("info")
            .context("verbose status without info")?,
    )?;
    let pid = info["pid"].as_i64().context("info.pid")?;
    Ok(i32::try_from(pid)?)
}

/// How long the stats calls kubelet makes every few seconds take.
async fn time_stats_calls(
    client: &mut RuntimeServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    let mut containers = Vec::new();
    let mut pods = Vec::new();
    let mut metrics = Vec::new();
    for _ in 0..20 {
        let began = Instant::now();
        let listed = client
            .list_container_stats(v1::ListContainerStatsRequest::default())
            .await?
            .into_inner();
        containers.push(began.elapsed());
        anyhow::ensure!(
            listed.stats.len() >= 50,
            "{} container stats",
            listed.stats.len()
        );
        let began = Instant::now();
        client
            .list_pod_sandbox_stats(v1::ListPodSandboxStatsRequest::default())
            .await?;
        pods.push(began.elapsed());
        let began = Instant::now();
        client
            .list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest::default())
            .await?;
        metrics.push(began.elapsed());
    }
    Ok(vec![
        ("ListContainerStats", containers),
        ("ListPodSandboxStats", pods),
        ("ListPodSandboxMetrics", metrics),
    ])
}

pub(crate) async fn bench_containers(options: Options) -> anyhow::Result<()> {
    let registry = Registry::start()
        .context("start the test registry (run hack/test.sh once to build target/test-images)")?;
    let mut daemon = Daemon::start_with(coracle_e2e::DaemonOptions {
        log_level: Some("warn".into()),
        ..Default::default()
    })
    .await?;
    let image = registry.reference("busybox", "latest");
    daemon
        .pull_image(&image)
        .await
        .map_err(anyhow::Error::from)?;
    let socket = daemon.socket_path();
    let daemon_pid = i32::try_from(daemon.pid().context("daemon pid")?)?;

    // Warm-up, then sequential.
    cycle(socket.clone(), "warm".into(), image.clone()).await?;
    let mut sequential = Steps::default();
    for i in 0..options.iterations {
        sequential.extend(cycle(socket.clone(), format!("seq-{i}"), image.clone()).await?);
    }
    let mut parallel = Steps::default();
    let rounds = options.iterations.div_ceil(options.parallel).max(1);
    for round in 0..rounds {
        let mut cycles = JoinSet::new();
        for i in 0..options.parallel {
            cycles.spawn(cycle(
                socket.clone(),
                format!("par-{round}-{i}"),
                image.clone(),
            ));
        }
        while let Some(steps) = cycles.join_next().await {
            parallel.extend(steps??);
        }
    }

    // Memory: idle, then with 50 pods of one container each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(daemon_pid)?;
    let idle_pss = pss_kib(daemon_pid)?;
    let mut client = RuntimeServiceClient::new(connect_unix(socket.clone()).await?);
    let mut running = Vec::new();
    for i in 0..50 {
        let (pod_id, container_id, _) = start_one(&mut client, &format!("mem-{i}"), &image).await?;
        running.push((pod_id, container_id));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut monitors_pss = 0;
    for (_, container_id) in &running {
        let init = container_pid(&mut client, container_id).await?;
        monitors_pss += pss_kib(parent_pid(init)?)?;
    }
    let loaded_rss = rss_kib(daemon_pid)?;
    let loaded_pss = pss_kib(daemon_pid)?;
    let stats_timings = time_stats_calls(&mut client).await?;
    for (pod_id, container_id) in running {
        tear_down(&mut client, pod_id, container_id).await?;
    }
    daemon.stop().await?;

    println!(
        "from nothing to a started busybox sleep through CRI ({} sequential, {} in rounds of {} in parallel)",
        options.iterations,
        rounds * options.parallel,
        options.parallel
    );
    println!("{:<40} {:>10} {:>10}", "step", "p50 ms", "p95 ms");
    for (label, samples) in [
        ("RunPodSandbox", &mut sequential.run_pod),
        ("CreateContainer", &mut sequential.create),
        ("StartContainer", &mut sequential.start),
        ("total: nothing to started", &mut sequential.total),
        ("StopContainer (timeout 0)", &mut sequential.stop),
        ("RunPodSandbox (parallel)", &mut parallel.run_pod),
        ("CreateContainer (parallel)", &mut parallel.create),
        ("StartContainer (parallel)", &mut parallel.start),
        ("total (parallel)", &mut parallel.total),
        ("StopContainer (parallel)", &mut parallel.stop),
    ] {
        println!(
            "{label:<40} {:>10.2} {:>10.2}",
            percentile_ms(samples, 50),
            percentile_ms(samples, 95)
        );
    }
    println!();
    println!("stats with 50 running containers (20 calls each)");
    println!("{:<40} {:>10} {:>10}", "call", "p50 ms", "p95 ms");
    for (label, mut samples) in stats_timings {
        println!(
            "{label:<40} {:>10.2} {:>10.2}",
            percentile_ms(&mut samples, 50),
            percentile_ms(&mut samples, 95)
        );
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!("memory                                          MiB");
    println!(
        "daemon idle RSS / PSS                  {:>8.2} / {:.2}",
        mib(idle_rss),
        mib(idle_pss)
    );
    println!(
        "daemon with 50 containers RSS / PSS    {:>8.2} / {:.2}",
        mib(loaded_rss),
        mib(loaded_pss)
    );
    println!(
        "50 monitors, total PSS                 {:>8.2}",
        mib(monitors_pss)
    );
    let per_container = (monitors_pss + loaded_pss.saturating_sub(idle_pss)) as f64 / 50.0;
    println!(
        "per container (monitor PSS + daemon growth) {:>5.3}",
        per_container / 1024.0
    );
    Ok(())
}
