//! Benchmarks (not tests: they print figures and assert nothing). Run as root:
//! - `coracle-bench pods [--iterations N] [--parallel N]`: the pod lifecycle through
//!   the CRI socket of a real `coracled`;
//! - `coracle-bench pull --images DIR [--iterations N]`: pulling the image of `DIR`
//!   (`hack/test-images/build-big.py DIR`) from a local registry into a fresh image
//!   store, side by side with `skopeo copy` of it to a directory (the floor: download
//!   and digest only, no unpacking);
//! - `coracle-bench containers [--iterations N] [--parallel N]`: pod + container
//!   start latency and the memory a container costs.

mod containers;

use std::time::{Duration, Instant};

use std::path::PathBuf;

use anyhow::{Context, bail};
use coracle_e2e::Daemon;
use coracle_e2e::daemon::connect_unix;
use k8s_cri::v1;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::task::JoinSet;

struct Options {
    iterations: usize,
    parallel: usize,
    images: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        iterations: 100,
        parallel: 20,
        images: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--iterations" => options.iterations = value.parse()?,
            "--parallel" => options.parallel = value.parse()?,
            "--images" => options.images = Some(PathBuf::from(value)),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pods") => bench_pods(parse_options(&args[1..])?).await,
        Some("pull") => bench_pull(parse_options(&args[1..])?).await,
        Some("containers") => containers::bench_containers(parse_options(&args[1..])?).await,
        _ => bail!(
            "usage: coracle-bench pods [--iterations N] [--parallel N] | pull --images DIR [--iterations N] | containers [--iterations N] [--parallel N]"
        ),
    }
}

fn pod_config(name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    pid: v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[derive(Default)]
struct Timings {
    run: Vec<Duration>,
    stop: Vec<Duration>,
    remove: Vec<Duration>,
}

impl Timings {
    fn extend(&mut self, other: Timings) {
        self.run.extend(other.run);
        self.stop.extend(other.stop);
        self.remove.extend(other.remove);
    }
}

/// One pod's whole life, each step timed, on a connection of its own.
async fn pod_cycle(socket: PathBuf, name: String) -> anyhow::Result<Timings> {
    let mut client = RuntimeServiceClient::new(connect_unix(socket).await?);
    let started = Instant::now();
    let id = client
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod_config(&name)),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let run = started.elapsed();
    let started = Instant::now();
    client
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
    let stop = started.elapsed();
    let started = Instant::now();
    client
        .remove_pod_sandbox(v1::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await?;
    let remove = started.elapsed();
    Ok(Timings {
        run: vec![run],
        stop: vec![stop],
        remove: vec![remove],
    })
}

async fn bench_pods(options: Options) -> anyhow::Result<()> {
    let mut daemon = Daemon::start_with(coracle_e2e::DaemonOptions {
        log_level: Some("warn".into()),
        ..Default::default()
    })
    .await?;
    let mut sequential = Timings::default();
    let socket = daemon.socket_path();
    for i in 0..options.iterations {
        sequential.extend(pod_cycle(socket.clone(), format!("seq-{i}")).await?);
    }
    let mut parallel = Timings::default();
    let rounds = options.iterations.div_ceil(options.parallel).max(1);
    for round in 0..rounds {
        let mut cycles = JoinSet::new();
        for i in 0..options.parallel {
            cycles.spawn(pod_cycle(socket.clone(), format!("par-{round}-{i}")));
        }
        while let Some(timings) = cycles.join_next().await {
            parallel.extend(timings??);
        }
    }
    daemon.stop().await?;
    println!(
        "pod sandbox lifecycle through CRI ({} sequential, {} in rounds of {} in parallel)",
        options.iterations,
        rounds * options.parallel,
        options.parallel
    );
    println!("{:<28} {:>10} {:>10}", "step", "p50 ms", "p95 ms");
    for (label, samples) in [
        ("RunPodSandbox", &mut sequential.run),
        ("StopPodSandbox", &mut sequential.stop),
        ("RemovePodSandbox", &mut sequential.remove),
        ("RunPodSandbox (parallel)", &mut parallel.run),
        ("StopPodSandbox (parallel)", &mut parallel.stop),
        ("RemovePodSandbox (parallel)", &mut parallel.remove),
    ] {
        println!(
            "{label:<28} {:>10.2} {:>10.2}",
            percentile_ms(samples, 50),
            percentile_ms(samples, 95)
        );
    }
    Ok(())
}

async fn bench_pull(options: Options) -> anyhow::Result<()> {
    let images = options
        .images
        .context("pull needs --images DIR (hack/test-images/build-big.py DIR)")?;
    let registry = coracle_e2e::Registry::start_with_images(&images)?;
    let image = registry
        .images()
        .first()
        .context("no image in images.json")?
        .clone();
    let reference = registry.reference(&image.repo, &image.tag);
    let mut ours = Vec::new();
    let mut skopeo = Vec::new();
    for _ in 0..options.iterations {
        let root = tempfile::tempdir()?;
        let store =
            coracle_image::ImageStore::open(&root.path().join("images"), Default::default())?;
        let started = Instant::now();
        store.pull(&reference, None).await?;
        ours.push(started.elapsed());
        drop(store);

        let target = tempfile::tempdir()?;
        let started = Instant::now();
        let status = tokio::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", target.path().join("image").display()))
            .status()
            .await
            .context("run skopeo (apt-get install skopeo)")?;
        if !status.success() {
            bail!("skopeo copy failed: {status}");
        }
        skopeo.push(started.elapsed());
    }
    let ours_p50 = percentile_ms(&mut ours, 50);
    let skopeo_p50 = percentile_ms(&mut skopeo, 50);
    println!(
        "pull of {reference} ({} runs, fresh store each time)",
        options.iterations
    );
    println!("{:<44} {:>10} {:>10}", "", "p50 ms", "p95 ms");
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "coracle (download + verify + unpack)",
        ours_p50,
        percentile_ms(&mut ours, 95)
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "skopeo copy to dir: (download + verify)",
        skopeo_p50,
        percentile_ms(&mut skopeo, 95)
    );
    println!("ratio coracle / skopeo floor: {:.2}", ours_p50 / skopeo_p50);
    Ok(())
}

fn percentile_ms(samples: &mut [Duration], percentile: usize) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort();
    let index = (samples.len() * percentile).div_ceil(100).saturating_sub(1);
    samples[index.min(samples.len() - 1)].as_secs_f64() * 1000.0
}
