//! Identity and limits of the container process: groups, gid, uid, umask, rlimits and
//! oom_score_adj.

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
use oci_spec::runtime::{PosixRlimit, User};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{call}({id}): {source}")]
    Id {
        call: &'static str,
        id: String,
        source: nix::Error,
    },
    #[error("unknown rlimit {0}")]
    UnknownRlimit(String),
    #[error(
        "setrlimit {name} soft={soft} hard={hard}: {source}{hint}",
        hint = if *source == nix::Error::EPERM { " (raising a hard limit needs CAP_SYS_RESOURCE, which this runtime lacks)" } else { "" }
    )]
    Rlimit {
        name: String,
        soft: u64,
        hard: u64,
        source: nix::Error,
    },
}

pub fn switch_user(user: &User) -> Result<(), UserError> {
    let gids: Vec<Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(Gid::from_raw)
        .collect();
    // Always set the list, even empty: the runtime's own groups must not leak in.
    // EPERM happens in a user namespace whose setgroups is "deny": then there are no
    // groups to leak either.
    match setgroups(&gids) {
        Ok(()) => {}
        Err(nix::Error::EPERM) if gids.is_empty() => {}
        Err(source) => {
            return Err(UserError::Id {
                call: "setgroups",
                id: format!("{gids:?}"),
                source,
            });
        }
    }
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).map_err(|source| UserError::Id {
        call: "setresgid",
        id: gid.to_string(),
        source,
    })?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).map_err(|source| UserError::Id {
        call: "setresuid",
        id: uid.to_string(),
        source,
    })?;
    Ok(())
}

pub fn set_umask(user: &User) {
    umask(Mode::from_bits_truncate(
        user.umask().unwrap_or(0o022) as libc::mode_t
    ));
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

pub fn set_rlimits(limits: &[PosixRlimit]) -> Result<(), UserError> {
    for l in limits {
        let name = l.typ().to_string();
        let res = rlimit_resource(&name).ok_or_else(|| UserError::UnknownRlimit(name.clone()))?;
        let rl = libc::rlimit {
            rlim_cur: l.soft(),
            rlim_max: l.hard(),
        };
        // SAFETY: rl is a valid rlimit struct and res a valid resource constant.
        let ret = unsafe { libc::setrlimit(res, &rl) };
        if ret != 0 {
            return Err(UserError::Rlimit {
                name,
                soft: l.soft(),
                hard: l.hard(),
                source: nix::Error::last(),
            });
        }
    }
    Ok(())
}

/// Like containerd's restrict_oom_score_adj: lowering the score needs CAP_SYS_RESOURCE;
/// without it, warn and keep the inherited value instead of failing the container.
pub fn set_oom_score_adj(value: i32) {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        tracing::warn!(value, error = %e, "cannot set oom_score_adj (negative values need CAP_SYS_RESOURCE); keeping the inherited one");
        // Not eprintln!: a test harness's output capture would swallow it in the child.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "coracle-oci: warning: cannot set oom_score_adj to {value}: {e}; keeping the inherited value"
        );
    }
}
