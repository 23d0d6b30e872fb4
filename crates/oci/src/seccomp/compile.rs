//! From an OCI seccomp profile to a BPF program, with libseccomp, in the parent.
//!
//! Follows runc's `libcontainer/seccomp/seccomp_linux.go` where the runtime-spec leaves a
//! choice (unknown syscall names, rules equal to the default action, repeated argument
//! indexes), and crun where runc silently accepts a meaningless field (`errnoRet` on an
//! action that returns no errno).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::sys::memfd::{MFdFlags, memfd_create};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::enosys::enosys_stub;
use super::load::kernel_supports_filter_flag;
use super::{SeccompError, SeccompProgram};

/// Linux system calls take at most six arguments.
const SYSCALL_MAX_ARGS: usize = 6;

/// The kernel's limit on a classic BPF program (BPF_MAXINSNS).
const BPF_MAXINSNS: usize = 4096;

/// Above this many rules libseccomp's binary-tree layout is shorter and faster (runc's choice:
/// libseccomp <= 2.5.4 misbehaves with the tree and no rules).
const BINARY_TREE_MIN_RULES: usize = 32;

/// The errno ERRNO and TRACE return when the profile sets none (runc: EPERM).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

pub(super) fn compile(spec: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    let syscalls = spec.syscalls().as_deref().unwrap_or_default();
    let uses_notify = syscalls
        .iter()
        .any(|rule| rule.action() == LinuxSeccompAction::ScmpActNotify);
    check_notify(spec, syscalls, uses_notify)?;

    let default_action = scmp_action(
        spec.default_action(),
        spec.default_errno_ret(),
        "defaultErrnoRet",
    )?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|source| SeccompError::Libseccomp {
            field: format!("defaultAction {}", spec.default_action()),
            source,
        })?;
    add_architectures(
        &mut ctx,
        spec.architectures().as_deref().unwrap_or_default(),
    )?;
    let flags = filter_flags(spec.flags().as_deref().unwrap_or_default(), uses_notify)?;
    if syscalls.len() > BINARY_TREE_MIN_RULES {
        if let Err(err) = ctx.set_ctl_optimize(2) {
            tracing::debug!(error = %err, "seccomp binary tree optimization not available");
        }
    }

    let mut skipped_syscalls = Vec::new();
    for (index, rule) in syscalls.iter().enumerate() {
        add_syscall_rule(&mut ctx, index, rule, default_action, &mut skipped_syscalls)?;
    }
    let mut filter = enosys_stub(spec);
    filter.extend(export_bpf(&ctx)?);
    if filter.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong {
            len: filter.len(),
            max: BPF_MAXINSNS,
        });
    }
    Ok(SeccompProgram {
        filter,
        flags,
        uses_notify,
        skipped_syscalls,
    })
}

/// SCMP_ACT_NOTIFY needs an agent to talk to and must leave the init able to hand it the fd.
fn check_notify(
    spec: &LinuxSeccomp,
    syscalls: &[LinuxSyscall],
    uses_notify: bool,
) -> Result<(), SeccompError> {
    // A notify default would also catch the write(2) that hands the listener fd over.
    if spec.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(invalid(
            "defaultAction",
            "SCMP_ACT_NOTIFY cannot be the default action",
        ));
    }
    for (index, rule) in syscalls.iter().enumerate() {
        // runc: the init writes the listener fd number to its parent with write(2); notifying
        // on write would deadlock the container start.
        if rule.action() == LinuxSeccompAction::ScmpActNotify
            && rule.names().iter().any(|name| name == "write")
        {
            return Err(invalid(
                format!("syscalls[{index}] (write)"),
                "SCMP_ACT_NOTIFY cannot be used for the write syscall",
            ));
        }
    }
    // runtime-spec: listenerPath MUST be set when any rule uses SCMP_ACT_NOTIFY.
    if uses_notify && spec.listener_path().is_none() {
        return Err(invalid(
            "listenerPath",
            "must be set when a rule uses SCMP_ACT_NOTIFY",
        ));
    }
    Ok(())
}

/// Maps an OCI action (and its errnoRet) to libseccomp's. `errno_field` names the errnoRet
/// field in errors.
pub(super) fn scmp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    errno_field: &str,
) -> Result<ScmpAction, SeccompError> {
    let ret = errno_ret.unwrap_or(DEFAULT_ERRNO);
    // The kernel keeps 16 bits of SECCOMP_RET_DATA; more would be silently truncated.
    let ret = u16::try_from(ret).map_err(|_| {
        invalid(
            errno_field,
            format!("{ret} does not fit the 16 bits of SECCOMP_RET_DATA"),
        )
    })?;
    // crun refuses errnoRet on actions that return no errno; runc ignores it. A value that
    // changes nothing is a mistake in the profile, so say so.
    if errno_ret.is_some()
        && !matches!(
            action,
            LinuxSeccompAction::ScmpActErrno | LinuxSeccompAction::ScmpActTrace
        )
    {
        return Err(invalid(
            errno_field,
            format!("only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}"),
        ));
    }
    Ok(match action {
        // SCMP_ACT_KILL is the historical name of SCMP_ACT_KILL_THREAD.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(ret)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// Maps an OCI architecture to libseccomp's.
pub(super) fn scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
    }
}

/// Adds the profile's architectures; the native one is always in a new filter.
fn add_architectures(ctx: &mut ScmpFilterContext, arches: &[Arch]) -> Result<(), SeccompError> {
    for (index, &arch) in arches.iter().enumerate() {
        let scmp = scmp_arch(arch);
        let field = || format!("architectures[{index}] {arch}");
        let present = ctx
            .is_arch_present(scmp)
            .map_err(|source| SeccompError::Libseccomp {
                field: field(),
                source,
            })?;
        if !present {
            ctx.add_arch(scmp)
                .map_err(|source| SeccompError::Libseccomp {
                    field: field(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Maps an OCI filter flag to its `SECCOMP_FILTER_FLAG_*` bit and name.
pub(super) fn filter_flag_bit(flag: LinuxSeccompFilterFlag) -> (u32, &'static str) {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => (
            libc::SECCOMP_FILTER_FLAG_TSYNC as u32,
            "SECCOMP_FILTER_FLAG_TSYNC",
        ),
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => (
            libc::SECCOMP_FILTER_FLAG_LOG as u32,
            "SECCOMP_FILTER_FLAG_LOG",
        ),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => (
            libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        ),
    }
}

/// The `seccomp(2)` flags for the profile, each checked against the running kernel so an
/// old kernel fails `create`, not the container init.
fn filter_flags(flags: &[LinuxSeccompFilterFlag], uses_notify: bool) -> Result<u32, SeccompError> {
    let mut named: Vec<(u32, &'static str)> = flags.iter().map(|&f| filter_flag_bit(f)).collect();
    if uses_notify {
        named.push((
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32,
            "SECCOMP_FILTER_FLAG_NEW_LISTENER",
        ));
    }
    let mut bits: u32 = named.iter().fold(0, |acc, (bit, _)| acc | bit);
    let tsync = libc::SECCOMP_FILTER_FLAG_TSYNC as u32;
    let listener = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;
    if bits & tsync != 0 && bits & listener != 0 {
        // seccomp(2): TSYNC and NEW_LISTENER both want the return value; with TSYNC_ESRCH a
        // failed sync is reported as ESRCH and the return value is the listener fd.
        named.push((
            libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH as u32,
            "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
        ));
        bits |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH as u32;
    }
    for (bit, name) in named {
        kernel_supports_filter_flag(bit)
            .map_err(|source| SeccompError::FlagUnsupported { flag: name, source })?;
    }
    Ok(bits)
}

/// Maps an OCI comparison to libseccomp's. For SCMP_CMP_MASKED_EQ `value` is the mask and
/// `valueTwo` the expected result (runc and libseccomp-golang's MakeCondition).
pub(super) fn scmp_condition(
    arg: &LinuxSeccompArg,
    field: &str,
) -> Result<ScmpArgCompare, SeccompError> {
    let index = arg.index();
    if index >= SYSCALL_MAX_ARGS {
        return Err(invalid(
            format!("{field}.index"),
            format!(
                "{index} is out of range: a syscall has at most {SYSCALL_MAX_ARGS} arguments (0..=5)"
            ),
        ));
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // `index` < 6, so the cast cannot truncate.
    Ok(ScmpArgCompare::new(index as u32, op, datum))
}

/// The conditions of one rule, grouped as libseccomp rules. runc's rule: conditions on
/// distinct arguments are ANDed in one rule; if any argument index appears more than once,
/// every condition becomes a rule of its own, so they are ORed (libseccomp cannot AND two
/// comparisons of the same argument).
pub(super) fn condition_groups(
    args: &[LinuxSeccompArg],
    rule_field: &str,
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    let mut per_index = [0usize; SYSCALL_MAX_ARGS];
    let mut conditions = Vec::with_capacity(args.len());
    for (index, arg) in args.iter().enumerate() {
        let condition = scmp_condition(arg, &format!("{rule_field}.args[{index}]"))?;
        per_index[arg.index()] += 1;
        conditions.push(condition);
    }
    if conditions.is_empty() {
        return Ok(vec![Vec::new()]);
    }
    if per_index.iter().any(|&count| count > 1) {
        return Ok(conditions.into_iter().map(|c| vec![c]).collect());
    }
    Ok(vec![conditions])
}

/// Adds one `syscalls[]` entry: one libseccomp rule per known name and condition group.
fn add_syscall_rule(
    ctx: &mut ScmpFilterContext,
    index: usize,
    rule: &LinuxSyscall,
    default_action: ScmpAction,
    skipped: &mut Vec<String>,
) -> Result<(), SeccompError> {
    let field = format!("syscalls[{index}]");
    if rule.names().is_empty() {
        return Err(invalid(
            format!("{field}.names"),
            "must list at least one syscall",
        ));
    }
    if let Some(pos) = rule.names().iter().position(String::is_empty) {
        return Err(invalid(
            format!("{field}.names[{pos}]"),
            "empty syscall name",
        ));
    }
    let action = scmp_action(
        rule.action(),
        rule.errno_ret(),
        &format!("{field}.errnoRet"),
    )?;
    let groups = condition_groups(rule.args().as_deref().unwrap_or_default(), &field)?;
    // libseccomp refuses a rule whose action is the default one; it changes nothing anyway.
    if action == default_action {
        return Ok(());
    }
    for name in rule.names() {
        let Ok(syscall) = ScmpSyscall::from_name(name) else {
            tracing::warn!(
                syscall = %name,
                rule = %field,
                "seccomp: syscall unknown to libseccomp on this architecture, rule skipped"
            );
            skipped.push(name.clone());
            continue;
        };
        for conditions in &groups {
            ctx.add_rule_conditional(action, syscall, conditions)
                .map_err(|source| SeccompError::Libseccomp {
                    field: format!("{field} ({name})"),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Exports the filter as the raw `struct sock_filter` array the kernel takes. Goes through a
/// memfd because `seccomp_export_bpf_mem` needs libseccomp 2.6 and Debian ships 2.5.
fn export_bpf(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let fd = memfd_create(c"coracle-seccomp-bpf", MFdFlags::MFD_CLOEXEC)
        .map_err(|errno| SeccompError::Export(errno.into()))?;
    ctx.export_bpf(&fd)
        .map_err(|err| SeccompError::Export(std::io::Error::other(err)))?;
    let mut file = File::from(fd);
    file.seek(SeekFrom::Start(0))
        .map_err(SeccompError::Export)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(SeccompError::Export)?;
    sock_filters_from_bytes(&bytes)
}

/// Decodes native-endian `struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }` records.
fn sock_filters_from_bytes(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    const RECORD: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(SeccompError::Export(std::io::Error::other(format!(
            "libseccomp exported {} bytes, not a whole number of {RECORD}-byte instructions",
            bytes.len()
        ))));
    }
    Ok(bytes
        .chunks_exact(RECORD)
        .map(|r| libc::sock_filter {
            code: u16::from_ne_bytes([r[0], r[1]]),
            jt: r[2],
            jf: r[3],
            k: u32::from_ne_bytes([r[4], r[5], r[6], r[7]]),
        })
        .collect())
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SeccompError {
    SeccompError::InvalidField {
        field: field.into(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompArgBuilder;

    fn arg(
        index: usize,
        value: u64,
        value_two: Option<u64>,
        op: LinuxSeccompOperator,
    ) -> LinuxSeccompArg {
        let mut builder = LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .op(op);
        if let Some(two) = value_two {
            builder = builder.value_two(two);
        }
        builder.build().unwrap()
    }

    fn field_of(err: SeccompError) -> String {
        match err {
            SeccompError::InvalidField { field, .. } => field,
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn actions_map_to_libseccomp_like_runc() {
        use LinuxSeccompAction as A;
        let cases = [
            (A::ScmpActKill, None, ScmpAction::KillThread),
            (A::ScmpActKillThread, None, ScmpAction::KillThread),
            (A::ScmpActKillProcess, None, ScmpAction::KillProcess),
            (A::ScmpActTrap, None, ScmpAction::Trap),
            (A::ScmpActErrno, None, ScmpAction::Errno(libc::EPERM)),
            (A::ScmpActErrno, Some(38), ScmpAction::Errno(38)),
            (A::ScmpActTrace, None, ScmpAction::Trace(libc::EPERM as u16)),
            (A::ScmpActTrace, Some(7), ScmpAction::Trace(7)),
            (A::ScmpActAllow, None, ScmpAction::Allow),
            (A::ScmpActLog, None, ScmpAction::Log),
            (A::ScmpActNotify, None, ScmpAction::Notify),
        ];
        for (action, ret, expected) in cases {
            assert_eq!(scmp_action(action, ret, "f").unwrap(), expected, "{action}");
        }
    }

    #[test]
    fn errno_ret_on_an_action_without_errno_is_refused() {
        let err = scmp_action(
            LinuxSeccompAction::ScmpActAllow,
            Some(1),
            "syscalls[4].errnoRet",
        )
        .unwrap_err();
        assert!(err.to_string().contains("SCMP_ACT_ALLOW"), "{err}");
        assert_eq!(field_of(err), "syscalls[4].errnoRet");
    }

    #[test]
    fn errno_ret_wider_than_16_bits_is_refused() {
        let err = scmp_action(
            LinuxSeccompAction::ScmpActErrno,
            Some(70_000),
            "defaultErrnoRet",
        )
        .unwrap_err();
        assert_eq!(field_of(err), "defaultErrnoRet");
    }

    #[test]
    fn operators_map_to_libseccomp() {
        use LinuxSeccompOperator as O;
        let cases = [
            (O::ScmpCmpNe, ScmpCompareOp::NotEqual),
            (O::ScmpCmpLt, ScmpCompareOp::Less),
            (O::ScmpCmpLe, ScmpCompareOp::LessOrEqual),
            (O::ScmpCmpEq, ScmpCompareOp::Equal),
            (O::ScmpCmpGe, ScmpCompareOp::GreaterEqual),
            (O::ScmpCmpGt, ScmpCompareOp::Greater),
        ];
        for (op, expected) in cases {
            let got = scmp_condition(&arg(2, 9, None, op), "a").unwrap();
            assert_eq!(got, ScmpArgCompare::new(2, expected, 9), "{op}");
        }
    }

    #[test]
    fn masked_eq_takes_the_mask_from_value_and_the_datum_from_value_two() {
        let got = scmp_condition(
            &arg(
                0,
                0x7e02_0000,
                Some(0x20000),
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            ),
            "a",
        )
        .unwrap();
        assert_eq!(
            got,
            ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(0x7e02_0000), 0x20000)
        );
        let got = scmp_condition(
            &arg(0, 0xff, None, LinuxSeccompOperator::ScmpCmpMaskedEq),
            "a",
        )
        .unwrap();
        assert_eq!(
            got,
            ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(0xff), 0)
        );
    }

    #[test]
    fn argument_index_past_the_sixth_is_refused() {
        let err = scmp_condition(
            &arg(6, 0, None, LinuxSeccompOperator::ScmpCmpEq),
            "syscalls[1].args[3]",
        )
        .unwrap_err();
        assert_eq!(field_of(err), "syscalls[1].args[3].index");
    }

    #[test]
    fn conditions_on_distinct_arguments_form_one_rule() {
        let args = [
            arg(0, 1, None, LinuxSeccompOperator::ScmpCmpEq),
            arg(1, 2, None, LinuxSeccompOperator::ScmpCmpEq),
        ];
        let groups = condition_groups(&args, "r").unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].len(), 2);
    }

    #[test]
    fn a_repeated_argument_index_splits_every_condition_into_its_own_rule() {
        let args = [
            arg(1, 10, None, LinuxSeccompOperator::ScmpCmpEq),
            arg(1, 12, None, LinuxSeccompOperator::ScmpCmpEq),
            arg(0, 0, None, LinuxSeccompOperator::ScmpCmpEq),
        ];
        let groups = condition_groups(&args, "r").unwrap();
        assert_eq!(groups.len(), 3);
        assert!(groups.iter().all(|g| g.len() == 1));
    }

    #[test]
    fn no_conditions_is_one_unconditional_rule() {
        assert_eq!(condition_groups(&[], "r").unwrap(), vec![Vec::new()]);
    }

    #[test]
    fn filter_flags_map_to_kernel_bits() {
        use LinuxSeccompFilterFlag as F;
        assert_eq!(filter_flag_bit(F::SeccompFilterFlagTsync).0, 1);
        assert_eq!(filter_flag_bit(F::SeccompFilterFlagLog).0, 2);
        assert_eq!(filter_flag_bit(F::SeccompFilterFlagSpecAllow).0, 4);
    }

    #[test]
    fn tsync_with_notify_adds_tsync_esrch() {
        let bits = filter_flags(&[LinuxSeccompFilterFlag::SeccompFilterFlagTsync], true).unwrap();
        let expected = libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
            | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        assert_eq!(libc::c_ulong::from(bits), expected);
    }

    #[test]
    fn notify_on_write_is_refused() {
        let spec: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/a",
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        let err = compile(&spec).unwrap_err();
        assert_eq!(field_of(err), "syscalls[0] (write)");
    }

    #[test]
    fn empty_names_are_refused() {
        let spec: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"},
                            {"names":["read",""],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(
            field_of(compile(&spec).unwrap_err()),
            "syscalls[1].names[1]"
        );
        let spec: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert_eq!(field_of(compile(&spec).unwrap_err()), "syscalls[0].names");
    }

    #[test]
    fn sock_filter_records_are_decoded_native_endian() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0x0020u16.to_ne_bytes());
        bytes.extend_from_slice(&[1, 2]);
        bytes.extend_from_slice(&0xdead_beefu32.to_ne_bytes());
        let decoded = sock_filters_from_bytes(&bytes).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(
            (decoded[0].code, decoded[0].jt, decoded[0].jf, decoded[0].k),
            (0x20, 1, 2, 0xdead_beef)
        );
        assert!(sock_filters_from_bytes(&bytes[..7]).is_err());
        assert!(sock_filters_from_bytes(&[]).is_err());
    }
}
