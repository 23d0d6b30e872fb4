//! `ListMetricDescriptors` and `ListPodSandboxMetrics`: cAdvisor-named metrics for
//! kubelet's CRI stats provider (`PodAndContainerStatsFromCRI`), which serves them on
//! its `/metrics/cadvisor` endpoint in place of cAdvisor's own.
//!
//! The descriptor list is fixed at build time, as the CRI asks ("should be static at
//! startup"). Label keys follow CRI-O's: `id`, `name`, `image`, then one more key for
//! the metrics that need one (`interface`, `device`). The CRI carries values as
//! unsigned integers, so `*_seconds_total` figures are whole seconds, as CRI-O and
//! containerd send them.

use coracle_runtime::model::{ContainerRecord, PodRecord};
use coracle_runtime::stats::{CgroupStats, ContainerUsage, PodUsage};
use k8s_cri::v1::{self, MetricType};

const BASE_LABELS: [&str; 3] = ["id", "name", "image"];

struct Descriptor {
    name: &'static str,
    help: &'static str,
    /// A label after the base ones ("interface", "device"), if any.
    extra_label: Option<&'static str>,
}

const fn descriptor(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_label: None,
    }
}

const fn labelled(name: &'static str, help: &'static str, label: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_label: Some(label),
    }
}

const DESCRIPTORS: &[Descriptor] = &[
    descriptor(
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed in seconds.",
    ),
    descriptor(
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed in seconds.",
    ),
    descriptor(
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed in seconds.",
    ),
    descriptor(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
    ),
    descriptor(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
    ),
    descriptor(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    ),
    descriptor(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
    ),
    descriptor("container_memory_rss", "Size of RSS in bytes."),
    descriptor(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
    ),
    descriptor("container_memory_swap", "Container swap usage in bytes."),
    descriptor(
        "container_memory_failcnt",
        "Number of memory usage hits limits.",
    ),
    descriptor(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
    ),
    descriptor(
        "container_oom_events_total",
        "Count of out of memory events observed for the container.",
    ),
    descriptor(
        "container_processes",
        "Number of processes running inside the container.",
    ),
    descriptor(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
    ),
    descriptor(
        "container_last_seen",
        "Last time a container was seen by the exporter.",
    ),
    labelled(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        "device",
    ),
    labelled(
        "container_fs_inodes_total",
        "Number of inodes used by the container on this filesystem.",
        "device",
    ),
    labelled(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        "interface",
    ),
    labelled(
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
        "interface",
    ),
    labelled(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        "interface",
    ),
    labelled(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        "interface",
    ),
    labelled(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        "interface",
    ),
    labelled(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        "interface",
    ),
    labelled(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        "interface",
    ),
    labelled(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        "interface",
    ),
];

pub(crate) fn metric_descriptors() -> Vec<v1::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| v1::MetricDescriptor {
            name: d.name.to_owned(),
            help: d.help.to_owned(),
            label_keys: BASE_LABELS
                .iter()
                .copied()
                .chain(d.extra_label)
                .map(str::to_owned)
                .collect(),
        })
        .collect()
}

/// Collects metrics for one subject (a pod or a container) with its base labels.
struct Metrics {
    base: [String; 3],
    out: Vec<v1::Metric>,
}

impl Metrics {
    fn new(id: &str, name: &str, image: &str) -> Self {
        Self {
            base: [id.to_owned(), name.to_owned(), image.to_owned()],
            out: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, kind: MetricType, value: u64, extra_label: Option<&str>) {
        debug_assert!(
            DESCRIPTORS.iter().any(|d| d.name == name),
            "{name} has no descriptor"
        );
        self.out.push(v1::Metric {
            name: name.to_owned(),
            timestamp: 0, // gathered live
            metric_type: kind as i32,
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra_label.map(str::to_owned))
                .collect(),
            value: Some(v1::UInt64Value { value }),
        });
    }

    fn counter(&mut self, name: &str, value: u64) {
        self.push(name, MetricType::Counter, value, None);
    }

    fn gauge(&mut self, name: &str, value: u64) {
        self.push(name, MetricType::Gauge, value, None);
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

fn push_cgroup(metrics: &mut Metrics, cgroup: &CgroupStats) {
    if let Some(cpu) = cgroup.cpu {
        metrics.counter(
            "container_cpu_usage_seconds_total",
            cpu.usage_ns / NANOS_PER_SECOND,
        );
        metrics.counter(
            "container_cpu_user_seconds_total",
            cpu.user_ns / NANOS_PER_SECOND,
        );
        metrics.counter(
            "container_cpu_system_seconds_total",
            cpu.system_ns / NANOS_PER_SECOND,
        );
        metrics.counter(
            "container_cpu_cfs_throttled_periods_total",
            cpu.throttled_periods,
        );
        metrics.counter(
            "container_cpu_cfs_throttled_seconds_total",
            cpu.throttled_ns / NANOS_PER_SECOND,
        );
    }
    if let Some(memory) = cgroup.memory {
        metrics.gauge("container_memory_usage_bytes", memory.usage_bytes);
        metrics.gauge(
            "container_memory_working_set_bytes",
            memory.working_set_bytes,
        );
        metrics.gauge("container_memory_rss", memory.rss_bytes);
        metrics.gauge("container_memory_cache", memory.cache_bytes);
        metrics.counter("container_memory_failcnt", memory.fail_count);
        metrics.counter("container_oom_events_total", memory.oom_kills);
        metrics.gauge(
            "container_spec_memory_limit_bytes",
            memory.limit_bytes.unwrap_or(0),
        );
    }
    if let Some(swap) = cgroup.swap {
        metrics.gauge("container_memory_swap", swap.usage_bytes);
    }
    if let Some(pids) = cgroup.pids {
        metrics.gauge("container_processes", pids.current);
    }
}

fn container_metrics(container: &ContainerRecord, usage: &ContainerUsage) -> v1::ContainerMetrics {
    let mut metrics = Metrics::new(
        &container.id,
        &container.metadata.name,
        &container.image_ref,
    );
    if let Some(cgroup) = &usage.cgroup {
        push_cgroup(&mut metrics, cgroup);
    }
    if let Some(layer) = &usage.writable_layer {
        let device = layer.mountpoint.display().to_string();
        metrics.push(
            "container_fs_usage_bytes",
            MetricType::Gauge,
            layer.used_bytes,
            Some(&device),
        );
        metrics.push(
            "container_fs_inodes_total",
            MetricType::Gauge,
            layer.inodes_used,
            Some(&device),
        );
    }
    metrics.gauge(
        "container_start_time_seconds",
        u64::try_from(container.started_at).unwrap_or(0) / NANOS_PER_SECOND,
    );
    metrics.gauge(
        "container_last_seen",
        u64::try_from(usage.timestamp).unwrap_or(0) / NANOS_PER_SECOND,
    );
    v1::ContainerMetrics {
        container_id: container.id.clone(),
        metrics: metrics.out,
    }
}

/// The pod's own metrics (its cgroup, its network) and each running container's.
pub(crate) fn pod_metrics(pod: &PodRecord, usage: &PodUsage) -> v1::PodSandboxMetrics {
    let mut metrics = Metrics::new(&pod.id, &pod.spec.metadata.name, "");
    if let Some(cgroup) = &usage.cgroup {
        push_cgroup(&mut metrics, cgroup);
    }
    for interface in usage.network.iter().flatten() {
        let name = Some(interface.name.as_str());
        for (metric, value) in [
            ("container_network_receive_bytes_total", interface.rx_bytes),
            (
                "container_network_receive_packets_total",
                interface.rx_packets,
            ),
            (
                "container_network_receive_packets_dropped_total",
                interface.rx_dropped,
            ),
            (
                "container_network_receive_errors_total",
                interface.rx_errors,
            ),
            ("container_network_transmit_bytes_total", interface.tx_bytes),
            (
                "container_network_transmit_packets_total",
                interface.tx_packets,
            ),
            (
                "container_network_transmit_packets_dropped_total",
                interface.tx_dropped,
            ),
            (
                "container_network_transmit_errors_total",
                interface.tx_errors,
            ),
        ] {
            metrics.push(metric, MetricType::Counter, value, name);
        }
    }
    v1::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: metrics.out,
        container_metrics: usage
            .containers
            .iter()
            .map(|(container, usage)| container_metrics(container, usage))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_runtime::stats::InterfaceStats;
    use coracle_runtime::stats::{CpuStats, MemoryStats};

    #[test]
    fn descriptors_are_unique_and_cadvisor_named() {
        let descriptors = metric_descriptors();
        let mut names: Vec<_> = descriptors.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), descriptors.len());
        for name in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_network_receive_bytes_total",
        ] {
            assert!(names.contains(&name), "{name}");
        }
        assert!(descriptors.iter().all(|d| d.label_keys[..3] == BASE_LABELS));
    }

    #[test]
    fn every_metric_has_as_many_values_as_its_descriptor_has_keys() {
        let pod = PodRecord {
            id: "p1".into(),
            spec: Default::default(),
            state: coracle_runtime::model::PodState::Ready,
            created_at: 1,
            namespace_dir: None,
            pinned: Vec::new(),
            cgroup: None,
            cgroup_created: false,
            network: None,
            init: None,
        };
        let usage = PodUsage {
            cgroup: Some(CgroupStats {
                cpu: Some(CpuStats {
                    usage_ns: 3_500_000_000,
                    ..Default::default()
                }),
                memory: Some(MemoryStats {
                    working_set_bytes: 52_428_800,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            network: Some(vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 1000,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let metrics = pod_metrics(&pod, &usage);
        let descriptors = metric_descriptors();
        for metric in &metrics.metrics {
            let d = descriptors.iter().find(|d| d.name == metric.name).unwrap();
            assert_eq!(
                d.label_keys.len(),
                metric.label_values.len(),
                "{}",
                metric.name
            );
        }
        let find = |name: &str| {
            metrics
                .metrics
                .iter()
                .find(|m| m.name == name)
                .unwrap()
                .value
                .unwrap()
                .value
        };
        assert_eq!(find("container_cpu_usage_seconds_total"), 3);
        assert_eq!(find("container_memory_working_set_bytes"), 52_428_800);
        assert_eq!(find("container_network_receive_bytes_total"), 1000);
    }
}
