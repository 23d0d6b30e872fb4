//! Installing a compiled program in the container init: one raw `seccomp(2)` call.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use super::{SeccompError, SeccompProgram};

impl SeccompProgram {
    /// Installs the filter on the calling thread (all threads with SECCOMP_FILTER_FLAG_TSYNC).
    ///
    /// Call in the container init after `no_new_privs` is set (or while holding
    /// CAP_SYS_ADMIN), right before `execve`. Allocation-free and async-signal-safe, so it
    /// may run between `fork` and `exec` of a multi-threaded parent.
    ///
    /// Returns the notify listener fd (O_CLOEXEC, made by the kernel) when the profile uses
    /// SCMP_ACT_NOTIFY.
    pub fn load(&self) -> Result<Option<OwnedFd>, SeccompError> {
        let ret = seccomp_set_mode_filter(self.flags, &self.filter).map_err(|source| {
            SeccompError::Load {
                flags: self.flags,
                source,
            }
        })?;
        if self.flags & (libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32) != 0 {
            let fd = RawFd::try_from(ret).map_err(|_| SeccompError::Load {
                flags: self.flags,
                source: Errno::EBADF,
            })?;
            // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER a successful seccomp(2) returns a
            // new listener fd that nothing else owns.
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        if ret > 0 {
            // With SECCOMP_FILTER_FLAG_TSYNC (and no TSYNC_ESRCH) a positive return is the id
            // of a thread that could not be synchronized; the filter was not installed.
            return Err(SeccompError::TsyncFailed { tid: ret });
        }
        Ok(None)
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`, returning the raw non-negative result.
fn seccomp_set_mode_filter(flags: u32, filter: &[libc::sock_filter]) -> Result<i64, Errno> {
    // compile() guarantees at most BPF_MAXINSNS (4096) instructions.
    let len = u16::try_from(filter.len()).map_err(|_| Errno::EINVAL)?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to `len` valid sock_filter structs borrowed for the duration of
    // the call; the kernel only reads them (copies the program) and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flags),
            &prog as *const libc::sock_fprog,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(ret)
}

/// Asks the kernel whether it knows a filter flag, without installing anything: with a NULL
/// program a known flag fails with EFAULT, an unknown one with EINVAL (libseccomp's probe).
pub(super) fn kernel_supports_filter_flag(flag: u32) -> Result<(), Errno> {
    // SAFETY: a NULL program pointer makes the kernel fail with EFAULT (known flags) or
    // EINVAL (unknown flags) before any filter is installed; no memory is read or written.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(flag),
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    match (ret, Errno::last()) {
        (r, Errno::EFAULT) if r < 0 => Ok(()),
        (r, errno) if r < 0 => Err(errno),
        // Cannot happen with a NULL program; treat as unsupported rather than trust it.
        _ => Err(Errno::EINVAL),
    }
}
