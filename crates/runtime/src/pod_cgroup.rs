//! The pod cgroup at the CRI's `cgroup_parent`, in the cgroupfs layout kubelet asks
//! for ("/kubepods/burstable/pod<uid>"). The pod's containers get cgroups below it.
//! kubelet's cgroupfs driver normally makes this cgroup before RunPodSandbox and
//! removes it after the pod; Coracle makes it when missing and then removes it too,
//! so a pod run without kubelet (crictl) leaves nothing behind.

use std::path::{Path, PathBuf};

use coracle_oci::cgroups::{ContainerCgroup, resolve_cgroups_path};

use crate::RuntimeError;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub(crate) struct PodCgroup {
    pub cgroup: ContainerCgroup,
    pub created: bool,
}

/// Makes (or adopts) the pod cgroup; `None` when the request names no parent.
pub(crate) fn ensure_pod_cgroup(
    pod_id: &str,
    cgroup_parent: &str,
) -> Result<Option<PodCgroup>, RuntimeError> {
    if cgroup_parent.is_empty() {
        return Ok(None);
    }
    let invalid = |err: coracle_oci::cgroups::CgroupError| RuntimeError::PodCgroup {
        id: pod_id.to_owned(),
        source: Box::new(err),
    };
    let path = resolve_cgroups_path(Some(Path::new(cgroup_parent)), pod_id).map_err(invalid)?;
    let existed = exists_in_some_hierarchy(&path);
    let cgroup = ContainerCgroup::create(Some(&path), pod_id, None).map_err(invalid)?;
    Ok(Some(PodCgroup {
        cgroup,
        created: !existed,
    }))
}

/// Whether the cgroup exists under any mounted hierarchy (v1 controllers live in
/// subdirectories of /sys/fs/cgroup; a v2-only host mounts it there directly).
fn exists_in_some_hierarchy(path: &Path) -> bool {
    let relative: PathBuf = path.strip_prefix("/").unwrap_or(path).to_owned();
    if Path::new(CGROUP_ROOT).join(&relative).is_dir() {
        return true;
    }
    std::fs::read_dir(CGROUP_ROOT)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.path().join(&relative).is_dir())
        })
        .unwrap_or(false)
}

/// Removes the pod cgroup if Coracle made it. Idempotent.
pub(crate) fn remove_pod_cgroup(
    pod_id: &str,
    cgroup: Option<&ContainerCgroup>,
    created: bool,
) -> Result<(), RuntimeError> {
    match cgroup {
        Some(cgroup) if created => cgroup.delete().map_err(|source| RuntimeError::PodCgroup {
            id: pod_id.to_owned(),
            source: Box::new(source),
        }),
        _ => Ok(()),
    }
}
