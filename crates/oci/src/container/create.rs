//! `create`: set the container up to the point where only the user's program is left
//! to exec; the init then blocks on the exec fifo until `start`.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, mkfifo};
use oci_spec::runtime::Spec;

use super::{Container, ContainerError, SYNC_TIMEOUT, io_err};
use crate::hooks;
use crate::process::channel::{Channel, Msg, channel_pair};
use crate::process::namespaces::{NsPlan, write_id_maps};
use crate::process::resources::{Cgroup, compile_seccomp};
use crate::process::{ChildConfig, Role, Stdio, intermediate_main};
use crate::state::{self, EXEC_FIFO, OciState, PersistedState, Status, validate_id};

/// Options of `create` (runc's `--root`, `--console-socket`, `--pid-file`).
#[derive(Debug)]
pub struct CreateOptions {
    pub state_root: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub stdio: Stdio,
    /// Per-message timeout of the parent's reads from the container process.
    pub sync_timeout: Duration,
}

impl CreateOptions {
    pub fn new(state_root: impl Into<PathBuf>) -> Self {
        CreateOptions {
            state_root: state_root.into(),
            console_socket: None,
            pid_file: None,
            stdio: Stdio::Inherit,
            sync_timeout: SYNC_TIMEOUT,
        }
    }
}

/// Undo a half-done create.
struct Cleanup {
    dir: Option<PathBuf>,
    pids: Vec<i32>,
    cgroup: Option<Cgroup>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(*pid), None);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.delete();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn load_spec(bundle: &Path) -> Result<Spec, ContainerError> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|e| ContainerError::Spec {
        path,
        msg: e.to_string(),
    })
}

pub(super) fn write_pid_file(path: &Path, pid: i32) -> Result<(), ContainerError> {
    let tmp = path.with_extension("coracle-tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(io_err("write pid file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename pid file", path))
}

pub(super) fn connect_console(path: &Path) -> Result<OwnedFd, ContainerError> {
    UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| ContainerError::Console {
            path: path.to_path_buf(),
            source,
        })
}

/// Fork the intermediate process and hand it `cfg`. Returns its pid and our channel end.
pub(super) fn spawn_intermediate(cfg: ChildConfig) -> Result<(i32, Channel), ContainerError> {
    let (parent_ch, child_ch) = channel_pair()?;
    // SAFETY: the documented contract of this library is a single-threaded caller, so
    // the child may run arbitrary (allocating) code; it never returns to our caller.
    match unsafe { fork() }.map_err(|source| ContainerError::Sys { op: "fork", source })? {
        ForkResult::Child => {
            drop(parent_ch);
            intermediate_main(child_ch, cfg)
        }
        ForkResult::Parent { child } => Ok((child.as_raw(), parent_ch)),
    }
}

impl Container {
    /// Create container `id` from the bundle's config.json. The caller must be
    /// single-threaded (the library forks) and becomes the parent of the container
    /// init: it can `wait` for it.
    pub fn create(
        id: &str,
        bundle: &Path,
        opts: CreateOptions,
    ) -> Result<Container, ContainerError> {
        validate_id(id)?;
        let bundle = std::fs::canonicalize(bundle).map_err(io_err("bundle", bundle))?;
        let spec = load_spec(&bundle)?;
        let process = spec
            .process()
            .clone()
            .ok_or_else(|| ContainerError::InvalidSpec("no process".into()))?;
        let root_path = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .ok_or_else(|| ContainerError::InvalidSpec("no root".into()))?;
        let rootfs_in = if root_path.is_absolute() {
            root_path
        } else {
            bundle.join(root_path)
        };
        let rootfs = std::fs::canonicalize(&rootfs_in).map_err(io_err("rootfs", &rootfs_in))?;

        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&opts.state_root)
            .map_err(io_err("create state root", &opts.state_root))?;
        let dir = state::container_dir(&opts.state_root, id);
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(ContainerError::Exists(id.to_string()));
            }
            Err(e) => return Err(io_err("create state dir", &dir)(e)),
        }
        let mut cleanup = Cleanup {
            dir: Some(dir.clone()),
            pids: Vec::new(),
            cgroup: None,
        };

        let fifo_path = dir.join(EXEC_FIFO);
        mkfifo(&fifo_path, Mode::from_bits_truncate(0o622)).map_err(|source| {
            ContainerError::Sys {
                op: "mkfifo",
                source,
            }
        })?;
        // umask would make it 0600; the container uid must be able to write it.
        std::fs::set_permissions(&fifo_path, std::fs::Permissions::from_mode(0o622))
            .map_err(io_err("chmod exec fifo", &fifo_path))?;
        let fifo: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(io_err("open state dir", &dir))?
            .into();

        let linux = spec.linux().as_ref();
        let seccomp = compile_seccomp(linux.and_then(|l| l.seccomp().as_ref()))?;
        let ns = NsPlan::from_spec(&spec)?;
        let console = match (&opts.console_socket, process.terminal().unwrap_or(false)) {
            (Some(p), true) => Some(connect_console(p)?),
            (None, true) => {
                return Err(ContainerError::InvalidSpec(
                    "process.terminal needs a console socket".into(),
                ));
            }
            _ => None,
        };
        // Owned by the cleanup guard from the moment it exists: any failure below
        // removes it.
        cleanup.cgroup = Cgroup::create(&spec, id)?;
        let cgroup_mounts = cleanup
            .cgroup
            .as_ref()
            .map(|c| c.mount_sources())
            .unwrap_or_default();
        let mut oci_state = OciState {
            oci_version: spec.version().clone(),
            id: id.to_string(),
            status: Status::Creating,
            pid: None,
            bundle: bundle.clone(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            rootfs: Some(rootfs.clone()),
            created: None,
        };
        let cfg = ChildConfig {
            spec: spec.clone(),
            process,
            ns,
            seccomp,
            console,
            stdio: opts.stdio,
            role: Role::Init {
                rootfs: rootfs.clone(),
                bundle: bundle.clone(),
                fifo,
                state: Box::new(oci_state.clone()),
                cgroup_mounts,
            },
        };
        let (ipid, ch) = spawn_intermediate(cfg)?;
        cleanup.pids.push(ipid);
        if let Some(cg) = &cleanup.cgroup {
            cg.add_task(ipid)?;
        }
        ch.send(&Msg::Go)?;

        let mut init_pid = None;
        loop {
            match ch.recv(Some(opts.sync_timeout))? {
                Msg::IdMapRequest => {
                    if let Err(e) = write_id_maps(ipid, &spec) {
                        ch.send_error(&e);
                        return Err(e.into());
                    }
                    ch.send(&Msg::IdMapDone)?;
                }
                Msg::Pid(pid) => {
                    init_pid = Some(pid);
                    cleanup.pids.insert(0, pid);
                    let _ = waitpid(Pid::from_raw(ipid), None);
                    cleanup.pids.retain(|p| *p != ipid);
                }
                Msg::RunHooks => {
                    oci_state.pid = init_pid;
                    let hooks = spec.hooks().as_ref();
                    let res = hooks::run_hooks(
                        "prestart",
                        hooks.and_then(|h| h.prestart().as_ref()),
                        &oci_state,
                    )
                    .and_then(|()| {
                        hooks::run_hooks(
                            "createRuntime",
                            hooks.and_then(|h| h.create_runtime().as_ref()),
                            &oci_state,
                        )
                    });
                    match res {
                        Ok(()) => ch.send(&Msg::HooksDone)?,
                        Err(e) => {
                            ch.send_error(&e);
                            return Err(e.into());
                        }
                    }
                }
                Msg::Ready => break,
                Msg::Error(msg) => {
                    // The init may fail before the intermediate reported its pid: learn
                    // it anyway so the cleanup reaps it (it is our child).
                    if init_pid.is_none() {
                        cleanup.pids.extend(late_pid(&ch));
                    }
                    return Err(ContainerError::Child(msg));
                }
                other => {
                    return Err(ContainerError::Child(format!(
                        "unexpected message {other:?}"
                    )));
                }
            }
        }
        let pid = init_pid.ok_or_else(|| {
            ContainerError::Child("init ready before its pid was reported".into())
        })?;
        let start_time = state::proc_stat(pid)
            .map(|s| s.start_time)
            .ok_or(ContainerError::InitGone { id: id.to_string() })?;
        let persisted = PersistedState {
            id: id.to_string(),
            bundle,
            rootfs,
            pid,
            pid_start_time: start_time,
            created: state::now_rfc3339(),
            config: spec,
            cgroup: cleanup.cgroup.as_ref().map(|c| c.to_state()).transpose()?,
        };
        persisted.save(&opts.state_root)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        // Success: keep everything.
        cleanup.dir = None;
        cleanup.pids.clear();
        cleanup.cgroup = None;
        Ok(Container {
            state_root: opts.state_root,
            state: persisted,
        })
    }

    /// Wait for the init to exit (only when we are its parent, i.e. we created it).
    /// Returns the exit code (128 + signal when killed).
    pub fn wait(&self) -> Result<i32, ContainerError> {
        wait_exit_code(self.state.pid)
    }
}

/// After a child's error: the intermediate's `Pid` message may still be on its way.
pub(super) fn late_pid(ch: &Channel) -> Option<i32> {
    loop {
        match ch.recv(Some(Duration::from_secs(1))) {
            Ok(Msg::Pid(pid)) => return Some(pid),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

pub(super) fn wait_exit_code(pid: i32) -> Result<i32, ContainerError> {
    use nix::sys::wait::WaitStatus;
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(source) => {
                return Err(ContainerError::Sys {
                    op: "waitpid",
                    source,
                });
            }
        }
    }
}
