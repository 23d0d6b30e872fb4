//! Namespaces: each type created, joined by path, the user namespace with id maps,
//! hostname/domainname.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::*;
use coracle_oci::Stdio;
use oci_spec::runtime::{
    LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
};

const KINDS: [&str; 7] = ["pid", "net", "ipc", "uts", "mnt", "cgroup", "user"];

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

fn ns(t: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut b = LinuxNamespaceBuilder::default().typ(t);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().unwrap()
}

fn print_ns_script() -> String {
    KINDS
        .iter()
        .map(|k| format!("echo {k}=$(readlink /proc/self/ns/{k});"))
        .collect()
}

fn parse(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn each_namespace_type_is_new_and_pid_is_one() {
    let script = format!("{} echo self=$$", print_ns_script());
    let b = TestBundle::new(&default_spec(&["sh", "-c", &script]));
    let (code, out) = b.run(&unique_id("nsnew"));
    assert_eq!(code, 0, "{out}");
    let got = parse(&out);
    for kind in ["pid", "net", "ipc", "uts", "mnt", "cgroup"] {
        assert_ne!(got[kind], host_ns(kind), "{kind} namespace not new: {out}");
    }
    // No user namespace in the default spec.
    assert_eq!(got["user"], host_ns("user"));
    assert_eq!(got["self"], "1");
}

#[test]
fn namespace_joined_by_path() {
    let first = TestBundle::new(&default_spec(&["sleep", "100"]));
    let mut holder = first
        .create(&unique_id("nsholder"), Stdio::Inherit)
        .unwrap();
    holder.start().unwrap();
    let pid = holder.pid();
    let mut spec = default_spec(&["sh", "-c", &print_ns_script()]);
    set_linux(&mut spec, |l| {
        let mut list: Vec<LinuxNamespace> = l.namespaces().clone().unwrap();
        list.retain(|n| {
            n.typ() != LinuxNamespaceType::Network && n.typ() != LinuxNamespaceType::Ipc
        });
        list.push(ns(
            LinuxNamespaceType::Network,
            Some(format!("/proc/{pid}/ns/net").into()),
        ));
        list.push(ns(
            LinuxNamespaceType::Ipc,
            Some(format!("/proc/{pid}/ns/ipc").into()),
        ));
        l.set_namespaces(Some(list));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("nsjoin"));
    assert_eq!(code, 0, "{out}");
    let got = parse(&out);
    let theirs = |k: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{k}"))
            .unwrap()
            .display()
            .to_string()
    };
    assert_eq!(got["net"], theirs("net"));
    assert_eq!(got["ipc"], theirs("ipc"));
    assert_ne!(got["uts"], theirs("uts"));
    assert_ne!(got["net"], host_ns("net"));
}

#[test]
fn user_namespace_with_id_maps() {
    let mut spec = default_spec(&[
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls -ln /dev/null; touch /tmp/x && stat -c %u /tmp/x",
    ]);
    set_linux(&mut spec, |l| {
        let mut list = l.namespaces().clone().unwrap();
        list.push(ns(LinuxNamespaceType::User, None));
        l.set_namespaces(Some(list));
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(200_000u32)
            .size(65_536u32)
            .build()
            .unwrap();
        l.set_uid_mappings(Some(vec![map]));
        l.set_gid_mappings(Some(vec![map]));
    });
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let b = TestBundle::new(&spec);
    // The rootfs must belong to the mapped root for the container to write to it.
    let status = std::process::Command::new("chown")
        .args(["-R", "-h", "200000:200000"])
        .arg(b.rootfs())
        .status()
        .unwrap();
    assert!(status.success());
    let (code, out) = b.run(&unique_id("userns"));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(words(lines[0]), ["0", "200000", "65536"], "{out}");
    assert_eq!(words(lines[1]), ["0", "200000", "65536"], "{out}");
    assert_eq!(lines[2], "0", "{out}");
    // /dev/null bound from the host (mknod is refused in a user namespace).
    assert!(lines[3].starts_with('c'), "{out}");
    // A file created by container root belongs to host uid 200000.
    assert_eq!(lines[4], "0", "{out}");
    let st = std::fs::metadata(b.rootfs().join("tmp/x"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(st.unwrap().uid(), 200_000);
}

#[test]
fn hostname_and_domainname_in_uts_namespace() {
    let mut spec = default_spec(&["sh", "-c", "hostname; cat /proc/sys/kernel/domainname"]);
    spec.set_hostname(Some("box-one".into()));
    spec.set_domainname(Some("example.test".into()));
    let host_name = nix::unistd::gethostname().unwrap();
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("hostname"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "box-one\nexample.test\n");
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_name,
        "host hostname changed"
    );
}

#[test]
fn hostname_without_uts_namespace_is_refused() {
    let mut spec = default_spec(&["true"]);
    set_linux(&mut spec, |l| {
        let mut list = l.namespaces().clone().unwrap();
        list.retain(|n| n.typ() != LinuxNamespaceType::Uts);
        l.set_namespaces(Some(list));
    });
    let b = TestBundle::new(&spec);
    let err = b
        .create(&unique_id("nouts"), Stdio::Inherit)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("uts namespace"), "{err}");
}

/// sysfs cannot be mounted from a user namespace that does not own the network
/// namespace: as runc, fall back to a read-only rbind of the host's /sys.
#[test]
fn user_namespace_without_netns_binds_sys_read_only() {
    let mut spec = default_spec(&[
        "sh",
        "-c",
        "ls /sys/class/net; grep ' /sys ' /proc/self/mountinfo",
    ]);
    set_linux(&mut spec, |l| {
        let mut list = l.namespaces().clone().unwrap();
        list.retain(|n| n.typ() != LinuxNamespaceType::Network);
        list.push(ns(LinuxNamespaceType::User, None));
        l.set_namespaces(Some(list));
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(300_000u32)
            .size(65_536u32)
            .build()
            .unwrap();
        l.set_uid_mappings(Some(vec![map]));
        l.set_gid_mappings(Some(vec![map]));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("usernosysfs"));
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l == "lo"), "{out}");
    let sys = out.lines().find(|l| l.contains(" /sys ")).unwrap();
    assert!(
        sys.split_whitespace().nth(5).unwrap().starts_with("ro"),
        "{sys}"
    );
}
