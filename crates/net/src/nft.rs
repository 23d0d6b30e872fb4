//! Coracle's own nftables table: masquerade for pod traffic leaving the pod
//! subnets, and hostPort DNAT. Nothing here reads or writes any other table, so
//! deleting the table removes every rule Coracle ever made.
//!
//! Rules are fed to Debian's `nft` as one `nft -f -` transaction each time: the
//! kernel applies it whole or not at all. The table is `inet` so one rule set
//! serves IPv4 and IPv6.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::NetError;
use crate::subnet::Subnet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A pod port published on the node (CRI `PortMapping` with a host port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: Proto,
    pub container_port: u16,
    pub host_port: u16,
    /// Only traffic to this node address; every local address when `None`.
    pub host_ip: Option<IpAddr>,
}

/// The chain holding the hostPort DNAT rules; the nat base chains jump to it for
/// traffic addressed to the node itself.
const HOSTPORTS: &str = "hostports";

#[derive(Clone, Debug)]
pub struct NftTable {
    name: String,
}

impl NftTable {
    /// `name` becomes `table inet <name>`: a plain identifier, nothing nft would
    /// parse as syntax.
    pub fn new(name: &str) -> Result<Self, NetError> {
        let valid = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(NetError::InvalidConfig {
                field: "nft_table",
                reason: format!("{name:?} is not a plain identifier"),
            });
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table, its chains and base rules, as one transaction. Declaring a
    /// table or chain that exists is not an error in nft, and only the base
    /// chains are flushed, so the hostPort rules of running pods survive a
    /// daemon restart.
    pub fn base_ruleset(&self, masquerade: &[Subnet]) -> String {
        let t = &self.name;
        let mut rules = format!(
            "table inet {t} {{\n\
             \tchain prerouting {{ type nat hook prerouting priority -100; policy accept; }}\n\
             \tchain output {{ type nat hook output priority -100; policy accept; }}\n\
             \tchain postrouting {{ type nat hook postrouting priority 100; policy accept; }}\n\
             \tchain {HOSTPORTS} {{ }}\n\
             }}\n\
             flush chain inet {t} prerouting\n\
             flush chain inet {t} output\n\
             flush chain inet {t} postrouting\n\
             add rule inet {t} prerouting fib daddr type local jump {HOSTPORTS}\n"
        );
        // Loopback is left alone: DNAT of 127.0.0.1 to a pod would need
        // route_localnet on the bridge, which lets pods reach the node's
        // loopback services (CVE-2020-8558).
        let _ = writeln!(
            rules,
            "add rule inet {t} output fib daddr type local ip daddr != 127.0.0.0/8 jump {HOSTPORTS}"
        );
        let _ = writeln!(
            rules,
            "add rule inet {t} output fib daddr type local ip6 daddr != ::1 jump {HOSTPORTS}"
        );
        for subnet in masquerade {
            let family = if subnet.is_ipv4() { "ip" } else { "ip6" };
            let _ = writeln!(
                rules,
                "add rule inet {t} postrouting {family} saddr {subnet} {family} daddr != {subnet} masquerade"
            );
        }
        rules
    }

    /// DNAT rules for one pod's host ports, each tagged with the pod id so
    /// [`NftTable::remove_pod_rules`] finds them. A mapping without a host ip
    /// (or with 0.0.0.0 or ::) gets a rule per pod address, so a dual-stack pod
    /// is reached over IPv4 and IPv6; one with a host ip, a rule for the pod
    /// address of its family.
    pub fn port_mapping_rules(
        &self,
        pod_id: &str,
        pod_ips: &[IpAddr],
        mappings: &[HostPort],
    ) -> Result<String, NetError> {
        let mut rules = String::new();
        for mapping in mappings {
            let invalid = |reason| NetError::InvalidPortMapping {
                host_port: mapping.host_port,
                container_port: mapping.container_port,
                pod_ips: pod_ips.to_vec(),
                reason,
            };
            if mapping.host_port == 0 || mapping.container_port == 0 {
                return Err(invalid("port 0"));
            }
            let targets: Vec<IpAddr> = match mapping.host_ip {
                Some(host_ip) if !host_ip.is_unspecified() => pod_ips
                    .iter()
                    .copied()
                    .filter(|ip| ip.is_ipv4() == host_ip.is_ipv4())
                    .take(1)
                    .collect(),
                _ => pod_ips.to_vec(),
            };
            if targets.is_empty() {
                return Err(invalid("the pod has no address of the host ip's family"));
            }
            for pod_ip in targets {
                self.write_dnat_rule(&mut rules, pod_id, pod_ip, mapping);
            }
        }
        Ok(rules)
    }

    fn write_dnat_rule(
        &self,
        rules: &mut String,
        pod_id: &str,
        pod_ip: IpAddr,
        mapping: &HostPort,
    ) {
        let (nfproto, family, target) = match pod_ip {
            IpAddr::V4(ip) => ("ipv4", "ip", format!("{ip}:{}", mapping.container_port)),
            IpAddr::V6(ip) => ("ipv6", "ip6", format!("[{ip}]:{}", mapping.container_port)),
        };
        let host_match = match mapping.host_ip {
            Some(host_ip) if !host_ip.is_unspecified() => format!("{family} daddr {host_ip} "),
            _ => String::new(),
        };
        let _ = writeln!(
            rules,
            "add rule inet {} {HOSTPORTS} meta nfproto {nfproto} {host_match}{} dport {} dnat {family} to {target} comment \"{}\"",
            self.name,
            mapping.protocol.name(),
            mapping.host_port,
            pod_comment(pod_id),
        );
    }

    pub async fn ensure(&self, masquerade: &[Subnet]) -> Result<(), NetError> {
        self.apply("set up", &self.base_ruleset(masquerade)).await
    }

    pub async fn add_port_mappings(
        &self,
        pod_id: &str,
        pod_ips: &[IpAddr],
        mappings: &[HostPort],
    ) -> Result<(), NetError> {
        let rules = self.port_mapping_rules(pod_id, pod_ips, mappings)?;
        if rules.is_empty() {
            return Ok(());
        }
        self.apply("add host ports", &rules).await
    }

    /// Deletes the pod's hostPort rules. Idempotent, and fine if the table is gone.
    pub async fn remove_pod_rules(&self, pod_id: &str) -> Result<(), NetError> {
        let Some(listing) = self
            .list(&["-a", "list", "chain", "inet", &self.name, HOSTPORTS])
            .await?
        else {
            return Ok(());
        };
        let handles = rule_handles_of_pod(&listing, pod_id);
        if handles.is_empty() {
            return Ok(());
        }
        let mut rules = String::new();
        for handle in handles {
            let _ = writeln!(
                rules,
                "delete rule inet {} {HOSTPORTS} handle {handle}",
                self.name
            );
        }
        self.apply("remove host ports", &rules).await
    }

    /// The table as `nft list` prints it, or `None` when there is no such table.
    pub async fn list_table(&self) -> Result<Option<String>, NetError> {
        self.list(&["list", "table", "inet", &self.name]).await
    }

    /// Deletes the whole table and with it every Coracle rule. Idempotent.
    pub async fn delete(&self) -> Result<(), NetError> {
        if self.list_table().await?.is_none() {
            return Ok(());
        }
        self.apply(
            "delete table",
            &format!("delete table inet {}\n", self.name),
        )
        .await
    }

    async fn apply(&self, action: &'static str, rules: &str) -> Result<(), NetError> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .await
                .map_err(|source| self.spawn_error(source))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| self.spawn_error(source))?;
        if !output.status.success() {
            return Err(NetError::Nft {
                table: self.name.clone(),
                action,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// Runs an `nft list ...`; `None` when the table (or chain) does not exist.
    async fn list(&self, args: &[&str]) -> Result<Option<String>, NetError> {
        let output = Command::new("nft")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            return Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No such file or directory") {
            return Ok(None);
        }
        Err(NetError::Nft {
            table: self.name.clone(),
            action: "list",
            stderr: stderr.trim().to_owned(),
        })
    }

    fn spawn_error(&self, source: std::io::Error) -> NetError {
        NetError::NftSpawn {
            table: self.name.clone(),
            source,
        }
    }
}

fn pod_comment(pod_id: &str) -> String {
    format!("pod {pod_id}")
}

/// Handles of the rules tagged with `pod_id` in an `nft -a list chain` listing,
/// where a rule line ends `comment "pod <id>" # handle <n>`.
pub fn rule_handles_of_pod(listing: &str, pod_id: &str) -> Vec<u64> {
    let tag = format!("comment \"{}\" # handle ", pod_comment(pod_id));
    listing
        .lines()
        .filter_map(|line| line.split_once(&tag))
        .filter_map(|(_, handle)| handle.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> NftTable {
        NftTable::new("coracle").unwrap()
    }

    #[test]
    fn table_name_must_be_a_plain_identifier() {
        assert!(NftTable::new("coracle_test-1").is_ok());
        for bad in ["", "1abc", "a b", "x;flush ruleset", "a\"b"] {
            assert!(NftTable::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn base_ruleset_masquerades_only_traffic_leaving_the_pod_subnets() {
        let subnets = [
            "10.88.0.0/16".parse().unwrap(),
            "fd00:88::/64".parse().unwrap(),
        ];
        let rules = table().base_ruleset(&subnets);
        assert!(rules.contains(
            "add rule inet coracle postrouting ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade"
        ));
        assert!(rules.contains(
            "add rule inet coracle postrouting ip6 saddr fd00:88::/64 ip6 daddr != fd00:88::/64 masquerade"
        ));
        // Only our own table is named anywhere.
        for line in rules
            .lines()
            .filter(|l| l.starts_with("add") || l.starts_with("flush"))
        {
            assert!(line.contains(" inet coracle "), "{line}");
        }
        assert!(!rules.contains("flush chain inet coracle hostports"));
        assert!(!table().base_ruleset(&[]).contains("masquerade"));
    }

    #[test]
    fn port_mappings_become_tagged_dnat_rules() {
        let mappings = [
            HostPort {
                protocol: Proto::Tcp,
                container_port: 80,
                host_port: 8080,
                host_ip: None,
            },
            HostPort {
                protocol: Proto::Udp,
                container_port: 53,
                host_port: 5353,
                host_ip: Some("192.0.2.2".parse().unwrap()),
            },
        ];
        let rules = table()
            .port_mapping_rules("pod1", &["10.88.0.5".parse().unwrap()], &mappings)
            .unwrap();
        assert_eq!(
            rules,
            "add rule inet coracle hostports meta nfproto ipv4 tcp dport 8080 dnat ip to 10.88.0.5:80 comment \"pod pod1\"\n\
             add rule inet coracle hostports meta nfproto ipv4 ip daddr 192.0.2.2 udp dport 5353 dnat ip to 10.88.0.5:53 comment \"pod pod1\"\n"
        );
        let v6 = table()
            .port_mapping_rules("pod1", &["fd00::5".parse().unwrap()], &mappings[..1])
            .unwrap();
        assert!(
            v6.contains("meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd00::5]:80"),
            "{v6}"
        );
    }

    #[test]
    fn dual_stack_pods_get_a_rule_per_family_unless_a_host_ip_picks_one() {
        let pod_ips = ["10.88.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let mapping = |host_ip: Option<&str>| HostPort {
            protocol: Proto::Tcp,
            container_port: 80,
            host_port: 8080,
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
        };
        let rules = |host_ip| {
            table()
                .port_mapping_rules("p", &pod_ips, &[mapping(host_ip)])
                .unwrap()
        };
        let every_address = rules(None);
        assert_eq!(
            every_address,
            "add rule inet coracle hostports meta nfproto ipv4 tcp dport 8080 dnat ip to 10.88.0.5:80 comment \"pod p\"\n\
             add rule inet coracle hostports meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd00::5]:80 comment \"pod p\"\n"
        );
        assert_eq!(rules(Some("::")), every_address);
        assert_eq!(rules(Some("0.0.0.0")), every_address);
        assert_eq!(
            rules(Some("2001:db8::7")),
            "add rule inet coracle hostports meta nfproto ipv6 ip6 daddr 2001:db8::7 tcp dport 8080 dnat ip6 to [fd00::5]:80 comment \"pod p\"\n"
        );
        assert!(
            rules(Some("192.0.2.2"))
                .contains("ip daddr 192.0.2.2 tcp dport 8080 dnat ip to 10.88.0.5:80")
        );
    }

    #[test]
    fn mixed_family_or_zero_port_mapping_is_refused() {
        let mapping = HostPort {
            protocol: Proto::Tcp,
            container_port: 80,
            host_port: 8080,
            host_ip: Some("fd00::1".parse().unwrap()),
        };
        let err = table()
            .port_mapping_rules(
                "p",
                &["10.0.0.2".parse().unwrap()],
                std::slice::from_ref(&mapping),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no address of the host ip's family"),
            "{err}"
        );
        let zero = HostPort {
            host_port: 0,
            host_ip: None,
            ..mapping
        };
        assert!(
            table()
                .port_mapping_rules("p", &["10.0.0.2".parse().unwrap()], &[zero])
                .is_err()
        );
    }

    #[test]
    fn rule_handles_are_found_by_exact_pod_tag() {
        let listing = "table inet coracle {\n\
            \tchain hostports { # handle 4\n\
            \t\ttcp dport 8080 dnat ip to 10.0.0.5:80 comment \"pod abc\" # handle 8\n\
            \t\tudp dport 53 dnat ip to 10.0.0.5:53 comment \"pod abc\" # handle 9\n\
            \t\ttcp dport 8081 dnat ip to 10.0.0.6:80 comment \"pod abcd\" # handle 10\n\
            \t}\n}\n";
        assert_eq!(rule_handles_of_pod(listing, "abc"), [8, 9]);
        assert_eq!(rule_handles_of_pod(listing, "abcd"), [10]);
        assert!(rule_handles_of_pod(listing, "ab").is_empty());
    }
}
