//! `kill`: signal the init, or (`all`) every process of the container.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Container, ContainerError};
use crate::state::Status;

impl Container {
    pub fn kill(&self, signal: Signal, all: bool) -> Result<(), ContainerError> {
        self.require(
            "kill",
            &[Status::Created, Status::Running, Status::Paused],
            "created, running or paused",
        )?;
        let pids = if all {
            self.all_pids()?
        } else {
            vec![self.state.pid]
        };
        for pid in pids {
            match kill(Pid::from_raw(pid), signal) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => return Err(ContainerError::Sys { op: "kill", source }),
            }
        }
        if all && signal == Signal::SIGKILL {
            // A frozen process does not die until thawed.
            if let Ok(Some(cg)) = self.cgroup() {
                let _ = cg.thaw();
            }
        }
        Ok(())
    }

    /// The container's processes: from its cgroup when it has one; otherwise, when it
    /// has a PID namespace of its own, every process in that namespace (host pids);
    /// otherwise just the init.
    pub(crate) fn all_pids(&self) -> Result<Vec<i32>, ContainerError> {
        if let Some(cg) = self.cgroup()? {
            return Ok(cg.pids()?);
        }
        Ok(pids_in_pid_namespace_of(self.state.pid).unwrap_or_else(|| vec![self.state.pid]))
    }
}

/// Processes whose PID namespace is that of `pid`, if it is not ours.
fn pids_in_pid_namespace_of(pid: i32) -> Option<Vec<i32>> {
    use std::os::unix::fs::MetadataExt;
    let ns_of = |p: &str| {
        std::fs::metadata(format!("/proc/{p}/ns/pid"))
            .ok()
            .map(|m| (m.dev(), m.ino()))
    };
    let theirs = ns_of(&pid.to_string())?;
    if Some(theirs) == ns_of("self") {
        return None;
    }
    let pids = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns_of(&p.to_string()) == Some(theirs))
        .collect();
    Some(pids)
}

/// "KILL", "SIGKILL", "9" -> SIGKILL.
pub fn parse_signal(s: &str) -> Option<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_short_name_or_number() {
        assert_eq!(parse_signal("KILL"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGHUP"), Some(Signal::SIGHUP));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }
}
