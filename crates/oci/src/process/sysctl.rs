//! `linux.sysctl`: validated, then written inside the container's own namespaces only.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::sched::CloneFlags;

use super::namespaces::NsPlan;

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {key:?}: invalid name (a dotted name of [a-z0-9_.-] without '..')")]
    BadKey { key: String },
    #[error(
        "sysctl {key}: invalid value {value:?} (newlines would inject a second setting: CVE-2022-0811)"
    )]
    BadValue { key: String, value: String },
    #[error("sysctl {key}: not allowed ({why})")]
    NotNamespaced { key: String, why: &'static str },
    #[error("sysctl {key}: /proc/sys is not procfs")]
    NotProcfs { key: String },
    #[error("sysctl {key}={value}: {source}")]
    Write {
        key: String,
        value: String,
        source: std::io::Error,
    },
}

/// CVE-2022-0811 (CRI-O): a value "1\nkernel.core_pattern=|/evil" passed to a
/// `sysctl`-style writer set a host-wide sysctl. Refuse anything that is not a plain
/// dotted name, and values with newlines or NULs.
pub fn validate(key: &str, value: &str) -> Result<(), SysctlError> {
    let key_ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !key_ok {
        return Err(SysctlError::BadKey {
            key: key.to_string(),
        });
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(SysctlError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

/// As runc's validateSysctl: only sysctls of namespaces the container has of its own.
pub fn check_namespaced(key: &str, ns: &NsPlan) -> Result<(), SysctlError> {
    let err = |why| {
        Err(SysctlError::NotNamespaced {
            key: key.to_string(),
            why,
        })
    };
    let ipc = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if ipc.contains(&key) || key.starts_with("fs.mqueue.") {
        return if ns.has(CloneFlags::CLONE_NEWIPC) {
            Ok(())
        } else {
            err("needs an ipc namespace")
        };
    }
    if key.starts_with("net.") {
        return if ns.has(CloneFlags::CLONE_NEWNET) {
            Ok(())
        } else {
            err("needs a network namespace")
        };
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return if ns.has(CloneFlags::CLONE_NEWUTS) {
            Ok(())
        } else {
            err("needs a uts namespace")
        };
    }
    err("not a namespaced sysctl")
}

/// Write it, from inside the container (after pivot_root): /proc/sys/net reflects the
/// writer's network namespace. The file must be on procfs (not something the image put
/// at /proc/sys).
pub fn write(key: &str, value: &str) -> Result<(), SysctlError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let werr = |source| SysctlError::Write {
        key: key.to_string(),
        value: value.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(werr)?;
    let st = nix::sys::statfs::fstatfs(&f).map_err(|e| werr(e.into()))?;
    if st.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(SysctlError::NotProcfs {
            key: key.to_string(),
        });
    }
    let _ = f.as_raw_fd();
    f.write_all(value.as_bytes()).map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_and_path_tricks_are_refused() {
        assert!(validate("net.ipv4.ip_forward", "1").is_ok());
        assert!(validate("net.ipv4.ip_forward", "1\nkernel.core_pattern=|/x").is_err());
        assert!(validate("kernel/../../x", "1").is_err());
        assert!(validate("net..ipv4", "1").is_err());
        assert!(validate("Net.ipv4", "1").is_err());
    }
}
