//! The container process: capabilities, user, rlimits, cwd, env, no_new_privs,
//! oom_score_adj, sysctls, and the fd/cwd and sysctl CVEs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use common::*;
use coracle_oci::Stdio;
use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, PosixRlimitBuilder, PosixRlimitType,
};

fn status_field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{name} not in:\n{out}"))
}

#[test]
fn capabilities_all_five_sets() {
    let mut spec = default_spec(&["cat", "/proc/self/status"]);
    let set = |v: &[Capability]| v.iter().copied().collect::<HashSet<_>>();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&[
            Capability::Chown,
            Capability::Kill,
            Capability::NetBindService,
        ]))
        .permitted(set(&[Capability::Chown, Capability::Kill]))
        .effective(set(&[Capability::Kill]))
        .inheritable(set(&[Capability::Kill]))
        .ambient(set(&[Capability::Kill]))
        .build()
        .unwrap();
    set_process(&mut spec, |p| {
        p.set_capabilities(Some(caps));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("caps"));
    assert_eq!(code, 0, "{out}");
    // CAP_CHOWN = bit 0, CAP_KILL = bit 5, CAP_NET_BIND_SERVICE = bit 10. For uid 0 the
    // kernel recomputes permitted/effective at execve (root gets the bounding set), so
    // the sets that show what we applied are bounding, inheritable and ambient; the
    // non-root test below checks permitted and effective.
    assert_eq!(status_field(&out, "CapBnd"), "0000000000000421", "{out}");
    assert_eq!(status_field(&out, "CapInh"), "0000000000000020", "{out}");
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000020", "{out}");
}

#[test]
fn capabilities_of_non_root_user_are_exactly_the_spec() {
    let mut spec = default_spec(&["cat", "/proc/self/status"]);
    let set = |v: &[Capability]| v.iter().copied().collect::<HashSet<_>>();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(set(&[Capability::Chown, Capability::Kill]))
        .permitted(set(&[Capability::Kill]))
        .effective(set(&[Capability::Kill]))
        .inheritable(set(&[Capability::Kill]))
        .ambient(set(&[Capability::Kill]))
        .build()
        .unwrap();
    set_process(&mut spec, |p| {
        p.set_capabilities(Some(caps));
        let mut u = p.user().clone();
        u.set_uid(1000);
        u.set_gid(1000);
        p.set_user(u);
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("capsuser"));
    assert_eq!(code, 0, "{out}");
    // Ambient KILL survives execve for a non-root user: permitted = effective = KILL.
    for f in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&out, f), "0000000000000020", "{f}: {out}");
    }
    assert_eq!(status_field(&out, "CapBnd"), "0000000000000021", "{out}");
}

#[test]
fn uid_gid_and_additional_groups() {
    let mut spec = default_spec(&["cat", "/proc/self/status"]);
    set_process(&mut spec, |p| {
        let mut u = p.user().clone();
        u.set_uid(1234);
        u.set_gid(2345);
        u.set_additional_gids(Some(vec![10, 20]));
        p.set_user(u);
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("user"));
    assert_eq!(code, 0, "{out}");
    let words = |f: &str| {
        status_field(&out, f)
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(words("Uid"), ["1234"; 4], "{out}");
    assert_eq!(words("Gid"), ["2345"; 4], "{out}");
    assert_eq!(words("Groups"), ["10", "20"], "{out}");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1", "{out}");
}

#[test]
fn rlimits_are_set_and_raising_hard_limit_fails_clearly() {
    let mut spec = default_spec(&["sh", "-c", "ulimit -n; ulimit -Hn"]);
    let limit = |soft, hard| {
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(soft)
            .hard(hard)
            .build()
            .unwrap()
    };
    set_process(&mut spec, |p| {
        p.set_rlimits(Some(vec![limit(321u64, 654u64)]));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("rlimit"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "321\n654\n");

    let current = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    set_process(&mut spec, |p| {
        p.set_rlimits(Some(vec![limit(64, current + 1)]));
    });
    b.write_spec(&spec);
    let err = b
        .create(&unique_id("rlimit-raise"), Stdio::Inherit)
        .err()
        .expect("raising the hard limit must fail here");
    let msg = err.to_string();
    assert!(
        msg.contains("setrlimit RLIMIT_NOFILE") && msg.contains(&format!("hard={}", current + 1)),
        "{msg}"
    );
}

#[test]
fn cwd_and_env() {
    let mut spec = default_spec(&["sh", "-c", "pwd; echo $FOO; echo $HOME"]);
    set_process(&mut spec, |p| {
        p.set_cwd("/work/sub".into());
        let mut env = p.env().clone().unwrap();
        env.push("FOO=bar baz".into());
        env.push("HOME=/root".into());
        p.set_env(Some(env));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("cwdenv"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "/work/sub\nbar baz\n/root\n");
}

#[test]
fn oom_score_adj_positive_is_set_negative_is_warned_not_fatal() {
    let mut spec = default_spec(&["cat", "/proc/self/oom_score_adj"]);
    set_process(&mut spec, |p| {
        p.set_oom_score_adj(Some(500));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("oom"));
    assert_eq!((code, out.as_str()), (0, "500\n"));
    set_process(&mut spec, |p| {
        p.set_oom_score_adj(Some(-500));
    });
    b.write_spec(&spec);
    let (code, out) = b.run(&unique_id("oomneg"));
    assert_eq!(code, 0, "{out}");
    // Either this machine allowed it, or we warned and kept the inherited value.
    let ours = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    assert!(
        out.ends_with("-500\n") || (out.contains("warning") && out.ends_with(&ours)),
        "{out}"
    );
}

#[test]
fn sysctl_is_set_in_the_container_netns_only() {
    let key = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    let host_before = std::fs::read_to_string(key).unwrap();
    let mut spec = default_spec(&["cat", key]);
    set_linux(&mut spec, |l| {
        l.set_sysctl(Some(
            [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "777".to_string(),
            )]
            .into(),
        ));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("sysctl"));
    assert_eq!((code, out.as_str()), (0, "777\n"));
    assert_eq!(
        std::fs::read_to_string(key).unwrap(),
        host_before,
        "host sysctl changed"
    );
}

/// CVE-2022-0811: a value with a newline would set a second (host-wide) sysctl.
#[test]
fn cve_2022_0811_sysctl_value_injection_refused() {
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    for (k, v) in [
        (
            "net.ipv4.ip_forward",
            "1\nkernel.core_pattern=|/tmp/coracle-pwn",
        ),
        ("kernel.core_pattern", "|/tmp/coracle-pwn"),
        ("net/../kernel/core_pattern", "x"),
    ] {
        let mut spec = default_spec(&["true"]);
        set_linux(&mut spec, |l| {
            l.set_sysctl(Some([(k.to_string(), v.to_string())].into()));
        });
        let b = TestBundle::new(&spec);
        let err = b
            .create(&unique_id("cve0811"), Stdio::Inherit)
            .err()
            .expect("must be refused");
        assert!(err.to_string().contains("sysctl"), "{k}: {err}");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
}

/// CVE-2024-21626: no fd of the runtime may reach the container process (only 0, 1, 2
/// and the one `ls` opens for the directory), and a cwd that escapes the rootfs
/// through a leaked fd is refused.
#[test]
fn cve_2024_21626_no_host_fd_leaks_into_container() {
    // Open some host fds in the runtime (without O_CLOEXEC, like a careless caller).
    let leak: Vec<OwnedFd> = (0..3)
        .map(|_| {
            nix::fcntl::open(
                "/sys/fs/cgroup",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap()
        })
        .collect();
    let b = TestBundle::new(&default_spec(&["ls", "/proc/self/fd"]));
    let (code, out) = b.run(&unique_id("cve21626fd"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{out}"
    );
    drop(leak);

    // The cwd names a host directory through an fd the init holds (its stdin here).
    let host = host_dir("cve21626");
    let mut spec = default_spec(&["pwd"]);
    set_process(&mut spec, |p| {
        p.set_cwd("/proc/self/fd/0".into());
    });
    b.write_spec(&spec);
    let dir_fd: OwnedFd = nix::fcntl::open(
        host.path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let (_, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let w2 = w.try_clone().unwrap();
    let err = b
        .create(&unique_id("cve21626cwd"), Stdio::Fds([dir_fd, w, w2]))
        .err()
        .expect("cwd outside the rootfs must be refused");
    assert!(
        err.to_string().contains("outside the container root"),
        "{err}"
    );
}
