//! Shared helpers of the root integration tests: a busybox rootfs, a bundle with a
//! `runc spec`-like default config each test tweaks, pipes to read what the container
//! printed, and guards that delete containers even when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use coracle_oci::{Container, CreateOptions, Stdio};
use oci_spec::runtime::{Mount, Spec};

pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (real namespaces, mounts)"
    );
}

/// A unique container id for this test (test name + pid).
pub fn unique_id(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// A rootfs with busybox and its applets, /etc/passwd and /etc/group.
pub fn busybox_rootfs(dir: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let path = dir.join(applet);
        if path.exists() || applet.is_empty() {
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", &path).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}

/// The default spec (oci-spec's default is `runc spec`'s), running `args`, without
/// cgroup resources (the cgroups module is merged separately).
pub fn default_spec(args: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(process));
    spec.set_hostname(Some("coracle-test".into()));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(None);
    spec.set_linux(Some(linux));
    spec
}

pub struct TestBundle {
    pub dir: tempfile::TempDir,
    pub state_root: PathBuf,
}

impl TestBundle {
    pub fn new(spec: &Spec) -> Self {
        assert_root();
        let dir = tempfile::Builder::new()
            .prefix("coracle-oci-test")
            .tempdir()
            .unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        let state_root = dir.path().join("state");
        let b = TestBundle { dir, state_root };
        b.write_spec(spec);
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn write_spec(&self, spec: &Spec) {
        spec.save(self.dir.path().join("config.json")).unwrap();
    }

    pub fn options(&self) -> CreateOptions {
        CreateOptions::new(&self.state_root)
    }

    pub fn create(&self, id: &str, stdio: Stdio) -> Result<Guard, coracle_oci::ContainerError> {
        let mut opts = self.options();
        opts.stdio = stdio;
        Container::create(id, self.path(), opts).map(|c| Guard(Some(c)))
    }

    /// create + start + wait; returns (exit code, stdout+stderr).
    pub fn run(&self, id: &str) -> (i32, String) {
        let (stdio, mut out) = capture();
        let mut c = self.create(id, stdio).expect("create");
        c.start().expect("start");
        let code = c.wait().unwrap();
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        (code, s)
    }

    /// Like `run` but returns the create error, if any.
    pub fn try_run(&self, id: &str) -> Result<(i32, String), coracle_oci::ContainerError> {
        let (stdio, mut out) = capture();
        let mut c = self.create(id, stdio)?;
        c.start()?;
        let code = c.wait().unwrap();
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        Ok((code, s))
    }
}

/// Stdio for the container: stdin /dev/null, stdout and stderr a pipe we read.
pub fn capture() -> (Stdio, std::fs::File) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let null: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let w2 = w.try_clone().unwrap();
    (Stdio::Fds([null, w, w2]), std::fs::File::from(r))
}

/// Deletes (force) the container when dropped, so failed tests leave nothing behind.
pub struct Guard(pub Option<Container>);

impl std::ops::Deref for Guard {
    type Target = Container;
    fn deref(&self) -> &Container {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Container {
        self.0.as_mut().unwrap()
    }
}

impl Guard {
    pub fn delete(mut self, force: bool) -> Result<(), coracle_oci::ContainerError> {
        self.0.take().unwrap().delete(force)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.delete(true);
        }
    }
}

pub fn bind_mount(src: &Path, dst: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dst));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(src.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

pub fn add_mount(spec: &mut Spec, m: Mount) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(m);
    spec.set_mounts(Some(mounts));
}

pub fn set_linux(spec: &mut Spec, f: impl FnOnce(&mut oci_spec::runtime::Linux)) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    f(&mut linux);
    spec.set_linux(Some(linux));
}

pub fn set_process(spec: &mut Spec, f: impl FnOnce(&mut oci_spec::runtime::Process)) {
    let mut p = spec.process().clone().unwrap_or_default();
    f(&mut p);
    spec.set_process(Some(p));
}

/// A host temp directory (outside any bundle) removed on drop.
pub fn host_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("coracle-{name}-"))
        .tempdir()
        .unwrap()
}
