//! `linux.devices` and the device cgroup rules, as containerd's `WithDevices`,
//! `WithHostDevices` and `WithAllDevicesAllowed`, plus the default rules runc appends
//! by itself (`specconv.AllowedDevices`), which crates/oci expects in the spec.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::SpecError;
use crate::model::DeviceSpec;

/// Directories a device walk skips (containerd's `getDevices`).
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

#[derive(Debug)]
pub(super) struct DevicePlan {
    pub devices: Vec<LinuxDevice>,
    pub rules: Vec<LinuxDeviceCgroup>,
}

/// The requested devices, each with an allow rule, after the default rules. A
/// privileged container also gets every host device and one allow-all rule.
pub(super) fn build_devices(
    requested: &[DeviceSpec],
    privileged: bool,
) -> Result<DevicePlan, SpecError> {
    let mut devices: Vec<LinuxDevice> = Vec::new();
    let mut rules = default_rules();
    for (i, d) in requested.iter().enumerate() {
        let access = permissions(&d.permissions, i)?;
        for dev in requested_devices(d, i)? {
            rules.push(rule(
                true,
                dev.typ(),
                Some(dev.major()),
                Some(dev.minor()),
                &access,
            ));
            devices.push(dev);
        }
    }
    if privileged {
        for dev in devices_under(Path::new("/dev"), Path::new("/dev"))? {
            if !devices.iter().any(|d| d.path() == dev.path()) {
                devices.push(dev);
            }
        }
        rules = vec![rule(true, LinuxDeviceType::A, None, None, "rwm")];
    }
    Ok(DevicePlan { devices, rules })
}

/// Deny everything, then allow mknod of any node and use of the standard character
/// devices: null, random, full, tty, zero, urandom, pts/*, ptmx, net/tun.
fn default_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    let mut rules = vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(8)),
        (1, Some(7)),
        (5, Some(0)),
        (1, Some(5)),
        (1, Some(9)),
        (136, None),
        (5, Some(2)),
        (10, Some(200)),
    ] {
        rules.push(rule(true, C, Some(major), minor, "rwm"));
    }
    rules
}

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// cgroup access letters; empty means all of them.
fn permissions(given: &str, i: usize) -> Result<String, SpecError> {
    if given.is_empty() {
        return Ok("rwm".to_string());
    }
    if !given.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpecError::invalid(
            format!("devices[{i}].permissions"),
            format!("{given:?} has letters other than r, w, m"),
        ));
    }
    Ok(given.to_string())
}

/// One device, or every device below a directory. The host path's symlinks are
/// resolved (udev names like /dev/disk/by-id/...), the walk below a directory does not
/// follow them (each device once, under its real name).
fn requested_devices(d: &DeviceSpec, i: usize) -> Result<Vec<LinuxDevice>, SpecError> {
    let host = Path::new(&d.host_path);
    if !host.is_absolute() {
        return Err(SpecError::invalid(
            format!("devices[{i}].host_path"),
            format!("{:?} is not an absolute path", d.host_path),
        ));
    }
    let container = if d.container_path.is_empty() {
        host
    } else {
        Path::new(&d.container_path)
    };
    if !container.is_absolute() {
        return Err(SpecError::invalid(
            format!("devices[{i}].container_path"),
            format!("{:?} is not an absolute path", d.container_path),
        ));
    }
    let resolved = std::fs::canonicalize(host).map_err(SpecError::io("resolve device", host))?;
    let meta = std::fs::metadata(&resolved).map_err(SpecError::io("stat device", &resolved))?;
    if meta.is_dir() {
        return devices_under(&resolved, container);
    }
    match device_at(&resolved, container)? {
        Some(dev) => Ok(vec![dev]),
        None => Err(SpecError::invalid(
            format!("devices[{i}].host_path"),
            format!("{} is not a character or block device", resolved.display()),
        )),
    }
}

/// Every character and block device below `dir`, named below `container_dir`, in name
/// order. Skips the pseudo-filesystem directories, console, FIFOs and symlinks.
fn devices_under(dir: &Path, container_dir: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(SpecError::io("read device dir", dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(SpecError::io("read device dir", dir))?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.file_name();
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                out.extend(devices_under(&path, &container_dir.join(&name))?);
            }
            continue;
        }
        if name == "console" || !(file_type.is_char_device() || file_type.is_block_device()) {
            continue;
        }
        // Gone since the listing: not an error (containerd skips it too).
        if let Some(dev) = device_at(&path, &container_dir.join(&name)).unwrap_or(None) {
            out.push(dev);
        }
    }
    Ok(out)
}

/// The device node at `host` (not following a symlink), as `container`; `None` if it
/// is not a character or block device.
fn device_at(host: &Path, container: &Path) -> Result<Option<LinuxDevice>, SpecError> {
    let st =
        nix::sys::stat::lstat(host).map_err(|e| SpecError::io("stat device", host)(e.into()))?;
    let typ = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFCHR => LinuxDeviceType::C,
        SFlag::S_IFBLK => LinuxDeviceType::B,
        _ => return Ok(None),
    };
    let major = i64::try_from(nix::sys::stat::major(st.st_rdev)).unwrap_or(i64::MAX);
    let minor = i64::try_from(nix::sys::stat::minor(st.st_rdev)).unwrap_or(i64::MAX);
    let mut dev = LinuxDevice::default();
    dev.set_path(PathBuf::from(container));
    dev.set_typ(typ);
    dev.set_major(major);
    dev.set_minor(minor);
    dev.set_file_mode(Some(st.st_mode & 0o7777));
    dev.set_uid(Some(st.st_uid));
    dev.set_gid(Some(st.st_gid));
    Ok(Some(dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(host: &str, container: &str, perms: &str) -> DeviceSpec {
        DeviceSpec {
            host_path: host.into(),
            container_path: container.into(),
            permissions: perms.into(),
        }
    }

    #[test]
    fn device_gets_a_node_and_an_allow_rule_after_the_defaults() {
        let plan = build_devices(&[dev("/dev/null", "/dev/mynull", "rw")], false).unwrap();
        assert_eq!(plan.devices.len(), 1);
        let d = &plan.devices[0];
        assert_eq!(d.path(), Path::new("/dev/mynull"));
        assert_eq!((d.typ(), d.major(), d.minor()), (LinuxDeviceType::C, 1, 3));
        assert_eq!(d.file_mode(), Some(0o666));
        let first = &plan.rules[0];
        assert!(!first.allow() && first.typ() == Some(LinuxDeviceType::A));
        let last = plan.rules.last().unwrap();
        assert!(last.allow());
        assert_eq!((last.major(), last.minor()), (Some(1), Some(3)));
        assert_eq!(last.access().as_deref(), Some("rw"));
    }

    #[test]
    fn empty_permissions_mean_rwm_and_bad_letters_are_refused() {
        let plan = build_devices(&[dev("/dev/zero", "/dev/zero", "")], false).unwrap();
        assert_eq!(plan.rules.last().unwrap().access().as_deref(), Some("rwm"));
        let err = build_devices(&[dev("/dev/zero", "/dev/zero", "rx")], false).unwrap_err();
        assert!(err.to_string().contains("devices[0].permissions"), "{err}");
    }

    #[test]
    fn symlinked_host_path_is_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("by-id");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let plan = build_devices(&[dev(link.to_str().unwrap(), "/dev/x", "")], false).unwrap();
        assert_eq!((plan.devices[0].major(), plan.devices[0].minor()), (1, 3));
    }

    #[test]
    fn directory_host_path_adds_every_device_below_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("regular"), "x").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link")).unwrap();
        // No device nodes (unprivileged tempdir): nothing, and symlinks are not followed.
        let plan =
            build_devices(&[dev(dir.path().to_str().unwrap(), "/dev/d", "")], false).unwrap();
        assert!(plan.devices.is_empty());
        // /dev itself has null, named below the container path; pts is skipped.
        let found = devices_under(Path::new("/dev"), Path::new("/host-dev")).unwrap();
        assert!(
            found
                .iter()
                .any(|d| d.path() == Path::new("/host-dev/null"))
        );
        assert!(!found.iter().any(|d| d.path().starts_with("/host-dev/pts")));
        assert!(
            !found
                .iter()
                .any(|d| d.path() == Path::new("/host-dev/console"))
        );
    }

    #[test]
    fn non_device_or_missing_host_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = build_devices(&[dev(file.to_str().unwrap(), "/dev/f", "")], false).unwrap_err();
        assert!(
            err.to_string().contains("not a character or block device"),
            "{err}"
        );
        let missing = dir.path().join("missing");
        let err =
            build_devices(&[dev(missing.to_str().unwrap(), "/dev/f", "")], false).unwrap_err();
        assert!(matches!(err, SpecError::Io { .. }), "{err}");
        let err = build_devices(&[dev("dev/null", "/dev/f", "")], false).unwrap_err();
        assert!(err.is_invalid_argument(), "{err}");
    }

    #[test]
    fn privileged_gets_host_devices_and_allow_all() {
        let plan = build_devices(&[dev("/dev/null", "/dev/null", "r")], true).unwrap();
        assert_eq!(plan.rules.len(), 1);
        let r = &plan.rules[0];
        assert!(r.allow() && r.typ() == Some(LinuxDeviceType::A));
        assert_eq!(r.access().as_deref(), Some("rwm"));
        assert_eq!(
            plan.devices
                .iter()
                .filter(|d| d.path() == Path::new("/dev/null"))
                .count(),
            1
        );
        assert!(
            plan.devices
                .iter()
                .any(|d| d.path() == Path::new("/dev/zero"))
        );
    }

    #[test]
    fn default_rules_deny_all_then_allow_standard_devices() {
        let rules = default_rules();
        assert!(!rules[0].allow());
        assert!(
            rules
                .iter()
                .any(|r| r.major() == Some(136) && r.minor().is_none())
        );
    }
}
