//! A CIDR subnet (IPv4 or IPv6) and the host addresses in it, in u128 arithmetic
//! so both families share one code path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subnet {text:?}: {reason}")]
pub struct SubnetError {
    pub text: String,
    pub reason: &'static str,
}

impl Subnet {
    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    /// The first host address: the bridge's address and the pods' gateway.
    pub fn gateway(&self) -> IpAddr {
        self.address_at(self.network_bits() + 1)
    }

    /// Addresses a pod may get, as the inclusive range of their integer values:
    /// not the network address, not the gateway, not the last address (the IPv4
    /// broadcast; left out for IPv6 too, so both families behave alike).
    pub fn pod_range(&self) -> (u128, u128) {
        let network = self.network_bits();
        (network + 2, network + self.size() - 2)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv4() == self.is_ipv4() && bits(addr) & self.mask() == self.network_bits()
    }

    /// Whether the two share an address (one then holds the other).
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The address whose integer value is `value` (which must be of this family).
    pub fn address_at(&self, value: u128) -> IpAddr {
        match self.network {
            // Truncation is intended: IPv4 values come from an IPv4 subnet.
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }

    pub fn value_of(addr: IpAddr) -> u128 {
        bits(addr)
    }

    fn network_bits(&self) -> u128 {
        bits(self.network)
    }

    fn width(&self) -> u8 {
        if self.is_ipv4() { 32 } else { 128 }
    }

    /// Number of addresses in the subnet; at least 4 (see `FromStr`).
    fn size(&self) -> u128 {
        1u128 << (self.width() - self.prefix)
    }

    fn mask(&self) -> u128 {
        let host_bits = self.width() - self.prefix;
        let all = if self.is_ipv4() {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if host_bits == 128 {
            0
        } else {
            all & !((1u128 << host_bits) - 1)
        }
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason| SubnetError {
            text: text.to_owned(),
            reason,
        };
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| error("expected <address>/<prefix length>"))?;
        let network: IpAddr = addr.parse().map_err(|_| error("not an ip address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| error("prefix length is not a number"))?;
        // A gateway, one pod, and the network and last addresses need 4 addresses.
        let max_prefix = if network.is_ipv4() { 30 } else { 126 };
        // The size of an IPv6 /0 (2^128) does not fit the u128 the pool math uses.
        if prefix == 0 && network.is_ipv6() {
            return Err(error("an IPv6 prefix length of 0 is not supported"));
        }
        if prefix > max_prefix {
            return Err(error("prefix too long: no room for a gateway and a pod"));
        }
        let subnet = Subnet { network, prefix };
        if bits(network) & !subnet.mask() != 0 {
            return Err(error("host bits are set: not a network address"));
        }
        Ok(subnet)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The pod ranges of the bridge network: IPv4, IPv6, or one of each (dual stack),
/// IPv4 first. Written as kubelet sends a node's pod CIDRs: comma-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSubnets(Vec<Subnet>);

impl PodSubnets {
    pub fn new(mut subnets: Vec<Subnet>) -> Result<Self, SubnetError> {
        let text = || {
            subnets
                .iter()
                .map(Subnet::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let error = |reason| SubnetError {
            text: text(),
            reason,
        };
        if subnets.is_empty() {
            return Err(error("no pod subnet"));
        }
        if subnets.len() > 2 {
            return Err(error("at most one IPv4 and one IPv6 subnet"));
        }
        if subnets.len() == 2 && subnets[0].is_ipv4() == subnets[1].is_ipv4() {
            return Err(error(
                "two subnets of the same family: give one IPv4 and one IPv6",
            ));
        }
        subnets.sort_by_key(|subnet| !subnet.is_ipv4());
        Ok(Self(subnets))
    }

    pub fn as_slice(&self) -> &[Subnet] {
        &self.0
    }

    pub fn ipv4(&self) -> Option<Subnet> {
        self.0.iter().copied().find(Subnet::is_ipv4)
    }

    pub fn ipv6(&self) -> Option<Subnet> {
        self.0.iter().copied().find(|subnet| !subnet.is_ipv4())
    }

    /// Whether `addr` is in one of the subnets.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|subnet| subnet.contains(addr))
    }
}

impl FromStr for PodSubnets {
    type Err = SubnetError;

    /// `10.244.1.0/24`, `fd00:10:244:1::/64`, or both joined by a comma (spaces
    /// around the parts are allowed).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let subnets = text
            .split(',')
            .map(|part| part.trim().parse::<Subnet>())
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(subnets).map_err(|err| SubnetError {
            text: text.to_owned(),
            ..err
        })
    }
}

impl fmt::Display for PodSubnets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, subnet) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{subnet}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv4_subnet_has_gateway_and_pod_range() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(subnet.gateway(), ip("10.88.0.1"));
        let (first, last) = subnet.pod_range();
        assert_eq!(subnet.address_at(first), ip("10.88.0.2"));
        assert_eq!(subnet.address_at(last), ip("10.88.255.254"));
        assert!(subnet.contains(ip("10.88.7.9")));
        assert!(!subnet.contains(ip("10.89.0.1")));
        assert!(!subnet.contains(ip("fd00::1")));
        assert_eq!(subnet.to_string(), "10.88.0.0/16");
    }

    #[test]
    fn ipv6_subnet_has_gateway_and_pod_range() {
        let subnet: Subnet = "fd00:88::/64".parse().unwrap();
        assert_eq!(subnet.gateway(), ip("fd00:88::1"));
        let (first, last) = subnet.pod_range();
        assert_eq!(subnet.address_at(first), ip("fd00:88::2"));
        assert_eq!(subnet.address_at(last), ip("fd00:88::ffff:ffff:ffff:fffe"));
        assert!(subnet.contains(ip("fd00:88::abcd")));
        assert!(!subnet.contains(ip("fd00:89::1")));
    }

    #[test]
    fn bad_subnets_are_refused_with_the_reason() {
        for (text, reason) in [
            ("10.88.0.0", "expected"),
            ("10.88.0.1/16", "host bits"),
            ("10.88.0.0/31", "too long"),
            ("fd00::/127", "too long"),
            ("ten/8", "not an ip"),
            ("10.0.0.0/x", "not a number"),
        ] {
            let err = text.parse::<Subnet>().unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn overlapping_subnets_are_seen_from_either_side() {
        let wide: Subnet = "10.88.0.0/16".parse().unwrap();
        let inside: Subnet = "10.88.4.0/24".parse().unwrap();
        let apart: Subnet = "10.89.0.0/24".parse().unwrap();
        let v6: Subnet = "fd00::/64".parse().unwrap();
        assert!(wide.overlaps(&inside) && inside.overlaps(&wide));
        assert!(!wide.overlaps(&apart) && !apart.overlaps(&wide));
        assert!(!wide.overlaps(&v6));
    }

    #[test]
    fn pod_subnets_parse_as_kubelet_sends_them() {
        let dual: PodSubnets = "fd00:10::/64, 10.244.1.0/24".parse().unwrap();
        assert_eq!(dual.to_string(), "10.244.1.0/24,fd00:10::/64");
        assert_eq!(dual.ipv4().unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(dual.ipv6().unwrap().to_string(), "fd00:10::/64");
        assert!(dual.contains(ip("fd00:10::9")) && !dual.contains(ip("10.244.2.1")));
        let v6_only: PodSubnets = "fd00:10::/64".parse().unwrap();
        assert!(v6_only.ipv4().is_none());
        for (text, reason) in [
            ("", "expected"),
            ("10.1.0.0/24,10.2.0.0/24", "same family"),
            ("10.1.0.0/24,fd00::/64,fd01::/64", "at most one"),
            ("10.1.0.1/24", "host bits"),
        ] {
            let err = text.parse::<PodSubnets>().unwrap_err();
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn slash_zero_and_smallest_subnets_work() {
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        let tiny: Subnet = "10.0.0.0/30".parse().unwrap();
        assert_eq!(tiny.pod_range().0, tiny.pod_range().1);
    }
}
