//! `mounts`: containerd's default filesystems, the pod's files and /dev/shm, and the
//! CRI mounts (containerd's `WithMounts` and `linuxContainerMounts`), plus the image's
//! volume directories, made inside the rootfs.

use std::collections::HashSet;
use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;
use pathrs::Root;

use super::{PodFilePaths, SpecError};
use crate::model::{ContainerSpec, MountSpec, Propagation};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Where /proc/self/mountinfo comes from (a fixed text in tests).
pub(super) trait MountinfoSource {
    fn read(&self) -> Result<String, SpecError>;
}

/// This process's /proc/self/mountinfo.
pub(super) struct ProcMountinfo;

impl MountinfoSource for ProcMountinfo {
    fn read(&self) -> Result<String, SpecError> {
        std::fs::read_to_string(MOUNTINFO).map_err(SpecError::io("read", MOUNTINFO))
    }
}

pub(super) struct MountInputs<'a> {
    pub spec: &'a ContainerSpec,
    pub pod_files: &'a PodFilePaths,
    pub pod_shm: Option<&'a Path>,
    pub mountinfo: &'a dyn MountinfoSource,
}

#[derive(Debug)]
pub(super) struct MountPlan {
    pub mounts: Vec<Mount>,
    /// `linux.rootfsPropagation`: rshared or rslave when a mount needs it.
    pub rootfs_propagation: Option<String>,
}

/// A bind mount to add, from the request or for the pod's files.
#[derive(Clone, Debug)]
struct BindRequest {
    /// Lexically cleaned, absolute.
    container_path: PathBuf,
    host_path: PathBuf,
    readonly: bool,
    recursive_read_only: bool,
    propagation: Propagation,
    /// A CRI mount: its source is made when missing.
    from_request: bool,
    extra_options: &'static [&'static str],
    /// For errors: `mounts[2]`, `/etc/hosts`.
    field: String,
}

/// Default mounts first (minus those a bind replaces, and everything under /dev when
/// /dev itself is bound), then the binds sorted by depth so a parent never hides a
/// child (stable: the request's order within one depth, the request's before the pod's).
pub(super) fn build_mounts(inputs: &MountInputs<'_>) -> Result<MountPlan, SpecError> {
    let spec = inputs.spec;
    let requested = spec
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| request_bind(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut binds = requested.clone();
    for extra in pod_binds(inputs) {
        if !requested
            .iter()
            .any(|r| r.container_path == extra.container_path)
        {
            binds.push(extra);
        }
    }
    binds.sort_by_key(|b| b.container_path.components().count());

    let bound: HashSet<&Path> = binds.iter().map(|b| b.container_path.as_path()).collect();
    let dev_bound = bound.contains(Path::new("/dev"));
    let mut mounts: Vec<Mount> = default_mounts(spec.security.privileged)
        .into_iter()
        .filter(|m| {
            let dst = m.destination().as_path();
            let under_bound_dev = dev_bound && dst.starts_with("/dev") && dst != Path::new("/dev");
            !(bound.contains(dst) || under_bound_dev)
        })
        .collect();

    let mut rootfs_propagation = None;
    let mut mountinfo = None;
    for b in &binds {
        mounts.push(bind_mount(
            b,
            &mut rootfs_propagation,
            &mut mountinfo,
            inputs.mountinfo,
        )?);
    }
    Ok(MountPlan {
        mounts,
        rootfs_propagation,
    })
}

fn mount(dst: &str, typ: &str, src: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dst));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(src)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// containerd's `defaultMounts` without /run, plus the cgroup mount; /sys and the
/// cgroup mount are writable only for privileged containers.
fn default_mounts(privileged: bool) -> Vec<Mount> {
    let mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", mode],
        ),
    ]
}

fn request_bind(m: &MountSpec, i: usize) -> Result<BindRequest, SpecError> {
    let field = format!("mounts[{i}]");
    let container_path = clean_absolute(&m.container_path).ok_or_else(|| {
        SpecError::invalid(
            format!("{field}.container_path"),
            format!("{:?} is not an absolute path", m.container_path),
        )
    })?;
    if container_path == Path::new("/") {
        return Err(SpecError::invalid(
            format!("{field}.container_path"),
            "cannot mount over the container's root",
        ));
    }
    if !m.host_path.starts_with('/') || m.host_path.contains('\0') {
        return Err(SpecError::invalid(
            format!("{field}.host_path"),
            format!("{:?} is not an absolute path", m.host_path),
        ));
    }
    Ok(BindRequest {
        container_path,
        host_path: PathBuf::from(&m.host_path),
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        propagation: m.propagation,
        from_request: true,
        extra_options: &[],
        field,
    })
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf (read-only with a read-only rootfs,
/// as containerd), and /dev/shm: the pod's, or the host's with host IPC. A source that
/// does not exist is skipped.
fn pod_binds(inputs: &MountInputs<'_>) -> Vec<BindRequest> {
    let readonly = inputs.spec.security.readonly_rootfs;
    let files = inputs.pod_files;
    let shm = inputs.pod_shm.unwrap_or(Path::new("/dev/shm"));
    [
        ("/etc/hostname", files.hostname.as_path(), readonly, &[][..]),
        ("/etc/hosts", files.hosts.as_path(), readonly, &[][..]),
        (
            "/etc/resolv.conf",
            files.resolv_conf.as_path(),
            readonly,
            &[][..],
        ),
        ("/dev/shm", shm, false, &["nosuid", "nodev", "noexec"][..]),
    ]
    .into_iter()
    .filter(|(_, src, _, _)| src.is_absolute() && src.exists())
    .map(|(dst, src, readonly, extra_options)| BindRequest {
        container_path: PathBuf::from(dst),
        host_path: src.to_path_buf(),
        readonly,
        recursive_read_only: false,
        propagation: Propagation::Private,
        from_request: false,
        extra_options,
        field: dst.to_string(),
    })
    .collect()
}

fn bind_mount(
    b: &BindRequest,
    rootfs_propagation: &mut Option<String>,
    mountinfo: &mut Option<String>,
    source: &dyn MountinfoSource,
) -> Result<Mount, SpecError> {
    // Validate before bind_source makes anything on the host.
    let access = access_option(b)?;
    let host = bind_source(b)?;
    let mut options = vec!["rbind".to_string()];
    match b.propagation {
        Propagation::Private => options.push("rprivate".into()),
        Propagation::Bidirectional => {
            check_propagation_source(cached(mountinfo, source)?, &host, b.propagation)?;
            options.push("rshared".into());
            *rootfs_propagation = Some("rshared".into());
        }
        Propagation::HostToContainer => {
            check_propagation_source(cached(mountinfo, source)?, &host, b.propagation)?;
            options.push("rslave".into());
            if rootfs_propagation.as_deref() != Some("rshared") {
                *rootfs_propagation = Some("rslave".into());
            }
        }
    }
    options.push(access.into());
    options.extend(b.extra_options.iter().map(|o| o.to_string()));

    let mut m = Mount::default();
    m.set_destination(b.container_path.clone());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(host));
    m.set_options(Some(options));
    Ok(m)
}

fn cached<'a>(
    slot: &'a mut Option<String>,
    source: &dyn MountinfoSource,
) -> Result<&'a str, SpecError> {
    if slot.is_none() {
        *slot = Some(source.read()?);
    }
    Ok(slot.as_deref().unwrap_or_default())
}

/// "ro", "rw", or "rro" (recursive read-only: needs a read-only, private mount).
fn access_option(b: &BindRequest) -> Result<&'static str, SpecError> {
    match (b.readonly, b.recursive_read_only) {
        (false, false) => Ok("rw"),
        (true, false) => Ok("ro"),
        (false, true) => Err(SpecError::invalid(
            format!("{}.recursive_read_only", b.field),
            "a recursive read-only mount must be read-only",
        )),
        (true, true) if b.propagation != Propagation::Private => Err(SpecError::invalid(
            format!("{}.recursive_read_only", b.field),
            format!("needs private propagation, got {:?}", b.propagation),
        )),
        (true, true) => Ok("rro"),
    }
}

/// The canonical host path of a bind source; a CRI mount's missing source is made as
/// a directory first (containerd does, for hostPath volumes the kubelet did not make).
fn bind_source(b: &BindRequest) -> Result<PathBuf, SpecError> {
    if b.from_request {
        match std::fs::symlink_metadata(&b.host_path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&b.host_path)
                    .map_err(SpecError::io("create mount source", &b.host_path))?;
            }
            Err(e) => return Err(SpecError::io("stat mount source", &b.host_path)(e)),
        }
    }
    std::fs::canonicalize(&b.host_path).map_err(SpecError::io("resolve mount source", &b.host_path))
}

/// A line of /proc/self/mountinfo (proc(5)): the mount point and its optional fields
/// (`shared:N`, `master:N`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountinfoEntry {
    pub mount_point: PathBuf,
    pub optional: Vec<String>,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountinfoEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(MountinfoEntry {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                optional: fields[6..sep].iter().map(|s| s.to_string()).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let oct = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// containerd's `ensureShared` / `ensureSharedOrSlave`: the mount `path` lives on (the
/// last, longest mount point above it) must be shared for Bidirectional, shared or a
/// slave for HostToContainer, or mounts would not propagate as asked.
pub fn check_propagation_source(
    mountinfo: &str,
    path: &Path,
    wanted: Propagation,
) -> Result<(), SpecError> {
    let (name, needs, ok): (_, _, fn(&str) -> bool) = match wanted {
        Propagation::Private => return Ok(()),
        Propagation::Bidirectional => ("rshared", "shared", |o| o.starts_with("shared:")),
        Propagation::HostToContainer => ("rslave", "shared or a slave", |o| {
            o.starts_with("shared:") || o.starts_with("master:")
        }),
    };
    let entries = parse_mountinfo(mountinfo);
    let entry = entries
        .iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.components().count())
        .ok_or_else(|| {
            SpecError::invalid(
                "mounts",
                format!("no mount holds {} in {MOUNTINFO}", path.display()),
            )
        })?;
    if entry.optional.iter().any(|o| ok(o)) {
        return Ok(());
    }
    Err(SpecError::PropagationUnavailable {
        wanted: name,
        path: path.to_path_buf(),
        mount_point: entry.mount_point.clone(),
        needs,
    })
}

/// `/a/./b/../c` -> `/a/c`; `..` above the root stays at the root (Go's `filepath.Clean`).
/// `None` when the path is not absolute.
fn clean_absolute(p: &str) -> Option<PathBuf> {
    if !p.starts_with('/') || p.contains('\0') {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Makes each image volume's directory inside the rootfs, resolved in the root with
/// pathrs so neither `..` nor a symlink in the image can reach the host. Volumes a mount
/// already covers are skipped. Nothing is bound there: the directory is the container's.
pub(super) fn create_image_volumes(
    root: &Root,
    rootfs: &Path,
    volumes: &[String],
    mounts: &[Mount],
) -> Result<(), SpecError> {
    for volume in volumes {
        let Some(dst) = clean_absolute(&format!("/{volume}")) else {
            return Err(SpecError::invalid(
                "image config Volumes",
                format!("{volume:?} is not a path"),
            ));
        };
        if mounts.iter().any(|m| m.destination() == &dst) {
            continue;
        }
        let Ok(rel) = dst.strip_prefix("/") else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        root.mkdir_all(rel, &Permissions::from_mode(0o755))
            .map_err(|source| SpecError::Rootfs {
                op: "create image volume",
                rootfs: rootfs.to_path_buf(),
                path: dst.clone(),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedMountinfo(&'static str);

    impl MountinfoSource for FixedMountinfo {
        fn read(&self) -> Result<String, SpecError> {
            Ok(self.0.to_string())
        }
    }

    const MOUNTINFO_TEXT: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:5 / /proc rw,nosuid - proc proc rw
30 22 0:40 / /mnt/shared rw shared:7 - tmpfs tmpfs rw
31 22 0:41 / /mnt/slave rw master:7 - tmpfs tmpfs rw
32 22 0:42 / /mnt/private rw - tmpfs tmpfs rw
33 22 0:43 / /mnt/with\\040space rw - tmpfs tmpfs rw
34 30 0:44 / /mnt/shared/inner rw - tmpfs tmpfs rw
";

    fn spec_with(mounts: Vec<MountSpec>) -> ContainerSpec {
        ContainerSpec {
            mounts,
            ..Default::default()
        }
    }

    fn plan(
        spec: &ContainerSpec,
        files: &PodFilePaths,
        shm: Option<&Path>,
    ) -> Result<MountPlan, SpecError> {
        build_mounts(&MountInputs {
            spec,
            pod_files: files,
            pod_shm: shm,
            mountinfo: &FixedMountinfo(MOUNTINFO_TEXT),
        })
    }

    fn destinations(p: &MountPlan) -> Vec<String> {
        p.mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    fn options(p: &MountPlan, dst: &str) -> Vec<String> {
        p.mounts
            .iter()
            .find(|m| m.destination() == Path::new(dst))
            .and_then(|m| m.options().clone())
            .unwrap_or_default()
    }

    fn pod_files(dir: &Path) -> PodFilePaths {
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::write(dir.join(f), "x\n").unwrap();
        }
        std::fs::create_dir_all(dir.join("shm")).unwrap();
        PodFilePaths::in_dir(dir)
    }

    fn bind(host: &Path, container: &str) -> MountSpec {
        MountSpec {
            container_path: container.into(),
            host_path: host.display().to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_then_pod_files_and_shm() {
        let dir = tempfile::tempdir().unwrap();
        let files = pod_files(dir.path());
        let shm = dir.path().join("shm");
        let p = plan(&ContainerSpec::default(), &files, Some(&shm)).unwrap();
        assert_eq!(
            destinations(&p),
            vec![
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/etc/hostname",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/dev/shm",
            ]
        );
        assert_eq!(options(&p, "/sys"), vec!["nosuid", "noexec", "nodev", "ro"]);
        assert_eq!(options(&p, "/etc/hosts"), vec!["rbind", "rprivate", "rw"]);
        assert_eq!(
            options(&p, "/dev/shm"),
            vec!["rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"]
        );
        let shm_mount = p
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(
            shm_mount.source().as_deref(),
            Some(shm.canonicalize().unwrap().as_path())
        );
        assert!(p.rootfs_propagation.is_none());
    }

    #[test]
    fn missing_pod_files_are_skipped_and_host_ipc_binds_host_shm() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFilePaths::in_dir(&dir.path().join("none"));
        let p = plan(&ContainerSpec::default(), &files, None).unwrap();
        let dst = destinations(&p);
        assert!(!dst.iter().any(|d| d.starts_with("/etc")), "{dst:?}");
        let shm = p
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn readonly_rootfs_makes_pod_files_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = pod_files(dir.path());
        let mut spec = ContainerSpec::default();
        spec.security.readonly_rootfs = true;
        let p = plan(&spec, &files, Some(&dir.path().join("shm"))).unwrap();
        assert_eq!(
            options(&p, "/etc/resolv.conf"),
            vec!["rbind", "rprivate", "ro"]
        );
        assert!(options(&p, "/dev/shm").contains(&"rw".to_string()));
    }

    #[test]
    fn privileged_gets_writable_sys_and_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = ContainerSpec::default();
        spec.security.privileged = true;
        let p = plan(&spec, &PodFilePaths::in_dir(dir.path()), None).unwrap();
        assert!(options(&p, "/sys").contains(&"rw".to_string()));
        assert!(options(&p, "/sys/fs/cgroup").contains(&"rw".to_string()));
    }

    #[test]
    fn cri_mount_replaces_the_pod_file_and_default_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let files = pod_files(dir.path());
        let my_hosts = dir.path().join("my-hosts");
        std::fs::write(&my_hosts, "").unwrap();
        let my_shm = dir.path().join("my-shm");
        let spec = spec_with(vec![
            bind(&my_hosts, "/etc/hosts"),
            bind(&my_shm, "/dev/shm/"),
        ]);
        let p = plan(&spec, &files, Some(&dir.path().join("shm"))).unwrap();
        let dst = destinations(&p);
        assert_eq!(dst.iter().filter(|d| *d == "/etc/hosts").count(), 1);
        assert_eq!(dst.iter().filter(|d| *d == "/dev/shm").count(), 1);
        let hosts = p
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(
            hosts.source().as_deref(),
            Some(my_hosts.canonicalize().unwrap().as_path())
        );
    }

    #[test]
    fn dev_mount_drops_every_default_under_dev() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_with(vec![bind(Path::new("/dev"), "/dev")]);
        let p = plan(
            &spec,
            &PodFilePaths::in_dir(dir.path()),
            Some(&dir.path().join("no-shm")),
        )
        .unwrap();
        let dst = destinations(&p);
        assert!(
            !dst.contains(&"/dev/pts".to_string()) && !dst.contains(&"/dev/mqueue".to_string())
        );
        assert_eq!(
            dst.iter().filter(|d| d.starts_with("/dev")).count(),
            1,
            "{dst:?}"
        );
    }

    #[test]
    fn binds_are_sorted_by_depth() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_with(vec![
            bind(&dir.path().join("a"), "/data/deep/er"),
            bind(&dir.path().join("b"), "/data"),
            bind(&dir.path().join("c"), "/data/deep"),
        ]);
        let p = plan(
            &spec,
            &PodFilePaths::in_dir(dir.path()),
            Some(&dir.path().join("x")),
        )
        .unwrap();
        let dst = destinations(&p);
        let at = |d: &str| dst.iter().position(|x| x == d).unwrap();
        assert!(at("/data") < at("/data/deep") && at("/data/deep") < at("/data/deep/er"));
    }

    #[test]
    fn missing_host_path_is_created_and_symlinks_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new/volume");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let spec = spec_with(vec![bind(&missing, "/v"), bind(&link, "/l")]);
        let p = plan(
            &spec,
            &PodFilePaths::in_dir(dir.path()),
            Some(&dir.path().join("x")),
        )
        .unwrap();
        assert!(missing.is_dir());
        let l = p
            .mounts
            .iter()
            .find(|m| m.destination() == Path::new("/l"))
            .unwrap();
        assert_eq!(
            l.source().as_deref(),
            Some(real.canonicalize().unwrap().as_path())
        );
    }

    #[test]
    fn readonly_and_recursive_read_only_options() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFilePaths::in_dir(dir.path());
        let shm = dir.path().join("x");
        let mut m = bind(dir.path(), "/ro");
        m.readonly = true;
        let p = plan(&spec_with(vec![m.clone()]), &files, Some(&shm)).unwrap();
        assert_eq!(options(&p, "/ro"), vec!["rbind", "rprivate", "ro"]);
        m.recursive_read_only = true;
        let p = plan(&spec_with(vec![m.clone()]), &files, Some(&shm)).unwrap();
        assert_eq!(options(&p, "/ro"), vec!["rbind", "rprivate", "rro"]);
    }

    #[test]
    fn recursive_read_only_needs_readonly_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFilePaths::in_dir(dir.path());
        let mut m = bind(dir.path(), "/ro");
        m.recursive_read_only = true;
        let err = plan(&spec_with(vec![m.clone()]), &files, None).unwrap_err();
        assert!(
            err.to_string().contains("mounts[0].recursive_read_only"),
            "{err}"
        );
        m.readonly = true;
        m.propagation = Propagation::HostToContainer;
        let err = plan(&spec_with(vec![m]), &files, None).unwrap_err();
        assert!(err.to_string().contains("private propagation"), "{err}");
    }

    #[test]
    fn bad_container_or_host_paths_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFilePaths::in_dir(dir.path());
        for m in [
            bind(dir.path(), "relative"),
            bind(dir.path(), ""),
            bind(dir.path(), "/.."),
            MountSpec {
                container_path: "/x".into(),
                host_path: "relative".into(),
                ..Default::default()
            },
        ] {
            let err = plan(&spec_with(vec![m]), &files, None).unwrap_err();
            assert!(err.is_invalid_argument(), "{err}");
        }
    }

    #[test]
    fn mountinfo_lines_parse_with_optional_fields_and_escapes() {
        let e = parse_mountinfo(MOUNTINFO_TEXT);
        assert_eq!(e.len(), 7);
        assert_eq!(e[0].mount_point, PathBuf::from("/"));
        assert_eq!(e[0].optional, vec!["shared:1"]);
        assert!(e[1].optional.is_empty());
        assert_eq!(e[5].mount_point, PathBuf::from("/mnt/with space"));
        assert!(parse_mountinfo("garbage\n1 2 3\n").is_empty());
    }

    #[test]
    fn bidirectional_needs_a_shared_mount() {
        let ok = check_propagation_source(
            MOUNTINFO_TEXT,
            Path::new("/mnt/shared/dir"),
            Propagation::Bidirectional,
        );
        assert!(ok.is_ok());
        for path in ["/mnt/slave/x", "/mnt/private/x", "/mnt/shared/inner/x"] {
            let err = check_propagation_source(
                MOUNTINFO_TEXT,
                Path::new(path),
                Propagation::Bidirectional,
            )
            .unwrap_err();
            assert!(
                matches!(err, SpecError::PropagationUnavailable { .. }),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn host_to_container_needs_a_shared_or_slave_mount() {
        for path in ["/mnt/shared/x", "/mnt/slave/x", "/etc"] {
            assert!(
                check_propagation_source(
                    MOUNTINFO_TEXT,
                    Path::new(path),
                    Propagation::HostToContainer
                )
                .is_ok(),
                "{path}"
            );
        }
        let err = check_propagation_source(
            MOUNTINFO_TEXT,
            Path::new("/mnt/private"),
            Propagation::HostToContainer,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/mnt/private"), "{err}");
        // A sibling whose name only starts like a mount point is not on it.
        assert!(
            check_propagation_source(
                MOUNTINFO_TEXT,
                Path::new("/mnt/privateer"),
                Propagation::HostToContainer
            )
            .is_ok()
        );
    }

    #[test]
    fn propagation_sets_rootfs_propagation() {
        let dir = tempfile::tempdir().unwrap();
        let files = PodFilePaths::in_dir(dir.path());
        // The source must exist to be resolved: / is shared in the fixed mountinfo.
        let mut slave = bind(dir.path(), "/slave");
        slave.propagation = Propagation::HostToContainer;
        let p = plan(&spec_with(vec![slave.clone()]), &files, None).unwrap();
        assert_eq!(p.rootfs_propagation.as_deref(), Some("rslave"));
        assert!(options(&p, "/slave").contains(&"rslave".to_string()));
        let mut shared = bind(dir.path(), "/shared");
        shared.propagation = Propagation::Bidirectional;
        let p = plan(&spec_with(vec![shared, slave]), &files, None).unwrap();
        assert_eq!(p.rootfs_propagation.as_deref(), Some("rshared"));
    }

    #[test]
    fn clean_absolute_handles_dots() {
        assert_eq!(clean_absolute("/a/./b/../c/"), Some(PathBuf::from("/a/c")));
        assert_eq!(clean_absolute("/../../etc"), Some(PathBuf::from("/etc")));
        assert_eq!(clean_absolute("a/b"), None);
    }

    #[test]
    fn image_volume_symlink_does_not_escape_rootfs() {
        let rootfs = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", rootfs.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", rootfs.path().join("up")).unwrap();
        let tag = format!("coracle-volume-test-{}", std::process::id());
        let volumes = vec![
            format!("/escape/tmp/{tag}"),
            format!("/../../up/{tag}-dotdot"),
            "relative/dir".to_string(),
        ];
        let root = Root::open(rootfs.path()).unwrap();
        create_image_volumes(&root, rootfs.path(), &volumes, &[]).unwrap();
        assert!(
            !Path::new("/tmp").join(&tag).exists(),
            "escaped to the host /tmp"
        );
        assert!(
            !Path::new("/").join(format!("{tag}-dotdot")).exists(),
            "escaped to host /"
        );
        assert!(rootfs.path().join("tmp").join(&tag).is_dir());
        assert!(rootfs.path().join(format!("{tag}-dotdot")).is_dir());
        assert!(rootfs.path().join("relative/dir").is_dir());
    }

    #[test]
    fn image_volume_under_a_mount_is_not_created() {
        let rootfs = tempfile::tempdir().unwrap();
        let root = Root::open(rootfs.path()).unwrap();
        let covered = mount("/data", "bind", "/srv", &["rbind"]);
        create_image_volumes(
            &root,
            rootfs.path(),
            &["/data".into(), "/cache".into()],
            &[covered],
        )
        .unwrap();
        assert!(!rootfs.path().join("data").exists());
        assert!(rootfs.path().join("cache").is_dir());
    }
}
