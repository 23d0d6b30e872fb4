//! exec into a running container, the console socket, ps, and CVE-2019-5736.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use common::*;
use coracle_oci::{ExecOptions, Status, Stdio};

fn exec_process(c: &coracle_oci::Container, args: &[&str]) -> oci_spec::runtime::Process {
    let mut p = c.config().process().clone().unwrap();
    p.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    p
}

fn run_exec(c: &coracle_oci::Container, p: oci_spec::runtime::Process) -> (i32, String) {
    let (stdio, mut out) = capture();
    let proc = c
        .exec(
            p,
            ExecOptions {
                stdio,
                ..Default::default()
            },
        )
        .unwrap();
    let code = proc.wait().unwrap();
    let mut s = String::new();
    out.read_to_string(&mut s).unwrap();
    (code, s)
}

#[test]
fn exec_joins_the_running_container() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let id = unique_id("exec");
    let mut c = b.create(&id, Stdio::Inherit).unwrap();
    c.start().unwrap();
    let mut p = exec_process(
        &c,
        &[
            "sh",
            "-c",
            "hostname; echo $$; ps -o pid,args | grep -c '^ *1 sleep 100'; echo $FOO; pwd; id -u; exit 7",
        ],
    );
    let mut env = p.env().clone().unwrap();
    env.push("FOO=from-exec".into());
    p.set_env(Some(env));
    p.set_cwd("/tmp".into());
    let mut user = p.user().clone();
    user.set_uid(1000);
    p.set_user(user);
    let (code, out) = run_exec(&c, p);
    assert_eq!(code, 7, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "coracle-test", "{out}");
    assert_ne!(lines[1], "1", "{out}");
    assert!(
        lines[1].parse::<i32>().unwrap() < 100,
        "not in the container pid ns: {out}"
    );
    assert_eq!(&lines[2..], ["1", "from-exec", "/tmp", "1000"], "{out}");

    // Detached with a pid file.
    let pid_file = b.path().join("exec.pid");
    let proc = c
        .exec(
            exec_process(&c, &["sleep", "0.2"]),
            ExecOptions {
                pid_file: Some(pid_file.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        proc.pid.to_string()
    );
    assert_eq!(proc.wait().unwrap(), 0);

    // A missing binary is an exec error, not a hang.
    let err = c
        .exec(
            exec_process(&c, &["/no/such/binary"]),
            ExecOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    assert!(c.pids().unwrap().contains(&c.pid()));
    assert_eq!(c.status(), Status::Running);
}

fn recv_fd(stream: &std::os::unix::net::UnixStream) -> OwnedFd {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    for cmsg in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the fd was just received and is owned by nobody else.
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

fn read_pty(master: OwnedFd) -> String {
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // EIO once the slave side is closed by the exited process.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn terminal_master_is_sent_over_console_socket() {
    let mut spec = default_spec(&["sh", "-c", "tty; stty size; echo hi"]);
    set_process(&mut spec, |p| {
        p.set_terminal(Some(true));
        p.set_console_size(Some(
            oci_spec::runtime::BoxBuilder::default()
                .height(40u64)
                .width(120u64)
                .build()
                .unwrap(),
        ));
    });
    let b = TestBundle::new(&spec);
    let sock = b.path().join("console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut opts = b.options();
    opts.console_socket = Some(sock.clone());
    let id = unique_id("tty");
    let mut c = Guard(Some(
        coracle_oci::Container::create(&id, b.path(), opts).unwrap(),
    ));
    let (stream, _) = listener.accept().unwrap();
    let master = recv_fd(&stream);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), 0);
    let out = read_pty(master);
    assert!(out.contains("/dev/pts/0\r\n40 120\r\nhi\r\n"), "{out:?}");
}

/// CVE-2019-5736: while the runtime runs inside the container (the init before start
/// is still our binary), nothing in the container may open it through /proc/<pid>/exe.
/// The runtime process is non-dumpable from before it joins the container's
/// namespaces, so /proc/1/exe is refused; the control run after start shows that the
/// same access succeeds on a dumpable process, so the check discriminates.
#[test]
fn cve_2019_5736_runtime_binary_not_writable_from_container() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let id = unique_id("cve5736");
    let c = b.create(&id, Stdio::Inherit).unwrap();
    let runtime_exe = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", c.pid())).unwrap(),
        runtime_exe,
        "init is not the runtime"
    );
    let before = std::fs::read(&runtime_exe).unwrap();
    let probe = "readlink /proc/1/exe >/dev/null 2>&1 && echo link-readable || echo link-denied; \
                 (echo pwned >> /proc/1/exe) 2>/dev/null && echo written || echo not-written; \
                 cat /proc/1/exe >/dev/null 2>&1 && echo opened || echo not-opened";
    let (code, out) = run_exec(&c, exec_process(&c, &["sh", "-c", probe]));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "link-denied\nnot-written\nnot-opened\n");
    assert_eq!(
        std::fs::read(&runtime_exe).unwrap(),
        before,
        "runtime binary modified"
    );

    // Control: pid 1 is now busybox (dumpable): the same probe can read its link.
    let mut c = c;
    c.start().unwrap();
    let (_, out) = run_exec(&c, exec_process(&c, &["sh", "-c", probe]));
    assert!(out.starts_with("link-readable\n"), "{out}");
}

/// The other half of CVE-2019-5736: the container's program must not be the runtime
/// binary itself, directly or as the `#!` interpreter of a script (execve would make
/// it dumpable again, inside the container).
#[test]
fn cve_2019_5736_container_cannot_exec_the_runtime_binary() {
    for (name, args) in [
        ("direct", vec!["/proc/self/exe"]),
        ("shebang", vec!["/evil.sh"]),
    ] {
        let b = TestBundle::new(&default_spec(&args));
        std::fs::write(b.rootfs().join("evil.sh"), "#!/bin/sh2\n").unwrap();
        std::fs::write(b.rootfs().join("bin/sh2"), "#!/proc/self/exe --help\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in ["evil.sh", "bin/sh2"] {
            std::fs::set_permissions(b.rootfs().join(f), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let err = b
            .create(&unique_id(&format!("cve5736{name}")), Stdio::Inherit)
            .err()
            .expect("must be refused");
        assert!(err.to_string().contains("CVE-2019-5736"), "{name}: {err}");
    }
    // A script with an ordinary interpreter still runs.
    let b = TestBundle::new(&default_spec(&["/ok.sh"]));
    std::fs::write(b.rootfs().join("ok.sh"), "#!/bin/sh\necho fine\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        b.rootfs().join("ok.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (code, out) = b.run(&unique_id("cve5736ok"));
    assert_eq!((code, out.as_str()), (0, "fine\n"));
}

#[test]
fn exec_with_terminal_sends_master_over_console_socket() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let mut c = b.create(&unique_id("exectty"), Stdio::Inherit).unwrap();
    c.start().unwrap();
    let sock = b.path().join("exec-console.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut p = exec_process(&c, &["sh", "-c", "tty; echo exec-hi"]);
    p.set_terminal(Some(true));
    let proc = c
        .exec(
            p,
            ExecOptions {
                console_socket: Some(sock),
                ..Default::default()
            },
        )
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    let master = recv_fd(&stream);
    assert_eq!(proc.wait().unwrap(), 0);
    let out = read_pty(master);
    assert!(
        out.starts_with("/dev/pts/") && out.ends_with("exec-hi\r\n"),
        "{out:?}"
    );
}

/// Without a cgroup, ps and kill --all find the container's processes through its PID
/// namespace: the init and what exec started.
#[test]
fn ps_and_kill_all_cover_exec_processes() {
    let b = TestBundle::new(&default_spec(&["sleep", "100"]));
    let mut c = b.create(&unique_id("psall"), Stdio::Inherit).unwrap();
    c.start().unwrap();
    let extra = c
        .exec(exec_process(&c, &["sleep", "100"]), ExecOptions::default())
        .unwrap();
    let mut want = vec![c.pid(), extra.pid];
    want.sort_unstable();
    assert_eq!(c.pids().unwrap(), want);
    c.kill(nix::sys::signal::Signal::SIGKILL, true).unwrap();
    assert_eq!(extra.wait().unwrap(), 128 + 9);
    assert_eq!(c.wait().unwrap(), 128 + 9);
    assert_eq!(c.status(), Status::Stopped);
}
