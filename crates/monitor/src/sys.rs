//! The few raw calls the monitor makes outside `nix`, each wrapped once.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Rust starts every program with SIGPIPE ignored, and an ignored signal stays ignored
/// across execve: the container process (and an exec'd one) would inherit it and,
/// say, `yes | head -1` would never end. Restore the default before anything forks;
/// the monitor's own socket writes use MSG_NOSIGNAL.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL is not a handler: no code of ours runs in signal context.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}

/// Block SIGPIPE, after the container (or exec'd process) was forked: a write to a
/// container's stdin whose reader is gone must fail with EPIPE, not kill the monitor
/// (SIGPIPE's default action, kept for what we fork). Socket writes use MSG_NOSIGNAL.
pub fn block_sigpipe() -> nix::Result<()> {
    let mut mask = nix::sys::signal::SigSet::empty();
    mask.add(nix::sys::signal::Signal::SIGPIPE);
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&mask), None)
}

/// Set the window size of the pty whose master is `master` (TIOCSWINSZ); the kernel
/// sends SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(master: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which points at a live
    // local; the fd is borrowed, so open for the call.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Give freed heap back to the kernel (after `create`, whose spec parsing and fork
/// bookkeeping are the monitor's biggest allocations): it counts in every monitor's
/// resident memory for the container's lifetime otherwise.
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own arenas; 0 keeps no extra padding.
    unsafe { libc::malloc_trim(0) };
}

/// A pidfd for `pid` (Linux 5.3): readable once the process has exited.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd (close-on-exec by default); we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Unmap the executable's read-only pages from this process, after `create`.
///
/// Creating a container runs most of the OCI executor once; every code page it
/// touched (with the kernel's 64 KiB fault-around, about 2 MiB) would otherwise stay
/// mapped, and counted in this monitor's PSS, for the container's whole life. The
/// event loop needs a fraction of that. MADV_DONTNEED on a read-only private file
/// mapping only drops this process's page table entries: the next access maps the page
/// again from the page cache. Only segments that are never written qualify: the
/// executable code (r-xp) and the read-only segment before it (r--p at file offset 0:
/// headers, .rodata, .eh_frame). RELRO is r--p too but holds relocated data (its
/// pages are private copies; dropping them would lose the relocations), and it is
/// never at offset 0.
pub fn release_startup_code() {
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::metadata("/proc/self/exe"),
    ) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    for line in maps.lines() {
        if let Some((start, end)) = read_only_exe_segment(line, exe.ino()) {
            // SAFETY: the range is a whole mapping of our own executable that is never
            // written (see above): dropping its pages cannot lose data, and any later
            // access faults them back in from the file.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// (start, end) of a /proc/self/maps line that maps executable `ino` read-only and
/// never written (r-xp, or r--p at offset 0).
fn read_only_exe_segment(line: &str, ino: u64) -> Option<(usize, usize)> {
    let mut f = line.split_whitespace();
    let (range, perms, offset, _dev, inode) =
        (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let wanted = perms == "r-xp" || (perms == "r--p" && offset == 0);
    if !wanted || inode.parse::<u64>().ok()? != ino {
        return None;
    }
    let (a, b) = range.split_once('-')?;
    Some((
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_code_and_the_leading_read_only_segment_are_released() {
        let m = |l: &str| read_only_exe_segment(l, 42);
        assert_eq!(
            m("00200000-002ce000 r--p 00000000 fe:00 42   /x/coracle-monitor"),
            Some((0x20_0000, 0x2c_e000))
        );
        assert_eq!(
            m("002ce000-005a6000 r-xp 000cd000 fe:00 42   /x/coracle-monitor"),
            Some((0x2c_e000, 0x5a_6000))
        );
        // RELRO, data, other files, anonymous memory: never.
        assert_eq!(
            m("005a6000-005ea000 r--p 003a4000 fe:00 42   /x/coracle-monitor"),
            None
        );
        assert_eq!(
            m("005ea000-005eb000 rw-p 003e8000 fe:00 42   /x/coracle-monitor"),
            None
        );
        assert_eq!(
            m("7f00000-7f10000 r-xp 00026000 fe:00 7   /usr/lib/libc.so.6"),
            None
        );
        assert_eq!(m("7ffd0000-7ffd1000 rw-p 00000000 00:00 0   [stack]"), None);
    }
}
