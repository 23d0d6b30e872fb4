//! OCI lifecycle hooks (runtime spec, config.md "POSIX-platform Hooks"): each gets the
//! container state JSON on stdin; `timeout` (seconds) kills it. prestart,
//! createRuntime, createContainer and startContainer failures fail the operation;
//! poststart and poststop failures are only warned about (the caller decides).

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::state::OciState;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{phase} hook {path}: spawn: {source}")]
    Spawn {
        phase: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{phase} hook {path}: timed out after {secs}s (killed)")]
    Timeout {
        phase: &'static str,
        path: PathBuf,
        secs: i64,
    },
    #[error("{phase} hook {path}: {status}")]
    Failed {
        phase: &'static str,
        path: PathBuf,
        status: String,
    },
    #[error("{phase} hook {path}: wait: {source}")]
    Wait {
        phase: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn run_hooks(
    phase: &'static str,
    hooks: Option<&Vec<Hook>>,
    state: &OciState,
) -> Result<(), HookError> {
    for hook in hooks.map(|h| h.as_slice()).unwrap_or_default() {
        run_hook(phase, hook, state)?;
    }
    Ok(())
}

fn run_hook(phase: &'static str, hook: &Hook, state: &OciState) -> Result<(), HookError> {
    let path = hook.path().clone();
    let mut cmd = Command::new(&path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().clone().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    // Its own process group, so a timeout kills what the hook started too (a shell's
    // children would otherwise outlive it).
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        phase,
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin must not fail or block us: ignore EPIPE.
        let _ = stdin.write_all(&serde_json::to_vec(state).unwrap_or_default());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| (t, Instant::now() + Duration::from_secs(t as u64)));
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let status = match (status.code(), status.signal()) {
                    (Some(c), _) => format!("exit status {c}"),
                    (_, Some(s)) => format!("killed by signal {s}"),
                    _ => status.to_string(),
                };
                return Err(HookError::Failed {
                    phase,
                    path,
                    status,
                });
            }
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Wait {
                    phase,
                    path,
                    source,
                });
            }
        }
        if let Some((secs, at)) = deadline {
            if Instant::now() >= at {
                if let Ok(pgid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { phase, path, secs });
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
