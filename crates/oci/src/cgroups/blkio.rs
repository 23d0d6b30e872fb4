//! `linux.resources.blockIO`: v1 blkio or v2 io.
//!
//! Weights need a proportional-share I/O scheduler (BFQ, or CFQ before Linux 5.0); without
//! one the weight files do not exist (as on this project's CI host) and weights are
//! skipped with a warning, as the spec allows a runtime to, instead of failing the
//! container. Throttles do not depend on the scheduler.

use std::path::Path;

use cgroups_rs::fs::blkio::BlkIoController;
use oci_spec::runtime::LinuxBlockIo;

use super::error::CgroupError;
use super::{ContainerCgroup, HierarchyDir, fs};

pub(crate) fn validate(b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let check = |field: String, w: u16| {
        if (10..=1000).contains(&w) {
            Ok(())
        } else {
            Err(CgroupError::InvalidResource {
                field,
                value: w.to_string(),
                reason: "must be between 10 and 1000".to_string(),
            })
        }
    };
    if let Some(w) = b.weight() {
        check("linux.resources.blockIO.weight".to_string(), w)?;
    }
    if let Some(w) = b.leaf_weight() {
        check("linux.resources.blockIO.leafWeight".to_string(), w)?;
    }
    for (i, d) in b.weight_device().iter().flatten().enumerate() {
        device_numbers(d.major(), d.minor(), "weightDevice")?;
        if let Some(w) = d.weight() {
            check(
                format!("linux.resources.blockIO.weightDevice[{i}].weight"),
                w,
            )?;
        }
    }
    for (name, devices) in [
        ("throttleReadBpsDevice", b.throttle_read_bps_device()),
        ("throttleWriteBpsDevice", b.throttle_write_bps_device()),
        ("throttleReadIOPSDevice", b.throttle_read_iops_device()),
        ("throttleWriteIOPSDevice", b.throttle_write_iops_device()),
    ] {
        for d in devices.iter().flatten() {
            device_numbers(d.major(), d.minor(), name)?;
        }
    }
    Ok(())
}

pub(crate) fn apply(cg: &ContainerCgroup, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let h = cg.hierarchy_for("blkio").or_else(|| cg.hierarchy_for("io"));
    let Some(h) = h else {
        if has_any_setting(b) {
            return Err(CgroupError::ControllerUnavailable {
                controller: "blkio/io".to_string(),
                field: "linux.resources.blockIO".to_string(),
            });
        }
        return Ok(());
    };
    apply_weights(h, b)?;
    apply_throttles(h, b)
}

fn has_any_setting(b: &LinuxBlockIo) -> bool {
    b.weight().is_some()
        || b.leaf_weight().is_some()
        || [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ]
        .iter()
        .any(|d| d.as_ref().is_some_and(|d| !d.is_empty()))
        || b.weight_device().as_ref().is_some_and(|d| !d.is_empty())
}

/// The first of `candidates` that exists in `dir`.
fn first_existing<'a>(dir: &Path, candidates: &[&'a str]) -> Option<&'a str> {
    candidates.iter().copied().find(|f| dir.join(f).exists())
}

/// Direct writes: cgroups-rs writes only `blkio.weight` (v1) / `io.bfq.weight` (v2) and
/// fails when that file is missing; the file to use depends on the I/O scheduler.
fn apply_weights(h: &HierarchyDir, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let dir = &h.dir;
    let (weight_files, device_files, leaf_files): (&[&str], &[&str], &[&str]) = if h.is_v2() {
        (&["io.bfq.weight"], &["io.bfq.weight"], &[])
    } else {
        (
            &["blkio.weight", "blkio.bfq.weight"],
            &["blkio.weight_device", "blkio.bfq.weight_device"],
            &["blkio.leaf_weight"],
        )
    };
    if let Some(w) = b.weight() {
        match first_existing(dir, weight_files) {
            Some(f) => fs::write(&dir.join(f), &w.to_string())?,
            None => skip_warning(dir, "weight"),
        }
    }
    if let Some(w) = b.leaf_weight() {
        match first_existing(dir, leaf_files) {
            Some(f) => fs::write(&dir.join(f), &w.to_string())?,
            None => skip_warning(dir, "leafWeight"),
        }
    }
    for d in b.weight_device().iter().flatten() {
        let Some(w) = d.weight() else { continue };
        match first_existing(dir, device_files) {
            Some(f) => fs::write(&dir.join(f), &format!("{}:{} {}", d.major(), d.minor(), w))?,
            None => skip_warning(dir, "weightDevice"),
        }
    }
    Ok(())
}

fn skip_warning(dir: &Path, field: &str) {
    tracing::warn!(
        cgroup = %dir.display(),
        "no I/O weight file here (the block devices' scheduler has no cgroup weights): linux.resources.blockIO.{field} skipped"
    );
}

fn apply_throttles(h: &HierarchyDir, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let ctl = BlkIoController::new(h.dir.clone(), h.mount_point.clone(), h.is_v2());
    let (rbps, wbps, riops, wiops) = if h.is_v2() {
        ("io.max", "io.max", "io.max", "io.max")
    } else {
        (
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
            "blkio.throttle.read_iops_device",
            "blkio.throttle.write_iops_device",
        )
    };
    for d in b.throttle_read_bps_device().iter().flatten() {
        let (maj, min) = device_numbers(d.major(), d.minor(), "throttleReadBpsDevice")?;
        let r = ctl.throttle_read_bps_for_device(maj, min, d.rate());
        fs::via_cgroups_rs(&h.dir, rbps, format!("{maj}:{min} {}", d.rate()), r)?;
    }
    for d in b.throttle_write_bps_device().iter().flatten() {
        let (maj, min) = device_numbers(d.major(), d.minor(), "throttleWriteBpsDevice")?;
        let r = ctl.throttle_write_bps_for_device(maj, min, d.rate());
        fs::via_cgroups_rs(&h.dir, wbps, format!("{maj}:{min} {}", d.rate()), r)?;
    }
    for d in b.throttle_read_iops_device().iter().flatten() {
        let (maj, min) = device_numbers(d.major(), d.minor(), "throttleReadIOPSDevice")?;
        let r = ctl.throttle_read_iops_for_device(maj, min, d.rate());
        fs::via_cgroups_rs(&h.dir, riops, format!("{maj}:{min} {}", d.rate()), r)?;
    }
    for d in b.throttle_write_iops_device().iter().flatten() {
        let (maj, min) = device_numbers(d.major(), d.minor(), "throttleWriteIOPSDevice")?;
        let r = ctl.throttle_write_iops_for_device(maj, min, d.rate());
        fs::via_cgroups_rs(&h.dir, wiops, format!("{maj}:{min} {}", d.rate()), r)?;
    }
    Ok(())
}

fn device_numbers(major: i64, minor: i64, field: &str) -> Result<(u64, u64), CgroupError> {
    match (u64::try_from(major), u64::try_from(minor)) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        _ => Err(CgroupError::InvalidResource {
            field: format!("linux.resources.blockIO.{field}"),
            value: format!("{major}:{minor}"),
            reason: "device numbers must be >= 0".to_string(),
        }),
    }
}
