//! `exec`: run another process in a running container: join all its namespaces (by
//! /proc/<init>/ns/*) and its cgroup, apply the process attributes, execve.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::create::{
    connect_console, late_pid, spawn_intermediate, wait_exit_code, write_pid_file,
};
use super::{Container, ContainerError};
use crate::process::channel::{ChannelError, Msg};
use crate::process::namespaces::NsPlan;
use crate::process::resources::compile_seccomp;
use crate::process::{ChildConfig, Role, Stdio};
use crate::state::Status;

#[derive(Debug, Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    /// An already connected console socket (say one end of a socketpair), used
    /// instead of `console_socket`: the caller needs no path to bind.
    pub console: Option<OwnedFd>,
    pub pid_file: Option<PathBuf>,
    pub stdio: Stdio,
    /// Make the process the leader of a new process group (setpgid in the child,
    /// before execve), so the caller can kill it and everything it spawned with
    /// kill(-pid). Setting the group from the parent after the fact would race with
    /// the process's first fork. A terminal process gets its own session anyway.
    pub new_process_group: bool,
}

/// A process started by `exec`; the caller is its parent.
#[derive(Debug)]
pub struct ExecProcess {
    pub pid: i32,
}

impl ExecProcess {
    /// Wait for it and return its exit code (128 + signal when killed).
    pub fn wait(&self) -> Result<i32, ContainerError> {
        wait_exit_code(self.pid)
    }
}

impl Container {
    pub fn exec(&self, process: Process, opts: ExecOptions) -> Result<ExecProcess, ContainerError> {
        self.require(
            "exec",
            &[Status::Running, Status::Created],
            "running or created",
        )?;
        let spec = self.state.config.clone();
        let seccomp = compile_seccomp(spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()))?;
        let ns = NsPlan::from_pid(self.state.pid)?;
        let console = match (
            opts.console,
            &opts.console_socket,
            process.terminal().unwrap_or(false),
        ) {
            (Some(fd), _, true) => Some(fd),
            (None, Some(p), true) => Some(connect_console(p)?),
            (None, None, true) => {
                return Err(ContainerError::InvalidSpec(
                    "process.terminal needs a console socket".into(),
                ));
            }
            _ => None,
        };
        let cfg = ChildConfig {
            spec,
            process,
            ns,
            seccomp,
            console,
            stdio: opts.stdio,
            role: Role::Exec {
                new_process_group: opts.new_process_group,
            },
        };
        let (ipid, ch) = spawn_intermediate(cfg)?;
        let reap_intermediate = || {
            let _ = waitpid(Pid::from_raw(ipid), None);
        };
        // On a failure the intermediate may be stuck (a timeout): kill it before the
        // blocking wait, or exec would hang with it.
        let abandon_intermediate = || {
            let _ = nix::sys::signal::kill(Pid::from_raw(ipid), nix::sys::signal::Signal::SIGKILL);
            reap_intermediate();
        };
        if let Some(cg) = self.cgroup()? {
            if let Err(e) = cg.add_task(ipid) {
                abandon_intermediate();
                return Err(e.into());
            }
        }
        if let Err(e) = ch.send(&Msg::Go) {
            abandon_intermediate();
            return Err(e.into());
        }
        let pid = match ch.recv(Some(super::SYNC_TIMEOUT)) {
            Ok(Msg::Pid(pid)) => pid,
            Ok(Msg::Error(m)) => {
                // The process may have failed before the intermediate sent its pid.
                let late = late_pid(&ch);
                reap_intermediate();
                if let Some(pid) = late {
                    let _ = waitpid(Pid::from_raw(pid), None);
                }
                return Err(ContainerError::Child(m));
            }
            Ok(other) => {
                abandon_intermediate();
                return Err(ContainerError::Child(format!(
                    "unexpected message {other:?}"
                )));
            }
            Err(e) => {
                abandon_intermediate();
                return Err(e.into());
            }
        };
        reap_intermediate();
        // The sync socket is close-on-exec in the process: EOF means execve succeeded.
        let exec_result = match ch.recv(Some(super::SYNC_TIMEOUT)) {
            Err(ChannelError::Closed) => Ok(()),
            Ok(Msg::Error(m)) => Err(ContainerError::Child(m)),
            Ok(other) => Err(ContainerError::Child(format!(
                "unexpected message {other:?}"
            ))),
            Err(e) => Err(e.into()),
        };
        let started = exec_result.and_then(|()| match &opts.pid_file {
            Some(p) => write_pid_file(p, pid),
            None => Ok(()),
        });
        if let Err(err) = started {
            // Never leave a process we could not report running in the container.
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            return Err(err);
        }
        Ok(ExecProcess { pid })
    }
}
