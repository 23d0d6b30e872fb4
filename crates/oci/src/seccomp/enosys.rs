//! runc's -ENOSYS stub (`libcontainer/seccomp/patchbpf/enosys_linux.go`), prepended to the
//! libseccomp program.
//!
//! With a deny-by-default profile, a syscall newer than the profile gets the default errno
//! (EPERM), and libcs only fall back to an older syscall on ENOSYS (glibc's fchmodat2,
//! clone3, faccessat2 ...). A syscall number above the largest one the profile names, for
//! each architecture of the filter, therefore returns ENOSYS, as "not known to this kernel"
//! would. Same caveat as runc: syscalls added out of order in a table are not covered.

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall};

/// `offsetof(struct seccomp_data, nr)` and `offsetof(struct seccomp_data, arch)`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

/// x32 syscalls are x86_64 syscalls (AUDIT_ARCH_X86_64) with this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// s390(x) multiplexes syscall numbers above 255 through syscall 0 (setup(2), gone for
/// decades); an unknown large syscall arrives as 0, so runc answers ENOSYS for it.
const S390_MULTIPLEX_SYSCALL: u32 = 0;

const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

/// A syscall ABI as the kernel tells it apart in `seccomp_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Abi {
    /// The AUDIT_ARCH_* value in `seccomp_data.arch`.
    audit_arch: u32,
    scmp: ScmpArch,
}

/// The stub to prepend, or nothing when the profile's default action already lets unknown
/// syscalls through (runc: ALLOW, LOG, TRACE) or already answers ENOSYS.
pub(super) fn enosys_stub(spec: &LinuxSeccomp) -> Vec<libc::sock_filter> {
    let permissive = matches!(
        spec.default_action(),
        LinuxSeccompAction::ScmpActAllow
            | LinuxSeccompAction::ScmpActLog
            | LinuxSeccompAction::ScmpActTrace
    );
    if permissive || spec.default_errno_ret() == Some(libc::ENOSYS as u32) {
        return Vec::new();
    }
    let syscalls = spec.syscalls().as_deref().unwrap_or_default();
    let abis = filter_abis(spec.architectures().as_deref().unwrap_or_default());
    let mut last: Vec<(Abi, u32)> = Vec::new();
    for abi in abis {
        match last_syscall(syscalls, abi.scmp) {
            Some(nr) => last.push((abi, nr)),
            None => {
                tracing::warn!(arch = ?abi.scmp, "seccomp: no syscall of the profile is known on this architecture; no ENOSYS stub for it")
            }
        }
    }
    assemble(&last)
}

/// The ABIs the filter covers: the profile's architectures plus the native one, which
/// libseccomp always includes.
fn filter_abis(arches: &[Arch]) -> Vec<Abi> {
    let mut abis: Vec<Abi> = Vec::new();
    for abi in std::iter::once(native_abi())
        .flatten()
        .chain(arches.iter().filter_map(|&a| abi_of(a)))
    {
        if !abis.contains(&abi) {
            abis.push(abi);
        }
    }
    abis
}

/// The kernel's view of an OCI architecture. oci-spec's discriminants are libseccomp's
/// SCMP_ARCH_* values, which are the AUDIT_ARCH_* values except for x32, a mode of x86_64.
fn abi_of(arch: Arch) -> Option<Abi> {
    let scmp = super::compile::scmp_arch(arch);
    match arch {
        Arch::ScmpArchNative => native_abi(),
        Arch::ScmpArchX32 => Some(Abi {
            audit_arch: Arch::ScmpArchX86_64 as u32,
            scmp,
        }),
        other => Some(Abi {
            audit_arch: other as u32,
            scmp,
        }),
    }
}

fn native_abi() -> Option<Abi> {
    #[cfg(target_arch = "x86_64")]
    let arch = Some(Arch::ScmpArchX86_64);
    #[cfg(target_arch = "aarch64")]
    let arch = Some(Arch::ScmpArchAarch64);
    #[cfg(target_arch = "riscv64")]
    let arch = Some(Arch::ScmpArchRiscv64);
    #[cfg(target_arch = "s390x")]
    let arch = Some(Arch::ScmpArchS390x);
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "s390x"
    )))]
    let arch = None;
    arch.and_then(abi_of)
}

/// The largest syscall number, on `arch`, of any name in the profile (any action: a rule
/// equal to the default action still says the profile knows the syscall).
fn last_syscall(syscalls: &[LinuxSyscall], arch: ScmpArch) -> Option<u32> {
    syscalls
        .iter()
        .flat_map(|rule| rule.names())
        .filter_map(|name| ScmpSyscall::from_name_by_arch(name, arch).ok())
        // Negative numbers are libseccomp's pseudo-syscalls: not on this arch.
        .filter_map(|nr| u32::try_from(nr.as_raw_syscall()).ok())
        .max()
}

/// ```text
///       ld  [arch]
///       jeq AUDIT_ARCH_A, 0, <len of section A>   ; section A: one per audit arch
///       ld  [nr]
///       jgt last_A, 0, 1
///       ret ERRNO(ENOSYS)
///       ja  <end of stub>
///       jeq AUDIT_ARCH_B, ...
///       ...                                       ; end of stub: libseccomp's program
/// ```
fn assemble(last: &[(Abi, u32)]) -> Vec<libc::sock_filter> {
    let mut audit_arches: Vec<u32> = Vec::new();
    for (abi, _) in last {
        if !audit_arches.contains(&abi.audit_arch) {
            audit_arches.push(abi.audit_arch);
        }
    }
    let sections: Vec<(u32, Vec<libc::sock_filter>)> = audit_arches
        .iter()
        .filter_map(|&audit_arch| {
            let abis: Vec<(ScmpArch, u32)> = last
                .iter()
                .filter(|(abi, _)| abi.audit_arch == audit_arch)
                .map(|(abi, nr)| (abi.scmp, *nr))
                .collect();
            section(audit_arch, &abis).map(|body| (audit_arch, body))
        })
        .collect();
    if sections.is_empty() {
        return Vec::new();
    }

    let mut stub = vec![load(SECCOMP_DATA_ARCH)];
    let total: usize = 1 + sections.iter().map(|(_, s)| s.len() + 1).sum::<usize>();
    for (audit_arch, mut body) in sections {
        // Sections are a handful of instructions, far below the 255 a jump offset holds.
        stub.push(jump(libc::BPF_JEQ, audit_arch, 0, body.len() as u8));
        let ja_index = stub.len() + body.len() - 1;
        if let Some(ja) = body.last_mut() {
            ja.k = (total - ja_index - 1) as u32;
        }
        stub.extend(body);
    }
    stub
}

/// The checks for one audit arch, ending with `ja` (offset patched by `assemble`).
fn section(audit_arch: u32, abis: &[(ScmpArch, u32)]) -> Option<Vec<libc::sock_filter>> {
    let last_of = |arch: ScmpArch| abis.iter().find(|(a, _)| *a == arch).map(|(_, nr)| *nr);
    let mut body = vec![load(SECCOMP_DATA_NR)];
    if audit_arch == Arch::ScmpArchX86_64 as u32 {
        match (last_of(ScmpArch::X8664), last_of(ScmpArch::X32)) {
            (Some(x86_64), Some(x32)) => body.extend([
                jump(libc::BPF_JSET, X32_SYSCALL_BIT, 1, 0),
                jump(libc::BPF_JGT, x86_64, 1, 2),
                jump(libc::BPF_JGT, x32, 0, 1),
            ]),
            // Only one mode in the filter: the other goes to libseccomp's bad-arch action.
            (Some(x86_64), None) => body.extend([
                jump(libc::BPF_JSET, X32_SYSCALL_BIT, 2, 0),
                jump(libc::BPF_JGT, x86_64, 0, 1),
            ]),
            (None, Some(x32)) => body.extend([
                jump(libc::BPF_JSET, X32_SYSCALL_BIT, 0, 2),
                jump(libc::BPF_JGT, x32, 0, 1),
            ]),
            (None, None) => return None,
        }
    } else {
        let &[(arch, last)] = abis else { return None };
        if matches!(arch, ScmpArch::S390 | ScmpArch::S390X) {
            body.extend([
                jump(libc::BPF_JEQ, S390_MULTIPLEX_SYSCALL, 0, 1),
                ret(RET_ENOSYS),
            ]);
        }
        body.push(jump(libc::BPF_JGT, last, 0, 1));
    }
    body.extend([ret(RET_ENOSYS), jump_always()]);
    Some(body)
}

fn load(offset: u32) -> libc::sock_filter {
    insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, offset)
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    insn(libc::BPF_JMP | op | libc::BPF_K, jt, jf, k)
}

fn jump_always() -> libc::sock_filter {
    insn(libc::BPF_JMP | libc::BPF_JA, 0, 0, 0)
}

fn ret(k: u32) -> libc::sock_filter {
    insn(libc::BPF_RET | libc::BPF_K, 0, 0, k)
}

fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        // BPF opcodes are 16 bits; the libc constants are u32 only for convenience.
        code: code as u16,
        jt,
        jf,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    const AUDIT_ARCH_S390X: u32 = 0x8000_0016;

    /// What the stub decides for a syscall: ENOSYS, or on to libseccomp's program.
    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Enosys,
        Filter,
    }

    /// A classic-BPF interpreter for the instructions the stub uses.
    fn run(stub: &[libc::sock_filter], arch: u32, nr: u32) -> Verdict {
        let mut pc = 0usize;
        let mut acc = 0u32;
        loop {
            if pc == stub.len() {
                return Verdict::Filter;
            }
            let i = stub[pc];
            let code = u32::from(i.code);
            pc += 1;
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                acc = match i.k {
                    SECCOMP_DATA_NR => nr,
                    SECCOMP_DATA_ARCH => arch,
                    other => panic!("load of seccomp_data offset {other}"),
                };
            } else if code == libc::BPF_RET | libc::BPF_K {
                assert_eq!(i.k, RET_ENOSYS);
                return Verdict::Enosys;
            } else if code == libc::BPF_JMP | libc::BPF_JA {
                pc += i.k as usize;
            } else {
                let taken = match code & !(libc::BPF_JMP | libc::BPF_K) {
                    libc::BPF_JEQ => acc == i.k,
                    libc::BPF_JGT => acc > i.k,
                    libc::BPF_JSET => acc & i.k != 0,
                    other => panic!("unexpected opcode {other:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            assert!(pc <= stub.len(), "jump past the end of the stub");
        }
    }

    fn abi(audit_arch: u32, scmp: ScmpArch) -> Abi {
        Abi { audit_arch, scmp }
    }

    #[test]
    fn syscalls_above_the_last_known_get_enosys_per_arch() {
        let stub = assemble(&[
            (abi(AUDIT_ARCH_X86_64, ScmpArch::X8664), 300),
            (abi(AUDIT_ARCH_I386, ScmpArch::X86), 400),
            (abi(AUDIT_ARCH_AARCH64, ScmpArch::Aarch64), 200),
        ]);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 300), Verdict::Filter);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 301), Verdict::Enosys);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 0), Verdict::Filter);
        assert_eq!(run(&stub, AUDIT_ARCH_I386, 350), Verdict::Filter);
        assert_eq!(run(&stub, AUDIT_ARCH_I386, 401), Verdict::Enosys);
        assert_eq!(run(&stub, AUDIT_ARCH_AARCH64, 201), Verdict::Enosys);
        // Unknown arches go on to libseccomp, whose bad-arch action decides.
        assert_eq!(run(&stub, 0x1234, 9999), Verdict::Filter);
    }

    #[test]
    fn x32_and_x86_64_share_an_audit_arch_and_split_on_the_x32_bit() {
        let x32_last = X32_SYSCALL_BIT | 547;
        let stub = assemble(&[
            (abi(AUDIT_ARCH_X86_64, ScmpArch::X8664), 300),
            (abi(AUDIT_ARCH_X86_64, ScmpArch::X32), x32_last),
        ]);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 301), Verdict::Enosys);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 299), Verdict::Filter);
        assert_eq!(
            run(&stub, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 400),
            Verdict::Filter
        );
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, x32_last + 1), Verdict::Enosys);
    }

    #[test]
    fn x86_64_alone_leaves_x32_syscalls_to_the_filter() {
        let stub = assemble(&[(abi(AUDIT_ARCH_X86_64, ScmpArch::X8664), 300)]);
        assert_eq!(
            run(&stub, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 999),
            Verdict::Filter
        );
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 999), Verdict::Enosys);
    }

    #[test]
    fn s390x_multiplexed_syscall_zero_gets_enosys() {
        let stub = assemble(&[(abi(AUDIT_ARCH_S390X, ScmpArch::S390X), 400)]);
        assert_eq!(run(&stub, AUDIT_ARCH_S390X, 0), Verdict::Enosys);
        assert_eq!(run(&stub, AUDIT_ARCH_S390X, 1), Verdict::Filter);
        assert_eq!(run(&stub, AUDIT_ARCH_S390X, 401), Verdict::Enosys);
    }

    fn spec(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn permissive_or_enosys_defaults_get_no_stub() {
        for default in ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"] {
            let s = spec(&format!(
                r#"{{"defaultAction":"{default}","syscalls":[{{"names":["mkdir"],"action":"SCMP_ACT_KILL"}}]}}"#
            ));
            assert!(enosys_stub(&s).is_empty(), "{default}");
        }
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        assert!(enosys_stub(&s).is_empty());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn deny_by_default_profile_gets_a_stub_for_native_and_listed_arches() {
        // exit_group is 231 on x86_64 and 252 on i386.
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86"],
                "syscalls":[{"names":["getpid","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let stub = enosys_stub(&s);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 231), Verdict::Filter);
        assert_eq!(run(&stub, AUDIT_ARCH_X86_64, 232), Verdict::Enosys);
        assert_eq!(run(&stub, AUDIT_ARCH_I386, 252), Verdict::Filter);
        assert_eq!(run(&stub, AUDIT_ARCH_I386, 253), Verdict::Enosys);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscall_numbers_carry_the_x32_bit() {
        let s = spec(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["exit_group"],"action":"SCMP_ACT_ERRNO"}]}"#,
        );
        let rules = s.syscalls().as_deref().unwrap();
        assert_eq!(
            last_syscall(rules, ScmpArch::X32),
            Some(X32_SYSCALL_BIT | 231)
        );
        assert_eq!(last_syscall(rules, ScmpArch::X8664), Some(231));
    }
}
