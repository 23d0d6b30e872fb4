//! Raw syscalls that `nix` does not wrap (or wraps without the flags we need), each
//! wrapped once with the reason its arguments are valid.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Result of [`clone_parent`]: which side of the clone we are on.
pub enum CloneResult {
    Parent { child: i32 },
    Child,
}

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `clone(CLONE_PARENT | SIGCHLD)` with fork semantics (no new stack): the child becomes
/// a sibling of the caller, so the process that called `Container::create` is the
/// parent of the container init and can `waitpid` it, even though the clone happens
/// in the intermediate process (which has unshared the PID namespace, so the child is
/// pid 1 there). runc's nsexec does the same (`clone_parent`).
///
/// # Safety
/// The caller must be single-threaded (it is: a freshly forked intermediate process),
/// as with `fork`.
pub unsafe fn clone_parent() -> io::Result<CloneResult> {
    // SAFETY: with a NULL stack the kernel gives the child a copy-on-write copy of the
    // caller's stack, exactly like fork(2); the remaining pointer arguments are unused
    // because no CLONE_*TID/SETTLS flag is given. The caller is single-threaded.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match cvt(ret)? {
        0 => Ok(CloneResult::Child),
        pid => Ok(CloneResult::Parent { child: pid as i32 }),
    }
}

/// Mark every fd >= `first` close-on-exec, so nothing of the runtime's leaks into the
/// container process (CVE-2024-21626). Allocation-free: safe right before execve.
pub fn close_range_cloexec(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers; CLOSE_RANGE_CLOEXEC only sets a flag.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    cvt(ret).map(|_| ())
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used here (PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS,
    // PR_SET_KEEPCAPS, PR_GET_DUMPABLE) take integer arguments only.
    let ret = unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    cvt(ret as libc::c_long).map(|_| ())
}

/// CVE-2019-5736: a non-dumpable process's /proc/<pid>/ files (exe, mem, fd, ...) are
/// owned by root of the *initial* user namespace and ptrace is refused, so nothing
/// in the container can open our /proc/<pid>/exe while we run there.
pub fn set_dumpable(on: bool) -> io::Result<()> {
    prctl(libc::PR_SET_DUMPABLE, u64::from(on))
}

pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

pub fn set_keep_caps(on: bool) -> io::Result<()> {
    prctl(libc::PR_SET_KEEPCAPS, u64::from(on))
}

pub fn setdomainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe the bytes of `name`, which outlives the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    cvt(ret as libc::c_long).map(|_| ())
}

/// Unlock a pty master and open its peer (the slave) without going through a path, so
/// the slave cannot be swapped under us (TIOCGPTPEER, Linux 4.13).
pub fn open_pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the valid pointer.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } as libc::c_long)?;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd we own.
    let fd = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    } as libc::c_long)?;
    // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Make the terminal on `fd` the controlling terminal of this (session leader) process.
pub fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long).map(|_| ())
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH)`: chown what an O_PATH fd refers to.
pub fn fchown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: the empty C string is static and AT_EMPTY_PATH makes the call act on fd.
    let ret =
        unsafe { libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) };
    cvt(ret as libc::c_long).map(|_| ())
}

/// `fstat` of an fd (works on O_PATH fds).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat struct; the empty path with AT_EMPTY_PATH
    // makes fstatat act on the fd itself.
    let ret = unsafe { libc::fstatat(fd.as_raw_fd(), c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH) };
    cvt(ret as libc::c_long).map(|_| st)
}

/// The path a process can use to name what `fd` refers to, for syscalls that take paths
/// (mount): the "mount onto the resolved fd" defense of CVE-2021-30465.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// `dup2(fd, target)` for the stdio slots 0..2 (dup2 clears close-on-exec on `target`).
pub fn dup2_onto(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: both are plain fd numbers; replacing `target` is the intent.
    let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    cvt(ret as libc::c_long).map(|_| ())
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, {attr_set: MOUNT_ATTR_RDONLY})`:
/// make the mount `fd` is the root of, and every mount below it, read-only (Linux 5.12).
/// A plain `MS_REMOUNT|MS_RDONLY` only changes the top mount of an rbind.
pub fn mount_setattr_recursive_rdonly(fd: BorrowedFd<'_>) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a static empty C string (AT_EMPTY_PATH makes the call act on
    // fd), `attr` is a valid, initialized mount_attr that outlives the call, and the size
    // passed is exactly its size, so the kernel reads nothing beyond it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    cvt(ret).map(|_| ())
}
