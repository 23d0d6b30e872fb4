//! The OCI seccomp object ([runtime-spec config-linux.md "Seccomp"]) as a BPF program.
//!
//! The profile is compiled with libseccomp in the parent, before any fork, so a bad
//! profile fails `create` with a message naming the field or syscall. The container init
//! then installs the exported BPF with one raw `seccomp(2)` call ([`SeccompProgram::load`]),
//! which allocates nothing and is async-signal-safe, right before `execve`.
//!
//! Where to load it (runc's order): with `noNewPrivileges`, last, right before `execve`, so
//! the init's own setup syscalls are not filtered; without it, `seccomp(2)` needs
//! CAP_SYS_ADMIN, so it must run before the capabilities are dropped, and the profile then
//! also filters the init's remaining setup (capset, setresuid, ...).
//!
//! SCMP_ACT_NOTIFY: [`SeccompProgram::load`] returns the listener fd; sending it with the
//! container state and `listenerMetadata` over SCM_RIGHTS to `listenerPath` is the
//! executor core's job (runtime-spec config-linux.md "Seccomp", `listenerPath`).
//!
//! [runtime-spec config-linux.md "Seccomp"]: https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md#seccomp

mod compile;
mod enosys;
mod load;
mod runtime_default;

use oci_spec::runtime::LinuxSeccomp;

pub use runtime_default::{
    DEFAULT_CAPABILITIES, runtime_default_profile, runtime_default_profile_for,
};

/// Errors from compiling or loading a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile JSON does not follow the runtime-spec (unknown action, op, flag, arch).
    #[error("seccomp profile: {0}")]
    Parse(#[source] serde_json::Error),
    /// A field of the profile is invalid; `field` is its JSON path (`syscalls[2].args[0].index`).
    #[error("seccomp {field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// libseccomp refused a part of the profile.
    #[error("seccomp {field}: {source}")]
    Libseccomp {
        field: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The running kernel does not know a filter flag the profile asks for.
    #[error("seccomp flags: {flag} is not supported by this kernel: {source}")]
    FlagUnsupported {
        flag: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    /// Exporting the compiled filter as BPF failed.
    #[error("seccomp export bpf: {0}")]
    Export(#[source] std::io::Error),
    /// The compiled program is larger than the kernel accepts.
    #[error("seccomp filter has {len} instructions, the kernel accepts at most {max}")]
    TooLong { len: usize, max: usize },
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed in the container init.
    #[error("seccomp(2) load filter with flags {flags:#x}: {source}")]
    Load {
        flags: u32,
        #[source]
        source: nix::errno::Errno,
    },
    /// SECCOMP_FILTER_FLAG_TSYNC could not synchronize a thread of the process.
    #[error("seccomp(2) tsync: thread {tid} cannot be synchronized to the filter")]
    TsyncFailed { tid: i64 },
}

/// A compiled seccomp profile: the BPF program and the `seccomp(2)` flags to load it with.
#[derive(Clone)]
pub struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
    flags: u32,
    uses_notify: bool,
    skipped_syscalls: Vec<String>,
}

impl std::fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompProgram")
            .field("instructions", &self.filter.len())
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("uses_notify", &self.uses_notify)
            .field("skipped_syscalls", &self.skipped_syscalls)
            .finish()
    }
}

impl SeccompProgram {
    /// True when a rule uses SCMP_ACT_NOTIFY: [`SeccompProgram::load`] then returns the
    /// listener fd, which the caller must send to the agent at `listenerPath`.
    pub fn uses_notify(&self) -> bool {
        self.uses_notify
    }

    /// The `SECCOMP_FILTER_FLAG_*` bits passed to `seccomp(2)`.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The number of BPF instructions.
    pub fn instructions(&self) -> usize {
        self.filter.len()
    }

    /// Syscall names of the profile that libseccomp does not know on this architecture;
    /// their rules were left out (runc does the same: profiles list syscalls of many kernels).
    pub fn skipped_syscalls(&self) -> &[String] {
        &self.skipped_syscalls
    }
}

/// Compiles an OCI seccomp profile to BPF. Call in the parent, before forking the init.
pub fn compile(spec: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    compile::compile(spec)
}

/// Parses a seccomp profile in runtime-spec JSON (a `linux.seccomp` object, or a localhost
/// profile file). The error names the unknown value (`SECCOMP_FILTER_FLAG_BOGUS`, `SCMP_CMP_FOO`).
pub fn parse_profile(json: &str) -> Result<LinuxSeccomp, SeccompError> {
    serde_json::from_str(json).map_err(SeccompError::Parse)
}
