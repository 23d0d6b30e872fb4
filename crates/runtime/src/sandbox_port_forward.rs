//! PortForward: a TCP connection to a port on localhost inside a pod's network
//! namespace, made on a thread that joined it (`netns_thread`): the socket stays in
//! the namespace it was made in.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{NamespaceMode, PodRecord};
use crate::netns_thread::run_in_netns;
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
        let pod = self.ready_pod(pod_sandbox_id)?;
        let netns = network_namespace(&pod)?;
        let port_forward_err = |source| RuntimeError::PortForward {
            id: pod_sandbox_id.to_owned(),
            port,
            source,
        };
        let stream = run_in_netns(netns, "port-forward", move || connect_loopback(port))
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
    match pod.network_namespace_path() {
        Some(path) => Ok(Some(path)),
        None => Err(RuntimeError::FailedPrecondition(format!(
            "pod {} has no network namespace pinned",
            pod.id
        ))),
    }
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
