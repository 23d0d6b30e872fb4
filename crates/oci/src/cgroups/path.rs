//! From OCI `linux.cgroupsPath` to one cgroup path, the same below every hierarchy root.
//!
//! runtime-spec config-linux.md#cgroups-path: an absolute path is relative to the
//! hierarchy root; a relative path "MAY" be put under a runtime-chosen place, which for
//! Coracle is `/coracle`; no path means `/coracle/<container id>`. The systemd form
//! `slice:prefix:name` (what kubelet and containerd send with the systemd cgroup driver)
//! is mapped to the cgroupfs path systemd would have made, since there is no systemd here.

use std::path::{Component, Path, PathBuf};

use super::error::CgroupError;

/// Where relative and absent cgroups paths go, below each hierarchy root.
pub const DEFAULT_PARENT: &str = "coracle";

/// Resolves `linux.cgroupsPath` to an absolute, normalized cgroup path ("/a/b") that
/// never leaves the hierarchy root.
pub fn resolve_cgroups_path(
    cgroups_path: Option<&Path>,
    container_id: &str,
) -> Result<PathBuf, CgroupError> {
    let raw = cgroups_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if raw.is_empty() {
        validate_container_id(container_id)?;
        return Ok(Path::new("/").join(DEFAULT_PARENT).join(container_id));
    }
    if let Some(path) = systemd_to_cgroupfs(&raw)? {
        tracing::warn!(
            cgroups_path = %raw,
            resolved = %path.display(),
            "systemd cgroupsPath given but there is no systemd here: using the cgroupfs path systemd would have made"
        );
        return Ok(path);
    }
    let normalized = normalize(&raw)?;
    if raw.starts_with('/') {
        Ok(Path::new("/").join(normalized))
    } else {
        Ok(Path::new("/").join(DEFAULT_PARENT).join(normalized))
    }
}

/// A container id becomes one directory name.
fn validate_container_id(id: &str) -> Result<(), CgroupError> {
    let bad = |reason: &str| CgroupError::InvalidContainerId {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(bad("must be a single path component"));
    }
    Ok(())
}

/// Drops "." and empty components; refuses "..", which could climb out of the hierarchy
/// root into a cgroup that is not the container's.
fn normalize(raw: &str) -> Result<PathBuf, CgroupError> {
    let mut out = PathBuf::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(CgroupError::InvalidPath {
                    path: raw.to_string(),
                    reason: "\"..\" is not allowed".to_string(),
                });
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(CgroupError::InvalidPath {
            path: raw.to_string(),
            reason: "names the hierarchy root; a container needs a cgroup of its own".to_string(),
        });
    }
    Ok(out)
}

/// `slice:prefix:name` -> `/<expanded slice>/<prefix>-<name>.scope`, as runc's systemd
/// driver names units (`getUnitName`, `ExpandSlice` in opencontainers/cgroups/systemd).
/// `None` when `raw` is not in the systemd form.
pub(crate) fn systemd_to_cgroupfs(raw: &str) -> Result<Option<PathBuf>, CgroupError> {
    if raw.starts_with('/') {
        return Ok(None);
    }
    let parts: Vec<&str> = raw.split(':').collect();
    let [slice, prefix, name] = parts.as_slice() else {
        return Ok(None);
    };
    if !(slice.is_empty() || slice.ends_with(".slice")) {
        return Ok(None);
    }
    let invalid = |reason: &str| CgroupError::InvalidPath {
        path: raw.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid(
            "systemd form needs a unit name after the second ':'",
        ));
    }
    if prefix.contains('/') || name.contains('/') || *name == ".." || *name == "." {
        return Err(invalid("systemd prefix and name cannot contain '/'"));
    }
    // runc's default parent slice.
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut path = expand_slice(slice).map_err(|reason| invalid(&reason))?;
    let unit = if name.ends_with(".slice") {
        (*name).to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push(unit);
    Ok(Some(path))
}

/// "a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root.
fn expand_slice(slice: &str) -> Result<PathBuf, String> {
    const SUFFIX: &str = ".slice";
    let base = slice
        .strip_suffix(SUFFIX)
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| format!("invalid slice name {slice:?}"))?;
    let mut path = PathBuf::from("/");
    if base == "-" {
        return Ok(path);
    }
    let mut prefix = String::new();
    for component in base.split('-') {
        if component.is_empty() {
            return Err(format!(
                "invalid slice name {slice:?}: empty component between '-'"
            ));
        }
        path.push(format!("{prefix}{component}{SUFFIX}"));
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(p: Option<&str>, id: &str) -> Result<PathBuf, CgroupError> {
        resolve_cgroups_path(p.map(Path::new), id)
    }

    #[test]
    fn absolute_path_is_relative_to_each_hierarchy_root() {
        assert_eq!(
            resolve(Some("/kubepods/pod1/ctr"), "x").unwrap(),
            Path::new("/kubepods/pod1/ctr")
        );
        assert_eq!(
            resolve(Some("//kubepods/./pod1/"), "x").unwrap(),
            Path::new("/kubepods/pod1")
        );
    }

    #[test]
    fn relative_path_goes_under_coracle() {
        assert_eq!(
            resolve(Some("pod1/ctr"), "x").unwrap(),
            Path::new("/coracle/pod1/ctr")
        );
    }

    #[test]
    fn empty_or_absent_path_is_coracle_slash_id() {
        assert_eq!(resolve(None, "abc").unwrap(), Path::new("/coracle/abc"));
        assert_eq!(resolve(Some(""), "abc").unwrap(), Path::new("/coracle/abc"));
    }

    #[test]
    fn dotdot_and_root_are_refused() {
        for p in ["/a/../../etc", "../x", "/"] {
            let err = resolve(Some(p), "x").unwrap_err();
            assert!(matches!(err, CgroupError::InvalidPath { .. }), "{p}: {err}");
        }
    }

    #[test]
    fn bad_container_id_is_refused_when_it_names_the_cgroup() {
        for id in ["", "..", "a/b"] {
            let err = resolve(None, id).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidContainerId { .. }),
                "{id}: {err}"
            );
        }
    }

    #[test]
    fn systemd_form_maps_to_the_scope_systemd_would_make() {
        assert_eq!(
            resolve(
                Some("kubepods-besteffort-pod12.slice:cri-containerd:abc"),
                "x"
            )
            .unwrap(),
            Path::new(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            resolve(Some("system.slice:coracle:abc"), "x").unwrap(),
            Path::new("/system.slice/coracle-abc.scope")
        );
        assert_eq!(
            resolve(Some(":coracle:abc"), "x").unwrap(),
            Path::new("/system.slice/coracle-abc.scope")
        );
        assert_eq!(
            resolve(Some("-.slice::abc"), "x").unwrap(),
            Path::new("/abc.scope")
        );
        assert_eq!(
            resolve(Some("machine.slice:x:sub.slice"), "x").unwrap(),
            Path::new("/machine.slice/sub.slice")
        );
    }

    #[test]
    fn malformed_systemd_forms_are_refused() {
        for p in ["a--b.slice:p:n", "a.slice:p:", "a.slice:p:../x"] {
            let err = resolve(Some(p), "x").unwrap_err();
            assert!(matches!(err, CgroupError::InvalidPath { .. }), "{p}: {err}");
        }
        // Not the systemd form (first part is no slice): an ordinary relative path.
        assert_eq!(
            resolve(Some("a:b:c"), "x").unwrap(),
            Path::new("/coracle/a:b:c")
        );
    }
}
