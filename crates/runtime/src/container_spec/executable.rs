//! The command must exist in the container, as runc checks at create: a missing
//! binary fails CreateContainer with a clear message instead of a container that
//! dies at start. Looked up inside the rootfs (pathrs), along the process's PATH.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::Spec;

use super::SpecError;

/// Where a command named by `args[0]` may be; empty when a bind mount may provide it
/// (it is then checked by the kernel at exec).
fn candidates(spec: &Spec) -> Vec<PathBuf> {
    let Some(process) = spec.process() else {
        return Vec::new();
    };
    let Some(command) = process.args().as_ref().and_then(|a| a.first()) else {
        return Vec::new();
    };
    if command.contains('/') {
        return vec![process.cwd().join(command)];
    }
    let path = process
        .env()
        .as_ref()
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or("");
    path.split(':')
        .filter(|dir| dir.starts_with('/'))
        .map(|dir| Path::new(dir).join(command))
        .collect()
}

/// Is `path` below a mount of the spec other than the defaults (a volume)?
fn under_a_volume(spec: &Spec, path: &Path) -> bool {
    spec.mounts().iter().flatten().any(|mount| {
        mount.typ().as_deref() == Some("bind") && path.starts_with(mount.destination())
    })
}

fn is_executable_file(root: &pathrs::Root, path: &Path) -> bool {
    let Ok(handle) = root.resolve(path) else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(handle.as_fd()) else {
        return false;
    };
    let mode = Mode::from_bits_truncate(st.st_mode);
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
        && mode.intersects(Mode::S_IXUSR | Mode::S_IXGRP | Mode::S_IXOTH)
}

pub fn check_executable(rootfs: &Path, spec: &Spec) -> Result<(), SpecError> {
    let candidates = candidates(spec);
    if candidates.is_empty() || candidates.iter().any(|c| under_a_volume(spec, c)) {
        return Ok(());
    }
    let root = super::open_rootfs(rootfs)?;
    if candidates.iter().any(|c| is_executable_file(&root, c)) {
        return Ok(());
    }
    let command = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    Err(SpecError::invalid(
        "command",
        format!("executable {command:?} not found in the container's $PATH or rootfs"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};
    use std::os::unix::fs::PermissionsExt;

    fn spec(args: &[&str]) -> Spec {
        let process = ProcessBuilder::default()
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .env(vec!["PATH=/usr/bin:/bin".to_string()])
            .cwd("/")
            .build()
            .unwrap();
        SpecBuilder::default().process(process).build().unwrap()
    }

    fn rootfs_with_sh() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let sh = dir.path().join("bin/sh");
        std::fs::write(&sh, b"").unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("bin/data"), b"").unwrap();
        dir
    }

    #[test]
    fn command_found_along_path_or_by_path() {
        let root = rootfs_with_sh();
        check_executable(root.path(), &spec(&["sh", "-c", "true"])).unwrap();
        check_executable(root.path(), &spec(&["/bin/sh"])).unwrap();
    }

    #[test]
    fn missing_or_non_executable_command_is_refused() {
        let root = rootfs_with_sh();
        let err = check_executable(root.path(), &spec(&["/no/such/binary"])).unwrap_err();
        assert!(err.to_string().contains("/no/such/binary"), "{err}");
        assert!(err.is_invalid_argument());
        assert!(check_executable(root.path(), &spec(&["data"])).is_err());
    }
}
