//! The spec `build_spec` makes, run for real by crates/oci: proof that what containerd's
//! rules produce is something our executor accepts and applies. Needs root (namespaces,
//! mounts, a cgroup named `coracle-test-spec-<pid>`, removed with the container).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;

use coracle_oci::{Container, CreateOptions, Stdio};
use coracle_runtime::container_spec::{
    HostFacts, ImageRuntimeConfig, NamespacePaths, NamespaceSource, PodFilePaths, SpecInputs,
    build_spec,
};
use coracle_runtime::model::{
    ContainerSpec, MountSpec, NamespaceMode, PodRecord, PodSpec, PodState, SeccompProfile,
};

/// A rootfs with busybox and its applets, and an `app` user.
fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let path = dir.join(applet);
        if applet.is_empty() || path.exists() {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", &path).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
}

/// Deletes (force) the container when dropped, so a failed test leaves nothing behind.
struct Guard(Option<Container>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.delete(true);
        }
    }
}

#[test]
fn built_spec_runs_under_the_oci_executor() {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let dir = tempfile::Builder::new()
        .prefix("coracle-spec-test")
        .tempdir()
        .unwrap();
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    busybox_rootfs(&rootfs);
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("hostname"), "web-0\n").unwrap();
    std::fs::write(files.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(files.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();

    let script = "id -u; id -G; echo HOME=$HOME; echo HOSTNAME=$HOSTNAME; cat /etc/hostname; \
                  test -d /var/lib/vol && echo volume; \
                  touch /data/x 2>/dev/null && echo data-writable || echo data-ro; \
                  cat /proc/kcore 2>/dev/null | head -c 1 | wc -c";
    let image = ImageRuntimeConfig {
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        user: "app".into(),
        volumes: vec!["/var/lib/vol".into()],
        ..Default::default()
    };
    let mut spec = ContainerSpec {
        image: "test".into(),
        mounts: vec![MountSpec {
            container_path: "/data".into(),
            host_path: data.display().to_string(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    spec.metadata.name = "app".into();
    spec.security.namespaces.network = NamespaceMode::Node;
    spec.security.namespaces.ipc = NamespaceMode::Node;
    spec.security.namespaces.pid = NamespaceMode::Container;
    spec.security.seccomp = SeccompProfile::RuntimeDefault;
    spec.security.no_new_privs = true;
    spec.security.supplemental_groups = vec![2000];
    spec.resources.memory_limit_in_bytes = 64 << 20;
    spec.resources.cpu_shares = 256;

    let pod = PodRecord {
        id: "pod".into(),
        spec: PodSpec {
            hostname: "web-0".into(),
            ..Default::default()
        },
        state: PodState::Ready,
        created_at: 0,
        namespace_dir: None,
        pinned: Vec::new(),
        cgroup: None,
        cgroup_created: false,
        network: None,
        init: None,
    };
    let id = format!("coracle-test-spec-{}", std::process::id());
    let built = build_spec(&SpecInputs {
        container_id: &id,
        spec: &spec,
        image: &image,
        pod: &pod,
        rootfs: &rootfs,
        pod_files: PodFilePaths::in_dir(&files),
        pod_shm: None,
        namespaces: NamespacePaths {
            network: NamespaceSource::Host,
            ipc: NamespaceSource::Host,
            uts: NamespaceSource::Host,
            pid: NamespaceSource::New,
        },
        cgroups_path: format!("/{id}"),
        host: HostFacts::probe().unwrap(),
    })
    .unwrap();
    built.spec.save(bundle.join("config.json")).unwrap();

    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let null: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let w2 = w.try_clone().unwrap();
    let mut opts = CreateOptions::new(dir.path().join("state"));
    opts.stdio = Stdio::Fds([null, w, w2]);
    let mut guard = Guard(Some(Container::create(&id, &bundle, opts).unwrap()));
    let container = guard.0.as_mut().unwrap();
    container.start().unwrap();
    let code = container.wait().unwrap();
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "1000\n1000 50 2000\nHOME=/home/app\nHOSTNAME=web-0\nweb-0\nvolume\ndata-ro\n0\n"
    );
    assert!(!data.join("x").exists());
    drop(guard);
}
