//! The rtnetlink calls the bridge network needs, on a connection bound either to
//! the daemon's network namespace or to a pod's.
//!
//! A netlink socket acts on the namespace it was created in, whatever thread
//! later uses it. So entering a pod's namespace takes one short-lived std thread
//! that setns()es, opens the socket and exits; all the requests then run on the
//! caller's tokio runtime. No tokio worker thread ever changes namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use nix::sched::{CloneFlags, setns};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use crate::error::NetError;

/// A link as the bridge network cares about it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub kind: Option<InfoKind>,
    pub alias: Option<String>,
    /// The bridge (or other master) the link is plugged into.
    pub controller: Option<u32>,
    /// Its hardware address.
    pub mac: Option<Vec<u8>>,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            up: message.header.flags.contains(LinkFlags::Up),
            kind: None,
            alias: None,
            controller: None,
            mac: None,
        };
        for attr in &message.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::Address(mac) => link.mac = Some(mac.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.clone()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link
    }
}

/// The kernel's errno in a netlink error reply, positive.
pub fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

fn netlink_error(
    op: &'static str,
    target: impl ToString,
) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let target = target.to_string();
    move |source| NetError::Netlink { op, target, source }
}

/// A netlink connection; its background task ends when this is dropped.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the caller's own network namespace.
    pub fn connect() -> Result<Self, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NetError::NetlinkSocket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A connection acting inside the network namespace at `netns_path`.
    pub async fn connect_in_netns(netns: &File, netns_path: &Path) -> Result<Self, NetError> {
        let netns = netns.try_clone().map_err(|source| NetError::OpenNetns {
            path: netns_path.to_owned(),
            source,
        })?;
        let runtime = tokio::runtime::Handle::current();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let path = netns_path.to_owned();
        std::thread::Builder::new()
            .name("coracle-netns".into())
            .spawn(move || {
                let result = setns(&netns, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetError::EnterNetns { path, source })
                    .and_then(|()| {
                        // Registers the socket with the caller's runtime; the socket
                        // stays in the pod's namespace after this thread is gone.
                        let _entered = runtime.enter();
                        rtnetlink::new_connection().map_err(NetError::NetlinkSocket)
                    });
                let _ = sender.send(result);
            })
            .map_err(NetError::NetlinkSocket)?;
        let (connection, handle, _) = receiver
            .await
            .map_err(|_| NetError::NetnsThread(netns_path.to_owned()))??;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(message) => Ok(message.as_ref().map(Link::from_message)),
            Err(err) if errno_of(&err) == Some(ENODEV) => Ok(None),
            Err(source) => Err(NetError::Netlink {
                op: "look up interface",
                target: name.to_owned(),
                source,
            }),
        }
    }

    pub async fn all_links(&self) -> Result<Vec<Link>, NetError> {
        let messages: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink_error("list interfaces", "all"))?;
        Ok(messages.iter().map(Link::from_message).collect())
    }

    pub async fn require_link(&self, name: &str) -> Result<Link, NetError> {
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetError::LinkNotFound(name.to_owned()))
    }

    pub async fn create_bridge(&self, name: &str, mtu: u32) -> Result<(), NetError> {
        let message = LinkBridge::new(name).mtu(mtu).build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(netlink_error("create bridge", name))
    }

    /// Sets the link's hardware address to the one it has. For a bridge this is
    /// not a no-op: a bridge whose address was never set takes the lowest of its
    /// ports' and changes it when that port goes; one set stays.
    pub async fn pin_mac(&self, link: &Link) -> Result<(), NetError> {
        let Some(mac) = link.mac.clone() else {
            return Ok(());
        };
        let message = LinkUnspec::new_with_index(link.index).address(mac).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(netlink_error("set the hardware address of", &link.name))
    }

    pub async fn set_up(&self, link: &Link) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(link.index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(netlink_error("bring up", &link.name))
    }

    /// Adds `addr/prefix`, replacing an equal one so a repeat is harmless. IPv6
    /// addresses skip duplicate address detection: the subnet is ours, and DAD
    /// would keep the address unusable for a second or two after attach.
    pub async fn add_address(&self, link: &Link, addr: IpAddr, prefix: u8) -> Result<(), NetError> {
        let mut request = self
            .handle
            .address()
            .add(link.index, addr, prefix)
            .replace();
        if addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
        }
        request.execute().await.map_err(netlink_error(
            "add address",
            format!("{addr}/{prefix} on {}", link.name),
        ))
    }

    pub async fn addresses_of(&self, link: &Link) -> Result<Vec<IpAddr>, NetError> {
        Ok(self
            .address_messages(link)
            .await?
            .iter()
            .filter_map(address_of)
            .collect())
    }

    /// Deletes `addr/prefix` from the link; fine when it is not there.
    pub async fn delete_address(
        &self,
        link: &Link,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<(), NetError> {
        let found = self
            .address_messages(link)
            .await?
            .into_iter()
            .find(|message| {
                message.header.prefix_len == prefix && address_of(message) == Some(addr)
            });
        let Some(message) = found else {
            return Ok(());
        };
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            // Deleted meanwhile.
            Err(err) if errno_of(&err) == Some(nix::errno::Errno::EADDRNOTAVAIL as i32) => Ok(()),
            Err(err) => Err(netlink_error(
                "delete address",
                format!("{addr}/{prefix} on {}", link.name),
            )(err)),
        }
    }

    async fn address_messages(&self, link: &Link) -> Result<Vec<AddressMessage>, NetError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(netlink_error("list addresses", &link.name))
    }

    /// Creates a veth pair whose peer is born inside the namespace at `netns`
    /// under its final name: it never appears in the host namespace, so there is
    /// no temporary name to clash with and nothing to move afterwards.
    pub async fn create_veth_into_netns(
        &self,
        host_name: &str,
        peer_name: &str,
        netns: &File,
        mtu: u32,
    ) -> Result<(), NetError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .mtu(mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let message = LinkVeth::new(host_name, peer_name)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(netlink_error("create veth", host_name))
    }

    /// Labels the host veth with its pod, plugs it into the bridge, brings it
    /// up, and turns on hairpin mode: a pod reaching a Service or hostPort that
    /// DNATs back to itself needs the bridge to send the frame out the port it
    /// came in by (kubelet's hairpin-veth, the CNI bridge plugin's hairpinMode).
    pub async fn attach_to_bridge(
        &self,
        veth: &Link,
        bridge: &Link,
        pod_id: &str,
    ) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(veth.index)
            .alias(pod_id)
            .controller(bridge.index)
            .up()
            .build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(netlink_error(
                "attach to bridge",
                format!("{} to {}", veth.name, bridge.name),
            ))?;
        let hairpin = LinkBridgePort::new(veth.index).hairpin(true).build();
        self.handle
            .link()
            .set_port(hairpin)
            .execute()
            .await
            .map_err(netlink_error("set hairpin mode", &veth.name))
    }

    /// Deletes a link; one already gone is fine.
    pub async fn delete_link(&self, link: &Link) -> Result<(), NetError> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            Err(err) if errno_of(&err) == Some(ENODEV) => Ok(()),
            Err(source) => Err(NetError::Netlink {
                op: "delete interface",
                target: link.name.clone(),
                source,
            }),
        }
    }

    pub async fn add_default_route_v4(
        &self,
        link: &Link,
        gateway: Ipv4Addr,
    ) -> Result<(), NetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(link.index)
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(netlink_error(
                "add default route",
                format!("via {gateway} dev {}", link.name),
            ))
    }

    pub async fn add_default_route_v6(
        &self,
        link: &Link,
        gateway: Ipv6Addr,
    ) -> Result<(), NetError> {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .output_interface(link.index)
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(netlink_error(
                "add default route",
                format!("via {gateway} dev {}", link.name),
            ))
    }
}

/// What the kernel answers for a link name or index it does not know.
const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;

/// Opens the namespace file up front so a bad path is reported as such, and so
/// the same fd can both move the veth peer and be entered.
pub fn open_netns(path: &Path) -> Result<File, NetError> {
    File::open(path).map_err(|source| NetError::OpenNetns {
        path: path.to_owned(),
        source,
    })
}

fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    message.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Address(addr) => Some(*addr),
        _ => None,
    })
}
