//! `linux.resources.hugepageLimits`, on whichever hierarchy carries hugetlb: on this
//! project's hybrid host that is the v2 mount, so limits go to `hugetlb.<size>.max`.

use std::path::PathBuf;

use cgroups_rs::fs::hugetlb::HugeTlbController;
use oci_spec::runtime::LinuxHugepageLimit;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

fn field(i: usize, name: &str) -> String {
    format!("linux.resources.hugepageLimits[{i}].{name}")
}

/// The limit file for `size` in `h`: `.max` on v2, `.limit_in_bytes` on v1.
fn limit_file(h: &HierarchyDir, size: &str) -> PathBuf {
    let suffix = if h.is_v2() { "max" } else { "limit_in_bytes" };
    h.dir.join(format!("hugetlb.{size}.{suffix}"))
}

/// The reservation limit file (Linux 5.7): runc sets it to the same value so that
/// reserved-but-unfaulted pages count too.
fn rsvd_file(h: &HierarchyDir, size: &str) -> PathBuf {
    let suffix = if h.is_v2() {
        "rsvd.max"
    } else {
        "rsvd.limit_in_bytes"
    };
    h.dir.join(format!("hugetlb.{size}.{suffix}"))
}

/// The page sizes this cgroup offers ("2MB", "1GB"), from its limit files.
fn available_sizes(h: &HierarchyDir) -> Vec<String> {
    let suffix = if h.is_v2() { ".max" } else { ".limit_in_bytes" };
    let mut sizes: Vec<String> = std::fs::read_dir(&h.dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}

pub(crate) fn validate(
    cg: &ContainerCgroup,
    limits: &[LinuxHugepageLimit],
) -> Result<(), CgroupError> {
    if limits.is_empty() {
        return Ok(());
    }
    let Some(h) = cg.hierarchy_for("hugetlb") else {
        return Err(CgroupError::ControllerUnavailable {
            controller: "hugetlb".to_string(),
            field: "linux.resources.hugepageLimits".to_string(),
        });
    };
    for (i, l) in limits.iter().enumerate() {
        let size = l.page_size();
        // The size becomes part of a file name: nothing but letters and digits.
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CgroupError::InvalidResource {
                field: field(i, "pageSize"),
                value: size.clone(),
                reason: "must look like \"2MB\" or \"1GB\"".to_string(),
            });
        }
        if !limit_file(h, size).exists() {
            return Err(CgroupError::InvalidResource {
                field: field(i, "pageSize"),
                value: size.clone(),
                reason: format!(
                    "no such huge page size here (available: {:?})",
                    available_sizes(h)
                ),
            });
        }
        if l.limit() < -1 {
            return Err(CgroupError::InvalidResource {
                field: field(i, "limit"),
                value: l.limit().to_string(),
                reason: "must be >= 0, or -1 for no limit".to_string(),
            });
        }
    }
    Ok(())
}

pub(crate) fn apply(
    cg: &ContainerCgroup,
    limits: &[LinuxHugepageLimit],
) -> Result<(), CgroupError> {
    let Some(h) = cg.hierarchy_for("hugetlb") else {
        return Ok(());
    };
    let ctl = HugeTlbController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2());
    for l in limits {
        let size = l.page_size();
        let value = match u64::try_from(l.limit()) {
            Ok(v) => {
                let file = limit_file(h, size);
                fs::via_cgroups_rs(
                    &h.dir,
                    &file.file_name().unwrap_or_default().to_string_lossy(),
                    v,
                    ctl.set_limit_in_bytes(size, v),
                )?;
                v.to_string()
            }
            // -1: cgroups-rs takes only u64, so "no limit" is written directly.
            Err(_) => {
                let unlimited = if h.is_v2() { "max" } else { "-1" };
                fs::write(&limit_file(h, size), unlimited)?;
                unlimited.to_string()
            }
        };
        let rsvd = rsvd_file(h, size);
        if rsvd.exists() {
            fs::write(&rsvd, &value)?;
        }
    }
    Ok(())
}
