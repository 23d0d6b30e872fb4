//! Seccomp profiles compiled by `coracle_oci::seccomp` and loaded for real: each test runs
//! busybox in a child that sets no_new_privs and loads the program in `pre_exec`, exactly
//! where the container init loads it (after fork, right before execve).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Output};

use coracle_oci::seccomp::{self, SeccompError, SeccompProgram};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::json;

const BUSYBOX: &str = "/bin/busybox";

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CAP_SYS_ADMIN makes a denied mount/unshare meaningful)"
    );
}

fn profile(value: serde_json::Value) -> LinuxSeccomp {
    seccomp::parse_profile(&value.to_string()).unwrap()
}

fn compiled(value: serde_json::Value) -> SeccompProgram {
    seccomp::compile(&profile(value)).unwrap()
}

/// Runs `busybox args...` with no_new_privs set and `program` loaded right before execve.
/// A notify listener fd returned by `load` is closed, so notified syscalls fail with ENOSYS.
fn run_filtered(program: &SeccompProgram, args: &[&str]) -> Output {
    let program = program.clone();
    let mut command = Command::new(BUSYBOX);
    command.args(args);
    // SAFETY: the closure runs in the forked child and only makes raw syscalls (prctl,
    // seccomp, close); it allocates nothing on the success path.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)?;
            match program.load() {
                Ok(listener) => drop(listener),
                Err(SeccompError::Load { source, .. }) => return Err(source.into()),
                Err(_) => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            }
            Ok(())
        });
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn deny_mkdir(action: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut rule = json!({"names": ["mkdir", "mkdirat"], "action": action});
    if let serde_json::Value::Object(extra) = extra {
        rule.as_object_mut().unwrap().extend(extra);
    }
    json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]})
}

fn mkdir_in(dir: &Path, program: &SeccompProgram) -> (Output, bool) {
    let target = dir.join("made");
    let output = run_filtered(program, &["mkdir", target.to_str().unwrap()]);
    (output, target.exists())
}

#[test]
fn errno_rule_makes_mkdir_fail_with_eperm_while_true_runs() {
    let program = compiled(deny_mkdir("SCMP_ACT_ERRNO", json!({})));
    let dir = tempfile::tempdir().unwrap();

    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!output.status.success(), "mkdir succeeded under the filter");
    assert!(!made);
    assert!(
        stderr(&output).contains("Operation not permitted"),
        "stderr: {}",
        stderr(&output)
    );

    let output = run_filtered(&program, &["true"]);
    assert!(output.status.success(), "true failed: {}", stderr(&output));
}

#[test]
fn errno_ret_is_returned_by_the_denied_syscall() {
    let program = compiled(deny_mkdir(
        "SCMP_ACT_ERRNO",
        json!({"errnoRet": libc::ENOSYS}),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!output.status.success());
    assert!(!made);
    assert!(
        stderr(&output).contains("Function not implemented"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn default_errno_ret_is_returned_for_unlisted_syscalls() {
    // Everything busybox needs to start is allowed by the runtime default list; mkdir is not
    // in this copy of it, so it gets the default action with defaultErrnoRet.
    let mut spec = seccomp::runtime_default_profile();
    let mut syscalls = spec.syscalls().clone().unwrap();
    for rule in &mut syscalls {
        let names: Vec<String> = rule
            .names()
            .iter()
            .filter(|n| !n.starts_with("mkdir"))
            .cloned()
            .collect();
        rule.set_names(names);
    }
    spec.set_syscalls(Some(syscalls))
        .set_default_errno_ret(Some(libc::EROFS as u32));
    let program = seccomp::compile(&spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!made);
    assert!(
        stderr(&output).contains("Read-only file system"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn arg_condition_denies_only_the_matching_value() {
    // personality(PER_LINUX32) denied, personality(PER_LINUX) allowed.
    let program = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0x0008, "op": "SCMP_CMP_EQ"}]
        }]
    }));
    let output = run_filtered(&program, &["linux32", "true"]);
    assert!(!output.status.success(), "linux32 ran under the filter");
    assert!(
        stderr(&output).contains("Operation not permitted"),
        "stderr: {}",
        stderr(&output)
    );
    let output = run_filtered(&program, &["linux64", "true"]);
    assert!(
        output.status.success(),
        "linux64 failed: {}",
        stderr(&output)
    );
}

#[test]
fn conditions_on_the_same_argument_are_ored_like_runc() {
    // kill(pid, SIGUSR1) and kill(pid, SIGUSR2) denied; kill -0 and kill -HUP allowed.
    let program = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["kill"],
            "action": "SCMP_ACT_ERRNO",
            "args": [
                {"index": 1, "value": libc::SIGUSR1, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": libc::SIGUSR2, "op": "SCMP_CMP_EQ"}
            ]
        }]
    }));
    let script = r#"trap "" HUP USR1 USR2
kill -0 $$ && echo zero-ok
kill -HUP $$ && echo hup-ok
kill -USR1 $$ || echo usr1-denied
kill -USR2 $$ || echo usr2-denied"#;
    let output = run_filtered(&program, &["sh", "-c", script]);
    let out = stdout(&output);
    for expected in ["zero-ok", "hup-ok", "usr1-denied", "usr2-denied"] {
        assert!(
            out.contains(expected),
            "missing {expected}: {out} / {}",
            stderr(&output)
        );
    }
}

#[test]
fn conditions_on_distinct_arguments_are_anded() {
    // Deny kill only when pid == 0 (the process group) AND sig == SIGUSR1.
    let program = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["kill"],
            "action": "SCMP_ACT_ERRNO",
            "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": libc::SIGUSR1, "op": "SCMP_CMP_EQ"}
            ]
        }]
    }));
    let script = r#"trap "" USR1
kill -USR1 $$ && echo self-ok
kill -USR1 0 || echo group-denied"#;
    let output = run_filtered(&program, &["sh", "-c", script]);
    let out = stdout(&output);
    for expected in ["self-ok", "group-denied"] {
        assert!(
            out.contains(expected),
            "missing {expected}: {out} / {}",
            stderr(&output)
        );
    }
}

#[test]
fn kill_process_action_kills_the_child_with_sigsys() {
    let program = compiled(deny_mkdir("SCMP_ACT_KILL_PROCESS", json!({})));
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!made);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSYS),
        "{:?}",
        output.status
    );
}

#[test]
fn trap_action_raises_sigsys() {
    let program = compiled(deny_mkdir("SCMP_ACT_TRAP", json!({})));
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!made);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSYS),
        "{:?}",
        output.status
    );
}

#[test]
fn log_action_allows_the_syscall() {
    let program = compiled(deny_mkdir("SCMP_ACT_LOG", json!({})));
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(made);
}

#[test]
fn tsync_flag_is_accepted_and_the_filter_applies() {
    let mut spec = deny_mkdir("SCMP_ACT_ERRNO", json!({}));
    spec["flags"] = json!([
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
    ]);
    let program = compiled(spec);
    assert_eq!(
        program.flags(),
        (libc::SECCOMP_FILTER_FLAG_TSYNC
            | libc::SECCOMP_FILTER_FLAG_LOG
            | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) as u32
    );
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!made);
    assert!(
        stderr(&output).contains("Operation not permitted"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn unknown_syscall_name_is_skipped_with_a_warning_not_an_error() {
    let warnings = WarningLog::default();
    let program = tracing::subscriber::with_default(warnings.clone(), || {
        compiled(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["coracle_no_such_syscall", "mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        }))
    });
    assert_eq!(program.skipped_syscalls(), ["coracle_no_such_syscall"]);
    let logged = warnings.0.lock().unwrap().clone();
    assert!(
        logged.iter().any(|w| w.contains("coracle_no_such_syscall")),
        "warnings: {logged:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (output, made) = mkdir_in(dir.path(), &program);
    assert!(!made, "the known names of the rule must still be filtered");
    assert!(!output.status.success());
}

#[test]
fn rule_with_the_default_action_is_skipped_silently() {
    let program = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
        ]
    }));
    assert!(program.skipped_syscalls().is_empty());
    let dir = tempfile::tempdir().unwrap();
    let (_, made) = mkdir_in(dir.path(), &program);
    assert!(!made);
}

#[test]
fn native_architecture_is_filtered_even_when_not_listed() {
    let foreign = if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_X86_64"
    } else {
        "SCMP_ARCH_AARCH64"
    };
    let mut spec = deny_mkdir("SCMP_ACT_ERRNO", json!({}));
    spec["architectures"] = json!([
        foreign,
        "SCMP_ARCH_NATIVE",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32"
    ]);
    let program = compiled(spec);
    let dir = tempfile::tempdir().unwrap();
    let (_, made) = mkdir_in(dir.path(), &program);
    assert!(!made);
}

#[test]
fn notify_returns_a_listener_fd_and_closing_it_fails_the_syscall_with_enosys() {
    let mut spec = deny_mkdir("SCMP_ACT_NOTIFY", json!({}));
    spec["listenerPath"] = json!("/run/coracle-test-agent.sock");
    let program = compiled(spec);
    assert!(program.uses_notify());
    assert_ne!(
        program.flags() & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32,
        0
    );
    // In the child: load must hand back the listener (checked by failing the exec if not).
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("made");
    let checked = program.clone();
    let mut command = Command::new(BUSYBOX);
    command.args(["mkdir", target.to_str().unwrap()]);
    // SAFETY: only raw syscalls in the forked child.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)?;
            match checked.load() {
                Ok(Some(listener)) => drop(listener),
                Ok(None) => return Err(std::io::Error::from_raw_os_error(libc::EBADF)),
                Err(_) => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert!(!target.exists());
    assert!(
        stderr(&output).contains("Function not implemented"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn runtime_default_runs_a_shell_and_denies_unshare_and_mount() {
    assert_root();
    let program = seccomp::compile(&seccomp::runtime_default_profile()).unwrap();

    let output = run_filtered(&program, &["sh", "-c", "echo ok; (echo sub); ls /"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("ok\nsub\n"), "stdout: {out}");
    assert!(out.contains("proc"), "ls / printed: {out}");

    let output = run_filtered(&program, &["unshare", "-m", "true"]);
    assert!(
        !output.status.success(),
        "unshare -m ran under RuntimeDefault"
    );
    assert!(
        stderr(&output).contains("Operation not permitted"),
        "stderr: {}",
        stderr(&output)
    );

    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let output = run_filtered(
        &program,
        &["mount", "-t", "tmpfs", "none", dir.path().to_str().unwrap()],
    );
    assert!(!output.status.success(), "mount ran under RuntimeDefault");
    // busybox mount reports EPERM as "permission denied (are you root?)".
    assert!(
        stderr(&output).contains("permission denied"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn runtime_default_with_cap_sys_admin_allows_unshare() {
    assert_root();
    let caps = ["CAP_SYS_ADMIN".to_string(), "CAP_SYS_CHROOT".to_string()];
    let program = seccomp::compile(&seccomp::runtime_default_profile_for(&caps)).unwrap();
    // A new mount namespace dies with the child: nothing leaks to the host.
    let output = run_filtered(&program, &["unshare", "-m", "true"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
}

#[test]
fn compile_errors_name_the_field() {
    let cases = [
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "syscalls[0].args[0].index",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_KILL", "errnoRet": 1}]}),
            "syscalls[0].errnoRet",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "listenerPath",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}),
            "defaultAction",
        ),
    ];
    for (spec, field) in cases {
        let err = seccomp::compile(&profile(spec.clone())).unwrap_err();
        assert!(
            err.to_string().contains(field),
            "{spec}: error {err:?} does not name {field}"
        );
    }
}

#[test]
fn bad_op_flag_or_action_is_refused_naming_the_value() {
    let cases = [
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_ALMOST"}]}]}"#,
            "SCMP_CMP_ALMOST",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_BOGUS"]}"#,
            "SECCOMP_FILTER_FLAG_BOGUS",
        ),
        (r#"{"defaultAction":"SCMP_ACT_MAYBE"}"#, "SCMP_ACT_MAYBE"),
    ];
    for (json, value) in cases {
        let err = seccomp::parse_profile(json).unwrap_err();
        assert!(
            matches!(err, SeccompError::Parse(_)) && err.to_string().contains(value),
            "{json}: {err}"
        );
    }
}

/// Unmounts `dir` if a broken filter let a test's mount through.
struct UnmountOnDrop(std::path::PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn syscalls_newer_than_a_deny_by_default_profile_fail_with_enosys() {
    // Allow list whose newest syscall is exit_group (231 on x86_64): syscall 1000 is "newer
    // than the profile" and must get ENOSYS (runc's stub); times (100) is older, unlisted,
    // and gets the default EPERM.
    let program = compiled(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["getpid", "exit", "exit_group"], "action": "SCMP_ACT_ALLOW"}]
    }));
    let mut command = Command::new(BUSYBOX);
    command.arg("true");
    // SAFETY: only raw syscalls and _exit in the forked child.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)?;
            if program.load().is_err() {
                libc::_exit(10);
            }
            let newer = libc::syscall(1000);
            let newer_errno = nix::errno::Errno::last_raw();
            let older = libc::syscall(libc::SYS_times, std::ptr::null_mut::<libc::tms>());
            let older_errno = nix::errno::Errno::last_raw();
            let code = match (newer, newer_errno, older, older_errno) {
                (-1, libc::ENOSYS, -1, libc::EPERM) => 0,
                (-1, libc::EPERM, _, _) => 11,
                (_, _, -1, libc::EPERM) => 12,
                _ => 13,
            };
            libc::_exit(code);
        });
    }
    let status = command.status().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "11: newer got EPERM, 12: newer not ENOSYS, 13: older not EPERM"
    );
}

/// libseccomp (and so runc) keeps the first unconditional rule for a syscall and ignores a
/// later one with another action; profiles written for runc rely on that order.
#[test]
fn first_of_two_conflicting_rules_wins_like_runc() {
    let errno_first = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getpid", "mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    }));
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = mkdir_in(dir.path(), &errno_first);
    assert_eq!(output.status.code(), Some(1), "{:?}", output.status);
    assert!(stderr(&output).contains("Operation not permitted"));

    let kill_first = compiled(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getpid", "mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
        ]
    }));
    let (output, _) = mkdir_in(dir.path(), &kill_first);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSYS),
        "{:?}",
        output.status
    );
}

/// A tracing subscriber that keeps the fields of WARN events, to check what compile() warns.
#[derive(Clone, Default)]
struct WarningLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

struct FieldsToString<'a>(&'a mut String);

impl tracing::field::Visit for FieldsToString<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for WarningLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut line = String::new();
            event.record(&mut FieldsToString(&mut line));
            self.0.lock().unwrap().push(line);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
