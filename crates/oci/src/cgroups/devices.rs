//! `linux.resources.devices`: the device access rules, in order.
//!
//! v1: each rule is one write to `devices.allow` or `devices.deny` through cgroups-rs, in
//! the order given (runtime-spec config-linux.md#allowed-device-list: later rules win).
//! v2: there is no devices controller; rules are enforced by an eBPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to the cgroup, not implemented yet. Until it
//! is, only the usual container defaults (deny all, then the standard character devices,
//! or allow all) are accepted there, with a warning that nothing is enforced; anything
//! else is refused with `Unsupported` rather than silently not enforced.

use cgroups_rs::fs::devices::{DevicePermissions, DeviceType, DevicesController};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::CgroupError;
use super::{ContainerCgroup, fs};

/// The character devices every container gets (runc `specconv.AllowedDevices`,
/// containerd's CRI defaults): null, zero, full, random, urandom, tty, console, ptmx,
/// pts/*, net/tun. `None` minor is the wildcard.
const DEFAULT_CHAR_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
    (10, Some(200)),
];

fn field(i: usize) -> String {
    format!("linux.resources.devices[{i}]")
}

fn access_of(rule: &LinuxDeviceCgroup) -> &str {
    // runc: no access string means all of "rwm".
    match rule.access().as_deref() {
        None | Some("") => "rwm",
        Some(a) => a,
    }
}

fn wildcard(n: Option<i64>) -> bool {
    matches!(n, None | Some(-1))
}

/// Whether `rule` is one the usual container defaults contain.
pub(crate) fn is_default_rule(rule: &LinuxDeviceCgroup) -> bool {
    let typ = rule.typ().unwrap_or_default();
    let all_devices = typ == LinuxDeviceType::A && wildcard(rule.major()) && wildcard(rule.minor());
    if all_devices {
        // Deny all (the usual first rule) or allow all (privileged).
        return true;
    }
    if !rule.allow() {
        return false;
    }
    // "c *:* m" and "b *:* m": mknod of any device is allowed, opening is not.
    if matches!(typ, LinuxDeviceType::C | LinuxDeviceType::B)
        && wildcard(rule.major())
        && wildcard(rule.minor())
        && access_of(rule) == "m"
    {
        return true;
    }
    typ == LinuxDeviceType::C
        && DEFAULT_CHAR_DEVICES.iter().any(|(major, minor)| {
            rule.major() == Some(*major)
                && match minor {
                    Some(m) => rule.minor() == Some(*m),
                    None => wildcard(rule.minor()),
                }
        })
}

pub(crate) fn validate(
    cg: &ContainerCgroup,
    rules: &[LinuxDeviceCgroup],
) -> Result<(), CgroupError> {
    for (i, rule) in rules.iter().enumerate() {
        if rule.typ() == Some(LinuxDeviceType::P) {
            return Err(CgroupError::InvalidResource {
                field: format!("{}.type", field(i)),
                value: "p".to_string(),
                reason: "the devices cgroup has no rules for FIFOs (use a, b or c)".to_string(),
            });
        }
        let access = access_of(rule);
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(CgroupError::InvalidResource {
                field: format!("{}.access", field(i)),
                value: access.to_string(),
                reason: "only the letters r, w and m are allowed".to_string(),
            });
        }
        for (name, n) in [("major", rule.major()), ("minor", rule.minor())] {
            if let Some(n) = n.filter(|n| *n < -1) {
                return Err(CgroupError::InvalidResource {
                    field: format!("{}.{name}", field(i)),
                    value: n.to_string(),
                    reason: "must be >= 0, or -1 (or absent) for any".to_string(),
                });
            }
        }
    }
    match cg.hierarchy_for("devices") {
        Some(h) if !h.is_v2() => Ok(()),
        _ => {
            if let Some((i, _)) = rules.iter().enumerate().find(|(_, r)| !is_default_rule(r)) {
                return Err(CgroupError::Unsupported {
                    what: format!("device rule {}", field(i)),
                    layout: cg.layout.to_string(),
                    reason: "device rules on cgroup v2 need an eBPF device program, which Coracle does not implement yet; only the default container device rules are accepted".to_string(),
                });
            }
            Ok(())
        }
    }
}

pub(crate) fn apply(cg: &ContainerCgroup, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let Some(h) = cg.hierarchy_for("devices").filter(|h| !h.is_v2()) else {
        if !rules.is_empty() {
            tracing::warn!(
                cgroup = %cg.path.display(),
                "no cgroup v1 devices controller: the default device rules are NOT enforced (cgroup v2 eBPF device filter not implemented)"
            );
        }
        return Ok(());
    };
    let ctl = DevicesController::new(h.dir.clone(), h.mount_point.clone());
    for rule in rules {
        let typ = match rule.typ().unwrap_or_default() {
            LinuxDeviceType::A => DeviceType::All,
            LinuxDeviceType::B => DeviceType::Block,
            // 'u' (unbuffered character device) is a character device to the kernel.
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceType::Char,
            // Refused by validate.
            LinuxDeviceType::P => continue,
        };
        let perms: Vec<DevicePermissions> = access_of(rule)
            .chars()
            .filter_map(DevicePermissions::from_char)
            .collect();
        // cgroups-rs writes -1 as the '*' wildcard.
        let major = rule.major().unwrap_or(-1);
        let minor = rule.minor().unwrap_or(-1);
        let (file, r) = if rule.allow() {
            ("devices.allow", ctl.allow_device(typ, major, minor, &perms))
        } else {
            ("devices.deny", ctl.deny_device(typ, major, minor, &perms))
        };
        let value = format!("{} {major}:{minor} {}", typ.to_char(), access_of(rule));
        fs::via_cgroups_rs(&h.dir, file, value, r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn container_defaults_are_default_rules() {
        assert!(is_default_rule(&rule(
            false,
            LinuxDeviceType::A,
            None,
            None,
            "rwm"
        )));
        assert!(is_default_rule(&rule(
            true,
            LinuxDeviceType::C,
            Some(1),
            Some(3),
            "rwm"
        )));
        assert!(is_default_rule(&rule(
            true,
            LinuxDeviceType::C,
            Some(136),
            None,
            "rwm"
        )));
        assert!(is_default_rule(&rule(
            true,
            LinuxDeviceType::B,
            None,
            None,
            "m"
        )));
    }

    #[test]
    fn other_rules_are_not_default() {
        // A block device, a specific deny, opening any char device.
        assert!(!is_default_rule(&rule(
            true,
            LinuxDeviceType::B,
            Some(8),
            Some(0),
            "rw"
        )));
        assert!(!is_default_rule(&rule(
            false,
            LinuxDeviceType::C,
            Some(1),
            Some(3),
            "rwm"
        )));
        assert!(!is_default_rule(&rule(
            true,
            LinuxDeviceType::C,
            None,
            None,
            "rw"
        )));
    }
}
