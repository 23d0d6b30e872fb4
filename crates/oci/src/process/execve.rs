//! The last steps before the container process image replaces ours: resolve args[0]
//! through the container's PATH, prepare every C string (so nothing allocates after
//! the seccomp filter is loaded), close every fd >= 3, execve.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("process.args is empty")]
    NoArgs,
    #[error("executable {0:?} not found in $PATH")]
    NotFound(String),
    #[error("argument or environment contains a NUL byte")]
    Nul,
    #[error("mark fds close-on-exec: {0}")]
    CloseRange(std::io::Error),
    #[error("exec {path}: {source}")]
    Exec { path: PathBuf, source: nix::Error },
}

pub struct PreparedExec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    display: PathBuf,
}

fn is_executable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
        && p.metadata().is_ok_and(|m| m.is_file())
}

pub fn resolve(arg0: &str, env: &[String]) -> Result<PathBuf, ExecError> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|p| is_executable(p))
        .ok_or_else(|| ExecError::NotFound(arg0.to_string()))
}

pub fn prepare(args: &[String], env: &[String]) -> Result<PreparedExec, ExecError> {
    let arg0 = args.first().ok_or(ExecError::NoArgs)?;
    let display = resolve(arg0, env)?;
    let cs = |s: &[u8]| CString::new(s).map_err(|_| ExecError::Nul);
    Ok(PreparedExec {
        path: cs(display.as_os_str().as_bytes())?,
        argv: args
            .iter()
            .map(|a| cs(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|e| cs(e.as_bytes()))
            .collect::<Result<_, _>>()?,
        display,
    })
}

impl PreparedExec {
    /// CVE-2024-21626: any fd of the runtime left open (a host directory, the state
    /// dir, ...) would let the process escape through /proc/self/fd/N. Mark them all
    /// close-on-exec as the very last thing.
    pub fn exec(self) -> ExecError {
        if let Err(e) = crate::sys::close_range_cloexec(3) {
            return ExecError::CloseRange(e);
        }
        match nix::unistd::execve(&self.path, &self.argv, &self.envp) {
            Err(source) => ExecError::Exec {
                path: self.display,
                source,
            },
            Ok(never) => match never {},
        }
    }
}
