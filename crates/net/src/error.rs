//! The bridge network's one error type: each variant names the interface, pod,
//! address or path that failed.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::subnet::{Subnet, SubnetError};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bridge config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error(transparent)]
    InvalidSubnet(#[from] SubnetError),
    #[error("pod id {pod_id:?}: {reason}")]
    InvalidPodId {
        pod_id: String,
        reason: &'static str,
    },
    #[error("ipam {path}: {source}")]
    Ipam { path: PathBuf, source: io::Error },
    #[error(
        "pod subnet {subnet}: its gateway {gateway} is held by pod {pod_id} of an earlier subnet; stop that pod first"
    )]
    GatewayHeldByPod {
        subnet: Subnet,
        gateway: IpAddr,
        pod_id: String,
    },
    #[error("subnet {subnet} is full: no free address for pod {pod_id}")]
    SubnetFull { subnet: String, pod_id: String },
    #[error("open a netlink socket: {0}")]
    NetlinkSocket(io::Error),
    #[error("{op} {target}: {source}")]
    Netlink {
        op: &'static str,
        target: String,
        source: rtnetlink::Error,
    },
    #[error("interface {0} not found")]
    LinkNotFound(String),
    #[error("interface {name} exists but is not a {expected}")]
    LinkNotOfKind {
        name: String,
        expected: &'static str,
    },
    #[error("veth name {name} for pod {pod_id} is taken by {owner:?}")]
    VethNameTaken {
        name: String,
        pod_id: String,
        owner: Option<String>,
    },
    #[error("open network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: io::Error },
    #[error("enter network namespace {path}: {source}")]
    EnterNetns { path: PathBuf, source: nix::Error },
    #[error("the network namespace thread for {0} died")]
    NetnsThread(PathBuf),
    #[error("hostPort {host_port}->{container_port} of the pod at {pod_ips:?}: {reason}")]
    InvalidPortMapping {
        host_port: u16,
        container_port: u16,
        pod_ips: Vec<IpAddr>,
        reason: &'static str,
    },
    #[error("run nft for table {table}: {source}")]
    NftSpawn { table: String, source: io::Error },
    #[error("nft {action} in table {table}: {stderr}")]
    Nft {
        table: String,
        action: &'static str,
        stderr: String,
    },
    #[error("write {path}: {source}")]
    Sysctl { path: String, source: io::Error },
}

impl NetError {
    /// The node's state or config rules the request out, not the request itself:
    /// a pod range whose gateway a pod holds, or one the MTU cannot carry.
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            NetError::GatewayHeldByPod { .. } | NetError::InvalidConfig { .. }
        )
    }
}
