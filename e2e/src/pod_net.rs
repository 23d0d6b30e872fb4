//! Reaching into a pod's network from a test: its pinned namespaces and addresses
//! from PodSandboxStatus, and one-shot TCP servers and clients inside or outside it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use k8s_cri::v1;

/// The pod's pinned namespace dir, from the verbose PodSandboxStatus info.
pub fn namespace_dir(status: &v1::PodSandboxStatusResponse) -> PathBuf {
    let info: serde_json::Value =
        serde_json::from_str(&status.info["info"]).expect("verbose status info is JSON");
    PathBuf::from(
        info["namespaceDir"]
            .as_str()
            .expect("the status info names the namespace dir"),
    )
}

/// The pod's first IP ("" when it has none).
pub fn pod_ip(status: &v1::PodSandboxStatusResponse) -> String {
    pod_ips(status).into_iter().next().unwrap_or_default()
}

/// Every pod IP: `ip` then `additional_ips` (IPv4 first on dual stack).
pub fn pod_ips(status: &v1::PodSandboxStatusResponse) -> Vec<String> {
    let network = status
        .status
        .as_ref()
        .and_then(|status| status.network.as_ref());
    network
        .map(|network| {
            std::iter::once(network.ip.clone())
                .chain(network.additional_ips.iter().map(|ip| ip.ip.clone()))
                .filter(|ip| !ip.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `work` on a fresh thread that has joined the network namespace at `netns`:
/// sockets it makes live in the pod.
pub fn in_netns<T: Send + 'static>(
    netns: PathBuf,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let file = std::fs::File::open(&netns).expect("open the pod's network namespace");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("join the pod's network namespace");
        work()
    })
}

/// A one-shot TCP server in the pod, listening on `bind_ip` ("::" takes IPv4 too):
/// answers the first connection with `reply`.
pub fn serve_once(
    netns: PathBuf,
    bind_ip: &'static str,
    port: u16,
    reply: &'static str,
) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_netns(netns, move || {
        let listener = std::net::TcpListener::bind((bind_ip, port)).expect("listen in the pod");
        ready_tx.send(()).expect("the test waits for the server");
        let (mut stream, _) = listener.accept().expect("accept in the pod");
        stream
            .write_all(reply.as_bytes())
            .expect("reply from the pod");
    });
    ready_rx
        .recv()
        .expect("the server thread started listening");
    server
}

/// Everything a TCP server at `address` ("ip:port" or "[ip6]:port") sends.
pub fn read_from(address: String) -> String {
    let mut stream = std::net::TcpStream::connect_timeout(
        &address.parse().expect("a socket address"),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("connect {address}: {e}"));
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .unwrap_or_else(|e| panic!("read from {address}: {e}"));
    reply
}
