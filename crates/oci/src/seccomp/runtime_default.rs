//! The profile kubelet's `RuntimeDefault` means in practice: containerd's
//! `contrib/seccomp/seccomp_default.go` (`DefaultProfile`), translated rule for rule for
//! amd64 and arm64, including the rules that depend on the container's bounding
//! capabilities and on the kernel version.
//!
//! <https://github.com/containerd/containerd/blob/main/contrib/seccomp/seccomp_default.go>

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// containerd's default bounding set for a container (`oci.defaultUnixCaps`, Docker's list),
/// used by [`runtime_default_profile`].
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Syscalls allowed for every container, whatever its capabilities.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` personas a container may switch to: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32, and 0xffffffff (the query).
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Namespace flags a `clone(2)` without CAP_SYS_ADMIN must not carry.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Extra syscalls a bounding capability unlocks (containerd's switch on the capability).
const CAPABILITY_SYSCALLS: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `RuntimeDefault` for a container with containerd's default capabilities.
pub fn runtime_default_profile() -> LinuxSeccomp {
    let caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    runtime_default_profile_for(&caps)
}

/// `RuntimeDefault` for a container whose bounding set is `caps` (`CAP_SYS_ADMIN`, ...).
pub fn runtime_default_profile_for(caps: &[String]) -> LinuxSeccomp {
    profile(caps, kernel_at_least(4, 8))
}

/// The profile, with the kernel version check made by the caller (unit tests pass both).
fn profile(caps: &[String], kernel_4_8_or_newer: bool) -> LinuxSeccomp {
    let mut syscalls = vec![allow(ALLOWED)];
    syscalls.extend(PERSONALITIES.iter().map(|&persona| {
        allow_if(
            &["personality"],
            arg(0, persona, LinuxSeccompOperator::ScmpCmpEq),
        )
    }));
    // ptrace could bypass seccomp before 4.8 (the filter ran before the tracer changed the
    // syscall); containerd allows it from 4.8 on.
    if kernel_4_8_or_newer {
        syscalls.push(allow(&["ptrace"]));
    }
    syscalls.push(allow(ARCH_SYSCALLS));

    // containerd walks the bounding set in order, so a capability listed twice adds its
    // rule twice; libseccomp accepts identical rules.
    let mut admin = false;
    for cap in caps {
        admin |= cap == "CAP_SYS_ADMIN";
        if let Some((_, names)) = CAPABILITY_SYSCALLS.iter().find(|(c, _)| c == cap) {
            syscalls.push(allow(names));
        }
    }
    if !admin {
        // clone without namespace flags. s390 puts the flags in the second argument; only
        // amd64 and arm64 are translated here.
        syscalls.push(allow_if(
            &["clone"],
            arg(
                0,
                CLONE_NAMESPACE_FLAGS,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            ),
        ));
        // clone3's flags sit behind a pointer seccomp cannot read: deny it with ENOSYS so
        // libcs fall back to clone (moby/moby#42681).
        let mut clone3 = named(&["clone3"], LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        syscalls.push(clone3);
    }

    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_architectures(Some(ARCHITECTURES.to_vec()))
        .set_syscalls(Some(syscalls));
    profile
}

#[cfg(target_arch = "x86_64")]
const ARCHITECTURES: &[Arch] = &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];
#[cfg(target_arch = "aarch64")]
const ARCHITECTURES: &[Arch] = &[Arch::ScmpArchArm, Arch::ScmpArchAarch64];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURES: &[Arch] = &[];

#[cfg(target_arch = "x86_64")]
const ARCH_SYSCALLS: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ARCH_SYSCALLS: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_SYSCALLS: &[&str] = &[];

fn named(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names.iter().map(|n| n.to_string()).collect())
        .set_action(action);
    rule
}

fn allow(names: &[&str]) -> LinuxSyscall {
    named(names, LinuxSeccompAction::ScmpActAllow)
}

fn allow_if(names: &[&str], condition: LinuxSeccompArg) -> LinuxSyscall {
    let mut rule = allow(names);
    rule.set_args(Some(vec![condition]));
    rule
}

/// A condition; `valueTwo` stays unset as in containerd's JSON (Go's `omitempty` drops 0).
fn arg(index: usize, value: u64, op: LinuxSeccompOperator) -> LinuxSeccompArg {
    LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op)
        .build()
        // Every field has a default, so the builder cannot fail.
        .unwrap_or_default()
}

/// Whether the running kernel is at least `major.minor`; false when the release cannot be
/// read, as containerd skips the rule when its version check errs.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|release| parse_kernel_release(&release))
        .is_some_and(|version| version >= (major, minor))
}

/// `6.18.44-foo` -> `(6, 18)`.
fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| c.to_string()).collect()
    }

    /// The action and errnoRet the profile gives `name` in an unconditional rule, if any.
    fn unconditional(
        profile: &LinuxSeccomp,
        name: &str,
    ) -> Option<(LinuxSeccompAction, Option<u32>)> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| {
                r.args().as_ref().is_none_or(Vec::is_empty) && r.names().iter().any(|n| n == name)
            })
            .map(|r| (r.action(), r.errno_ret()))
    }

    fn conditional_rules<'a>(profile: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        profile
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|r| {
                r.args().as_ref().is_some_and(|a| !a.is_empty())
                    && r.names().iter().any(|n| n == name)
            })
            .collect()
    }

    const ALLOWED_RULE: Option<(LinuxSeccompAction, Option<u32>)> =
        Some((LinuxSeccompAction::ScmpActAllow, None));

    #[test]
    fn default_action_is_errno_and_common_syscalls_are_allowed() {
        let profile = profile(&[], true);
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), None);
        for name in [
            "read", "write", "execve", "openat", "mkdir", "kill", "wait4",
        ] {
            assert_eq!(unconditional(&profile, name), ALLOWED_RULE, "{name}");
        }
        assert!(
            !ALLOWED.contains(&"syslog"),
            "syslog needs CAP_SYSLOG or CAP_SYS_ADMIN"
        );
    }

    #[test]
    fn without_cap_sys_admin_mount_and_unshare_are_not_allowed() {
        let profile = profile(&caps(DEFAULT_CAPABILITIES), true);
        for name in ["mount", "umount2", "unshare", "setns", "bpf"] {
            assert_eq!(unconditional(&profile, name), None, "{name}");
        }
    }

    #[test]
    fn without_cap_sys_admin_clone_is_allowed_only_without_namespace_flags() {
        let profile = profile(&[], true);
        assert_eq!(unconditional(&profile, "clone"), None);
        let rules = conditional_rules(&profile, "clone");
        assert_eq!(rules.len(), 1);
        let arg = rules[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.index(), 0);
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(arg.value(), 0x7e02_0000);
        assert_eq!(arg.value_two().unwrap_or(0), 0);
    }

    #[test]
    fn without_cap_sys_admin_clone3_fails_with_enosys() {
        let profile = profile(&[], true);
        assert_eq!(
            unconditional(&profile, "clone3"),
            Some((LinuxSeccompAction::ScmpActErrno, Some(libc::ENOSYS as u32)))
        );
    }

    #[test]
    fn cap_sys_admin_allows_mount_namespaces_clone_and_clone3() {
        let profile = profile(&caps(&["CAP_SYS_ADMIN"]), true);
        for name in [
            "mount", "umount2", "unshare", "setns", "clone", "clone3", "syslog", "bpf",
        ] {
            assert_eq!(unconditional(&profile, name), ALLOWED_RULE, "{name}");
        }
        assert!(conditional_rules(&profile, "clone").is_empty());
    }

    #[test]
    fn each_capability_unlocks_its_syscalls() {
        let cases: &[(&str, &[&str])] = &[
            ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
            ("CAP_SYS_BOOT", &["reboot"]),
            ("CAP_SYS_CHROOT", &["chroot"]),
            (
                "CAP_SYS_MODULE",
                &["init_module", "finit_module", "delete_module"],
            ),
            ("CAP_SYS_PACCT", &["acct"]),
            (
                "CAP_SYS_PTRACE",
                &[
                    "kcmp",
                    "pidfd_getfd",
                    "process_vm_readv",
                    "process_vm_writev",
                ],
            ),
            ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
            ("CAP_SYS_TIME", &["settimeofday", "clock_settime"]),
            ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
            ("CAP_SYSLOG", &["syslog"]),
            ("CAP_BPF", &["bpf"]),
            ("CAP_PERFMON", &["perf_event_open"]),
        ];
        for (cap, names) in cases {
            let without = profile(&[], true);
            let with = profile(&caps(&[cap]), true);
            for name in *names {
                assert_eq!(unconditional(&without, name), None, "{name} without {cap}");
                assert_eq!(
                    unconditional(&with, name),
                    ALLOWED_RULE,
                    "{name} with {cap}"
                );
            }
            // Only CAP_SYS_ADMIN lifts the clone restriction.
            assert_eq!(conditional_rules(&with, "clone").len(), 1, "{cap}");
        }
    }

    #[test]
    fn ptrace_is_allowed_from_kernel_4_8() {
        assert_eq!(unconditional(&profile(&[], true), "ptrace"), ALLOWED_RULE);
        assert_eq!(unconditional(&profile(&[], false), "ptrace"), None);
    }

    #[test]
    fn personality_is_allowed_for_the_five_personas_only() {
        let profile = profile(&[], true);
        let mut values: Vec<u64> = conditional_rules(&profile, "personality")
            .iter()
            .map(|r| {
                let args = r.args().as_ref().unwrap();
                assert_eq!(args.len(), 1);
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        values.sort_unstable();
        assert_eq!(values, [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff]);
        assert_eq!(unconditional(&profile, "personality"), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn amd64_profile_covers_the_32_bit_abis_and_arch_prctl() {
        let profile = profile(&[], true);
        assert_eq!(
            profile.architectures().as_deref().unwrap(),
            [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert_eq!(unconditional(&profile, "arch_prctl"), ALLOWED_RULE);
        assert_eq!(unconditional(&profile, "modify_ldt"), ALLOWED_RULE);
    }

    #[test]
    fn kernel_release_is_parsed() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v657\n"), Some((6, 18)));
        assert_eq!(parse_kernel_release("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_release("5-custom"), None);
        assert_eq!(parse_kernel_release(""), None);
    }

    #[test]
    fn runtime_default_compiles_for_every_capability_set() {
        let all = caps(&[
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_SYSLOG",
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_SYS_TIME",
        ]);
        for set in [Vec::new(), caps(DEFAULT_CAPABILITIES), all] {
            let program = crate::seccomp::compile(&runtime_default_profile_for(&set)).unwrap();
            assert!(program.instructions() > 100, "{program:?}");
            assert!(!program.uses_notify());
        }
    }
}
