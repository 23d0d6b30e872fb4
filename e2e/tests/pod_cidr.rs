//! The built-in network's pod ranges as kubelet sets them (UpdateRuntimeConfig), and
//! dual stack through CRI: a real daemon, real pods, TCP into them from the node.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::process::Command;

use coracle_e2e::fixtures::pod_config;
use coracle_e2e::pod_net::{namespace_dir, pod_ip, pod_ips, read_from, serve_once};
use coracle_e2e::{Daemon, DaemonOptions, require_root};
use k8s_cri::v1;
use tonic::Code;

/// The `network` entry of `crictl info`: (podCIDRs, podCIDRsFrom).
async fn pod_cidrs(daemon: &Daemon) -> (Vec<String>, String) {
    let info = daemon.status_info().await.unwrap();
    let network: serde_json::Value = serde_json::from_str(&info["network"]).unwrap();
    let cidrs = network["podCIDRs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cidr| cidr.as_str().unwrap().to_owned())
        .collect();
    (cidrs, network["podCIDRsFrom"].as_str().unwrap().to_owned())
}

/// The addresses on the daemon's bridge (addr/prefix), link-local left out.
fn bridge_addresses(daemon: &Daemon) -> Vec<String> {
    let output = Command::new("ip")
        .args(["-o", "addr", "show", "dev", &daemon.network().bridge()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "inet" || *word == "inet6")?;
            words.next().map(str::to_owned)
        })
        .filter(|addr| !addr.starts_with("fe80:"))
        .collect()
}

/// `10.216.3.0/24` -> `10.216.3.1`; `fd00:e2f:3::/64` -> `fd00:e2f:3::1`.
fn gateway_of(subnet: &str) -> String {
    let network = subnet.split_once('/').unwrap().0;
    match network.strip_suffix(".0") {
        Some(v4_prefix) => format!("{v4_prefix}.1"),
        None => format!("{network}1"),
    }
}

fn in_subnet(ip: &str, subnet: &str) -> bool {
    let subnet: coracle_runtime::PodSubnets = subnet.parse().unwrap();
    subnet.contains(ip.parse().unwrap())
}

#[tokio::test]
async fn kubelets_pod_cidr_moves_new_pods_and_survives_a_restart() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let logs = daemon.dir().join("logs");
    let config_v4 = daemon.network().subnet_v4();
    let (kubelet_v4, kubelet_v6) = daemon.network().kubelet_subnets();
    assert_eq!(
        pod_cidrs(&daemon).await,
        (vec![config_v4.clone()], "config".to_owned())
    );
    let early = daemon.run_pod(pod_config("early", &logs)).await.unwrap();
    let early_ip = pod_ip(&daemon.pod_status(&early).await.unwrap());
    assert!(
        in_subnet(&early_ip, &config_v4),
        "{early_ip} not in {config_v4}"
    );

    // Bad input is refused and changes nothing; empty means "no change".
    for bad in ["10.0.0.0/33", "10.1.0.0/24,10.2.0.0/24", "not a cidr"] {
        let err = daemon.update_pod_cidr(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("pod_cidr"), "{}", err.message());
    }
    daemon.update_pod_cidr("").await.unwrap();
    assert_eq!(pod_cidrs(&daemon).await.0, vec![config_v4.clone()]);

    // kubelet's dual-stack CIDR, as it sends it (IPv4 first or not).
    daemon
        .update_pod_cidr(&format!("{kubelet_v6},{kubelet_v4}"))
        .await
        .unwrap();
    let kubelets = (
        vec![kubelet_v4.clone(), kubelet_v6.clone()],
        "kubelet".to_owned(),
    );
    assert_eq!(pod_cidrs(&daemon).await, kubelets);
    // Repeated (kubelet resends after its own restart): fine, nothing changes.
    daemon
        .update_pod_cidr(&format!("{kubelet_v4},{kubelet_v6}"))
        .await
        .unwrap();

    let late = daemon.run_pod(pod_config("late", &logs)).await.unwrap();
    let late_status = daemon.pod_status(&late).await.unwrap();
    let late_ips = pod_ips(&late_status);
    assert_eq!(late_ips.len(), 2, "{late_ips:?}");
    assert!(in_subnet(&late_ips[0], &kubelet_v4), "{late_ips:?}");
    assert!(in_subnet(&late_ips[1], &kubelet_v6), "{late_ips:?}");
    // The early pod keeps its address, and the bridge still serves its range.
    assert_eq!(pod_ip(&daemon.pod_status(&early).await.unwrap()), early_ip);
    let mut on_bridge = bridge_addresses(&daemon);
    on_bridge.sort();
    let mut expected = vec![
        format!("{}/24", gateway_of(&config_v4)),
        format!("{}/24", gateway_of(&kubelet_v4)),
        format!("{}/64", gateway_of(&kubelet_v6)),
    ];
    expected.sort();
    assert_eq!(on_bridge, expected);

    // A restart keeps kubelet's ranges, and the late pod is reachable on both.
    daemon.restart().await.unwrap();
    assert_eq!(pod_cidrs(&daemon).await, kubelets);
    let netns = namespace_dir(&late_status).join("net");
    for ip in &late_ips {
        let address = if ip.contains(':') {
            format!("[{ip}]:8080")
        } else {
            format!("{ip}:8080")
        };
        let server = serve_once(netns.clone(), "::", 8080, "late pod");
        assert_eq!(read_from(address), "late pod");
        server.join().unwrap();
    }

    // The config's range goes from the bridge with the last pod holding an address in it.
    daemon.stop_pod(&early).await.unwrap();
    assert!(
        !bridge_addresses(&daemon).contains(&format!("{}/24", gateway_of(&config_v4))),
        "{:?}",
        bridge_addresses(&daemon)
    );
    let table = Command::new("nft")
        .args(["list", "table", "inet", &daemon.network().nft_table()])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&table.stdout);
    assert!(!rules.contains(&format!("saddr {config_v4}")), "{rules}");
    assert!(rules.contains(&format!("saddr {kubelet_v4}")), "{rules}");
    let pools: Vec<_> = std::fs::read_dir(daemon.root_dir().join("network/ipam"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.') && name != "pod-cidr")
        .collect();
    assert_eq!(
        pools.len(),
        2,
        "only kubelet's two pools are left: {pools:?}"
    );
    let again = daemon.run_pod(pod_config("again", &logs)).await.unwrap();
    let again_ip = pod_ip(&daemon.pod_status(&again).await.unwrap());
    assert!(in_subnet(&again_ip, &kubelet_v4), "{again_ip}");
    for id in [&early, &late, &again] {
        daemon.remove_pod(id).await.unwrap();
    }
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn dual_stack_host_port_reaches_the_pod_over_both_families() {
    require_root();
    let mut daemon = Daemon::start_with(DaemonOptions {
        dual_stack: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let logs = daemon.dir().join("logs");
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = pod_config("web6", &logs);
    config.port_mappings = vec![v1::PortMapping {
        protocol: v1::Protocol::Tcp as i32,
        container_port: 80,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let id = daemon.run_pod(config).await.unwrap();
    let status = daemon.pod_status(&id).await.unwrap();
    let ips = pod_ips(&status);
    assert_eq!(ips.len(), 2, "{ips:?}");
    let netns = namespace_dir(&status).join("net");
    let gateways = [
        gateway_of(&daemon.network().subnet_v4()),
        format!("[{}]", gateway_of(&daemon.network().subnet_v6())),
    ];
    for gateway in gateways {
        let server = serve_once(netns.clone(), "::", 80, "via hostPort");
        assert_eq!(read_from(format!("{gateway}:{host_port}")), "via hostPort");
        server.join().unwrap();
    }
    daemon.remove_pod(&id).await.unwrap();
    daemon.stop().await.unwrap();
}
