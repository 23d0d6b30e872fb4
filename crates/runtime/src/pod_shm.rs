//! The pod's /dev/shm: one tmpfs per pod (as containerd's sandbox shm), bound into
//! each of its containers so that they share POSIX shared memory with their IPC
//! namespace.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Size of the pod's shm, as Docker's and containerd's default.
const SHM_SIZE: &str = "size=65536k";

pub(crate) fn mount_pod_shm(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    mount(
        Some("shm"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,{SHM_SIZE}").as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Unmounts the pod's shm; not mounted (or gone) is fine.
pub(crate) fn unmount_pod_shm(dir: &Path) -> std::io::Result<()> {
    match umount2(dir, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
