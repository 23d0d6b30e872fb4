//! `linux.resources.unified`: raw cgroup v2 `key: value` writes into the container's v2
//! directory (runtime-spec config-linux.md#unified).
//!
//! Direct writes: cgroups-rs's generic attribute setter (`CustomizedAttribute`) is
//! crate-private. A key must name an existing file of the container's v2 cgroup; on a
//! hybrid host that is only what the v2 mount carries (hugetlb here), so "memory.max"
//! there is refused by name rather than silently dropped.

use std::collections::HashMap;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

/// Core files that move, kill or restructure processes, not resource settings.
const REFUSED: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.kill",
    "cgroup.subtree_control",
    "cgroup.type",
    "cgroup.freeze",
];

fn sorted(unified: &HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut keys: Vec<_> = unified.iter().collect();
    keys.sort();
    keys
}

fn v2_dir<'a>(cg: &'a ContainerCgroup, key: &str) -> Result<&'a HierarchyDir, CgroupError> {
    cg.v2().ok_or_else(|| CgroupError::UnifiedOnV1 {
        key: key.to_string(),
    })
}

pub(crate) fn validate(
    cg: &ContainerCgroup,
    unified: &HashMap<String, String>,
) -> Result<(), CgroupError> {
    for (key, _) in sorted(unified) {
        let h = v2_dir(cg, key)?;
        // The key becomes a file name in the cgroup directory.
        if key.is_empty() || key.contains('/') || key.contains('\0') || key.starts_with('.') {
            return Err(CgroupError::RefusedUnifiedKey {
                key: key.clone(),
                reason: "not a cgroup file name".to_string(),
            });
        }
        if REFUSED.contains(&key.as_str()) {
            return Err(CgroupError::RefusedUnifiedKey {
                key: key.clone(),
                reason: "it manages processes or the hierarchy, not resources".to_string(),
            });
        }
        let is_file = std::fs::metadata(h.dir.join(key)).is_ok_and(|m| m.is_file());
        if !is_file {
            return Err(CgroupError::UnknownUnifiedKey {
                key: key.clone(),
                dir: h.dir.clone(),
            });
        }
    }
    Ok(())
}

pub(crate) fn apply(
    cg: &ContainerCgroup,
    unified: &HashMap<String, String>,
) -> Result<(), CgroupError> {
    for (key, value) in sorted(unified) {
        let h = v2_dir(cg, key)?;
        fs::write(&h.dir.join(key), value)?;
    }
    Ok(())
}
