//! The rootfs: spec mounts with their flags and propagation, /dev, masked and
//! readonly paths, the read-only root, and the mount-target CVEs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceType, Mount};

fn mountinfo_line<'a>(out: &'a str, mount_point: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(4) == Some(mount_point))
        .unwrap_or_else(|| panic!("{mount_point} not in mountinfo:\n{out}"))
}

fn host_mountinfo_mentions(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(path.to_str().unwrap())
}

#[test]
fn mounts_with_ro_rw_and_propagation() {
    let ro = host_dir("ro");
    std::fs::write(ro.path().join("file"), "hello").unwrap();
    let rw = host_dir("rw");
    let shared = host_dir("shared");
    let script = "cat /ro/file; echo; touch /ro/new 2>/dev/null && echo ro-writable || echo ro-denied; \
                  echo out > /rw/out; cat /proc/self/mountinfo";
    let mut spec = default_spec(&["sh", "-c", script]);
    add_mount(
        &mut spec,
        bind_mount(ro.path(), "/ro", &["bind", "ro", "nosuid"]),
    );
    add_mount(&mut spec, bind_mount(rw.path(), "/rw", &["rbind", "rw"]));
    add_mount(
        &mut spec,
        bind_mount(shared.path(), "/shared", &["rbind", "rshared"]),
    );
    let mut tmpfs = Mount::default();
    tmpfs.set_destination("/scratch".into());
    tmpfs.set_typ(Some("tmpfs".into()));
    tmpfs.set_source(Some("tmpfs".into()));
    tmpfs.set_options(Some(
        ["nosuid", "nodev", "noexec", "size=1m"]
            .map(String::from)
            .to_vec(),
    ));
    add_mount(&mut spec, tmpfs);
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("mounts"));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("hello\nro-denied\n"), "{out}");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "out\n"
    );
    assert!(!ro.path().join("new").exists());
    let ro_line = mountinfo_line(&out, "/ro");
    assert!(
        ro_line
            .split_whitespace()
            .nth(5)
            .unwrap()
            .starts_with("ro,nosuid"),
        "{ro_line}"
    );
    assert!(
        mountinfo_line(&out, "/shared").contains(" shared:"),
        "{out}"
    );
    assert!(!mountinfo_line(&out, "/rw").contains(" shared:"), "{out}");
    let scratch = mountinfo_line(&out, "/scratch");
    assert!(
        scratch.contains("rw,nosuid,nodev,noexec") && scratch.contains("size=1024k"),
        "{scratch}"
    );
    // Nothing of ours leaked into the host's mount table.
    assert!(!host_mountinfo_mentions(&b.rootfs()));
}

#[test]
fn dev_has_default_devices_symlinks_devpts_and_spec_devices() {
    let script = "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; \
                  for l in ptmx fd stdin stdout stderr; do readlink /dev/$l; done; \
                  stat -c '%t:%T %a %u %g' /dev/custom; \
                  grep -E ' /dev/(pts|shm) ' /proc/self/mountinfo; ls /dev/core 2>/dev/null || echo no-core";
    let mut spec = default_spec(&["sh", "-c", script]);
    let dev = LinuxDeviceBuilder::default()
        .path("/dev/custom")
        .typ(LinuxDeviceType::C)
        .major(1)
        .minor(7)
        .file_mode(0o600u32)
        .uid(1000u32)
        .gid(1000u32)
        .build()
        .unwrap();
    set_linux(&mut spec, |l| {
        l.set_devices(Some(vec![dev]));
    });
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("dev"));
    assert_eq!(code, 0, "{out}");
    for (name, dev) in [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ] {
        assert!(
            out.contains(&format!("/dev/{name} character special file {dev} 666")),
            "{name}: {out}"
        );
    }
    assert!(
        out.contains(
            "pts/ptmx\n/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2\n"
        ),
        "{out}"
    );
    assert!(out.contains("1:7 600 1000 1000"), "{out}");
    let pts = mountinfo_line(&out, "/dev/pts");
    assert!(
        pts.contains("devpts") && pts.contains("ptmxmode=666"),
        "{pts}"
    );
    assert!(mountinfo_line(&out, "/dev/shm").contains("tmpfs"), "{out}");
    let has_kcore = Path::new("/proc/kcore").exists();
    assert_eq!(out.contains("/dev/core"), has_kcore, "{out}");
}

#[test]
fn masked_and_readonly_paths() {
    std::fs::create_dir_all("/tmp").unwrap();
    let script = "ls -A /sys/firmware | wc -l; \
                  echo x 2>/dev/null > /proc/sys/kernel/domainname && echo sys-writable || echo sys-ro; \
                  cat /etc/hidden; ls -A /etc/hidden-dir | wc -l";
    let mut spec = default_spec(&["sh", "-c", script]);
    set_linux(&mut spec, |l| {
        let mut masked = l.masked_paths().clone().unwrap();
        masked.push("/etc/hidden".into());
        masked.push("/etc/hidden-dir".into());
        masked.push("/does/not/exist".into());
        l.set_masked_paths(Some(masked));
    });
    let b = TestBundle::new(&spec);
    std::fs::write(b.rootfs().join("etc/hidden"), "secret").unwrap();
    std::fs::create_dir(b.rootfs().join("etc/hidden-dir")).unwrap();
    std::fs::write(b.rootfs().join("etc/hidden-dir/f"), "x").unwrap();
    let (code, out) = b.run(&unique_id("masked"));
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    // `cat /etc/hidden` prints nothing (masked), so no line of its own.
    assert_eq!(lines, ["0", "sys-ro", "0"], "{out}");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let b = TestBundle::new(&default_spec(&[
        "sh",
        "-c",
        "touch /newfile 2>&1; echo rc=$?",
    ]));
    let (code, out) = b.run(&unique_id("rorootfs"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Read-only file system") && out.contains("rc=1"),
        "{out}"
    );
    assert!(!b.rootfs().join("newfile").exists());
}

/// CVE-2021-30465: a mount destination that is (or passes through) a symlink must be
/// resolved inside the rootfs, never on the host.
#[test]
fn cve_2021_30465_symlink_mount_target_stays_in_rootfs() {
    let host = host_dir("cve30465");
    let mut spec = default_spec(&["sh", "-c", "echo pwned > /evil/file && cat /evil/file"]);
    let mut tmpfs = Mount::default();
    tmpfs.set_destination("/evil".into());
    tmpfs.set_typ(Some("tmpfs".into()));
    tmpfs.set_source(Some("tmpfs".into()));
    add_mount(&mut spec, tmpfs);
    let b = TestBundle::new(&spec);
    std::os::unix::fs::symlink(host.path(), b.rootfs().join("evil")).unwrap();
    let (code, out) = b.run(&unique_id("cve30465"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "pwned\n");
    assert_eq!(
        std::fs::read_dir(host.path()).unwrap().count(),
        0,
        "host dir written to"
    );
    assert!(
        !host_mountinfo_mentions(host.path()),
        "host dir mounted over"
    );
    // The symlink was followed inside the rootfs: the target was made there.
    let inside = b.rootfs().join(host.path().strip_prefix("/").unwrap());
    assert!(
        inside.is_dir(),
        "{} not created inside the rootfs",
        inside.display()
    );
}

/// CVE-2025-31133: masking binds /dev/null over a path; if the image's /dev/null is a
/// symlink to (or a copy of) a host file, that file must never be what gets bound.
#[test]
fn cve_2025_31133_masked_path_dev_null_must_be_char_1_3() {
    for variant in ["symlink", "regular"] {
        let host = host_dir("cve31133");
        let target = host.path().join("target");
        std::fs::write(&target, "host secret").unwrap();
        // No /dev tmpfs: the rootfs's own /dev is used, as an image could ship it.
        let mut spec = default_spec(&[
            "sh",
            "-c",
            "cat /etc/masked; echo overwrite > /etc/masked; echo done",
        ]);
        let mounts: Vec<Mount> = spec
            .mounts()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|m| m.destination() != Path::new("/dev"))
            .collect();
        spec.set_mounts(Some(mounts));
        set_linux(&mut spec, |l| {
            l.set_masked_paths(Some(vec!["/etc/masked".into()]));
        });
        let b = TestBundle::new(&spec);
        std::fs::write(b.rootfs().join("etc/masked"), "image content").unwrap();
        match variant {
            "symlink" => std::os::unix::fs::symlink(&target, b.rootfs().join("dev/null")).unwrap(),
            _ => std::fs::write(b.rootfs().join("dev/null"), "not a device").unwrap(),
        }
        match b.try_run(&unique_id(&format!("cve31133{variant}"))) {
            Ok((code, out)) => {
                assert_eq!(code, 0, "{out}");
                // Masked correctly: the real /dev/null (empty read, writes discarded).
                assert_eq!(out, "done\n", "{variant}: {out}");
                let st = std::fs::symlink_metadata(b.rootfs().join("dev/null")).unwrap();
                assert!(
                    st.file_type().is_char_device() && st.rdev() == nix::sys::stat::makedev(1, 3),
                    "{variant}"
                );
            }
            Err(e) => assert!(e.to_string().contains("/dev/null"), "{variant}: {e}"),
        }
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "host secret",
            "{variant}: host file changed"
        );
        assert_eq!(
            std::fs::read_to_string(b.rootfs().join("etc/masked")).unwrap(),
            "image content"
        );
    }
}

/// The check itself: only the 1:3 character device is accepted as /dev/null.
#[test]
fn dev_null_check_refuses_anything_but_char_1_3() {
    assert_root();
    let dir = host_dir("devnullcheck");
    std::fs::create_dir(dir.path().join("dev")).unwrap();
    let null = dir.path().join("dev/null");
    let check = || {
        coracle_oci::rootfs::masked::open_checked_dev_null(&pathrs::Root::open(dir.path()).unwrap())
    };
    std::fs::write(&null, "").unwrap();
    assert!(
        check()
            .unwrap_err()
            .to_string()
            .contains("not a character device")
    );
    std::fs::remove_file(&null).unwrap();
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    assert!(
        check().is_err(),
        "a symlink (even to the real /dev/null) is refused"
    );
    std::fs::remove_file(&null).unwrap();
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 5),
    )
    .unwrap();
    assert!(check().unwrap_err().to_string().contains("1:5"));
    std::fs::remove_file(&null).unwrap();
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    assert!(check().is_ok());
}

/// Unmounts a host mount made by a test, even when the test fails.
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn rro_makes_submounts_read_only_too() {
    let dir = host_dir("rro");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _unmount = HostMount(sub.clone());
    let script = "touch /rro/top 2>/dev/null && echo top-writable || echo top-denied; \
                  touch /rro/sub/x 2>/dev/null && echo sub-writable || echo sub-denied; \
                  touch /ro/sub/y 2>/dev/null && echo plain-sub-writable || echo plain-sub-denied";
    let mut spec = default_spec(&["sh", "-c", script]);
    add_mount(
        &mut spec,
        bind_mount(dir.path(), "/rro", &["rbind", "rprivate", "rro"]),
    );
    // A plain "ro" rbind leaves the submount writable: what "rro" is for.
    add_mount(
        &mut spec,
        bind_mount(dir.path(), "/ro", &["rbind", "rprivate", "ro"]),
    );
    let b = TestBundle::new(&spec);
    let (code, out) = b.run(&unique_id("rro"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "top-denied\nsub-denied\nplain-sub-writable\n");
    assert!(!sub.join("x").exists());
    assert!(!dir.path().join("top").exists());
}
