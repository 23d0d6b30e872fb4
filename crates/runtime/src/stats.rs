//! Resource usage of containers and pods, as `crictl stats`, kubelet's eviction
//! manager and the metrics server read it: the cgroup's CPU, memory, swap and pids
//! files, the writable layer's size, and the pod's network interfaces read inside its
//! network namespace.
//!
//! `usage_nano_cores` is a rate: the CPU time used between the previous read of the
//! same container (or pod) and this one, per second. The first read has no previous
//! sample and reports none, as containerd does; kubelet reads every 10 s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coracle_oci::cgroups::ContainerCgroup;
pub use coracle_oci::cgroups::{CgroupStats, CpuStats, MemoryStats, PidsStats, SwapStats};

use crate::model::{ContainerRecord, ContainerState, PodRecord};
use crate::netns_thread::run_in_netns;
use crate::{Runtime, RuntimeError, now_nanos};

/// Samples older than this are forgotten (the container or pod is likely gone).
const SAMPLE_MAX_AGE: Duration = Duration::from_secs(600);

/// One container's usage at `timestamp` (ns since the epoch).
#[derive(Clone, Debug, Default)]
pub struct ContainerUsage {
    pub timestamp: i64,
    /// `None` when the cgroup cannot be read (the container has not started, or is gone).
    pub cgroup: Option<CgroupStats>,
    pub cpu_nano_cores: Option<u64>,
    pub writable_layer: Option<WritableLayerUsage>,
}

#[derive(Clone, Debug, Default)]
pub struct WritableLayerUsage {
    /// The filesystem holding it, as ImageFsInfo names it.
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// A pod's usage: its cgroup (or its containers' summed when it has none), network,
/// processes, and each running container's usage.
#[derive(Clone, Debug, Default)]
pub struct PodUsage {
    pub timestamp: i64,
    pub cgroup: Option<CgroupStats>,
    pub cpu_nano_cores: Option<u64>,
    /// `None` for a pod on the host's network.
    pub network: Option<Vec<InterfaceStats>>,
    pub process_count: Option<u64>,
    pub containers: Vec<(Arc<ContainerRecord>, ContainerUsage)>,
}

/// Counters of one interface, from the pod namespace's `/proc/net/dev`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The previous CPU reading of each container and pod, for `usage_nano_cores`.
#[derive(Default)]
pub(crate) struct CpuSamples {
    samples: Mutex<HashMap<String, (Instant, u64)>>,
}

impl CpuSamples {
    /// Records `usage_ns` for `key` and returns the rate since the previous sample.
    fn rate(&self, key: &str, usage_ns: u64) -> Option<u64> {
        let now = Instant::now();
        // Single map operations: a poisoned lock still holds a consistent map.
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.retain(|_, (at, _)| now.duration_since(*at) < SAMPLE_MAX_AGE);
        let previous = samples.insert(key.to_owned(), (now, usage_ns));
        let (at, previous_ns) = previous?;
        nano_cores(usage_ns.checked_sub(previous_ns)?, now.duration_since(at))
    }
}

/// CPU nanoseconds used over `elapsed`, as nanoseconds per second ("nano cores").
fn nano_cores(used_ns: u64, elapsed: Duration) -> Option<u64> {
    let elapsed_ns = elapsed.as_nanos();
    if elapsed_ns == 0 {
        return None;
    }
    u64::try_from(u128::from(used_ns) * 1_000_000_000 / elapsed_ns).ok()
}

impl Runtime {
    /// The record and usage of one container; NotFound for an unknown one.
    pub async fn container_stats(
        &self,
        id: &str,
    ) -> Result<(Arc<ContainerRecord>, ContainerUsage), RuntimeError> {
        let container = self.existing_container(id)?;
        let usage = self.container_usage(&container).await?;
        Ok((container, usage))
    }

    /// The usage of every running container, those of one pod or one id when given.
    pub async fn list_container_stats(
        &self,
        matches: impl Fn(&ContainerRecord) -> bool,
    ) -> Vec<(Arc<ContainerRecord>, ContainerUsage)> {
        let running: Vec<_> = self
            .containers
            .list()
            .into_iter()
            .filter(|c| !c.creating && c.state == ContainerState::Running && matches(c))
            .collect();
        let mut out = Vec::with_capacity(running.len());
        for container in running {
            match self.container_usage(&container).await {
                Ok(usage) => out.push((container, usage)),
                // Exited between the list and the read: not running any more.
                Err(err) => tracing::debug!(container = %container.id, error = %err, "no stats"),
            }
        }
        out
    }

    async fn container_usage(
        &self,
        container: &ContainerRecord,
    ) -> Result<ContainerUsage, RuntimeError> {
        let oci_root = self.dirs.oci_root();
        let id = container.id.clone();
        let images = Arc::clone(&self.images);
        let (cgroup, writable_layer) = tokio::task::spawn_blocking(move || {
            let cgroup = coracle_oci::Container::load(&oci_root, &id)
                .and_then(|c| c.cgroup_stats())
                .map_err(|err| tracing::debug!(container = %id, error = %err, "cgroup stats"))
                .ok()
                .flatten();
            let layer =
                images
                    .container_fs_usage(&id)
                    .map(|(mountpoint, usage)| WritableLayerUsage {
                        mountpoint,
                        used_bytes: usage.bytes,
                        inodes_used: usage.inodes,
                    });
            (cgroup, layer)
        })
        .await?;
        let cpu_nano_cores = cgroup
            .and_then(|c| c.cpu)
            .and_then(|cpu| self.cpu_samples.rate(&container.id, cpu.usage_ns));
        Ok(ContainerUsage {
            timestamp: now_nanos(),
            cgroup,
            cpu_nano_cores,
            writable_layer,
        })
    }

    /// The record and usage of one pod; NotFound for an unknown one.
    pub async fn pod_stats(&self, id: &str) -> Result<(Arc<PodRecord>, PodUsage), RuntimeError> {
        let pod = self.existing_pod(id)?;
        let usage = self.pod_usage(&pod).await?;
        Ok((pod, usage))
    }

    /// The usage of every ready pod matching `matches`.
    pub async fn list_pod_stats(
        &self,
        matches: impl Fn(&PodRecord) -> bool,
    ) -> Vec<(Arc<PodRecord>, PodUsage)> {
        let pods: Vec<_> = self
            .pods
            .list()
            .into_iter()
            .filter(|p| p.state == crate::model::PodState::Ready && matches(p))
            .collect();
        let mut out = Vec::with_capacity(pods.len());
        for pod in pods {
            match self.pod_usage(&pod).await {
                Ok(usage) => out.push((pod, usage)),
                Err(err) => tracing::debug!(pod = %pod.id, error = %err, "no stats"),
            }
        }
        out
    }

    async fn pod_usage(&self, pod: &PodRecord) -> Result<PodUsage, RuntimeError> {
        let containers = self.list_container_stats(|c| c.pod_id == pod.id).await;
        let cgroup = match pod.cgroup.clone() {
            Some(cg) => read_cgroup(cg).await?,
            None => sum_cgroups(containers.iter().filter_map(|(_, usage)| usage.cgroup)),
        };
        let cpu_nano_cores = cgroup.and_then(|c| c.cpu).and_then(|cpu| {
            self.cpu_samples
                .rate(&format!("pod:{}", pod.id), cpu.usage_ns)
        });
        let network = match pod.network_namespace_path() {
            Some(path) => Some(read_interfaces_in(path).await?),
            None => None,
        };
        Ok(PodUsage {
            timestamp: now_nanos(),
            process_count: cgroup.and_then(|c| c.pids).map(|p| p.current),
            cgroup,
            cpu_nano_cores,
            network,
            containers,
        })
    }
}

impl Runtime {
    /// Container monitors that are still the processes recorded for them.
    pub fn monitors_alive(&self) -> usize {
        self.containers
            .list()
            .iter()
            .filter_map(|c| c.monitor)
            .filter(|m| coracle_oci::state::process_alive(m.pid, m.start_time))
            .count()
    }
}

async fn read_cgroup(cgroup: ContainerCgroup) -> Result<Option<CgroupStats>, RuntimeError> {
    let stats = tokio::task::spawn_blocking(move || cgroup.stats()).await?;
    Ok(stats
        .map_err(|err| tracing::debug!(error = %err, "pod cgroup stats"))
        .ok())
}

/// A pod without a cgroup of its own (run without kubelet): its containers' usage
/// added up.
fn sum_cgroups(all: impl Iterator<Item = CgroupStats>) -> Option<CgroupStats> {
    let mut total: Option<CgroupStats> = None;
    for stats in all {
        let sum = total.get_or_insert_with(CgroupStats::default);
        if let Some(cpu) = stats.cpu {
            let t = sum.cpu.get_or_insert_with(Default::default);
            t.usage_ns += cpu.usage_ns;
            t.user_ns += cpu.user_ns;
            t.system_ns += cpu.system_ns;
            t.throttled_periods += cpu.throttled_periods;
            t.throttled_ns += cpu.throttled_ns;
        }
        if let Some(memory) = stats.memory {
            let t = sum.memory.get_or_insert_with(Default::default);
            t.usage_bytes += memory.usage_bytes;
            t.working_set_bytes += memory.working_set_bytes;
            t.rss_bytes += memory.rss_bytes;
            t.cache_bytes += memory.cache_bytes;
            t.page_faults += memory.page_faults;
            t.major_page_faults += memory.major_page_faults;
            t.fail_count += memory.fail_count;
            t.oom_kills += memory.oom_kills;
        }
        if let Some(pids) = stats.pids {
            sum.pids.get_or_insert_with(Default::default).current += pids.current;
        }
    }
    total
}

/// The interfaces of the network namespace at `netns`, loopback left out.
async fn read_interfaces_in(netns: PathBuf) -> Result<Vec<InterfaceStats>, RuntimeError> {
    // thread-self: /proc/self/net would show the namespace of the main thread.
    let text = run_in_netns(Some(netns.clone()), "netstat", || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })
    .await
    .map_err(|source| RuntimeError::NetworkStats { netns, source })?;
    Ok(parse_proc_net_dev(&text)
        .into_iter()
        .filter(|i| i.name != "lo")
        .collect())
}

/// `/proc/net/dev`: two header lines, then `name: rx(8 fields) tx(8 fields)`.
fn parse_proc_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let fields: Vec<u64> = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (fields.len() >= 16).then(|| InterfaceStats {
                name: name.trim().to_owned(),
                rx_bytes: fields[0],
                rx_packets: fields[1],
                rx_errors: fields[2],
                rx_dropped: fields[3],
                tx_bytes: fields[8],
                tx_packets: fields[9],
                tx_errors: fields[10],
                tx_dropped: fields[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 1234567     890    3    4    0     0          0         0   765432     321    5    6    0     0       0          0
";

    #[test]
    fn proc_net_dev_columns_are_read_by_position() {
        let interfaces = parse_proc_net_dev(PROC_NET_DEV);
        assert_eq!(interfaces.len(), 2);
        let eth0 = &interfaces[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (1_234_567, 890, 3, 4)
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (765_432, 321, 5, 6)
        );
    }

    #[test]
    fn nano_cores_is_cpu_time_per_second() {
        // 0.5 s of CPU in 1 s: half a core.
        assert_eq!(
            nano_cores(500_000_000, Duration::from_secs(1)),
            Some(500_000_000)
        );
        // 3 s of CPU in 2 s: one and a half cores.
        assert_eq!(
            nano_cores(3_000_000_000, Duration::from_secs(2)),
            Some(1_500_000_000)
        );
        assert_eq!(nano_cores(5, Duration::ZERO), None);
    }

    #[test]
    fn the_first_sample_has_no_rate_and_a_reset_counter_gives_none() {
        let samples = CpuSamples::default();
        assert_eq!(samples.rate("c1", 1000), None);
        std::thread::sleep(Duration::from_millis(5));
        assert!(samples.rate("c1", 2000).is_some());
        // A counter going backwards (a new cgroup under the same id) is no rate.
        assert_eq!(samples.rate("c1", 10), None);
    }

    #[test]
    fn a_pod_without_a_cgroup_sums_its_containers() {
        let usage = |cpu, memory| CgroupStats {
            cpu: Some(coracle_oci::cgroups::CpuStats {
                usage_ns: cpu,
                ..Default::default()
            }),
            memory: Some(coracle_oci::cgroups::MemoryStats {
                working_set_bytes: memory,
                ..Default::default()
            }),
            ..Default::default()
        };
        let total = sum_cgroups([usage(10, 100), usage(5, 50)].into_iter()).unwrap();
        assert_eq!(total.cpu.unwrap().usage_ns, 15);
        assert_eq!(total.memory.unwrap().working_set_bytes, 150);
        assert!(sum_cgroups(std::iter::empty()).is_none());
    }
}
