//! The files every container of a pod mounts: /etc/hostname, /etc/hosts and
//! /etc/resolv.conf, written once per pod under `<root>/sandboxes/<id>/`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::{DnsSpec, PodSpec};
use crate::store::write_all_atomic;

pub const HOSTNAME_FILE: &str = "hostname";
pub const HOSTS_FILE: &str = "hosts";
pub const RESOLV_CONF_FILE: &str = "resolv.conf";

/// What Docker and containerd give a pod that has its own network namespace.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
";

#[derive(Debug, thiserror::Error)]
pub enum PodFilesError {
    #[error("create {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("read the node's {path}: {source}")]
    ReadHost { path: PathBuf, source: io::Error },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: crate::store::StoreError,
    },
}

/// Writes the pod's files into `dir`. `host_network` pods see the node's hosts file.
pub fn write_pod_files(
    dir: &Path,
    spec: &PodSpec,
    hostname: &str,
    host_network: bool,
) -> Result<(), PodFilesError> {
    fs::create_dir_all(dir).map_err(|source| PodFilesError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let hosts = if host_network {
        read_host_file("/etc/hosts")?
    } else {
        DEFAULT_HOSTS.to_owned()
    };
    let resolv = match &spec.dns {
        Some(dns) if !is_empty(dns) => resolv_conf(dns),
        _ => read_host_file("/etc/resolv.conf")?,
    };
    let hostname = format!("{hostname}\n");
    let files: [(&str, &[u8]); 3] = [
        (HOSTNAME_FILE, hostname.as_bytes()),
        (HOSTS_FILE, hosts.as_bytes()),
        (RESOLV_CONF_FILE, resolv.as_bytes()),
    ];
    write_all_atomic(dir, &files).map_err(|source| PodFilesError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn is_empty(dns: &DnsSpec) -> bool {
    dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()
}

/// resolv.conf as kubelet's DNSConfig describes it.
pub fn resolv_conf(dns: &DnsSpec) -> String {
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

fn read_host_file(path: &str) -> Result<String, PodFilesError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        // A node without the file (a minimal image) still runs pods.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(PodFilesError::ReadHost {
            path: PathBuf::from(path),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_search_servers_and_options() {
        let dns = DnsSpec {
            servers: vec!["10.96.0.10".into(), "10.96.0.11".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5\n"
        );
    }

    #[test]
    fn files_are_written_with_the_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let spec = PodSpec {
            dns: Some(DnsSpec {
                servers: vec!["1.1.1.1".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        write_pod_files(dir.path(), &spec, "web-0", false).unwrap();
        let read = |name| fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read(HOSTNAME_FILE), "web-0\n");
        assert!(read(HOSTS_FILE).starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(read(RESOLV_CONF_FILE), "nameserver 1.1.1.1\n");
    }
}
