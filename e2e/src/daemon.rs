//! A `coracled` process under test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1alpha2;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::network::TestNetwork;

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// What the harness's client accepts, as kubelet's does.
/// As the daemon's reply limit: ExecSync may answer 16 MiB of stdout and of stderr.
const MAX_MESSAGE_BYTES: usize = 2 * 16 * 1024 * 1024 + 64 * 1024;

/// The `coracled` binary built by `cargo build` next to the test binaries, or
/// `$CORACLED_BIN`.
pub fn coracled_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CORACLED_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps/; the daemon in target/<profile>/.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let binary = profile_dir.join("coracled");
    assert!(
        binary.exists(),
        "{} not found: build it first with `cargo build -p coracled` (or set CORACLED_BIN)",
        binary.display()
    );
    binary
}

/// How to start a daemon; the paths always come from the daemon's temp dir.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Contents of a config file passed with `--config`.
    pub config_toml: Option<String>,
    /// `--log-level` (the harness default is debug, so tests can read every RPC).
    pub log_level: Option<String>,
    /// Give the built-in network this test network's IPv6 range too.
    pub dual_stack: bool,
}

/// A running `coracled` with its own socket, root and state dirs. Dropping it kills
/// the process (by pid) if a test did not stop it.
pub struct Daemon {
    child: Option<Child>,
    // Dropped after the child is killed: the bridge and table go with the lease.
    network: TestNetwork,
    dir: TempDir,
    options: DaemonOptions,
}

impl Daemon {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(DaemonOptions::default()).await
    }

    pub async fn start_with(options: DaemonOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("coracle-e2e-")
            .tempdir()
            .context("create daemon temp dir")?;
        let mut daemon = Self {
            child: None,
            network: TestNetwork::acquire()?,
            dir,
            options,
        };
        daemon.spawn_and_wait().await?;
        Ok(daemon)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("run/coracle.sock")
    }

    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("coracled.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command line the harness starts the daemon with, to reuse in tests that
    /// start a second one by hand.
    pub fn command(&self) -> anyhow::Result<Command> {
        let mut command = Command::new(coracled_binary());
        command
            .arg("--socket")
            .arg(self.socket_path())
            .arg("--root")
            .arg(self.root_dir())
            .arg("--state")
            .arg(self.state_dir())
            .arg("--log-level")
            .arg(self.options.log_level.as_deref().unwrap_or("debug"));
        // Always a file of our own: never the host's /etc/coracle/config.toml, and
        // always this daemon's own test network.
        let path = self.dir.path().join("config.toml");
        fs::write(&path, self.config_file()?).context("write daemon config file")?;
        command.arg("--config").arg(path);
        command.args(&self.options.args);
        Ok(command)
    }

    /// The test's config with this daemon's network filled in where it says nothing.
    fn config_file(&self) -> anyhow::Result<String> {
        let mut config: toml::Table = match &self.options.config_toml {
            Some(text) => toml::from_str(text).context("parse the test's config")?,
            None => toml::Table::new(),
        };
        let network = config
            .entry("network")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(network) = network {
            for (key, value) in self.network.config() {
                network.entry(key).or_insert(value);
            }
            if self.options.dual_stack {
                network
                    .entry("subnet_v6")
                    .or_insert(self.network.subnet_v6().into());
            }
        }
        Ok(toml::to_string(&config)?)
    }

    pub fn network(&self) -> &TestNetwork {
        &self.network
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open daemon log")?;
        let child = self
            .command()?
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", coracled_binary().display()))?;
        self.child = Some(child);
        self.wait_until_serving().await
    }

    async fn wait_until_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait()? {
                bail!(
                    "coracled exited during start with {status}; log:\n{}",
                    self.log()
                );
            }
            if let Ok(mut client) = self.runtime_client().await {
                if client
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "coracled did not answer within {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("daemon is not running"),
        }
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        connect_unix(self.socket_path()).await
    }

    pub async fn runtime_client(&self) -> anyhow::Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(self.channel().await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(usize::MAX))
    }

    pub async fn image_client(&self) -> anyhow::Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(self.channel().await?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub async fn runtime_client_v1alpha2(
        &self,
    ) -> anyhow::Result<v1alpha2::runtime_service_client::RuntimeServiceClient<Channel>> {
        Ok(v1alpha2::runtime_service_client::RuntimeServiceClient::new(
            self.channel().await?,
        ))
    }

    pub async fn image_client_v1alpha2(
        &self,
    ) -> anyhow::Result<v1alpha2::image_service_client::ImageServiceClient<Channel>> {
        Ok(v1alpha2::image_service_client::ImageServiceClient::new(
            self.channel().await?,
        ))
    }

    /// SIGTERM, then waits for a clean exit (status 0) and checks that nothing the
    /// daemon made is left behind.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let status = self.signal_and_wait(Signal::SIGTERM).await?;
        if !status.success() {
            bail!(
                "coracled exited with {status} on SIGTERM; log:\n{}",
                self.log()
            );
        }
        self.check_nothing_left_behind()
    }

    /// SIGKILL, as a crash would: leaves the socket file behind.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGKILL).await.map(drop)
    }

    /// Starts the daemon again on the same dirs.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        self.spawn_and_wait().await
    }

    async fn signal_and_wait(&mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("daemon is not running");
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, signal).with_context(|| format!("send {signal} to coracled {pid}"))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "coracled did not exit within {STOP_TIMEOUT:?} of {signal}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After a clean stop: no socket, no temp file in the store, no process still
    /// running from this daemon's dirs.
    pub fn check_nothing_left_behind(&self) -> anyhow::Result<()> {
        if self.socket_path().exists() {
            bail!("socket {} left behind", self.socket_path().display());
        }
        let temp_files = find_files(&self.root_dir(), &|name| name.contains(".tmp-"));
        if !temp_files.is_empty() {
            bail!("temp files left behind: {temp_files:?}");
        }
        let processes = processes_mentioning(self.dir.path());
        if !processes.is_empty() {
            bail!("processes left behind: {processes:?}");
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Pods and containers outlive their daemon by design; a test that failed
        // before removing them must not leak their processes, cgroups or mounts.
        kill_leftover_containers(&self.state_dir());
        clean_up_leftover_pods(&self.root_dir());
        for mount_point in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut found: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// A tonic channel over a unix socket, as crictl and kubelet connect.
pub async fn connect_unix(path: PathBuf) -> anyhow::Result<Channel> {
    // The URI is required by tonic but unused: the connector below ignores it.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

fn find_files(dir: &Path, matches: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, matches));
        } else if matches(&entry.file_name().to_string_lossy()) {
            found.push(path);
        }
    }
    found
}

/// Pids whose command line names a path under `dir` (monitors, helpers, the daemon).
fn processes_mentioning(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some((pid, cmdline))
        })
        .collect()
}

/// Kills the init of every pod recorded under `root_dir` that still runs (a pod
/// sharing one PID namespace); its namespace's processes go with it.
/// Kills the init of every pod left in the store and removes the pod cgroups the
/// daemon made (after the containers' cgroups below them are gone).
fn clean_up_leftover_pods(root_dir: &Path) {
    let Ok(entries) = fs::read_dir(root_dir.join("pods")) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(pod) = serde_json::from_str::<coracle_runtime::model::PodRecord>(&text) else {
            continue;
        };
        if let Some(init) = pod.init {
            if coracle_oci::state::process_alive(init.pid, init.start_time) {
                let _ = kill(Pid::from_raw(init.pid), Signal::SIGKILL);
            }
        }
        if let Some(cgroup) = pod.cgroup.filter(|_| pod.cgroup_created) {
            let _ = cgroup.delete();
        }
    }
}

/// Kills the processes of every container whose bundle is under `state_dir` (their
/// monitors then exit) and removes their cgroups.
fn kill_leftover_containers(state_dir: &Path) {
    let Ok(entries) = fs::read_dir(state_dir.join("containers")) else {
        return;
    };
    let mut cgroups = Vec::new();
    for entry in entries.flatten() {
        let config = entry.path().join("bundle/config.json");
        let Ok(text) = fs::read_to_string(&config) else {
            continue;
        };
        let Ok(spec) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if let Some(path) = spec["linux"]["cgroupsPath"].as_str() {
            cgroups.push(path.trim_start_matches('/').to_owned());
        }
    }
    let hierarchies: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    for cgroup in &cgroups {
        for hierarchy in &hierarchies {
            let procs = hierarchy.join(cgroup).join("cgroup.procs");
            for pid in fs::read_to_string(&procs).unwrap_or_default().lines() {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    for cgroup in &cgroups {
        for hierarchy in &hierarchies {
            let dir = hierarchy.join(cgroup);
            let _ = fs::remove_dir(&dir);
        }
    }
}
