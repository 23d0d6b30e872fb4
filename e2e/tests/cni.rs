//! CNI mode with Debian's real plugins (bridge, host-local, loopback) plus a
//! recording plugin of the test's own that shows what the runtime passed (the
//! portMappings capability, CNI_ARGS, DEL order). Debian's portmap and firewall
//! plugins are not used: they edit the host's iptables chains, which tests here
//! must not touch.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use coracle_e2e::{Daemon, DaemonOptions, require_root};
use k8s_cri::v1;

const RECORDING_PLUGIN: &str = r#"#!/usr/bin/python3
# A chained CNI plugin that records its input and passes the previous result on.
import json, os, sys
config = json.load(sys.stdin)
with open(config["record"], "a") as record:
    record.write(json.dumps({
        "command": os.environ["CNI_COMMAND"],
        "netns": os.environ.get("CNI_NETNS", ""),
        "args": os.environ.get("CNI_ARGS", ""),
        "config": config,
    }) + "\n")
if os.environ["CNI_COMMAND"] == "ADD":
    print(json.dumps(config.get("prevResult", {})))
"#;

struct CniSetup {
    conf_dir: PathBuf,
    bin_dir: PathBuf,
    record: PathBuf,
    ipam_dir: PathBuf,
    bridge: String,
    subnet: String,
}

impl CniSetup {
    fn new(dir: &Path, slot_source: &Daemon) -> Self {
        let slot = slot_source
            .network()
            .bridge()
            .trim_start_matches("coe2e")
            .to_owned();
        let setup = Self {
            conf_dir: dir.join("net.d"),
            bin_dir: dir.join("bin"),
            record: dir.join("record.jsonl"),
            ipam_dir: dir.join("ipam"),
            bridge: format!("cnie2e{slot}"),
            // The daemon's own lease gives a /24 no other test uses.
            subnet: slot_source.network().subnet_v4(),
        };
        fs::create_dir_all(&setup.bin_dir).unwrap();
        let plugin = setup.bin_dir.join("coracle-record");
        fs::write(&plugin, RECORDING_PLUGIN).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
        setup
    }

    fn write_conflist(&self) {
        fs::create_dir_all(&self.conf_dir).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "coracle-e2e",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    // No gateway and no masquerade: the plugin would otherwise enable
                    // forwarding and edit iptables on the host.
                    "isGateway": false,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": self.ipam_dir,
                    }
                },
                {
                    "type": "coracle-record",
                    "record": self.record,
                    "capabilities": {"portMappings": true}
                }
            ]
        });
        fs::write(
            self.conf_dir.join("10-coracle-e2e.conflist"),
            conflist.to_string(),
        )
        .unwrap();
    }

    fn daemon_config(&self) -> String {
        format!(
            "[network]\nmode = \"cni\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"/usr/lib/cni\", \"{}\"]\n",
            self.conf_dir.display(),
            self.bin_dir.display()
        )
    }

    fn records(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// host-local's lease files: one per address in use.
    fn leases(&self) -> Vec<String> {
        fs::read_dir(self.ipam_dir.join("coracle-e2e"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for CniSetup {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn pod_config(name: &str) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "cni-e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn cni_mode_with_the_debian_plugins() {
    require_root();
    // A first daemon only lends its test network lease (bridge-free here).
    let holder = Daemon::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), &holder);
    let mut daemon = Daemon::start_with(DaemonOptions {
        config_toml: Some(cni.daemon_config()),
        ..Default::default()
    })
    .await
    .unwrap();

    let condition = daemon.condition("NetworkReady").await.unwrap();
    assert!(!condition.status, "ready without a CNI config");
    assert!(
        condition.message.contains("no CNI network config"),
        "{}",
        condition.message
    );
    cni.write_conflist();
    assert!(daemon.condition("NetworkReady").await.unwrap().status);
    // kubelet's pod CIDR is the CNI config's business here: accepted, nothing changes.
    daemon.update_pod_cidr("10.123.0.0/24").await.unwrap();
    let info = daemon.status_info().await.unwrap();
    let network: serde_json::Value = serde_json::from_str(&info["network"]).unwrap();
    assert_eq!(network["mode"], "cni", "{network}");
    assert!(daemon.update_pod_cidr("10.123.0.0/33").await.is_err());

    let mut client = daemon.runtime_client().await.unwrap();
    let mut web = pod_config("web");
    web.port_mappings = vec![v1::PortMapping {
        protocol: v1::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 18080,
        host_ip: String::new(),
    }];
    let mut ids = Vec::new();
    let mut ips = Vec::new();
    for config in [web, pod_config("db")] {
        let id = client
            .run_pod_sandbox(v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let status = client
            .pod_sandbox_status(v1::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        ips.push(status.status.unwrap().network.unwrap().ip);
        ids.push(id);
    }
    let prefix = cni.subnet.rsplit_once('.').unwrap().0.to_owned();
    assert!(
        ips.iter().all(|ip| ip.starts_with(&prefix)),
        "{ips:?} not in {}",
        cni.subnet
    );
    assert_ne!(ips[0], ips[1]);
    assert_eq!(cni.leases().len(), 2);

    // What the runtime passed: the capability only to the plugin that declared it,
    // the previous result chained, kubelet's CNI_ARGS.
    let adds: Vec<_> = cni
        .records()
        .into_iter()
        .filter(|r| r["command"] == "ADD")
        .collect();
    assert_eq!(adds.len(), 2);
    let web_add = &adds[0];
    assert_eq!(
        web_add["config"]["runtimeConfig"]["portMappings"][0]["hostPort"],
        18080
    );
    assert_eq!(
        web_add["config"]["prevResult"]["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap(),
        ips[0]
    );
    assert!(
        web_add["args"]
            .as_str()
            .unwrap()
            .contains("K8S_POD_NAME=web")
    );
    assert!(adds[1]["config"].get("runtimeConfig").is_none());

    // Stop runs DEL (the recording plugin first: reverse order) and frees the lease,
    // even when the namespace is already gone.
    let db_ns = PathBuf::from(format!(
        "{}/pods/{}/ns/net",
        daemon.state_dir().display(),
        ids[1]
    ));
    nix::mount::umount2(&db_ns, nix::mount::MntFlags::MNT_DETACH).unwrap();
    for id in &ids {
        client
            .stop_pod_sandbox(v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    let dels: Vec<_> = cni
        .records()
        .into_iter()
        .filter(|r| r["command"] == "DEL")
        .collect();
    assert_eq!(dels.len(), 2);
    assert_eq!(
        dels[1]["netns"], "",
        "DEL for a gone namespace must not name it"
    );
    assert!(
        cni.leases().is_empty(),
        "addresses not freed: {:?}",
        cni.leases()
    );
    for id in &ids {
        client
            .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    daemon.stop().await.unwrap();
    drop(holder);
}
