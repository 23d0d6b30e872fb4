//! The bridge network on the real kernel (root): a test bridge, pods in pinned
//! network namespaces, Coracle's nftables table. Every object gets a per-test
//! name (nextest runs each test in its own process, so the pid is unique) and a
//! Drop guard removes it even when an assertion fails. Nothing here changes the
//! host's routes, forwarding, or any nftables table but the test's own.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coracle_net::{
    BridgeConfig, BridgeNetwork, HostPort, NamespaceKind, NetError, PinSetup, PodSubnets,
    PodSubnetsSource, Proto, Subnet, pin_namespaces, unpin_namespaces, veth_name,
};
use nix::sched::{CloneFlags, setns};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bridge network tests need root; run the suite as root"
    );
}

/// A pod id unique to this test process: veth names derive from pod ids, and
/// parallel tests must not see each other's pods as their own.
fn id(name: &str) -> String {
    format!("t{}-{name}", std::process::id())
}

/// One test's bridge, table, IPAM dir and pods; removes them all on drop.
struct TestNet {
    net: BridgeNetwork,
    config: BridgeConfig,
    ipam: tempfile::TempDir,
    pods_dir: tempfile::TempDir,
    pods: Vec<String>,
}

impl TestNet {
    fn new(dual_stack: bool, masquerade: bool) -> Self {
        require_root();
        let pid = std::process::id();
        let octet = free_test_octet(234, pid);
        let config = BridgeConfig {
            bridge: format!("ct{}", pid % 100_000),
            subnet_v4: Some(format!("10.234.{octet}.0/24")),
            subnet_v6: dual_stack.then(|| format!("fd00:234:{octet}::/64")),
            // Not the usual 1500, so the test sees it was set.
            mtu: 1450,
            masquerade,
            // Never on the shared host.
            enable_ip_forward: false,
            nft_table: format!("coracle_t{pid}"),
        };
        let ipam = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::new(config.clone(), ipam.path()).unwrap();
        TestNet {
            net,
            config,
            ipam,
            pods_dir: tempfile::tempdir().unwrap(),
            pods: Vec::new(),
        }
    }

    /// Pins a fresh network namespace for `pod_id`; returns its path.
    fn pod_netns(&mut self, pod_id: &str) -> PathBuf {
        let dir = self.pods_dir.path().join(pod_id);
        pin_namespaces(&dir, &[NamespaceKind::Net], &PinSetup::default()).unwrap();
        self.pods.push(pod_id.to_owned());
        dir.join("net")
    }

    fn subnet_v4(&self) -> Subnet {
        self.config.subnet_v4.as_ref().unwrap().parse().unwrap()
    }

    /// A second BridgeNetwork on the same IPAM dir, as after a daemon restart.
    fn restarted(&self) -> BridgeNetwork {
        BridgeNetwork::new(self.config.clone(), self.ipam.path()).unwrap()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for pod in &self.pods {
            let _ = Command::new("ip")
                .args(["link", "del", &veth_name(pod)])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = unpin_namespaces(&self.pods_dir.path().join(pod));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.config.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.config.nft_table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A third octet for 10.<second>.X.0/24 that no route on the host uses yet.
fn free_test_octet(second: u8, pid: u32) -> u32 {
    let routes = fs::read_to_string("/proc/net/route").unwrap();
    let taken = |octet: u32| {
        // /proc/net/route prints destinations as little-endian hex.
        let dest = format!("{:02X}{:02X}{second:02X}0A", 0, octet);
        routes
            .lines()
            .any(|line| line.split('\t').nth(1) == Some(dest.as_str()))
    };
    let mut octet = pid % 250 + 1;
    while taken(octet) {
        octet = octet % 250 + 1;
    }
    octet
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Runs `f` on a thread inside the network namespace at `netns`.
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        setns(file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// `busybox <args>` inside the namespace; its stdout, or a panic with stderr.
fn busybox_in(netns: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("busybox")
        .args(args)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "busybox {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn ping(netns: &Path, target: IpAddr) {
    busybox_in(netns, &["ping", "-c1", "-W2", &target.to_string()]).unwrap();
}

/// The IPv4 default gateway in the namespace, from /proc/net/route.
fn default_gateway_v4(netns: &Path) -> Option<(String, IpAddr)> {
    let routes = in_netns(netns, || {
        fs::read_to_string("/proc/thread-self/net/route").unwrap()
    });
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<_> = line.split('\t').collect();
        (fields[1] == "00000000").then(|| {
            let gateway = u32::from_str_radix(fields[2], 16).unwrap();
            (fields[0].to_owned(), IpAddr::from(gateway.to_le_bytes()))
        })
    })
}

/// The IPv6 default gateway in the namespace, from /proc/net/ipv6_route.
fn default_gateway_v6(netns: &Path) -> Option<(String, IpAddr)> {
    let routes = in_netns(netns, || {
        fs::read_to_string("/proc/thread-self/net/ipv6_route").unwrap()
    });
    routes.lines().find_map(|line| {
        let fields: Vec<_> = line.split_whitespace().collect();
        let default = fields[0] == "0".repeat(32) && fields[1] == "00";
        let gateway = u128::from_str_radix(fields[4], 16).unwrap();
        (default && gateway != 0)
            .then(|| (fields[9].to_owned(), IpAddr::from(gateway.to_be_bytes())))
    })
}

fn addresses_in(netns: &Path, ifname: &str) -> String {
    busybox_in(netns, &["ip", "-o", "addr", "show", "dev", ifname]).unwrap()
}

#[tokio::test]
async fn two_pods_get_distinct_addresses_and_reach_each_other_and_the_gateway() {
    let mut t = TestNet::new(false, true);
    t.net.ensure_ready().await.unwrap();
    let mac_path = format!("/sys/class/net/{}/address", t.config.bridge);
    let bridge_mac = move || fs::read_to_string(&mac_path).unwrap();
    let mac_before = bridge_mac();
    let (netns_a, netns_b) = (t.pod_netns(&id("pod-a")), t.pod_netns(&id("pod-b")));

    let started = Instant::now();
    let a = t.net.attach(&id("pod-a"), &netns_a, "eth0").await.unwrap();
    let attach_a = started.elapsed();
    let started = Instant::now();
    let b = t.net.attach(&id("pod-b"), &netns_b, "eth0").await.unwrap();
    let attach_b = started.elapsed();

    let subnet = t.subnet_v4();
    let gateway = subnet.gateway();
    assert_eq!(IpAddr::V4(a.gateway_v4.unwrap()), gateway);
    assert_eq!(a.ips.len(), 1);
    assert_ne!(a.ips[0], b.ips[0]);
    for (pod, netns) in [(&a, &netns_a), (&b, &netns_b)] {
        assert!(
            subnet.contains(pod.ips[0]),
            "{:?} outside {subnet}",
            pod.ips
        );
        assert!(pod.ips[0] != gateway);
        assert!(link_exists(&pod.host_veth), "{} missing", pod.host_veth);
        let master = fs::read_link(format!("/sys/class/net/{}/master", pod.host_veth)).unwrap();
        assert!(master.ends_with(&t.config.bridge), "{}", master.display());
        let hairpin = fs::read_to_string(format!(
            "/sys/class/net/{}/brport/hairpin_mode",
            pod.host_veth
        ))
        .unwrap();
        assert_eq!(hairpin.trim(), "1");
        let addrs = addresses_in(netns, "eth0");
        assert!(addrs.contains(&format!("{}/24", pod.ips[0])), "{addrs}");
        assert!(addresses_in(netns, "lo").contains("127.0.0.1"));
        assert_eq!(default_gateway_v4(netns), Some(("eth0".into(), gateway)));
        // Not /sys/class/net: nsenter --net keeps the host's sysfs mount.
        let link = busybox_in(netns, &["ip", "link", "show", "eth0"]).unwrap();
        assert!(link.contains("mtu 1450"), "{link}");
    }
    ping(&netns_a, b.ips[0]);
    ping(&netns_b, a.ips[0]);
    ping(&netns_a, gateway);

    // The gateway's MAC never follows the ports: a bridge left to itself takes the
    // lowest port MAC, and detaching that pod would cut the others off the gateway.
    assert_eq!(
        bridge_mac(),
        mac_before,
        "the bridge MAC moved when pods attached"
    );
    let started = Instant::now();
    t.net.detach(&id("pod-a")).await.unwrap();
    let detach_a = started.elapsed();
    assert_eq!(
        bridge_mac(),
        mac_before,
        "the bridge MAC moved when a pod left"
    );
    ping(&netns_b, gateway);
    t.net.detach(&id("pod-b")).await.unwrap();
    for pod in [&a, &b] {
        assert!(
            !link_exists(&pod.host_veth),
            "{} left behind",
            pod.host_veth
        );
    }
    assert!(t.net.addresses_of(&id("pod-a")).await.unwrap().is_empty());
    assert!(t.net.addresses_of(&id("pod-b")).await.unwrap().is_empty());
    // The namespace is still pinned but its eth0 went with the host veth.
    assert!(busybox_in(&netns_a, &["ip", "link", "show", "eth0"]).is_err());
    // Detach twice is fine (repeated StopPodSandbox).
    t.net.detach(&id("pod-a")).await.unwrap();
    t.net.detach(&id("never-attached")).await.unwrap();
    println!("timing: attach {attach_a:?} (first), {attach_b:?} (second), detach {detach_a:?}");
}

#[tokio::test]
async fn attach_latency_over_ten_pods() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let pods: Vec<_> = (0..10)
        .map(|i| {
            let id = id(&format!("lat-{i}"));
            let netns = t.pod_netns(&id);
            (id, netns)
        })
        .collect();
    let mut attach = Vec::new();
    for (id, netns) in &pods {
        let started = Instant::now();
        t.net.attach(id, netns, "eth0").await.unwrap();
        attach.push(started.elapsed());
    }
    let mut detach = Vec::new();
    for (id, _) in &pods {
        let started = Instant::now();
        t.net.detach(id).await.unwrap();
        detach.push(started.elapsed());
    }
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "timing over 10 pods: attach mean {:?} max {:?}; detach mean {:?} max {:?}",
        mean(&attach),
        attach.iter().max().unwrap(),
        mean(&detach),
        detach.iter().max().unwrap()
    );
}

#[tokio::test]
async fn ipam_does_not_hand_out_an_allocated_address_after_a_restart() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let (netns_a, netns_b) = (t.pod_netns(&id("pod-a")), t.pod_netns(&id("pod-b")));
    let a = t.net.attach(&id("pod-a"), &netns_a, "eth0").await.unwrap();
    let restarted = t.restarted();
    assert_eq!(restarted.addresses_of(&id("pod-a")).await.unwrap(), a.ips);
    assert_eq!(restarted.known_pods().await.unwrap(), [id("pod-a")]);
    let b = restarted
        .attach(&id("pod-b"), &netns_b, "eth0")
        .await
        .unwrap();
    assert_ne!(a.ips, b.ips);
    ping(&netns_b, a.ips[0]);
    // The restarted instance can detach what the first one attached.
    restarted.detach(&id("pod-a")).await.unwrap();
    assert!(!link_exists(&a.host_veth));
    restarted.detach(&id("pod-b")).await.unwrap();
    assert!(restarted.known_pods().await.unwrap().is_empty());
}

#[tokio::test]
async fn attach_to_a_path_that_is_not_a_namespace_leaves_no_veth_and_no_allocation() {
    let t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let not_a_netns = t.pods_dir.path().join("plain-file");
    fs::write(&not_a_netns, "").unwrap();
    for path in [not_a_netns.as_path(), Path::new("/nonexistent/ns/net")] {
        let err = t.net.attach(&id("pod-x"), path, "eth0").await.unwrap_err();
        println!("attach to {}: {err}", path.display());
        assert!(
            !link_exists(&veth_name(&id("pod-x"))),
            "veth left by a failed attach"
        );
        assert!(
            t.net.addresses_of(&id("pod-x")).await.unwrap().is_empty(),
            "address leaked"
        );
    }
}

#[tokio::test]
async fn attach_failing_inside_the_pod_rolls_back_the_veth_and_the_address() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let netns = t.pod_netns(&id("pod-r"));
    // A default route already in the pod makes adding ours fail, after the veth
    // exists and the address is allocated: the late rollback path.
    busybox_in(&netns, &["ip", "link", "set", "lo", "up"]).unwrap();
    busybox_in(&netns, &["ip", "route", "add", "default", "dev", "lo"]).unwrap();
    let err = t
        .net
        .attach(&id("pod-r"), &netns, "eth0")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("default route"), "{err}");
    assert!(
        !link_exists(&veth_name(&id("pod-r"))),
        "veth left by a failed attach"
    );
    assert!(
        t.net.addresses_of(&id("pod-r")).await.unwrap().is_empty(),
        "address leaked"
    );
    assert!(busybox_in(&netns, &["ip", "link", "show", "eth0"]).is_err());
    // The same pod can be attached once the obstacle is gone.
    busybox_in(&netns, &["ip", "route", "del", "default", "dev", "lo"]).unwrap();
    t.net.attach(&id("pod-r"), &netns, "eth0").await.unwrap();
    t.net.detach(&id("pod-r")).await.unwrap();
}

#[tokio::test]
async fn detach_after_the_namespace_is_gone_releases_everything() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let netns = t.pod_netns(&id("pod-g"));
    let pod = t.net.attach(&id("pod-g"), &netns, "eth0").await.unwrap();
    unpin_namespaces(netns.parent().unwrap()).unwrap();
    t.net.detach(&id("pod-g")).await.unwrap();
    assert!(!link_exists(&pod.host_veth));
    assert!(t.net.addresses_of(&id("pod-g")).await.unwrap().is_empty());
}

/// Accepts one TCP connection inside the namespace and answers `reply`.
fn serve_once_in_netns(
    netns: &Path,
    port: u16,
    reply: &'static str,
) -> std::thread::JoinHandle<()> {
    let file = fs::File::open(netns).unwrap();
    let (ready, is_ready) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        setns(file, CloneFlags::CLONE_NEWNET).unwrap();
        // [::] takes IPv4 too (bindv6only is off by default).
        let listener = TcpListener::bind(("::", port)).unwrap();
        ready.send(()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(reply.as_bytes()).unwrap();
    });
    is_ready.recv().unwrap();
    server
}

fn read_from(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .unwrap_or_else(|err| panic!("connect {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// The hostPort rule lines of the table, without handles.
fn hostport_rules(table: &str) -> Vec<String> {
    table
        .lines()
        .map(str::trim)
        .filter(|line| line.contains("dnat"))
        .map(str::to_owned)
        .collect()
}

fn list_table(name: &str) -> Option<String> {
    let output = Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test]
async fn host_port_reaches_the_pod_from_the_node_and_goes_with_detach() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let pod_id = id("pod-h");
    let netns = t.pod_netns(&pod_id);
    let pod = t.net.attach(&id("pod-h"), &netns, "eth0").await.unwrap();
    let pod_ip = pod.ips[0];
    let gateway = IpAddr::V4(pod.gateway_v4.unwrap());
    let host_port = 20_000 + (std::process::id() % 10_000) as u16;
    let mappings = [
        HostPort {
            protocol: Proto::Tcp,
            container_port: 8080,
            host_port,
            host_ip: None,
        },
        HostPort {
            protocol: Proto::Udp,
            container_port: 5353,
            host_port,
            host_ip: Some(gateway),
        },
    ];
    t.net
        .add_port_mappings(&id("pod-h"), &[pod_ip], &mappings)
        .await
        .unwrap();

    let table = list_table(&t.config.nft_table).unwrap();
    assert_eq!(
        hostport_rules(&table),
        [
            format!(
                "meta nfproto ipv4 tcp dport {host_port} dnat ip to {pod_ip}:8080 comment \"pod {pod_id}\""
            ),
            format!(
                "ip daddr {gateway} udp dport {host_port} dnat ip to {pod_ip}:5353 comment \"pod {pod_id}\""
            ),
        ],
        "{table}"
    );

    // A repeated ensure_ready (daemon restart) keeps running pods' host ports.
    t.net.ensure_ready().await.unwrap();
    let again = list_table(&t.config.nft_table).unwrap();
    assert_eq!(hostport_rules(&again), hostport_rules(&table));

    // From the node to its own (bridge) address: the output chain's DNAT.
    // 127.0.0.1 is left out on purpose (see nft.rs: route_localnet).
    let server = serve_once_in_netns(&netns, 8080, "hello from the pod");
    let reply = read_from(SocketAddr::new(gateway, host_port));
    assert_eq!(reply, "hello from the pod");
    server.join().unwrap();

    t.net.detach(&id("pod-h")).await.unwrap();
    let table = list_table(&t.config.nft_table).unwrap();
    assert!(hostport_rules(&table).is_empty(), "{table}");
    t.net.remove().await.unwrap();
    assert!(
        list_table(&t.config.nft_table).is_none(),
        "table outlived remove"
    );
    assert!(!link_exists(&t.config.bridge));
}

#[tokio::test]
async fn masquerade_rule_lives_in_coracles_table_and_goes_with_it() {
    let t = TestNet::new(true, true);
    t.net.ensure_ready().await.unwrap();
    // Idempotent: a second run (daemon restart) does not duplicate rules.
    t.net.ensure_ready().await.unwrap();
    let table = list_table(&t.config.nft_table).unwrap();
    let v4 = t.config.subnet_v4.as_ref().unwrap();
    let v6 = t.config.subnet_v6.as_ref().unwrap();
    let masquerade: Vec<_> = table
        .lines()
        .map(str::trim)
        .filter(|line| line.contains("masquerade"))
        .collect();
    assert_eq!(
        masquerade,
        [
            format!("ip saddr {v4} ip daddr != {v4} masquerade"),
            format!("ip6 saddr {v6} ip6 daddr != {v6} masquerade"),
        ],
        "{table}"
    );
    // Forwarding stays as the host had it (the test config keeps it off).
    t.net.remove().await.unwrap();
    assert!(list_table(&t.config.nft_table).is_none());
    // Removing twice is fine.
    t.net.remove().await.unwrap();
}

#[tokio::test]
async fn dual_stack_pods_get_v6_addresses_and_reach_each_other() {
    let ipv6_disabled = fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .expect("no IPv6 in this kernel: the dual-stack test cannot run");
    assert_eq!(ipv6_disabled.trim(), "0", "IPv6 is disabled on this host");
    let mut t = TestNet::new(true, false);
    t.net.ensure_ready().await.unwrap();
    let (netns_a, netns_b) = (t.pod_netns(&id("pod-a6")), t.pod_netns(&id("pod-b6")));
    let a = t.net.attach(&id("pod-a6"), &netns_a, "eth0").await.unwrap();
    let b = t.net.attach(&id("pod-b6"), &netns_b, "eth0").await.unwrap();
    let subnet_v6: Subnet = t.config.subnet_v6.as_ref().unwrap().parse().unwrap();
    assert_eq!(a.ips.len(), 2);
    assert!(
        a.ips[0].is_ipv4() && subnet_v6.contains(a.ips[1]),
        "{:?}",
        a.ips
    );
    assert_ne!(a.ips[1], b.ips[1]);
    let gateway_v6 = IpAddr::V6(a.gateway_v6.unwrap());
    assert_eq!(gateway_v6, subnet_v6.gateway());
    let addrs = addresses_in(&netns_a, "eth0");
    assert!(addrs.contains(&format!("{}/64", a.ips[1])), "{addrs}");
    assert_eq!(
        default_gateway_v6(&netns_a),
        Some(("eth0".into(), gateway_v6))
    );
    ping(&netns_a, b.ips[1]);
    ping(&netns_a, gateway_v6);
    ping(&netns_b, a.ips[0]);

    // A hostPort of a dual-stack pod answers on both families: node ->
    // [gateway]:port -> DNAT to the pod's address of the same family.
    let host_port = 30_000 + (std::process::id() % 10_000) as u16;
    let mapping = HostPort {
        protocol: Proto::Tcp,
        container_port: 8080,
        host_port,
        host_ip: None,
    };
    t.net
        .add_port_mappings(&id("pod-a6"), &a.ips, &[mapping])
        .await
        .unwrap();
    let server = serve_once_in_netns(&netns_a, 8080, "hello over v6");
    assert_eq!(
        read_from(SocketAddr::new(gateway_v6, host_port)),
        "hello over v6"
    );
    server.join().unwrap();
    let server = serve_once_in_netns(&netns_a, 8080, "hello over v4");
    let gateway_v4 = IpAddr::V4(a.gateway_v4.unwrap());
    assert_eq!(
        read_from(SocketAddr::new(gateway_v4, host_port)),
        "hello over v4"
    );
    server.join().unwrap();

    t.net.detach(&id("pod-a6")).await.unwrap();
    t.net.detach(&id("pod-b6")).await.unwrap();
    assert!(t.net.addresses_of(&id("pod-a6")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_get_distinct_addresses_and_all_work() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let pods: Vec<_> = (0..6)
        .map(|i| {
            let id = id(&format!("par-{i}"));
            let netns = t.pod_netns(&id);
            (id, netns)
        })
        .collect();
    let net = std::sync::Arc::new(t.restarted());
    let started = Instant::now();
    let tasks: Vec<_> = pods
        .iter()
        .map(|(id, netns)| {
            let (net, id, netns) = (net.clone(), id.clone(), netns.clone());
            tokio::spawn(async move { net.attach(&id, &netns, "eth0").await })
        })
        .collect();
    let mut ips = Vec::new();
    for task in tasks {
        ips.push(task.await.unwrap().unwrap().ips[0]);
    }
    println!("timing: 6 concurrent attaches in {:?}", started.elapsed());
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ips.len(), "{ips:?}");
    ping(&pods[0].1, ips[5]);
    ping(&pods[5].1, ips[0]);
    let tasks: Vec<_> = pods
        .iter()
        .map(|(id, _)| {
            let (net, id) = (net.clone(), id.clone());
            tokio::spawn(async move { net.detach(&id).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert!(net.known_pods().await.unwrap().is_empty());
}

#[tokio::test]
async fn health_reports_a_missing_or_down_bridge() {
    let t = TestNet::new(false, false);
    let problem = t.net.health().await.unwrap();
    assert!(problem.contains("missing"), "{problem}");
    t.net.ensure_ready().await.unwrap();
    assert_eq!(t.net.health().await, None);
    let status = Command::new("ip")
        .args(["link", "set", &t.config.bridge, "down"])
        .status()
        .unwrap();
    assert!(status.success());
    let problem = t.net.health().await.unwrap();
    assert!(problem.contains("down"), "{problem}");
    // ensure_ready repairs it.
    t.net.ensure_ready().await.unwrap();
    assert_eq!(t.net.health().await, None);
}

#[tokio::test]
async fn a_veth_of_another_pod_is_never_deleted() {
    let mut t = TestNet::new(false, false);
    t.net.ensure_ready().await.unwrap();
    let netns = t.pod_netns(&id("pod-o"));
    let pod = t.net.attach(&id("pod-o"), &netns, "eth0").await.unwrap();
    // Pretend a colliding pod id maps to the same veth name: detach of a pod
    // whose id is not the veth's alias must leave it alone.
    let status = Command::new("ip")
        .args(["link", "set", &pod.host_veth, "alias", "someone-else"])
        .status()
        .unwrap();
    assert!(status.success());
    t.net.detach(&id("pod-o")).await.unwrap();
    assert!(link_exists(&pod.host_veth));
    let err = t
        .net
        .attach(&id("pod-o"), &netns, "eth1")
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::VethNameTaken { .. }), "{err}");
}

/// The addresses on the test bridge, as `ip -o addr` prints them (addr/prefix).
fn bridge_addresses(bridge: &str) -> Vec<String> {
    let output = Command::new("ip")
        .args(["-o", "addr", "show", "dev", bridge])
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

#[tokio::test]
async fn kubelets_pod_cidr_moves_new_pods_and_the_old_range_goes_with_its_last_pod() {
    let mut t = TestNet::new(false, true);
    t.net.ensure_ready().await.unwrap();
    let old_v4 = t.subnet_v4();
    let netns_old = t.pod_netns(&id("pod-old"));
    let old = t
        .net
        .attach(&id("pod-old"), &netns_old, "eth0")
        .await
        .unwrap();
    assert!(old_v4.contains(old.ips[0]));

    let octet = free_test_octet(235, std::process::id());
    let kubelets: PodSubnets = format!("fd00:235:{octet:x}::/64,10.235.{octet}.0/24")
        .parse()
        .unwrap();
    let (new_v4, new_v6) = (kubelets.ipv4().unwrap(), kubelets.ipv6().unwrap());
    assert!(t.net.set_pod_subnets(kubelets.clone()).await.unwrap());
    assert_eq!(
        t.net.pod_subnets().await,
        (kubelets.clone(), PodSubnetsSource::Kubelet)
    );
    // The same CIDR again (kubelet resends it after its own restart) changes nothing.
    assert!(!t.net.set_pod_subnets(kubelets.clone()).await.unwrap());

    // The old pod keeps its address and gateway; the bridge serves both ranges.
    let mut on_bridge = bridge_addresses(&t.config.bridge);
    on_bridge.sort();
    let mut expected = vec![
        format!("{}/24", old_v4.gateway()),
        format!("{}/24", new_v4.gateway()),
        format!("{}/64", new_v6.gateway()),
    ];
    expected.sort();
    assert_eq!(on_bridge, expected);
    ping(&netns_old, old_v4.gateway());
    let masquerade = |table: &str| {
        list_table(table)
            .unwrap()
            .lines()
            .filter(|line| line.contains("masquerade"))
            .map(|line| {
                line.split_whitespace()
                    .nth(2)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    let mut masqueraded = masquerade(&t.config.nft_table);
    masqueraded.sort();
    let mut expected = vec![old_v4.to_string(), new_v4.to_string(), new_v6.to_string()];
    expected.sort();
    assert_eq!(masqueraded, expected);

    // A new pod gets addresses from kubelet's ranges, dual stack.
    let netns_new = t.pod_netns(&id("pod-new"));
    let new = t
        .net
        .attach(&id("pod-new"), &netns_new, "eth0")
        .await
        .unwrap();
    assert!(
        new_v4.contains(new.ips[0]) && new_v6.contains(new.ips[1]),
        "{:?}",
        new.ips
    );
    assert_eq!(new.gateway_v4.map(IpAddr::V4), Some(new_v4.gateway()));
    ping(&netns_new, new_v4.gateway());
    ping(&netns_new, new_v6.gateway());

    // A restart keeps kubelet's ranges, and still knows the old pod's address.
    let restarted = t.restarted();
    assert_eq!(
        restarted.pod_subnets().await,
        (kubelets.clone(), PodSubnetsSource::Kubelet)
    );
    assert_eq!(
        restarted.addresses_of(&id("pod-old")).await.unwrap(),
        old.ips
    );
    restarted.ensure_ready().await.unwrap();
    assert!(bridge_addresses(&t.config.bridge).contains(&format!("{}/24", old_v4.gateway())));

    // The old range's last pod takes its gateway, masquerade and pool along.
    t.net.detach(&id("pod-old")).await.unwrap();
    let mut on_bridge = bridge_addresses(&t.config.bridge);
    on_bridge.sort();
    let mut expected = vec![
        format!("{}/24", new_v4.gateway()),
        format!("{}/64", new_v6.gateway()),
    ];
    expected.sort();
    assert_eq!(on_bridge, expected);
    assert!(!masquerade(&t.config.nft_table).contains(&old_v4.to_string()));
    let old_pool = t.ipam.path().join(format!("{}_24", old_v4.network()));
    assert!(!old_pool.exists(), "{} left behind", old_pool.display());
    ping(&netns_new, new_v6.gateway());
    t.net.detach(&id("pod-new")).await.unwrap();
}

#[tokio::test]
async fn ipv6_only_pods_get_one_v6_address_and_a_v6_default_route() {
    let mut t = TestNet::new(true, false);
    t.config.subnet_v4 = None;
    t.net = BridgeNetwork::new(t.config.clone(), t.ipam.path()).unwrap();
    t.net.ensure_ready().await.unwrap();
    let subnet_v6: Subnet = t.config.subnet_v6.as_ref().unwrap().parse().unwrap();
    let netns = t.pod_netns(&id("pod-v6"));
    let pod = t.net.attach(&id("pod-v6"), &netns, "eth0").await.unwrap();
    assert_eq!(pod.ips.len(), 1);
    assert!(subnet_v6.contains(pod.ips[0]), "{:?}", pod.ips);
    assert_eq!(pod.gateway_v4, None);
    assert_eq!(pod.gateway_v6.map(IpAddr::V6), Some(subnet_v6.gateway()));
    assert_eq!(default_gateway_v4(&netns), None);
    assert_eq!(
        default_gateway_v6(&netns),
        Some(("eth0".into(), subnet_v6.gateway()))
    );
    ping(&netns, subnet_v6.gateway());
    assert_eq!(
        bridge_addresses(&t.config.bridge),
        [format!("{}/64", subnet_v6.gateway())]
    );
    t.net.detach(&id("pod-v6")).await.unwrap();
}

/// kubelet's range lies inside the config's and shares its gateway address (with
/// another prefix): the old pods' addresses are skipped, and the old range goes
/// when its last two pods are detached at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_pod_cidr_inside_the_old_range_works_and_retires_it() {
    let mut t = TestNet::new(false, true);
    t.net.ensure_ready().await.unwrap();
    let old_range = t.subnet_v4();
    let (netns_a, netns_b) = (t.pod_netns(&id("old-a")), t.pod_netns(&id("old-b")));
    let a = t.net.attach(&id("old-a"), &netns_a, "eth0").await.unwrap();
    let b = t.net.attach(&id("old-b"), &netns_b, "eth0").await.unwrap();
    let narrower: PodSubnets = format!("{}/25", old_range.network()).parse().unwrap();
    let new_range = narrower.ipv4().unwrap();
    assert!(new_range.contains(a.ips[0]) && new_range.contains(b.ips[0]));
    assert!(t.net.set_pod_subnets(narrower).await.unwrap());

    let netns_c = t.pod_netns(&id("new-c"));
    let c = t.net.attach(&id("new-c"), &netns_c, "eth0").await.unwrap();
    assert!(new_range.contains(c.ips[0]));
    assert!(!a.ips.contains(&c.ips[0]) && !b.ips.contains(&c.ips[0]));
    assert_ne!(c.ips[0], new_range.gateway());
    let gateway = old_range.gateway();
    let mut on_bridge = bridge_addresses(&t.config.bridge);
    on_bridge.sort();
    assert_eq!(
        on_bridge,
        [format!("{gateway}/24"), format!("{gateway}/25")]
    );

    let net = std::sync::Arc::new(t.restarted());
    let (first, second) = tokio::join!(
        {
            let net = net.clone();
            async move { net.detach(&id("old-a")).await }
        },
        {
            let net = net.clone();
            async move { net.detach(&id("old-b")).await }
        },
    );
    first.unwrap();
    second.unwrap();
    assert_eq!(
        bridge_addresses(&t.config.bridge),
        [format!("{gateway}/25")]
    );
    let old_pool = t.ipam.path().join(format!("{}_24", old_range.network()));
    assert!(!old_pool.exists(), "{} left behind", old_pool.display());
    let table = list_table(&t.config.nft_table).unwrap();
    assert!(!table.contains(&format!("saddr {old_range}")), "{table}");
    assert!(table.contains(&format!("saddr {new_range}")), "{table}");
    ping(&netns_c, gateway);
    net.detach(&id("new-c")).await.unwrap();
}
