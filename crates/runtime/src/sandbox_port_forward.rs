//! PortForward: a TCP connection to a port on localhost inside a pod's network
//! namespace. The socket is made on a short-lived thread that joins the pod's pinned
//! namespace (setns changes only the calling thread's namespace, and a socket stays in
//! the namespace it was made in); the thread exits right after.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::{NamespaceMode, PodRecord, PodState};
use crate::{Runtime, RuntimeError};

/// Loopback answers at once; this only bounds a listener whose backlog is full.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    /// Connects to `port` on localhost in the pod's network namespace (the host's for a
    /// pod with host networking): 127.0.0.1 first, then ::1 if that was refused.
    pub async fn port_forward_connect(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError> {
        let pod = self
            .pods
            .get(pod_sandbox_id)
            .filter(|pod| pod.state != PodState::Creating)
            .ok_or_else(|| RuntimeError::NotFound {
                kind: "pod",
                id: pod_sandbox_id.to_owned(),
            })?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod {pod_sandbox_id} is not ready"
            )));
        }
        let netns = network_namespace(&pod)?;
        let port_forward_err = |source| RuntimeError::PortForward {
            id: pod_sandbox_id.to_owned(),
            port,
            source,
        };
        let stream = connect_in_namespace(netns, port)
            .await
            .map_err(port_forward_err)?;
        stream.set_nonblocking(true).map_err(port_forward_err)?;
        tokio::net::TcpStream::from_std(stream).map_err(port_forward_err)
    }
}

/// The pinned network namespace of the pod; `None` for host networking.
fn network_namespace(pod: &PodRecord) -> Result<Option<PathBuf>, RuntimeError> {
    if pod.spec.namespaces.network == NamespaceMode::Node {
        return Ok(None);
    }
    match &pod.namespace_dir {
        Some(dir) if pod.pinned.iter().any(|p| p == "net") => Ok(Some(dir.join("net"))),
        _ => Err(RuntimeError::FailedPrecondition(format!(
            "pod {} has no network namespace pinned",
            pod.id
        ))),
    }
}

/// Connect from a dedicated thread in `netns` (the daemon's own when `None`).
async fn connect_in_namespace(
    netns: Option<PathBuf>,
    port: u16,
) -> io::Result<std::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let _ = tx.send(connect_from_this_thread(netns.as_deref(), port));
        })?;
    rx.await
        .map_err(|_| io::Error::other("the port-forward thread ended without an answer"))?
}

/// Join `netns` (this thread only; it must be a thread of its own) and connect.
fn connect_from_this_thread(netns: Option<&Path>, port: u16) -> io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        join_network_namespace(path)?;
    }
    connect_loopback(port)
}

fn join_network_namespace(path: &Path) -> io::Result<()> {
    let context =
        |op: &str, e: io::Error| io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| context("open", e))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| context("setns", e.into()))
}

/// 127.0.0.1, then ::1 when IPv4 refused (a server listening on IPv6 only); the IPv4
/// error when both fail.
fn connect_loopback(port: u16) -> io::Result<std::net::TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| err)
        }
        other => other,
    }
}
