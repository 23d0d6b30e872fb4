//! The process chain that turns a spec into a container process.
//!
//! ```text
//! caller (parent) --fork--> intermediate --clone(CLONE_PARENT)--> init / exec process
//! ```
//!
//! The intermediate makes itself non-dumpable, joins namespaces given by path (user
//! first), unshares the new ones (user first, the parent writing its id maps over the
//! sync socket), then clones the final process, which is pid 1 when a PID namespace
//! was created (unshare(CLONE_NEWPID) only affects children) and, thanks to
//! CLONE_PARENT, a child of the caller, so the caller can wait for it. The
//! intermediate reports the pid and exits. (youki: main -> intermediate -> init;
//! runc: nsexec stage 0/1/2.)
//!
//! ## CVE-2019-5736 (/proc/self/exe of the runtime)
//!
//! runc re-execs itself from a sealed memfd copy so that the binary the container can
//! reach through /proc/<pid>/exe is not the host file. This executor is a library
//! (the monitor calls it in-process), so it takes the cheaper route:
//! 1. The intermediate makes itself non-dumpable *before* joining any container
//!    namespace, and the init/exec process inherits that. /proc/<pid>/{exe,fd,mem,...}
//!    of a non-dumpable process need CAP_SYS_PTRACE in the user namespace its mm was
//!    created in, the host's, which nothing in the container has (even root of a
//!    container user namespace). So while our code runs in the container, the runtime
//!    binary cannot be opened through us.
//! 2. execve makes the process dumpable again, which is fine for the container's own
//!    program but not if that program *is* our binary (`/proc/self/exe` as argv[0] or
//!    as a `#!` interpreter): `execve::refuse_runtime_binary` refuses that.
//!
//! Tests: `cve_2019_5736_runtime_binary_not_writable_from_container` and
//! `cve_2019_5736_container_cannot_exec_the_runtime_binary`.
//!
//! **The caller must be single-threaded** (or at least must not hold locks other
//! threads need): the children run Rust code after fork, as youki and runc-init do.

pub mod caps;
pub mod channel;
pub mod execve;
pub mod init;
pub mod namespaces;
pub mod resources;
pub mod sysctl;
pub mod tty;
pub mod user;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use oci_spec::runtime::{Process, Spec};

use self::channel::{Channel, Msg};
use self::namespaces::NsPlan;
use self::resources::{CgroupMount, SeccompFilter};
use crate::state::OciState;
use crate::sys::{CloneResult, clone_parent, set_dumpable};

/// Standard streams for the container process: inherit the caller's (runc's
/// behaviour) or these three fds.
#[derive(Debug, Default)]
pub enum Stdio {
    #[default]
    Inherit,
    Fds([OwnedFd; 3]),
}

/// What becomes of the final process once its namespaces are in place.
pub enum Role {
    /// A new container: rootfs, hooks, hostname, sysctls, then wait on the exec fifo.
    Init {
        rootfs: PathBuf,
        bundle: PathBuf,
        /// O_PATH fd of the state directory `<state>/<id>` holding `exec.fifo`.
        fifo: OwnedFd,
        state: Box<OciState>,
        cgroup_mounts: Vec<CgroupMount>,
    },
    /// `exec` into a running container.
    Exec {
        /// setpgid(0, 0) before execve (see `ExecOptions::new_process_group`).
        new_process_group: bool,
    },
}

/// Everything the children need, prepared by the parent before forking (files opened,
/// seccomp compiled) so the children fail less and allocate little.
pub struct ChildConfig {
    pub spec: Spec,
    pub process: Process,
    pub ns: NsPlan,
    pub seccomp: Option<SeccompFilter>,
    pub console: Option<OwnedFd>,
    pub stdio: Stdio,
    pub role: Role,
}

/// Run in the forked intermediate process. Never returns.
pub fn intermediate_main(ch: Channel, cfg: ChildConfig) -> ! {
    let code = match intermediate(&ch, cfg) {
        Ok(()) => 0,
        Err(e) => {
            ch.send_error(&e);
            1
        }
    };
    // SAFETY: _exit skips atexit handlers and stdio flushing, which belong to the
    // parent's copy of this process image.
    unsafe { libc::_exit(code) }
}

#[derive(Debug, thiserror::Error)]
pub enum IntermediateError {
    #[error("make runtime process non-dumpable: {0}")]
    Dumpable(std::io::Error),
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error("unexpected message {0:?}")]
    Unexpected(Msg),
    #[error("parent: {0}")]
    Parent(String),
    #[error(transparent)]
    Namespace(#[from] namespaces::NamespaceError),
    #[error("become root in the new user namespace: {0}")]
    Root(nix::Error),
    #[error("clone container process: {0}")]
    Clone(std::io::Error),
}

fn expect(ch: &Channel, want: Msg) -> Result<(), IntermediateError> {
    match ch.recv(None)? {
        m if m == want => Ok(()),
        Msg::Error(e) => Err(IntermediateError::Parent(e)),
        m => Err(IntermediateError::Unexpected(m)),
    }
}

fn intermediate(ch: &Channel, cfg: ChildConfig) -> Result<(), IntermediateError> {
    // CVE-2019-5736: from now on, and in every child, /proc/<pid>/exe of this runtime
    // process cannot be opened by anything in the container (see sys::set_dumpable).
    // It must happen before the first namespace is joined.
    set_dumpable(false).map_err(IntermediateError::Dumpable)?;
    // The parent moves us into the cgroup first, so a new cgroup namespace is rooted
    // at the container's cgroup.
    expect(ch, Msg::Go)?;
    cfg.ns.join_all()?;
    let user = nix::sched::CloneFlags::CLONE_NEWUSER;
    if cfg.ns.unshare.contains(user) {
        namespaces::unshare_flags(user)?;
        ch.send(&Msg::IdMapRequest)?;
        expect(ch, Msg::IdMapDone)?;
        become_root_in_userns()?;
    }
    namespaces::unshare_flags(cfg.ns.unshare - user)?;
    // SAFETY: this process is single-threaded (a fork child of the caller).
    match unsafe { clone_parent() }.map_err(IntermediateError::Clone)? {
        CloneResult::Child => init::child_main(ch, cfg),
        CloneResult::Parent { child } => {
            ch.send(&Msg::Pid(child))?;
            Ok(())
        }
    }
}

/// After the maps are written we are still the overflow uid in the new namespace until
/// we switch to uid/gid 0 (when mapped); that gives the init its capabilities there
/// over setuid-like checks (file ownership for mknod/chown of devices).
fn become_root_in_userns() -> Result<(), IntermediateError> {
    use nix::unistd::{Gid, Uid, setresgid, setresuid};
    let root_g = Gid::from_raw(0);
    let root_u = Uid::from_raw(0);
    match setresgid(root_g, root_g, root_g) {
        Ok(()) | Err(nix::Error::EINVAL) => {}
        Err(e) => return Err(IntermediateError::Root(e)),
    }
    match setresuid(root_u, root_u, root_u) {
        Ok(()) | Err(nix::Error::EINVAL) => Ok(()),
        Err(e) => Err(IntermediateError::Root(e)),
    }
}
