//! The few raw calls the monitor makes outside `nix`, each wrapped once.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

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

/// Field 22 (starttime) of a /proc/<pid>/stat line. Fields are counted after the
/// command name, which is in parentheses and may itself contain spaces or ')'.
pub fn start_time_from_stat(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After ')' comes field 3 (state); field 22 is the 20th from there.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This process's start time (clock ticks since boot), as the daemon checks it.
pub fn own_start_time() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    start_time_from_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/self/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_names() {
        let stat =
            "4242 (a) b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time_from_stat(stat), Some(987_654));
        assert_eq!(start_time_from_stat("garbage"), None);
        assert!(own_start_time().expect("own stat") > 0);
    }
}
