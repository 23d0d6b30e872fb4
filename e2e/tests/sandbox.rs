//! Pod sandboxes through CRI, as kubelet drives them: run, status, list, stop,
//! remove; repeats, bad input, and what a crash or reboot leaves.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};

use coracle_e2e::daemon::mounts_under;
use coracle_e2e::pod_net::{in_netns, namespace_dir, pod_ip, read_from, serve_once};
use coracle_e2e::{Daemon, require_root};
use k8s_cri::v1;
use tonic::Code;

fn pod_config(name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: format!("/var/log/pods/e2e_{name}"),
        dns_config: Some(v1::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["e2e.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("kubernetes.io/config.seen".to_string(), "now".to_string())].into(),
        linux: Some(v1::LinuxPodSandboxConfig {
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string(),
            )]
            .into(),
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

/// Joins the pinned namespaces on a fresh thread and reads what a container would.
fn inside_pod(ns_dir: &Path) -> (String, Vec<String>, String) {
    let ns_dir = ns_dir.to_owned();
    std::thread::spawn(move || {
        for kind in ["net", "uts", "ipc"] {
            let file = fs::File::open(ns_dir.join(kind)).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::empty()).unwrap();
        }
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        let devices = fs::read_to_string("/proc/thread-self/net/dev")
            .unwrap()
            .lines()
            .skip(2)
            .map(|l| l.split(':').next().unwrap().trim().to_owned())
            .collect();
        let port_start =
            fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
        (hostname, devices, port_start.trim().to_owned())
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn pod_lifecycle_run_status_stop_remove() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let id = daemon.run_pod(pod_config("web")).await.unwrap();
    assert_eq!(id.len(), 64);

    let response = daemon.pod_status(&id).await.unwrap();
    let status = response.status.as_ref().unwrap();
    assert_eq!(status.state, v1::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.metadata.as_ref().unwrap().name, "web");
    assert_eq!(status.labels["app"], "web");
    assert_eq!(status.annotations["kubernetes.io/config.seen"], "now");
    assert!(status.created_at > 0);
    let ns_dir = namespace_dir(&response);
    let (hostname, devices, port_start) = inside_pod(&ns_dir);
    assert_eq!(hostname, "web-host");
    assert_eq!(devices, ["lo", "eth0"]);
    assert_eq!(port_start, "80", "sysctl not applied in the pod");
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
    let files = PathBuf::from(info["podFilesDir"].as_str().unwrap());
    assert_eq!(
        fs::read_to_string(files.join("resolv.conf")).unwrap(),
        "search e2e.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert_eq!(
        fs::read_to_string(files.join("hostname")).unwrap(),
        "web-host\n"
    );
    assert_eq!(daemon.list_pod_ids().await.unwrap(), vec![id.clone()]);

    daemon.stop_pod(&id).await.unwrap();
    let status = daemon.pod_status(&id).await.unwrap().status.unwrap();
    assert_eq!(status.state, v1::PodSandboxState::SandboxNotready as i32);
    assert!(
        mounts_under(&ns_dir).is_empty(),
        "namespaces still pinned after stop"
    );
    // StopPodSandbox is idempotent.
    daemon.stop_pod(&id).await.unwrap();

    daemon.remove_pod(&id).await.unwrap();
    assert!(daemon.list_pod_ids().await.unwrap().is_empty());
    let err = daemon.pod_status(&id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!files.exists(), "pod files left after remove");
    // RemovePodSandbox of an id that is gone succeeds, as the CRI requires.
    daemon.remove_pod(&id).await.unwrap();
    daemon.stop().await.unwrap();
    assert!(mounts_under(daemon.dir()).is_empty());
}

#[tokio::test]
async fn repeated_request_gets_the_same_pod_and_a_different_one_is_refused() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let (first, second) = tokio::join!(
        daemon.run_pod(pod_config("twice")),
        daemon.run_pod(pod_config("twice"))
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second, "two identical requests made two pods");
    assert_eq!(daemon.run_pod(pod_config("twice")).await.unwrap(), first);
    assert_eq!(daemon.list_pod_ids().await.unwrap().len(), 1);

    let mut different = pod_config("twice");
    different.hostname = "other".into();
    let err = daemon.run_pod(different).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first), "{}", err.message());

    daemon.remove_pod(&first).await.unwrap();
    // Once removed, the name is free for a new pod.
    let again = daemon.run_pod(pod_config("twice")).await.unwrap();
    assert_ne!(again, first);
    daemon.remove_pod(&again).await.unwrap();
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn bad_pod_configs_are_refused_and_leave_nothing() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let mut no_uid = pod_config("bad");
    no_uid.metadata.as_mut().unwrap().uid.clear();
    let mut node_sysctl = pod_config("bad");
    node_sysctl
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("kernel.panic".into(), "1".into());
    let mut bad_hostname = pod_config("bad");
    bad_hostname.hostname = "../etc".into();
    for (config, needle) in [
        (no_uid, "metadata.uid"),
        (node_sysctl, "kernel.panic"),
        (bad_hostname, "hostname"),
    ] {
        let err = daemon.run_pod(config).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
    let err = daemon
        .runtime_client()
        .await
        .unwrap()
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod_config("bad")),
            runtime_handler: "no-such-handler".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("no-such-handler"));
    assert!(daemon.list_pod_ids().await.unwrap().is_empty());
    assert!(mounts_under(daemon.dir()).is_empty());
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn host_network_pod_keeps_the_node_network_and_hostname() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let mut config = pod_config("hostnet");
    config.linux.as_mut().unwrap().sysctls.clear();
    config
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = v1::NamespaceMode::Node as i32;
    let id = daemon.run_pod(config).await.unwrap();
    let response = daemon.pod_status(&id).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
    assert_eq!(info["pinnedNamespaces"], serde_json::json!(["ipc"]));
    let files = PathBuf::from(info["podFilesDir"].as_str().unwrap());
    let node = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        fs::read_to_string(files.join("hostname")).unwrap(),
        format!("{node}\n")
    );
    daemon.remove_pod(&id).await.unwrap();
    daemon.stop().await.unwrap();
}

/// Pods outlive the daemon; a pod caught mid-creation by a crash is rolled back;
/// a ready pod whose namespaces vanished (reboot) turns NotReady.
#[tokio::test]
async fn restart_keeps_pods_and_converges_after_a_crash() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let kept = daemon.run_pod(pod_config("kept")).await.unwrap();
    let half_made = daemon.run_pod(pod_config("half")).await.unwrap();
    let rebooted = daemon.run_pod(pod_config("rebooted")).await.unwrap();
    let half_ns = namespace_dir(&daemon.pod_status(&half_made).await.unwrap());
    let rebooted_ns = namespace_dir(&daemon.pod_status(&rebooted).await.unwrap());
    daemon.crash().await.unwrap();

    // As if the crash hit RunPodSandbox before it marked the pod ready.
    let record = daemon.root_dir().join(format!("pods/{half_made}.json"));
    let text = fs::read_to_string(&record).unwrap();
    fs::write(
        &record,
        text.replace("\"state\": \"ready\"", "\"state\": \"creating\""),
    )
    .unwrap();
    // As if the node rebooted under this pod: its tmpfs mounts are gone.
    for point in mounts_under(&rebooted_ns) {
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }

    daemon.restart().await.unwrap();
    let mut ids = daemon.list_pod_ids().await.unwrap();
    ids.sort();
    let mut expected = vec![kept.clone(), rebooted.clone()];
    expected.sort();
    assert_eq!(ids, expected, "the half-made pod was not rolled back");
    assert!(
        mounts_under(&half_ns).is_empty(),
        "half-made pod's namespaces leaked"
    );
    let state = |status: v1::PodSandboxStatusResponse| status.status.unwrap().state;
    assert_eq!(
        state(daemon.pod_status(&kept).await.unwrap()),
        v1::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(
        state(daemon.pod_status(&rebooted).await.unwrap()),
        v1::PodSandboxState::SandboxNotready as i32
    );
    // The kept pod's name is still reserved for it after the restart.
    assert_eq!(daemon.run_pod(pod_config("kept")).await.unwrap(), kept);

    // A clean shutdown leaves pods alone.
    daemon.restart().await.unwrap();
    let kept_ns = namespace_dir(&daemon.pod_status(&kept).await.unwrap());
    assert!(
        !mounts_under(&kept_ns).is_empty(),
        "daemon shutdown touched a pod"
    );
    daemon.remove_pod(&kept).await.unwrap();
    daemon.remove_pod(&rebooted).await.unwrap();
    daemon.stop().await.unwrap();
    assert!(mounts_under(daemon.dir()).is_empty());
}

fn memory_cgroup(path: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'))
}

/// The pod cgroup is made at `cgroup_parent` when missing and removed with the pod;
/// one kubelet made first is adopted and left for kubelet to remove.
#[tokio::test]
async fn pod_cgroup_is_made_at_cgroup_parent_and_removed_only_if_ours() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let base = format!("coracle-e2e-{}", std::process::id());
    let ours = format!("/{base}/pod-ours");
    let kubelets = format!("/{base}/pod-kubelet");
    fs::create_dir_all(memory_cgroup(&kubelets)).unwrap();

    let mut config = pod_config("cg-ours");
    config.linux.as_mut().unwrap().cgroup_parent = ours.clone();
    let ours_id = daemon.run_pod(config).await.unwrap();
    let mut config = pod_config("cg-kubelet");
    config.linux.as_mut().unwrap().cgroup_parent = kubelets.clone();
    let kubelets_id = daemon.run_pod(config).await.unwrap();
    assert!(memory_cgroup(&ours).is_dir(), "pod cgroup not made");
    assert!(Path::new("/sys/fs/cgroup/pids").join(&ours[1..]).is_dir());

    daemon.remove_pod(&ours_id).await.unwrap();
    daemon.remove_pod(&kubelets_id).await.unwrap();
    let ours_gone = !memory_cgroup(&ours).exists();
    let kubelets_kept = memory_cgroup(&kubelets).is_dir();
    // Clean up what the test made, in every hierarchy, before asserting.
    for entry in fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
    {
        for dir in [
            entry.path().join(&ours[1..]),
            entry.path().join(&kubelets[1..]),
        ] {
            let _ = fs::remove_dir(dir);
        }
        let _ = fs::remove_dir(entry.path().join(&base));
    }
    assert!(ours_gone, "the pod cgroup Coracle made was not removed");
    assert!(kubelets_kept, "a cgroup kubelet made was removed");
    daemon.stop().await.unwrap();
}

fn host_veth(status: &v1::PodSandboxStatusResponse) -> String {
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    info["network"]["host_veth"].as_str().unwrap().to_owned()
}

/// Two pods on the built-in network talk TCP; stopping one frees its address and its
/// veth; a daemon restart keeps the other's network working.
#[tokio::test]
async fn pods_talk_tcp_and_stop_frees_the_network() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let server = daemon.run_pod(pod_config("server")).await.unwrap();
    let client = daemon.run_pod(pod_config("client")).await.unwrap();
    let server_status = daemon.pod_status(&server).await.unwrap();
    let client_status = daemon.pod_status(&client).await.unwrap();
    let (server_ip, client_ip) = (pod_ip(&server_status), pod_ip(&client_status));
    assert_ne!(server_ip, client_ip);
    let subnet_prefix = daemon
        .network()
        .subnet_v4()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    assert!(
        server_ip.starts_with(&subnet_prefix),
        "{server_ip} not in {subnet_prefix}.0/24"
    );

    let server_ns = namespace_dir(&server_status).join("net");
    let client_ns = namespace_dir(&client_status).join("net");
    let listening = serve_once(server_ns.clone(), "0.0.0.0", 8080, "hello from server");
    let target = format!("{server_ip}:8080");
    let reply = in_netns(client_ns.clone(), move || read_from(target))
        .join()
        .unwrap();
    assert_eq!(reply, "hello from server");
    listening.join().unwrap();

    // A restart keeps the pods' network.
    daemon.restart().await.unwrap();
    assert_eq!(
        pod_ip(&daemon.pod_status(&server).await.unwrap()),
        server_ip
    );
    let listening = serve_once(server_ns, "0.0.0.0", 8081, "still here");
    let target = format!("{server_ip}:8081");
    let reply = in_netns(client_ns, move || read_from(target))
        .join()
        .unwrap();
    assert_eq!(reply, "still here");
    listening.join().unwrap();

    let veth = host_veth(&client_status);
    assert!(Path::new("/sys/class/net").join(&veth).exists());
    daemon.stop_pod(&client).await.unwrap();
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "veth left after stop"
    );
    assert_eq!(pod_ip(&daemon.pod_status(&client).await.unwrap()), "");
    daemon.remove_pod(&client).await.unwrap();
    daemon.remove_pod(&server).await.unwrap();
    daemon.stop().await.unwrap();
}

/// A hostPort on the node reaches the pod (through the bridge address: DNAT from
/// 127.0.0.1 would need route_localnet, which exposes node-local services, CVE-2020-8558).
#[tokio::test]
async fn host_port_reaches_the_pod() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = pod_config("web");
    config.port_mappings = vec![v1::PortMapping {
        protocol: v1::Protocol::Tcp as i32,
        container_port: 80,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let id = daemon.run_pod(config).await.unwrap();
    let status = daemon.pod_status(&id).await.unwrap();
    let listening = serve_once(
        namespace_dir(&status).join("net"),
        "0.0.0.0",
        80,
        "via hostPort",
    );
    let gateway = {
        let subnet = daemon.network().subnet_v4();
        format!("{}.1", subnet.rsplit_once('.').unwrap().0)
    };
    let reply = read_from(format!("{gateway}:{host_port}"));
    assert_eq!(reply, "via hostPort");
    listening.join().unwrap();
    daemon.remove_pod(&id).await.unwrap();
    let table = std::process::Command::new("nft")
        .args(["list", "table", "inet", &daemon.network().nft_table()])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&table.stdout);
    assert!(
        !rules.contains(&host_port.to_string()),
        "hostPort rule left:\n{rules}"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn twenty_parallel_pods_get_distinct_addresses() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let runs = (0..20).map(|i| daemon.run_pod(pod_config(&format!("par-{i}"))));
    let mut ids = Vec::new();
    for result in futures_util::future::join_all(runs).await {
        ids.push(result.unwrap());
    }
    let mut ips = Vec::new();
    for id in &ids {
        ips.push(pod_ip(&daemon.pod_status(id).await.unwrap()));
    }
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 20, "{ips:?}");
    for id in &ids {
        daemon.remove_pod(id).await.unwrap();
    }
    daemon.stop().await.unwrap();
}

/// A RunPodSandbox that fails after the network is attached (a cgroup_parent with
/// `..`, refused when the cgroup is made) leaves no namespace, veth, address or cgroup.
#[tokio::test]
async fn failure_half_way_leaves_nothing_behind() {
    require_root();
    let mut daemon = Daemon::start().await.unwrap();
    let mut config = pod_config("half");
    config.linux.as_mut().unwrap().cgroup_parent = "/coracle-e2e-half/../escape".into();
    let err = daemon.run_pod(config).await.unwrap_err();
    assert!(err.message().contains("cgroup"), "{}", err.message());
    assert!(daemon.list_pod_ids().await.unwrap().is_empty());
    assert!(mounts_under(daemon.dir()).is_empty(), "namespaces left");
    let bridge = daemon.network().bridge();
    let ports: Vec<_> = fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .unwrap()
        .collect();
    assert!(ports.is_empty(), "veth left on the bridge: {ports:?}");
    let leases: Vec<_> = walk_files(&daemon.root_dir().join("network/ipam"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
        })
        .collect();
    assert!(leases.is_empty(), "addresses still allocated: {leases:?}");
    assert!(!Path::new("/sys/fs/cgroup/memory/escape").exists());
    // The name is free again.
    let id = daemon.run_pod(pod_config("half")).await.unwrap();
    daemon.remove_pod(&id).await.unwrap();
    daemon.stop().await.unwrap();
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}
