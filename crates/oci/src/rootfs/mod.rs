//! The container's root filesystem: propagation, the rootfs bind, spec mounts, /dev,
//! pivot_root, then (after pivot) masked/readonly paths and the read-only root.
//! Runs in the container init, inside its new mount namespace.

pub mod device;
pub mod masked;
pub mod mount;
pub mod symlink;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::Spec;
use pathrs::Root;

use crate::process::resources::CgroupMount;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount {src} on {dst}: {source}")]
    Mount {
        src: String,
        dst: PathBuf,
        source: nix::Error,
    },
    #[error("resolve {path} in rootfs: {source}")]
    Resolve {
        path: PathBuf,
        source: pathrs::error::Error,
    },
    #[error("open rootfs {path}: {source}")]
    OpenRoot {
        path: PathBuf,
        source: pathrs::error::Error,
    },
    #[error("mount destination {0} is not absolute")]
    RelativeDestination(PathBuf),
    #[error("device {path}: {msg}")]
    Device { path: PathBuf, msg: String },
    #[error("refusing to mask with /dev/null: {0}")]
    DevNull(String),
    #[error("{op} {path}: {source}")]
    Syscall {
        op: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("unknown rootfs propagation {0:?}")]
    Propagation(String),
    #[error("recursive read-only mount on {0} needs mount_setattr(2) (Linux 5.12 or newer)")]
    RecursiveReadonlyUnsupported(PathBuf),
}

/// What the init needs to lay out the rootfs.
pub struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub in_new_userns: bool,
    pub cgroup_mounts: &'a [CgroupMount],
    /// process.cwd: created inside the rootfs (as root, before the user switch).
    pub cwd: &'a Path,
}

fn sys_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> RootfsError + 'a {
    move |source| RootfsError::Syscall {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Everything before pivot_root. Returns whether /dev/pts is a devpts mount (for the
/// /dev/ptmx symlink and the console).
pub fn prepare(plan: &RootfsPlan<'_>) -> Result<(), RootfsError> {
    let linux = plan.spec.linux().as_ref();
    // runc: make / rslave (or what linux.rootfsPropagation says) so our mounts do not
    // propagate back to the host and host unmounts still reach us.
    let prop_name = linux
        .and_then(|l| l.rootfs_propagation().clone())
        .unwrap_or_else(|| "rslave".into());
    let prop = mount::propagation_flag(&prop_name)
        .ok_or_else(|| RootfsError::Propagation(prop_name.clone()))?;
    // Shared would leak our mounts to the host before pivot; apply it after pivot instead.
    let early = if prop.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        prop
    };
    mount(None::<&str>, "/", None::<&str>, early, None::<&str>)
        .map_err(sys_err("make / private", Path::new("/")))?;

    // pivot_root needs the new root to be a mount point.
    mount(
        Some(plan.rootfs),
        plan.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Mount {
        src: plan.rootfs.display().to_string(),
        dst: plan.rootfs.to_path_buf(),
        source,
    })?;

    let root = Root::open(plan.rootfs).map_err(|source| RootfsError::OpenRoot {
        path: plan.rootfs.to_path_buf(),
        source,
    })?;
    let mounts = plan.spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount::mount_spec_entry(
            &root,
            m,
            plan.bundle,
            plan.cgroup_mounts,
            plan.in_new_userns,
        )?;
    }
    let has_devpts = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev/pts") && m.typ().as_deref() == Some("devpts"));

    let mut devices = device::default_devices();
    for d in linux.and_then(|l| l.devices().clone()).unwrap_or_default() {
        devices.retain(|x| x.path != *d.path());
        devices.push(device::from_spec(&d)?);
    }
    for d in &devices {
        device::create_device(&root, d, plan.in_new_userns)?;
    }
    for (link, target) in symlink::default_dev_symlinks(has_devpts) {
        let replace = link == Path::new("dev/ptmx");
        symlink::create_symlink(&root, &link, &target, replace)?;
    }
    let cwd = plan.cwd.strip_prefix("/").unwrap_or(plan.cwd);
    if !cwd.as_os_str().is_empty() {
        // Best effort: a cwd that cannot be made here is reported by the chdir later,
        // with the CVE-2024-21626 check.
        let _ = root.mkdir_all(cwd, &std::fs::Permissions::from_mode(0o755));
    }
    Ok(())
}

/// The runc trick: with the rootfs as cwd, pivot_root(".", ".") stacks the old root on
/// top of the new one, and a lazy unmount of "." removes it, with no temporary
/// directory needed inside the (possibly read-only) rootfs.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    chdir(rootfs).map_err(sys_err("chdir", rootfs))?;
    pivot_root(".", ".").map_err(sys_err("pivot_root", rootfs))?;
    // runc also makes "." rslave here, but for mount(2) "." names the new root (only
    // umount looks through to the stacked old root), so that would turn every shared
    // spec mount into a slave. `prepare` already made the whole tree rslave/rprivate,
    // so the detach below cannot propagate to the host.
    umount2(".", MntFlags::MNT_DETACH).map_err(sys_err("unmount old root", rootfs))?;
    chdir("/").map_err(sys_err("chdir", Path::new("/")))
}

/// After pivot_root: masked and readonly paths, then the read-only root.
pub fn finalize(spec: &Spec) -> Result<(), RootfsError> {
    let root = Root::open("/").map_err(|source| RootfsError::OpenRoot {
        path: "/".into(),
        source,
    })?;
    let linux = spec.linux().as_ref();
    if let Some(p) = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(mount::propagation_flag)
    {
        if p.contains(MsFlags::MS_SHARED) {
            mount(None::<&str>, "/", None::<&str>, p, None::<&str>)
                .map_err(sys_err("rootfs propagation", Path::new("/")))?;
        }
    }
    masked::mask_paths(
        &root,
        &linux
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default(),
    )?;
    masked::readonly_paths(
        &root,
        &linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default(),
    )?;
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mount::remount_bind(&root, Path::new("/"), MsFlags::MS_RDONLY)?;
    }
    Ok(())
}
