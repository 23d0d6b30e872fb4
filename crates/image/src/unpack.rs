//! Safe layer unpacking: a tar stream in, a snapshot directory in overlayfs format out.
//!
//! Rules (after containerd's `pkg/archive/tar.go` and the image spec's
//! [changesets](https://github.com/opencontainers/image-spec/blob/main/layer.md#applying-changesets)):
//!
//! * An entry's path is split into components; `.` and empty ones are dropped, so an
//!   absolute path lands inside the root; a `..` component is refused (tar path
//!   traversal, e.g. CVE-2019-14271, CVE-2018-15664 class bugs).
//! * The parent directory is opened with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)` relative to the snapshot root, and
//!   the entry is made with a `*at` call on its last component only. A layer's own
//!   entries are never written through a symlink: a builder diffing a real tree never
//!   produces one, and refusing it closes "symlink then write through it" escapes
//!   whatever the symlink points at. Nothing is ever string-joined and opened.
//! * A hardlink's target is resolved the same way (no `..`, no symlink on the way) and
//!   must already exist in this layer.
//! * `.wh.NAME` becomes an overlayfs whiteout (a 0:0 character device named NAME);
//!   `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory
//!   (<https://docs.kernel.org/filesystems/overlayfs.html#whiteouts-and-opaque-directories>).
//!   A whiteout naming `..`, `.` or nothing is refused. `trusted.overlay.*` xattrs
//!   carried by the layer itself are dropped: only the unpacker speaks overlayfs.
//! * Owners, modes (incl. setuid/sticky), xattrs and mtimes are kept; directory
//!   mtimes are set last, since creating children changes them.
//! * A parent the layer does not name is made 0755 and reported; once the lower
//!   layers are on disk, [`copy_up_implied_dirs`] copies their attributes onto it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, mkdirat,
    mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
const IMPLIED_DIR_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?}: path leaves the layer root")]
    PathTraversal { entry: String },
    #[error("layer entry {entry:?}: path goes through a symlink or a non-directory")]
    SymlinkInPath { entry: String },
    #[error("layer entry {entry:?}: hardlink target {target:?} is outside the layer")]
    HardlinkOutside { entry: String, target: String },
    #[error("layer entry {entry:?}: whiteout names a path outside its directory")]
    WhiteoutOutside { entry: String },
    #[error("layer entry {entry:?}: unsupported entry type {kind}")]
    Unsupported { entry: String, kind: String },
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("open snapshot root {path}: {source}")]
    OpenRoot {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("read layer tar stream: {0}")]
    Tar(io::Error),
}

/// What a layer held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Directories the layer implied (a child without its parent's entry), made
    /// 0755 root; [`copy_up_implied_dirs`] gives them the lower layers' attributes.
    pub implied_dirs: Vec<PathBuf>,
}

/// Unpacks the tar stream `reader` into the empty directory `dest`. The reader is
/// left just after the tar end-of-archive marker.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = open_root(dest)?;
    let mut unpacker = Unpacker {
        root,
        dir_times: BTreeMap::new(),
        implied: BTreeSet::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        unpacker.apply(&mut entry)?;
    }
    unpacker.set_dir_times()?;
    let mut stats = unpacker.stats;
    stats.implied_dirs = unpacker
        .implied
        .iter()
        .map(|components| PathBuf::from(join_components(components)))
        .collect();
    Ok(stats)
}

/// Gives each directory a layer only implied the attributes (owner, mode, mtime)
/// of the same directory in the nearest lower layer that has it, as containerd's
/// `mkparent` does with its parent layers: otherwise the upper layer's 0755
/// root-owned stand-in would hide, say, `/tmp`'s 1777 in the merged view.
/// `lowers` are the lower snapshots' fs dirs, nearest first. A lower layer where
/// the path is something else (file, symlink, whiteout) ends the search.
pub fn copy_up_implied_dirs(
    dest: &Path,
    implied: &[PathBuf],
    lowers: &[PathBuf],
) -> Result<(), UnpackError> {
    if implied.is_empty() {
        return Ok(());
    }
    let root = open_root(dest)?;
    let lower_roots = lowers
        .iter()
        .map(|lower| open_root(lower))
        .collect::<Result<Vec<_>, _>>()?;
    for path in implied {
        let entry = path.to_string_lossy().into_owned();
        let Some(source) = find_lower_dir(&lower_roots, path.as_os_str()) else {
            continue;
        };
        let stat = nix::sys::stat::fstat(source.as_fd())
            .map_err(|e| io_err(&entry, "stat lower dir", e.into()))?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(strict_resolve());
        let dir = openat2(root.as_fd(), path.as_os_str(), how)
            .map_err(|errno| resolve_err(&entry, errno))?;
        let meta = Meta {
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
            mtime: TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec),
            xattrs: Vec::new(),
        };
        apply_fd_meta(&entry, dir.as_fd(), &meta, true)?;
    }
    Ok(())
}

/// The directory at `path` in the nearest lower layer that has anything there.
fn find_lower_dir(lowers: &[OwnedFd], path: &OsStr) -> Option<OwnedFd> {
    for lower in lowers {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(strict_resolve());
        match openat2(lower.as_fd(), path, how) {
            Ok(dir) => return Some(dir),
            Err(Errno::ENOENT) => continue,
            // A file, symlink or whiteout hides whatever lies below.
            Err(_) => return None,
        }
    }
    None
}

fn open_root(dest: &Path) -> Result<OwnedFd, UnpackError> {
    nix::fcntl::open(
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| UnpackError::OpenRoot {
        path: dest.to_owned(),
        source: errno.into(),
    })
}

/// An entry's metadata, with PAX records applied over the ustar header.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    /// Directory mtimes, applied after every entry is in place.
    dir_times: BTreeMap<Vec<OsString>, TimeSpec>,
    /// Directories made because an entry needed them, not named by the layer.
    implied: BTreeSet<Vec<OsString>>,
    stats: UnpackStats,
}

impl Unpacker {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        // Names are bytes: a non-UTF-8 name must land (and be whited out) as is.
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let components = split_entry_path(&raw_name).ok_or_else(|| UnpackError::PathTraversal {
            entry: name.clone(),
        })?;
        let Some((last, parents)) = components.split_last() else {
            // The layer root itself ("./"): the snapshot dir is ours, leave it.
            return Ok(());
        };
        self.stats.entries += 1;
        let meta = read_meta(entry, &name)?;
        let parent = self.open_dir(&name, parents, true)?;
        if last.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            return self.apply_whiteout(&name, &parent, last.as_bytes(), &meta);
        }
        self.clear_way(&name, &parent, last, kind == EntryType::Directory)?;
        match kind {
            EntryType::Directory => {
                self.make_dir(&name, &parent, last, &meta)?;
                self.implied.remove(&components);
                self.dir_times.insert(components.clone(), meta.mtime);
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous => {
                self.make_file(&name, &parent, last, &meta, entry)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| OsString::from_vec(t.into_owned()))
                    .unwrap_or_default();
                self.make_symlink(&name, &parent, last, &target, &meta)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.make_hardlink(&name, &parent, last, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let header = entry.header();
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let file_type = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                self.make_node(&name, &parent, last, file_type, major, minor, &meta)
            }
            other => Err(UnpackError::Unsupported {
                entry: name,
                kind: format!("{other:?}"),
            }),
        }
    }

    /// Opens (and with `create`, makes) the directory `components` under the root
    /// without following any symlink.
    fn open_dir(
        &mut self,
        entry: &str,
        components: &[OsString],
        create: bool,
    ) -> Result<OwnedFd, UnpackError> {
        if components.is_empty() {
            return reopen(&self.root).map_err(|e| io_err(entry, "open layer root", e));
        }
        let joined = join_components(components);
        match open_dir_in_root(self.root.as_fd(), &joined) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(errno) => return Err(resolve_err(entry, errno)),
        }
        // Walk and make what is missing, one component at a time.
        let mut dir = reopen(&self.root).map_err(|e| io_err(entry, "open layer root", e))?;
        for (depth, component) in components.iter().enumerate() {
            dir = match open_dir_in_root(dir.as_fd(), component.as_os_str()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    make_implied_dir(dir.as_fd(), component.as_os_str())
                        .map_err(|e| io_err(entry, "mkdir parent", e))?;
                    self.implied.insert(components[..=depth].to_vec());
                    open_dir_in_root(dir.as_fd(), component.as_os_str())
                        .map_err(|errno| resolve_err(entry, errno))?
                }
                Err(errno) => return Err(resolve_err(entry, errno)),
            };
        }
        Ok(dir)
    }

    fn apply_whiteout(
        &mut self,
        entry: &str,
        parent: &OwnedFd,
        last: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if last == WHITEOUT_OPAQUE.as_bytes() {
            let dir = reopen_readable_dir(parent).map_err(|e| io_err(entry, "open dir", e))?;
            return fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(|e| io_err(entry, "set opaque xattr", e));
        }
        if last.starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh.plnk`).
            return Ok(());
        }
        let target = &last[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(UnpackError::WhiteoutOutside {
                entry: entry.to_owned(),
            });
        }
        let target = OsStr::from_bytes(target);
        self.clear_way(entry, parent, target, false)?;
        mknodat(
            parent.as_fd(),
            target,
            SFlag::S_IFCHR,
            Mode::empty(),
            libc::makedev(0, 0),
        )
        .map_err(|e| io_err(entry, "mknod whiteout", e.into()))?;
        fchownat(
            parent.as_fd(),
            target,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(entry, "chown whiteout", e.into()))
    }

    /// Removes whatever sits at `name` unless both it and the new entry are
    /// directories (then they merge), as containerd does for repeated entries.
    fn clear_way(
        &mut self,
        entry: &str,
        parent: &OwnedFd,
        name: &OsStr,
        new_is_dir: bool,
    ) -> Result<(), UnpackError> {
        match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(io_err(entry, "stat", errno.into())),
            Ok(stat) => {
                let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
                if is_dir && new_is_dir {
                    return Ok(());
                }
                remove_all_at(parent.as_fd(), name).map_err(|e| io_err(entry, "remove old", e))
            }
        }
    }

    fn make_dir(
        &mut self,
        entry: &str,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(io_err(entry, "mkdir", errno.into())),
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(strict_resolve());
        let dir = openat2(parent.as_fd(), name, how).map_err(|errno| resolve_err(entry, errno))?;
        apply_fd_meta(entry, dir.as_fd(), meta, false)
    }

    fn make_file<R: Read>(
        &mut self,
        entry_name: &str,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        data: &mut tar::Entry<'_, R>,
    ) -> Result<(), UnpackError> {
        let how = OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(strict_resolve());
        let fd = openat2(parent.as_fd(), name, how)
            .map_err(|e| io_err(entry_name, "create file", e.into()))?;
        let mut file = File::from(fd);
        let written = io::copy(data, &mut file).map_err(UnpackError::Tar)?;
        self.stats.bytes += written;
        apply_fd_meta(entry_name, file.as_fd(), meta, true)
    }

    fn make_symlink(
        &mut self,
        entry: &str,
        parent: &OwnedFd,
        name: &OsStr,
        target: &OsStr,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        // The target is stored, never followed here: later entries refuse to go
        // through it, and the container sees it inside its own root.
        symlinkat(target, parent.as_fd(), name).map_err(|e| io_err(entry, "symlink", e.into()))?;
        apply_at_meta(entry, parent, name, meta, false)
    }

    fn make_hardlink(
        &mut self,
        entry: &str,
        parent: &OwnedFd,
        name: &OsStr,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let outside = || UnpackError::HardlinkOutside {
            entry: entry.to_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
        };
        let components = split_entry_path(target).ok_or_else(outside)?;
        let (target_name, target_parents) = components.split_last().ok_or_else(outside)?;
        let target_dir = self
            .open_dir(entry, target_parents, false)
            .map_err(|err| match err {
                UnpackError::SymlinkInPath { .. } => outside(),
                other => other,
            })?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(
            target_dir.as_fd(),
            target_name.as_os_str(),
            parent.as_fd(),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| io_err(entry, "hardlink", e.into()))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &mut self,
        entry: &str,
        parent: &OwnedFd,
        name: &OsStr,
        file_type: SFlag,
        major: u32,
        minor: u32,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        mknodat(
            parent.as_fd(),
            name,
            file_type,
            Mode::from_bits_truncate(0o600),
            libc::makedev(major, minor),
        )
        .map_err(|e| io_err(entry, "mknod", e.into()))?;
        apply_at_meta(entry, parent, name, meta, true)
    }

    fn set_dir_times(&self) -> Result<(), UnpackError> {
        for (components, mtime) in &self.dir_times {
            let entry = join_components(components).to_string_lossy().into_owned();
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(strict_resolve());
            let dir = match openat2(
                self.root.as_fd(),
                join_components(components).as_os_str(),
                how,
            ) {
                Ok(dir) => dir,
                // Replaced or whited out later in the same layer.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(errno) => return Err(io_err(&entry, "open dir for mtime", errno.into())),
            };
            futimens(dir.as_fd(), mtime, mtime)
                .map_err(|e| io_err(&entry, "set dir mtime", e.into()))?;
        }
        Ok(())
    }
}

/// A parent directory no entry named: 0755 whatever the umask.
fn make_implied_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match mkdirat(parent, name, Mode::from_bits_truncate(IMPLIED_DIR_MODE)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Ok(()),
        Err(errno) => return Err(errno.into()),
    }
    // Just made by us in a directory only we write to: not a symlink.
    fchmodat(
        parent,
        name,
        Mode::from_bits_truncate(IMPLIED_DIR_MODE),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(io::Error::from)
}

/// Components of an entry path, or `None` if one of them is `..`.
fn split_entry_path(path: &[u8]) -> Option<Vec<OsString>> {
    let mut components = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return None,
            other => components.push(OsString::from_vec(other.to_vec())),
        }
    }
    Some(components)
}

fn join_components(components: &[OsString]) -> OsString {
    let mut joined = OsString::new();
    for (i, component) in components.iter().enumerate() {
        if i > 0 {
            joined.push("/");
        }
        joined.push(component);
    }
    joined
}

/// Resolution that stays inside the dirfd and follows no symlink at all.
fn strict_resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_SYMLINKS
}

fn open_dir_in_root(dir: BorrowedFd<'_>, path: &OsStr) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(strict_resolve());
    openat2(dir, path, how)
}

fn reopen(dir: &OwnedFd) -> io::Result<OwnedFd> {
    dir.try_clone()
}

fn reopen_readable_dir(dir: &OwnedFd) -> io::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(strict_resolve());
    openat2(dir.as_fd(), ".", how).map_err(io::Error::from)
}

fn resolve_err(entry: &str, errno: Errno) -> UnpackError {
    match errno {
        Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV => UnpackError::SymlinkInPath {
            entry: entry.to_owned(),
        },
        other => io_err(entry, "resolve parent", other.into()),
    }
}

fn io_err(entry: &str, op: &'static str, source: io::Error) -> UnpackError {
    UnpackError::Io {
        entry: entry.to_owned(),
        op,
        source,
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, UnpackError> {
    let header = entry.header();
    let bad = |e: io::Error| io_err(name, "read header", e);
    let old = header.as_old();
    let mut meta = Meta {
        mode: numeric(&old.mode, || header.mode().map(u64::from)).map_err(bad)? as u32 & 0o7777,
        uid: u32::try_from(numeric(&old.uid, || header.uid()).map_err(bad)?).unwrap_or(u32::MAX),
        gid: u32::try_from(numeric(&old.gid, || header.gid()).map_err(bad)?).unwrap_or(u32::MAX),
        mtime: TimeSpec::new(
            i64::try_from(numeric(&old.mtime, || header.mtime()).map_err(bad)?).unwrap_or(0),
            0,
        ),
        xattrs: Vec::new(),
    };
    let Some(extensions) = entry.pax_extensions().map_err(bad)? else {
        return Ok(meta);
    };
    for extension in extensions {
        let extension = extension.map_err(bad)?;
        let Ok(key) = extension.key() else { continue };
        let value = extension.value_bytes();
        match key {
            "uid" => meta.uid = parse_pax_number(value).unwrap_or(meta.uid),
            "gid" => meta.gid = parse_pax_number(value).unwrap_or(meta.gid),
            "mtime" => meta.mtime = parse_pax_time(value).unwrap_or(meta.mtime),
            _ => {
                if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    if xattr.starts_with(OVERLAY_XATTR_PREFIX) {
                        tracing::warn!(
                            entry = name,
                            xattr,
                            "dropped overlayfs xattr carried by a layer"
                        );
                        continue;
                    }
                    if let Ok(xattr) = CString::new(xattr) {
                        meta.xattrs.push((xattr, value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

/// A numeric header field; an empty one (all NUL or spaces) is 0, as Go's
/// archive/tar reads it and as some layer writers leave it.
fn numeric(raw: &[u8], parse: impl FnOnce() -> io::Result<u64>) -> io::Result<u64> {
    if raw.iter().all(|b| *b == 0 || *b == b' ') {
        return Ok(0);
    }
    parse()
}

fn parse_pax_number(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// PAX times are decimal seconds with an optional fraction (`1704067200.5`).
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        let scale = 10i64.pow(9 - u32::try_from(digits.len()).ok()?);
        digits.parse::<i64>().ok()? * scale
    };
    Some(TimeSpec::new(secs, nanos))
}

/// Owner, then mode (chown clears setuid), then xattrs and (for files) times.
fn apply_fd_meta(
    entry: &str,
    fd: BorrowedFd<'_>,
    meta: &Meta,
    set_times: bool,
) -> Result<(), UnpackError> {
    fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(|e| io_err(entry, "chown", e.into()))?;
    fchmod(fd, Mode::from_bits_truncate(meta.mode))
        .map_err(|e| io_err(entry, "chmod", e.into()))?;
    for (key, value) in &meta.xattrs {
        fsetxattr_c(fd, key, value).map_err(|e| io_err(entry, "setxattr", e))?;
    }
    if set_times {
        futimens(fd, &meta.mtime, &meta.mtime).map_err(|e| io_err(entry, "set mtime", e.into()))?;
    }
    Ok(())
}

/// The same for entries that cannot be opened safely (symlinks, device nodes).
fn apply_at_meta(
    entry: &str,
    parent: &OwnedFd,
    name: &OsStr,
    meta: &Meta,
    set_mode: bool,
) -> Result<(), UnpackError> {
    fchownat(
        parent.as_fd(),
        name,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err(entry, "chown", e.into()))?;
    if set_mode {
        // Only reached for device nodes and fifos we just made: not a symlink.
        fchmodat(
            parent.as_fd(),
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| io_err(entry, "chmod", e.into()))?;
    }
    for (key, value) in &meta.xattrs {
        lsetxattr_at(parent.as_fd(), name, key, value).map_err(|e| io_err(entry, "setxattr", e))?;
    }
    utimensat(
        parent.as_fd(),
        name,
        &meta.mtime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io_err(entry, "set mtime", e.into()))
}

fn fsetxattr(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> io::Result<()> {
    let key = CString::new(key).map_err(io::Error::other)?;
    fsetxattr_c(fd, &key, value)
}

fn fsetxattr_c(fd: BorrowedFd<'_>, key: &CString, value: &[u8]) -> io::Result<()> {
    // SAFETY: fd is a live descriptor borrowed for the call; key is NUL-terminated;
    // value points at value.len() readable bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lsetxattr` on `name` inside the directory `parent`, through the directory's
/// `/proc/self/fd` entry: the directory is pinned by the fd and the last component
/// is not followed, so no path outside the layer can be reached.
fn lsetxattr_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    key: &CString,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: path and key are NUL-terminated; value points at value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes `name` in `dir`, recursively for a directory, never following symlinks.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(errno) => return Err(errno.into()),
    }
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(strict_resolve());
    let child = openat2(dir, name, how)?;
    let mut children = Vec::new();
    let mut listing = nix::dir::Dir::from_fd(child.try_clone()?)?;
    for item in listing.iter() {
        let item = item?;
        let child_name = item.file_name().to_bytes();
        if child_name != b"." && child_name != b".." {
            children.push(OsString::from_vec(child_name.to_vec()));
        }
    }
    for child_name in children {
        remove_all_at(child.as_fd(), &child_name)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_drop_dots_and_leading_slashes_but_refuse_dotdot() {
        let parts = |p: &str| {
            split_entry_path(p.as_bytes()).map(|v| {
                v.iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            parts("/etc/passwd"),
            Some(vec!["etc".into(), "passwd".into()])
        );
        assert_eq!(parts("./a//b/"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(parts("a/../b"), None);
        assert_eq!(parts("../x"), None);
        assert_eq!(parts("./"), Some(vec![]));
    }

    #[test]
    fn pax_times_keep_fractions() {
        assert_eq!(
            parse_pax_time(b"12.5"),
            Some(TimeSpec::new(12, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"7"), Some(TimeSpec::new(7, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
