//! `ContainerStats`, `ListContainerStats`, `PodSandboxStats`, `ListPodSandboxStats`:
//! the runtime's usage readings in the CRI's shape. A figure the runtime could not read
//! is left unset, never sent as zero (kubelet treats a zero working set as real).

use std::collections::HashMap;

use coracle_runtime::model::{ContainerRecord, PodRecord};
use coracle_runtime::stats::{CgroupStats, ContainerUsage, InterfaceStats, PodUsage};
use k8s_cri::v1;

use crate::sandbox_list::{id_matches, labels_match};
use crate::translate::pod_metadata_to_cri;

/// The interface kubelet reports as the pod's own (the CNI convention).
pub(crate) const DEFAULT_INTERFACE: &str = "eth0";

fn value(v: u64) -> Option<v1::UInt64Value> {
    Some(v1::UInt64Value { value: v })
}

pub(crate) fn container_filter_matches(
    container: &ContainerRecord,
    filter: Option<&v1::ContainerStatsFilter>,
) -> bool {
    filter.is_none_or(|f| {
        id_matches(&container.id, &f.id)
            && id_matches(&container.pod_id, &f.pod_sandbox_id)
            && labels_match(&container.labels, &f.label_selector)
    })
}

pub(crate) fn pod_filter_matches(
    pod: &PodRecord,
    filter: Option<&v1::PodSandboxStatsFilter>,
) -> bool {
    filter.is_none_or(|f| {
        id_matches(&pod.id, &f.id) && labels_match(&pod.spec.labels, &f.label_selector)
    })
}

pub(crate) fn container_stats_to_cri(
    container: &ContainerRecord,
    usage: &ContainerUsage,
) -> v1::ContainerStats {
    let timestamp = usage.timestamp;
    let cgroup = usage.cgroup.unwrap_or_default();
    v1::ContainerStats {
        attributes: Some(v1::ContainerAttributes {
            id: container.id.clone(),
            metadata: Some(v1::ContainerMetadata {
                name: container.metadata.name.clone(),
                attempt: container.metadata.attempt,
            }),
            labels: to_map(&container.labels),
            annotations: to_map(&container.annotations),
        }),
        cpu: cpu_to_cri(&cgroup, usage.cpu_nano_cores, timestamp),
        memory: memory_to_cri(&cgroup, timestamp),
        writable_layer: usage
            .writable_layer
            .as_ref()
            .map(|layer| v1::FilesystemUsage {
                timestamp,
                fs_id: Some(v1::FilesystemIdentifier {
                    mountpoint: layer.mountpoint.display().to_string(),
                }),
                used_bytes: value(layer.used_bytes),
                inodes_used: value(layer.inodes_used),
            }),
        swap: cgroup.swap.map(|swap| v1::SwapUsage {
            timestamp,
            swap_available_bytes: swap.available_bytes().and_then(value),
            swap_usage_bytes: value(swap.usage_bytes),
        }),
    }
}

pub(crate) fn pod_stats_to_cri(pod: &PodRecord, usage: &PodUsage) -> v1::PodSandboxStats {
    let timestamp = usage.timestamp;
    let cgroup = usage.cgroup.unwrap_or_default();
    v1::PodSandboxStats {
        attributes: Some(v1::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: Some(pod_metadata_to_cri(&pod.spec.metadata)),
            labels: to_map(&pod.spec.labels),
            annotations: to_map(&pod.spec.annotations),
        }),
        linux: Some(v1::LinuxPodSandboxStats {
            cpu: cpu_to_cri(&cgroup, usage.cpu_nano_cores, timestamp),
            memory: memory_to_cri(&cgroup, timestamp),
            network: usage
                .network
                .as_ref()
                .map(|interfaces| network_to_cri(interfaces, timestamp)),
            process: usage.process_count.map(|count| v1::ProcessUsage {
                timestamp,
                process_count: value(count),
            }),
            containers: usage
                .containers
                .iter()
                .map(|(container, usage)| container_stats_to_cri(container, usage))
                .collect(),
        }),
        windows: None,
    }
}

fn cpu_to_cri(
    cgroup: &CgroupStats,
    nano_cores: Option<u64>,
    timestamp: i64,
) -> Option<v1::CpuUsage> {
    cgroup.cpu.map(|cpu| v1::CpuUsage {
        timestamp,
        usage_core_nano_seconds: value(cpu.usage_ns),
        usage_nano_cores: nano_cores.and_then(value),
    })
}

fn memory_to_cri(cgroup: &CgroupStats, timestamp: i64) -> Option<v1::MemoryUsage> {
    cgroup.memory.map(|memory| v1::MemoryUsage {
        timestamp,
        working_set_bytes: value(memory.working_set_bytes),
        available_bytes: memory.available_bytes().and_then(value),
        usage_bytes: value(memory.usage_bytes),
        rss_bytes: value(memory.rss_bytes),
        page_faults: value(memory.page_faults),
        major_page_faults: value(memory.major_page_faults),
    })
}

/// eth0 is the default interface; the others follow, loopback already left out.
fn network_to_cri(interfaces: &[InterfaceStats], timestamp: i64) -> v1::NetworkUsage {
    let to_cri = |i: &InterfaceStats| v1::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    };
    v1::NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .map(to_cri),
        interfaces: interfaces
            .iter()
            .filter(|i| i.name != DEFAULT_INTERFACE)
            .map(to_cri)
            .collect(),
    }
}

fn to_map(map: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    map.clone().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use coracle_runtime::stats::{CpuStats, MemoryStats};

    #[test]
    fn unreadable_usage_is_unset_not_zero() {
        let cpu = cpu_to_cri(&CgroupStats::default(), None, 1);
        assert!(cpu.is_none());
        assert!(memory_to_cri(&CgroupStats::default(), 1).is_none());
        let stats = CgroupStats {
            cpu: Some(CpuStats {
                usage_ns: 42,
                ..Default::default()
            }),
            memory: Some(MemoryStats {
                usage_bytes: 100,
                working_set_bytes: 60,
                limit_bytes: None,
                ..Default::default()
            }),
            ..Default::default()
        };
        let cpu = cpu_to_cri(&stats, None, 1).unwrap();
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 42);
        assert!(
            cpu.usage_nano_cores.is_none(),
            "no previous sample, no rate"
        );
        let memory = memory_to_cri(&stats, 1).unwrap();
        assert_eq!(memory.working_set_bytes.unwrap().value, 60);
        assert!(
            memory.available_bytes.is_none(),
            "unlimited: nothing available to compute"
        );
    }

    #[test]
    fn eth0_is_the_default_interface() {
        let interfaces = [
            InterfaceStats {
                name: "net1".into(),
                rx_bytes: 5,
                ..Default::default()
            },
            InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 7,
                tx_errors: 1,
                ..Default::default()
            },
        ];
        let network = network_to_cri(&interfaces, 9);
        let default = network.default_interface.unwrap();
        assert_eq!(
            (default.name.as_str(), default.rx_bytes.unwrap().value),
            ("eth0", 7)
        );
        assert_eq!(default.tx_errors.unwrap().value, 1);
        assert_eq!(network.interfaces.len(), 1);
        assert_eq!(network.interfaces[0].name, "net1");
    }
}
