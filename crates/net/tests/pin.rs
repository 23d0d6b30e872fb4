//! Pinned namespaces on the real kernel (root).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::fs;
use std::path::Path;

use coracle_net::{NamespaceKind, PinSetup, pin_namespaces, unpin_namespaces};
use nix::sched::{CloneFlags, setns};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "namespace pinning tests need root; run the suite as root"
    );
}

fn is_mount_point(path: &Path) -> bool {
    let wanted = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// Enters the pinned namespaces on a fresh thread and reports what it sees there.
fn look_inside(dir: &Path) -> (String, String, String) {
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        for kind in ["net", "uts", "ipc"] {
            let file = fs::File::open(dir.join(kind)).unwrap();
            setns(file, CloneFlags::empty()).unwrap();
        }
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        let interfaces = fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        let port_start =
            fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
        assert_eq!(
            port_start.trim(),
            "80",
            "sysctl not applied inside the pod netns"
        );
        let ipc_ns = fs::read_link("/proc/thread-self/ns/ipc")
            .unwrap()
            .to_string_lossy()
            .into_owned();
        (hostname, interfaces, ipc_ns)
    })
    .join()
    .unwrap()
}

#[test]
fn pinned_namespaces_are_new_hold_the_hostname_and_unpin_cleanly() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pod-a");
    let pinned = pin_namespaces(
        &dir,
        &NamespaceKind::ALL,
        &PinSetup {
            hostname: Some("pod-a-host".into()),
            sysctls: vec![("net.ipv4.ip_unprivileged_port_start".into(), "80".into())],
        },
    )
    .unwrap();
    for kind in NamespaceKind::ALL {
        let path = pinned.path(kind).unwrap();
        assert!(is_mount_point(&path), "{} is not a mount", path.display());
    }

    let (hostname, interfaces, ipc_ns) = look_inside(&dir);
    assert_eq!(hostname, "pod-a-host");
    // A new network namespace has only its loopback device.
    let devices: Vec<_> = interfaces
        .lines()
        .skip(2)
        .map(|line| line.split(':').next().unwrap().trim().to_owned())
        .collect();
    assert_eq!(devices, ["lo"]);
    let host_ipc = fs::read_link("/proc/self/ns/ipc").unwrap();
    assert_ne!(ipc_ns, host_ipc.to_string_lossy());
    // The host's hostname and sysctl are untouched.
    let host_port_start =
        fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host_port_start.trim(), "80");
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "pod-a-host"
    );

    unpin_namespaces(&dir).unwrap();
    assert!(!dir.exists());
    for kind in NamespaceKind::ALL {
        assert!(!is_mount_point(&dir.join(kind.name())));
    }
    // Idempotent: a second stop, or a cleanup after a crash, succeeds.
    unpin_namespaces(&dir).unwrap();
}

#[test]
fn two_pods_get_different_namespaces() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let (a, b) = (temp.path().join("a"), temp.path().join("b"));
    pin_namespaces(&a, &[NamespaceKind::Net], &PinSetup::default()).unwrap();
    pin_namespaces(&b, &[NamespaceKind::Net], &PinSetup::default()).unwrap();
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p.join("net")).unwrap().ino()
    };
    assert_ne!(inode(&a), inode(&b));
    unpin_namespaces(&a).unwrap();
    unpin_namespaces(&b).unwrap();
}

#[test]
fn pinning_twice_into_the_same_dir_is_refused_and_keeps_the_first() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pod");
    pin_namespaces(&dir, &[NamespaceKind::Net], &PinSetup::default()).unwrap();
    let err = pin_namespaces(&dir, &[NamespaceKind::Net], &PinSetup::default()).unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
    assert!(is_mount_point(&dir.join("net")));
    unpin_namespaces(&dir).unwrap();
}

#[test]
fn failed_pin_leaves_nothing_behind() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pod");
    // An invalid hostname (longer than 64 bytes) fails after unshare.
    let err = pin_namespaces(
        &dir,
        &NamespaceKind::ALL,
        &PinSetup {
            hostname: Some("x".repeat(100)),
            sysctls: vec![],
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("hostname"), "{err}");
    assert!(!dir.exists(), "pin dir left behind");
}
