//! Pod networking: holding a pod's namespaces without a pause container, and the
//! built-in bridge network (rtnetlink for links, addresses and routes; Coracle's
//! own nftables table for masquerade and hostPorts).

pub mod bridge;
pub mod cni;
pub mod error;
pub mod ipam;
mod netlink;
pub mod nft;
pub mod pin;
pub mod subnet;

pub use bridge::{BridgeConfig, BridgeNetwork, PodNetwork, PodSubnetsSource, veth_name};
pub use cni::{CniError, CniNetwork, CniPodInfo, CniPortMapping};
pub use error::NetError;
pub use nft::{HostPort, Proto};
pub use pin::{
    NamespaceKind, PinError, PinSetup, PinnedNamespaces, pin_namespaces, unpin_namespaces,
    validate_sysctl,
};
pub use subnet::{PodSubnets, Subnet};
