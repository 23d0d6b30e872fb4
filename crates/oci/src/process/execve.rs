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
    #[error(
        "refusing to exec {0}: it is (or its #! interpreter chain leads to) the runtime's own binary (CVE-2019-5736)"
    )]
    RuntimeBinary(PathBuf),
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

/// CVE-2019-5736, the other half. Being non-dumpable keeps the container from opening
/// our /proc/<pid>/exe while we run in it, but execve resets dumpability: if the
/// container's program were our own binary (`/proc/self/exe`, or a script whose `#!`
/// interpreter is `/proc/self/exe`), the kernel would run the runtime binary, dumpable,
/// inside the container, and the container could open it through /proc/<pid>/exe and
/// overwrite it once it exits. Refuse programs whose file, or any interpreter of the
/// `#!` chain (the kernel follows up to 4 levels), is the inode /proc/self/exe names.
/// runc instead re-execs from a sealed memfd copy; this check costs two stats.
fn refuse_runtime_binary(program: &Path) -> Result<(), ExecError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let Ok(ours) = std::fs::metadata("/proc/self/exe") else {
        return Ok(());
    };
    let mut path = program.to_path_buf();
    for _ in 0..5 {
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(());
        };
        if meta.dev() == ours.dev() && meta.ino() == ours.ino() {
            return Err(ExecError::RuntimeBinary(program.to_path_buf()));
        }
        let mut head = [0u8; 256];
        let n = std::fs::File::open(&path)
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        let Some(line) = head[..n].strip_prefix(b"#!") else {
            return Ok(());
        };
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let interp = String::from_utf8_lossy(line);
        let Some(first) = interp.split_whitespace().next() else {
            return Ok(());
        };
        path = PathBuf::from(first);
    }
    Ok(())
}

pub fn prepare(args: &[String], env: &[String]) -> Result<PreparedExec, ExecError> {
    let arg0 = args.first().ok_or(ExecError::NoArgs)?;
    let display = resolve(arg0, env)?;
    refuse_runtime_binary(&display)?;
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
