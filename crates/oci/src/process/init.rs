//! The container process before it becomes the user's program: for a new container
//! (the init) the rootfs, hooks, hostname and sysctls; for both init and exec the
//! process attributes (stdio/terminal, rlimits, user, capabilities, cwd,
//! no_new_privs, seccomp), then execve.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{chdir, setsid};
use oci_spec::runtime::{Process, Spec};

use super::caps::CapPlan;
use super::channel::{Channel, Msg};
use super::execve::PreparedExec;
use super::{ChildConfig, Role, Stdio, execve, sysctl, tty, user};
use crate::hooks;
use crate::rootfs::{self, RootfsPlan};
use crate::state::Status;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error(transparent)]
    Channel(#[from] super::channel::ChannelError),
    #[error("prestart/createRuntime hooks: {0}")]
    ParentHooks(String),
    #[error("unexpected message {0:?}")]
    Unexpected(Msg),
    #[error(transparent)]
    Sysctl(#[from] sysctl::SysctlError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Caps(#[from] super::caps::CapsError),
    #[error(transparent)]
    Tty(#[from] tty::TtyError),
    #[error(transparent)]
    Exec(#[from] execve::ExecError),
    #[error("{op}: {source}")]
    Sys { op: String, source: std::io::Error },
    #[error("hostname {0:?} needs a uts namespace of the container's own")]
    HostnameWithoutUts(String),
    #[error("cwd {cwd}: {source}")]
    Cwd { cwd: PathBuf, source: nix::Error },
    #[error("cwd {0} is outside the container root (CVE-2024-21626)")]
    CwdOutsideRoot(PathBuf),
    #[error("a new mount namespace is required to set up the rootfs")]
    NoMountNamespace,
    #[error(transparent)]
    Resource(#[from] super::resources::ResourceError),
}

fn sys_err(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let op = op.into();
    move |source| InitError::Sys { op, source }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit does not run the parent's atexit handlers or flush its stdio.
    unsafe { libc::_exit(code) }
}

/// Entry of the cloned container process. Never returns.
pub fn child_main(ch: &Channel, cfg: ChildConfig) -> ! {
    let ChildConfig {
        spec,
        process,
        ns,
        mut seccomp,
        console,
        stdio,
        role,
    } = cfg;
    match role {
        Role::Init {
            rootfs,
            bundle,
            fifo,
            state,
            cgroup_mounts,
        } => {
            let setup = || -> Result<PreparedExec, InitError> {
                setsid().map_err(|e| sys_err("setsid")(e.into()))?;
                if ns.unshare.contains(CloneFlags::CLONE_NEWNS) {
                    let plan = RootfsPlan {
                        spec: &spec,
                        rootfs: &rootfs,
                        bundle: &bundle,
                        in_new_userns: ns.unshare.contains(CloneFlags::CLONE_NEWUSER),
                        cgroup_mounts: &cgroup_mounts,
                        cwd: process.cwd(),
                    };
                    rootfs::prepare(&plan)?;
                } else {
                    return Err(InitError::NoMountNamespace);
                }
                ch.send(&Msg::RunHooks)?;
                match ch.recv(None)? {
                    Msg::HooksDone => {}
                    Msg::Error(e) => return Err(InitError::ParentHooks(e)),
                    m => return Err(InitError::Unexpected(m)),
                }
                let hooks = spec.hooks().as_ref();
                // createContainer: in the container namespaces, before pivot_root.
                hooks::run_hooks(
                    "createContainer",
                    hooks.and_then(|h| h.create_container().as_ref()),
                    &state,
                )?;
                rootfs::pivot(&rootfs)?;
                // As runc: names and sysctls before /proc/sys is made read-only.
                set_names(&spec, &ns)?;
                apply_sysctls(&spec, &ns)?;
                rootfs::finalize(&spec)?;
                let exec = apply_process(&process, console.as_ref(), stdio, &mut seccomp)?;
                ch.send(&Msg::Ready)?;
                Ok(exec)
            };
            let exec = match setup() {
                Ok(e) => e,
                Err(e) => {
                    ch.send_error(&e);
                    exit(1);
                }
            };
            // The parent stops listening after Ready; the fifo is now our only link.
            // Opening it blocks until `start`; the byte is written after the
            // startContainer hooks, and the fd is close-on-exec, so `start` sees EOF
            // exactly when execve succeeded (poststart runs after the process exists).
            let started = open_exec_fifo(&fifo).and_then(|f| {
                let mut st = (*state).clone();
                st.status = Status::Running;
                hooks::run_hooks(
                    "startContainer",
                    spec.hooks()
                        .as_ref()
                        .and_then(|h| h.start_container().as_ref()),
                    &st,
                )?;
                Ok(f)
            });
            drop(fifo);
            match started {
                Ok(f) => final_exec(exec, seccomp.as_ref(), None, Some(f)),
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "coracle-oci init: {e}");
                    exit(1);
                }
            }
        }
        Role::Exec { new_process_group } => {
            // Before apply_process: the seccomp filter may be loaded there. A terminal
            // process becomes a session (and group) leader in tty::setup_console, and
            // a group leader could not call setsid.
            let terminal = process.terminal().unwrap_or(false);
            if new_process_group && !terminal {
                if let Err(e) = nix::unistd::setpgid(
                    nix::unistd::Pid::from_raw(0),
                    nix::unistd::Pid::from_raw(0),
                ) {
                    ch.send_error(&sys_err("setpgid")(e.into()));
                    exit(1);
                }
            }
            let exec = match apply_process(&process, console.as_ref(), stdio, &mut seccomp) {
                Ok(e) => e,
                Err(e) => {
                    ch.send_error(&e);
                    exit(1);
                }
            };
            // The sync socket is close-on-exec: the parent reads EOF on success and
            // our error message on failure.
            final_exec(exec, seccomp.as_ref(), Some(ch), None)
        }
    }
}

fn final_exec(
    exec: PreparedExec,
    seccomp: Option<&super::resources::SeccompFilter>,
    ch: Option<&Channel>,
    mut fifo: Option<std::fs::File>,
) -> ! {
    let fail = |e: &dyn std::fmt::Display| -> ! {
        match ch {
            Some(ch) => ch.send_error(e),
            None => {
                let _ = writeln!(std::io::stderr(), "coracle-oci init: {e}");
            }
        }
        exit(127)
    };
    if let Some(filter) = seccomp {
        // The notify fd (SCMP_ACT_NOTIFY) is not forwarded yet: the listener socket is
        // a later feature.
        if let Err(e) = filter.load() {
            fail(&e);
        }
    }
    if let Some(f) = fifo.as_mut() {
        if let Err(e) = f.write_all(b"0") {
            fail(&sys_err("write exec fifo")(e));
        }
    }
    let err = exec.exec();
    fail(&err)
}

/// The runc exec fifo: block on opening it for writing until `start` opens it for
/// reading. Opened relative to an O_PATH fd of the container's state directory: its
/// path is not visible after pivot_root, and /proc/self/fd of a non-dumpable process
/// is not accessible to root of a user namespace. The directory is 0711 and the fifo
/// 0622 (as runc's) so any container uid can open it.
fn open_exec_fifo(state_dir: &OwnedFd) -> Result<std::fs::File, InitError> {
    let fd = nix::fcntl::openat(
        state_dir,
        crate::state::EXEC_FIFO,
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| sys_err("open exec fifo")(e.into()))?;
    Ok(std::fs::File::from(fd))
}

fn set_names(spec: &Spec, ns: &super::namespaces::NsPlan) -> Result<(), InitError> {
    let own_uts = ns.unshare.contains(CloneFlags::CLONE_NEWUTS);
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        if !own_uts {
            return Err(InitError::HostnameWithoutUts(h.to_string()));
        }
        nix::unistd::sethostname(h).map_err(|e| sys_err("sethostname")(e.into()))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        if !own_uts {
            return Err(InitError::HostnameWithoutUts(d.to_string()));
        }
        crate::sys::setdomainname(d).map_err(sys_err("setdomainname"))?;
    }
    Ok(())
}

fn apply_sysctls(spec: &Spec, ns: &super::namespaces::NsPlan) -> Result<(), InitError> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    let mut keys: Vec<_> = map.iter().collect();
    keys.sort();
    for (k, v) in keys {
        sysctl::validate(k, v)?;
        sysctl::check_namespaced(k, ns)?;
        sysctl::write(k, v)?;
    }
    Ok(())
}

fn set_stdio(stdio: Stdio) -> Result<(), InitError> {
    let Stdio::Fds(fds) = stdio else {
        return Ok(());
    };
    // Move them out of 0..2 first so one dup2 cannot clobber the source of the next.
    let moved: Vec<OwnedFd> = fds
        .iter()
        .map(|f| {
            nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                .map_err(|e| sys_err("dup stdio")(e.into()))
        })
        .map(|r| {
            r.map(|fd| {
                use std::os::fd::FromRawFd;
                // SAFETY: fcntl(F_DUPFD_CLOEXEC) returned a new fd that nobody owns.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
        })
        .collect::<Result<_, _>>()?;
    drop(fds);
    for (target, fd) in moved.iter().enumerate() {
        crate::sys::dup2_onto(fd.as_fd(), target as i32).map_err(sys_err("dup2 stdio"))?;
    }
    Ok(())
}

/// Process attributes shared by init and exec. Returns the prepared execve.
fn apply_process(
    process: &Process,
    console: Option<&OwnedFd>,
    stdio: Stdio,
    seccomp: &mut Option<super::resources::SeccompFilter>,
) -> Result<PreparedExec, InitError> {
    if process.terminal().unwrap_or(false) {
        let console = console.ok_or_else(|| {
            sys_err("terminal")(std::io::Error::other(
                "process.terminal is set but no console socket was given",
            ))
        })?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        tty::setup_console(console, size)?;
    } else {
        set_stdio(stdio)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        user::set_oom_score_adj(adj);
    }
    user::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
        let _ = writeln!(
            std::io::stderr(),
            "coracle-oci: warning: apparmorProfile/selinuxLabel ignored (no LSM support)"
        );
    }
    let caps = CapPlan::from_spec(process.capabilities().as_ref())?;
    // As runc: without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it is
    // loaded now, before capabilities are dropped; with it, as late as possible (right
    // before execve) so the fewest of our own syscalls run under it.
    if !process.no_new_privileges().unwrap_or(false) {
        if let Some(filter) = seccomp.take() {
            filter.load()?;
        }
    }
    if let Some(c) = &caps {
        c.drop_bounding()?;
    }
    // Keep the permitted set across the uid switch; capset below sets it exactly.
    crate::sys::set_keep_caps(true).map_err(sys_err("PR_SET_KEEPCAPS"))?;
    user::switch_user(process.user())?;
    crate::sys::set_keep_caps(false).map_err(sys_err("PR_SET_KEEPCAPS"))?;
    if let Some(c) = &caps {
        c.apply()?;
    } else if process.user().uid() != 0 {
        // No capabilities object: a non-root user gets none (they were kept above).
        CapPlan::default().apply()?;
    }
    user::set_umask(process.user());
    enter_cwd(process.cwd())?;
    if process.no_new_privileges().unwrap_or(false) {
        crate::sys::set_no_new_privs().map_err(sys_err("PR_SET_NO_NEW_PRIVS"))?;
    }
    let env = process.env().clone().unwrap_or_default();
    Ok(execve::prepare(
        process.args().as_deref().unwrap_or_default(),
        &env,
    )?)
}

/// CVE-2024-21626: the cwd could name a leaked host directory (/proc/self/fd/N). After
/// chdir, getcwd fails (or reports "(unreachable)") when the cwd is not under our root.
fn enter_cwd(cwd: &Path) -> Result<(), InitError> {
    if !cwd.is_absolute() {
        return Err(InitError::Cwd {
            cwd: cwd.to_path_buf(),
            source: nix::Error::EINVAL,
        });
    }
    match chdir(cwd) {
        Ok(()) => {}
        // runc creates a missing cwd; a missing one after pivot_root is an error here
        // unless we can make it (as root in the container).
        Err(nix::Error::ENOENT) => {
            std::fs::create_dir_all(cwd).map_err(|e| InitError::Cwd {
                cwd: cwd.to_path_buf(),
                source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            chdir(cwd).map_err(|source| InitError::Cwd {
                cwd: cwd.to_path_buf(),
                source,
            })?;
        }
        Err(source) => {
            return Err(InitError::Cwd {
                cwd: cwd.to_path_buf(),
                source,
            });
        }
    }
    match nix::unistd::getcwd() {
        Ok(p)
            if p.is_absolute()
                && !p
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"(unreachable)") =>
        {
            Ok(())
        }
        _ => Err(InitError::CwdOutsideRoot(cwd.to_path_buf())),
    }
}
