//! coracled: the Coracle CRI runtime daemon. Thin: flags, config, wiring, signals.

mod cli;
mod config;
mod logging;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use coracle_cri::error::cause_chain;
use coracle_cri::{CriOptions, CriService};
use coracle_runtime::{NetworkSetup, Runtime, RuntimeDirs};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Cli;
use crate::config::{Config, DEFAULT_CONFIG_PATH};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("coracled: {}", cause_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each allocating thread an arena of its own (up to 8 per core) and
/// keeps what was freed in it: a burst of RPCs on tokio's blocking threads leaves
/// megabytes resident for good. Two arenas keep the idle daemon about 1.3 MiB smaller
/// (measured with `coracle-bench containers`); `MALLOC_ARENA_MAX` in the environment
/// still wins.
#[cfg(target_env = "gnu")]
fn limit_malloc_arenas() {
    const ARENAS: libc::c_int = 2;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator tuning parameter; it is called first
    // thing in main, before any other thread exists, and no memory is passed.
    let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    if done == 0 {
        eprintln!("coracled: could not limit malloc arenas; memory use may be higher");
    }
}

/// Other C libraries have their own allocators and no such knob.
#[cfg(not(target_env = "gnu"))]
fn limit_malloc_arenas() {}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = effective_config(&cli)?;
    if cli.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    logging::init(&config.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coracled")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(serve(config))
}

fn effective_config(cli: &Cli) -> anyhow::Result<Config> {
    let (path, named_by_user) = match &cli.config {
        Some(path) => (path.as_path(), true),
        None => (Path::new(DEFAULT_CONFIG_PATH), false),
    };
    let mut config = Config::load(path, named_by_user)?;
    cli.apply_overrides(&mut config);
    config.validate()?;
    Ok(config)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    ensure_cgroup_driver_usable(config.cgroup_driver)?;
    let dirs = RuntimeDirs {
        root: config.root_dir.clone(),
        state: config.state_dir.clone(),
    };
    let network = match config.network.mode {
        config::NetworkMode::Bridge => NetworkSetup::Bridge(config.network.bridge_config()),
        config::NetworkMode::Cni => NetworkSetup::Cni {
            conf_dir: config.network.cni_conf_dir.clone(),
            bin_dirs: config.network.cni_bin_dirs.clone(),
        },
    };
    // The socket first: a second daemon must fail before it touches the store.
    let socket = coracle_cri::bind(&config.socket_path)?;
    let monitor_path = monitor_binary(&config.monitor_path)?;
    let runtime = Runtime::open(dirs, network, config.image.clone(), monitor_path)
        .await
        .context("open the runtime state")?;
    let runtime = Arc::new(runtime);
    let streaming = coracle_streaming::StreamingServer::start(
        config.streaming.server_config()?,
        coracle_cri::streaming::RuntimeSessions::new(Arc::clone(&runtime)),
    )
    .await
    .context("start the streaming server")?;
    tracing::info!(address = %streaming.local_addr(), "streaming server for Exec, Attach and PortForward");
    let service =
        CriService::new(runtime, cri_options(&config)?).with_streaming(Arc::new(streaming));
    let _metrics_endpoint = match config.metrics_socket_address()? {
        Some(address) => {
            let (bound, task) =
                coracle_cri::serve_metrics(address, service.metrics(), service.runtime()).await?;
            tracing::info!(address = %bound, "metrics endpoint serving GET /metrics");
            Some(AbortOnDrop(task))
        }
        None => None,
    };
    tracing::info!(
        socket = %config.socket_path.display(),
        version = env!("CARGO_PKG_VERSION"),
        "coracled serving CRI runtime.v1 and runtime.v1alpha2"
    );
    let grace = Duration::from_secs(config.shutdown_timeout_seconds);
    coracle_cri::serve(service, socket, shutdown_signal()?, grace).await?;
    tracing::info!("coracled stopped");
    Ok(())
}

/// Stops a background task when the daemon's serve function returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The configured monitor binary, or the one installed beside `coracled`.
fn monitor_binary(configured: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let path = if configured.as_os_str().is_empty() {
        let exe = std::env::current_exe().context("find coracled's own path")?;
        exe.with_file_name("coracle-monitor")
    } else {
        configured.to_owned()
    };
    anyhow::ensure!(
        path.is_file(),
        "the container monitor {} does not exist (set monitor_path in the config)",
        path.display()
    );
    Ok(path)
}

fn cri_options(config: &Config) -> anyhow::Result<CriOptions> {
    Ok(CriOptions {
        effective_config_json: serde_json::to_string(config)
            .context("render the effective config as JSON")?,
        cgroup_driver: match config.cgroup_driver {
            config::CgroupDriver::Cgroupfs => coracle_cri::CgroupDriver::Cgroupfs,
            config::CgroupDriver::Systemd => coracle_cri::CgroupDriver::Systemd,
        },
    })
}

/// The systemd driver needs systemd; refuse to start rather than fail every pod.
fn ensure_cgroup_driver_usable(driver: config::CgroupDriver) -> anyhow::Result<()> {
    if driver == config::CgroupDriver::Systemd && !Path::new("/run/systemd/system").is_dir() {
        anyhow::bail!(
            "config key `cgroup_driver`: \"systemd\" needs systemd as init, and it is not running here; use \"cgroupfs\""
        );
    }
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}
