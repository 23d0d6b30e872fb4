//! Crafted layers against the unpacker: every escape is refused with the entry
//! named, nothing lands outside the snapshot root, and what a layer legitimately
//! holds comes out in overlayfs format. Needs root (owners, device nodes,
//! `trusted.*` xattrs).

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use coracle_image::unpack::{UnpackError, UnpackStats, unpack_layer};
use tar::{EntryType, Header};

/// A tar stream written header by header, with names set as raw bytes so the
/// tests can say things `tar::Builder` refuses to write (`..`, absolute paths).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }

    fn entry_raw(
        mut self,
        kind: EntryType,
        name: &[u8],
        data: &[u8],
        edit: impl FnOnce(&mut Header),
    ) -> Self {
        let mut header = Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_mtime(1_704_067_200);
        edit(&mut header);
        header.set_cksum();
        self.0.append(&header, data).expect("append");
        self
    }

    fn entry(
        self,
        kind: EntryType,
        path: &str,
        data: &[u8],
        edit: impl FnOnce(&mut Header),
    ) -> Self {
        self.entry_raw(kind, path.as_bytes(), data, edit)
    }

    fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(EntryType::Regular, path, data, |_| {})
    }

    fn dir(self, path: &str) -> Self {
        self.entry(EntryType::Directory, path, b"", |_| {})
    }

    fn link(self, kind: EntryType, path: &str, target: &str) -> Self {
        self.entry(kind, path, b"", |h| {
            h.set_link_name_literal(target).expect("link name");
        })
    }

    /// A PAX extended header applying to the next entry.
    fn pax(self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.entry(EntryType::XHeader, "PaxHeader", &data, |_| {})
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().expect("finish tar")
    }
}

/// `<tmp>/fs` is the snapshot root; `<tmp>/outside` must stay untouched.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("coracle-unpack-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let root = dir.path().join("fs");
        let outside = dir.path().join("outside");
        fs::create_dir(&root).expect("mkdir fs");
        fs::create_dir(&outside).expect("mkdir outside");
        fs::write(outside.join("secret"), "host secret").expect("write secret");
        Self {
            _dir: dir,
            root,
            outside,
        }
    }

    fn unpack(&self, layer: Layer) -> Result<UnpackStats, UnpackError> {
        unpack_layer(layer.bytes().as_slice(), &self.root)
    }

    fn outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .expect("read outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        assert_eq!(
            fs::read_to_string(self.outside.join("secret")).expect("read"),
            "host secret"
        );
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the unpack tests need root (owners, device nodes, trusted xattrs)"
    );
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).expect("path");
    let name = CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: path and name are NUL-terminated; buf has buf.len() writable bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[test]
fn layer_with_dotdot_path_is_rejected() {
    require_root();
    for path in ["../outside/pwned", "a/../../outside/pwned", "./../pwned"] {
        let sandbox = Sandbox::new();
        let err = sandbox
            .unpack(Layer::new().dir("a").file(path, b"x"))
            .expect_err(path);
        assert!(
            matches!(&err, UnpackError::PathTraversal { entry } if entry == path),
            "{path}: {err}"
        );
        assert!(
            err.to_string().contains(path),
            "error names the entry: {err}"
        );
        sandbox.outside_untouched();
    }
}

#[test]
fn layer_with_absolute_path_stays_inside() {
    require_root();
    let sandbox = Sandbox::new();
    let host_path = format!("/coracle-unpack-test-{}/file", std::process::id());
    sandbox
        .unpack(Layer::new().file(&host_path, b"inside"))
        .expect("absolute path unpacks inside the root");
    let inside = sandbox.root.join(host_path.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(inside).expect("read"), "inside");
    assert!(
        !Path::new(&host_path).exists(),
        "nothing written on the host"
    );
}

#[test]
fn symlink_escape_then_write_through_it_is_rejected() {
    require_root();
    let targets = [
        Sandbox::new().outside.to_string_lossy().into_owned(), // absolute host path
        "../outside".to_owned(),                               // relative, climbing out
        "/".to_owned(),
    ];
    for target in targets {
        let sandbox = Sandbox::new();
        let absolute = sandbox.outside.to_string_lossy().into_owned();
        let target = if target.starts_with('/') && target.len() > 1 {
            absolute
        } else {
            target
        };
        let err = sandbox
            .unpack(
                Layer::new()
                    .link(EntryType::Symlink, "escape", &target)
                    .file("escape/pwned", b"x"),
            )
            .expect_err("write through a symlink");
        assert!(
            matches!(&err, UnpackError::SymlinkInPath { entry } if entry == "escape/pwned"),
            "{target}: {err}"
        );
        sandbox.outside_untouched();
        // The symlink itself is kept as data, pointing wherever it said.
        assert!(
            sandbox
                .root
                .join("escape")
                .symlink_metadata()
                .expect("lstat")
                .is_symlink()
        );
    }
}

#[test]
fn hardlink_to_outside_is_rejected() {
    require_root();
    // Climbing out with `..`.
    let sandbox = Sandbox::new();
    let err = sandbox
        .unpack(Layer::new().link(EntryType::Link, "stolen", "../outside/secret"))
        .expect_err("hardlink with ..");
    assert!(
        matches!(&err, UnpackError::HardlinkOutside { entry, .. } if entry == "stolen"),
        "{err}"
    );
    sandbox.outside_untouched();

    // Through a symlinked directory.
    let sandbox = Sandbox::new();
    let outside = sandbox.outside.to_string_lossy().into_owned();
    let err = sandbox
        .unpack(Layer::new().link(EntryType::Symlink, "esc", &outside).link(
            EntryType::Link,
            "stolen",
            "esc/secret",
        ))
        .expect_err("hardlink through a symlink");
    assert!(
        matches!(&err, UnpackError::HardlinkOutside { entry, .. } if entry == "stolen"),
        "{err}"
    );
    assert!(!sandbox.root.join("stolen").exists());

    // An absolute target resolves inside the root, where there is no such file.
    let sandbox = Sandbox::new();
    let secret = sandbox
        .outside
        .join("secret")
        .to_string_lossy()
        .into_owned();
    let err = sandbox
        .unpack(Layer::new().link(EntryType::Link, "stolen", &secret))
        .expect_err("absolute hardlink target is not the host file");
    assert!(err.to_string().contains("stolen"), "{err}");
    assert!(!sandbox.root.join("stolen").exists());
    assert_eq!(
        fs::metadata(sandbox.outside.join("secret"))
            .expect("stat")
            .nlink(),
        1,
        "the host file gained no link"
    );
}

#[test]
fn whiteout_outside_its_directory_is_rejected() {
    require_root();
    for path in ["dir/.wh...", "dir/.wh.", ".wh..."] {
        let sandbox = Sandbox::new();
        let err = sandbox
            .unpack(Layer::new().dir("dir").file(path, b""))
            .expect_err(path);
        assert!(
            matches!(&err, UnpackError::WhiteoutOutside { entry } if entry == path),
            "{path}: {err}"
        );
        sandbox.outside_untouched();
    }
    let sandbox = Sandbox::new();
    let err = sandbox
        .unpack(Layer::new().file("../.wh.outside", b""))
        .expect_err("whiteout above the root");
    assert!(matches!(err, UnpackError::PathTraversal { .. }), "{err}");
    assert!(sandbox.outside.exists());
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlayfs_format() {
    require_root();
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .dir("data")
                .file("data/.wh.deleted.txt", b"")
                .dir("opq")
                .file("opq/.wh..wh..opq", b"")
                .file("opq/new", b"new")
                .file("implied/.wh.gone", b""),
        )
        .expect("unpack");
    let whiteout = fs::symlink_metadata(sandbox.root.join("data/deleted.txt")).expect("lstat");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0, "overlayfs whiteout is device 0:0");
    assert!(!sandbox.root.join("data/.wh.deleted.txt").exists());
    assert_eq!(
        getxattr(&sandbox.root.join("opq"), "trusted.overlay.opaque").as_deref(),
        Some(b"y".as_slice())
    );
    assert!(!sandbox.root.join("opq/.wh..wh..opq").exists());
    assert_eq!(
        fs::read_to_string(sandbox.root.join("opq/new")).expect("read"),
        "new"
    );
    assert!(
        fs::symlink_metadata(sandbox.root.join("implied/gone"))
            .expect("lstat")
            .file_type()
            .is_char_device()
    );
}

#[test]
fn hardlinks_inside_the_layer_are_kept() {
    require_root();
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .dir("bin")
                .file("bin/busybox", b"binary")
                .link(EntryType::Link, "bin/sh", "bin/busybox")
                .link(EntryType::Link, "bin/ash", "/bin/busybox"),
        )
        .expect("unpack");
    let a = fs::metadata(sandbox.root.join("bin/busybox")).expect("stat");
    let b = fs::metadata(sandbox.root.join("bin/sh")).expect("stat");
    let c = fs::metadata(sandbox.root.join("bin/ash")).expect("stat");
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn device_nodes_and_fifos_are_made() {
    require_root();
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .dir("dev")
                .entry(EntryType::Char, "dev/null", b"", |h| {
                    h.set_device_major(1).expect("major");
                    h.set_device_minor(3).expect("minor");
                    h.set_mode(0o666);
                })
                .entry(EntryType::Block, "dev/loop7", b"", |h| {
                    h.set_device_major(7).expect("major");
                    h.set_device_minor(7).expect("minor");
                    h.set_mode(0o660);
                })
                .entry(EntryType::Fifo, "fifo", b"", |h| h.set_mode(0o600)),
        )
        .expect("unpack");
    let null = fs::symlink_metadata(sandbox.root.join("dev/null")).expect("lstat");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let block = fs::symlink_metadata(sandbox.root.join("dev/loop7")).expect("lstat");
    assert!(block.file_type().is_block_device());
    assert_eq!(block.rdev(), libc::makedev(7, 7));
    assert!(
        fs::symlink_metadata(sandbox.root.join("fifo"))
            .expect("lstat")
            .file_type()
            .is_fifo()
    );
}

#[test]
fn xattrs_modes_owners_and_mtimes_are_kept() {
    require_root();
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .entry(EntryType::Directory, "tmp", b"", |h| {
                    h.set_mode(0o1777);
                    h.set_mtime(1000);
                })
                .pax(&[
                    ("SCHILY.xattr.user.coracle", b"yes"),
                    ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"),
                    ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
                    ("mtime", b"1704067200.25"),
                ])
                .entry(EntryType::Regular, "tmp/suid", b"data", |h| {
                    h.set_mode(0o4755);
                    h.set_uid(1234);
                    h.set_gid(5678);
                })
                .entry(EntryType::Symlink, "link", b"", |h| {
                    h.set_link_name_literal("tmp/suid").expect("link");
                    h.set_uid(42);
                    h.set_gid(43);
                    h.set_mtime(2000);
                }),
        )
        .expect("unpack");
    let dir = fs::symlink_metadata(sandbox.root.join("tmp")).expect("lstat");
    assert_eq!(dir.mode() & 0o7777, 0o1777);
    assert_eq!(
        dir.mtime(),
        1000,
        "dir mtime set after its children were made"
    );
    let file_path = sandbox.root.join("tmp/suid");
    let file = fs::symlink_metadata(&file_path).expect("lstat");
    assert_eq!(file.mode() & 0o7777, 0o4755, "setuid survives chown");
    assert_eq!((file.uid(), file.gid()), (1234, 5678));
    assert_eq!(
        (file.mtime(), file.mtime_nsec()),
        (1_704_067_200, 250_000_000)
    );
    assert_eq!(
        getxattr(&file_path, "user.coracle").as_deref(),
        Some(b"yes".as_slice())
    );
    assert!(
        getxattr(&file_path, "security.capability").is_some(),
        "file capabilities kept"
    );
    assert_eq!(
        getxattr(&file_path, "trusted.overlay.redirect"),
        None,
        "overlay xattrs dropped"
    );
    let link = fs::symlink_metadata(sandbox.root.join("link")).expect("lstat");
    assert!(link.is_symlink());
    assert_eq!((link.uid(), link.gid(), link.mtime()), (42, 43, 2000));
}

#[test]
fn later_entries_replace_earlier_ones() {
    require_root();
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .file("x", b"first")
                .dir("d")
                .file("d/child", b"c")
                .file("x", b"second")
                .file("d", b"now a file"),
        )
        .expect("unpack");
    assert_eq!(
        fs::read_to_string(sandbox.root.join("x")).expect("read"),
        "second"
    );
    assert_eq!(
        fs::read_to_string(sandbox.root.join("d")).expect("read"),
        "now a file"
    );
}

#[test]
fn implied_parent_dirs_take_the_lower_layers_attributes() {
    require_root();
    let lower = Sandbox::new();
    lower
        .unpack(
            Layer::new()
                .entry(EntryType::Directory, "tmp", b"", |h| h.set_mode(0o1777))
                .entry(EntryType::Directory, "home", b"", |h| {
                    h.set_mode(0o750);
                    h.set_uid(1000);
                    h.set_gid(1000);
                    h.set_mtime(500);
                })
                .file("notadir", b"file"),
        )
        .expect("unpack lower");
    let upper = Sandbox::new();
    let stats = upper
        .unpack(
            Layer::new()
                .file("tmp/x", b"x")
                .file("home/user/y", b"y")
                .file("notadir/z", b"z")
                .file("named/child", b"c")
                .entry(EntryType::Directory, "named", b"", |h| h.set_mode(0o700)),
        )
        .expect("unpack upper");
    let mut implied: Vec<String> = stats
        .implied_dirs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    implied.sort();
    assert_eq!(implied, vec!["home", "home/user", "notadir", "tmp"]);
    coracle_image::unpack::copy_up_implied_dirs(
        &upper.root,
        &stats.implied_dirs,
        std::slice::from_ref(&lower.root),
    )
    .expect("copy up");
    let mode = |p: &str| fs::symlink_metadata(upper.root.join(p)).expect("lstat");
    assert_eq!(mode("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(
        (
            mode("home").mode() & 0o7777,
            mode("home").uid(),
            mode("home").mtime()
        ),
        (0o750, 1000, 500)
    );
    assert_eq!(
        mode("home/user").mode() & 0o7777,
        0o755,
        "not in the lower layer"
    );
    assert_eq!(
        mode("notadir").mode() & 0o7777,
        0o755,
        "a file below hides nothing to copy"
    );
    assert_eq!(
        mode("named").mode() & 0o7777,
        0o700,
        "an explicit entry wins"
    );
}

#[test]
fn non_utf8_names_land_and_are_whited_out_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    require_root();
    let sandbox = Sandbox::new();
    sandbox
        .unpack(
            Layer::new()
                .entry_raw(EntryType::Regular, b"caf\xe9", b"latin-1", |_| {})
                .entry_raw(EntryType::Regular, b".wh.na\xefve", b"", |_| {}),
        )
        .expect("unpack");
    let names: Vec<Vec<u8>> = fs::read_dir(&sandbox.root)
        .expect("read")
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    assert!(names.contains(&b"caf\xe9".to_vec()), "{names:?}");
    let whiteout = sandbox.root.join(std::ffi::OsStr::from_bytes(b"na\xefve"));
    assert!(
        fs::symlink_metadata(whiteout)
            .expect("lstat")
            .file_type()
            .is_char_device()
    );
}
