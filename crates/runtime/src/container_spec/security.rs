//! Capabilities, masked and read-only paths, and seccomp, as containerd's
//! `WithCapabilities`, `WithPrivileged`, `WithoutAmbientCaps` and
//! `sputil.GenerateSeccompSpecOpts` set them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxSeccomp};

use super::SpecError;
use crate::model::{SeccompProfile, SecuritySpec};

/// Every capability Linux has, indexed by number (`include/uapi/linux/capability.h`).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's default masked paths (`oci.populateDefaultUnixSpec`).
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capabilities of a kernel whose highest capability number is `last`.
pub fn all_capabilities_up_to(last: usize) -> Vec<String> {
    CAPABILITIES
        .iter()
        .take(last.saturating_add(1))
        .map(|c| c.to_string())
        .collect()
}

/// Every capability the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub(super) fn probe_all_capabilities() -> Result<Vec<String>, SpecError> {
    const PATH: &str = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(PATH).map_err(SpecError::io("read", PATH))?;
    let last = text.trim().parse::<usize>().map_err(|e| {
        SpecError::io("parse", PATH)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    // "All" is what this process holds (containerd's WithAllCurrentCapabilities): a
    // daemon without, say, CAP_SYS_RESOURCE cannot grant it, and asking would fail.
    const STATUS: &str = "/proc/self/status";
    let status = std::fs::read_to_string(STATUS).map_err(SpecError::io("read", STATUS))?;
    let bounding = capability_mask(&status, "CapBnd:").unwrap_or(u64::MAX);
    Ok(all_capabilities_up_to(last)
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| bit < &64 && bounding & (1 << bit) != 0)
        .map(|(_, name)| name)
        .collect())
}

/// A capability mask line of /proc/<pid>/status (`CapBnd:\t000001ffffffffff`).
fn capability_mask(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The container's capability set, in a stable order. Privileged: every capability.
/// Otherwise containerd's defaults; an `ALL` add takes every capability and an `ALL`
/// drop empties the set (in that order), then single adds, then single drops.
pub(super) fn capabilities(
    security: &SecuritySpec,
    all: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, SpecError> {
    if !security.ambient_capabilities_add.is_empty() {
        // containerd clears ambient capabilities for every container (kubernetes#56374).
        warnings.push(format!(
            "ambient capabilities {:?} are not supported and were ignored",
            security.ambient_capabilities_add
        ));
    }
    if security.privileged {
        return Ok(all.to_vec());
    }
    let (add_all, adds) = normalize_list(&security.capabilities_add, "capabilities.add")?;
    let (drop_all, drops) = normalize_list(&security.capabilities_drop, "capabilities.drop")?;
    let mut caps: Vec<String> = coracle_oci::seccomp::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    if add_all {
        caps = all.to_vec();
    }
    if drop_all {
        caps.clear();
    }
    for cap in adds {
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    caps.retain(|c| !drops.contains(c));
    Ok(caps)
}

/// Names normalized to `CAP_X` uppercase; whether the list holds `ALL`.
fn normalize_list(names: &[String], field: &str) -> Result<(bool, Vec<String>), SpecError> {
    let mut all = false;
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare == "ALL" {
            all = true;
            continue;
        }
        let full = format!("CAP_{bare}");
        if !CAPABILITIES.contains(&full.as_str()) {
            return Err(SpecError::invalid(
                format!("{field}[{i}]"),
                format!("unknown capability {name:?}"),
            ));
        }
        out.push(full);
    }
    Ok((all, out))
}

/// Bounding, effective and permitted get the set; inheritable and ambient are empty
/// (containerd 1.7+: an inheritable set would survive exec of file capabilities,
/// GHSA-2qjp-425j-52j9).
pub(super) fn oci_capabilities(names: &[String]) -> Result<LinuxCapabilities, SpecError> {
    let set = names
        .iter()
        .map(|n| {
            let bare = n.strip_prefix("CAP_").unwrap_or(n);
            Capability::from_str(bare)
                .map_err(|_| SpecError::invalid("capabilities", format!("unknown capability {n}")))
        })
        .collect::<Result<HashSet<_>, _>>()?;
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(HashSet::new()));
    caps.set_ambient(Some(HashSet::new()));
    Ok(caps)
}

/// The request's paths if it gives any, else containerd's defaults; none when privileged.
pub(super) fn masked_and_readonly_paths(security: &SecuritySpec) -> (Vec<String>, Vec<String>) {
    if security.privileged {
        return (Vec::new(), Vec::new());
    }
    let or_default = |given: &[String], default: &[&str]| {
        if given.is_empty() {
            default.iter().map(|p| p.to_string()).collect()
        } else {
            given.to_vec()
        }
    };
    (
        or_default(&security.masked_paths, DEFAULT_MASKED_PATHS),
        or_default(&security.readonly_paths, DEFAULT_READONLY_PATHS),
    )
}

/// No filter for privileged containers (containerd ignores the profile then) or
/// Unconfined; RuntimeDefault is containerd's profile for the container's capabilities;
/// Localhost is read from its absolute path on the node.
pub(super) fn seccomp(
    security: &SecuritySpec,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if security.privileged {
        return Ok(None);
    }
    match &security.seccomp {
        SeccompProfile::Unconfined => Ok(None),
        SeccompProfile::RuntimeDefault => Ok(Some(
            coracle_oci::seccomp::runtime_default_profile_for(caps),
        )),
        SeccompProfile::Localhost(path) => localhost_profile(Path::new(path)).map(Some),
    }
}

fn localhost_profile(path: &Path) -> Result<LinuxSeccomp, SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::invalid(
            "seccomp.localhost_ref",
            format!("{} is not an absolute path", path.display()),
        ));
    }
    let json =
        std::fs::read_to_string(path).map_err(SpecError::io("read seccomp profile", path))?;
    coracle_oci::seccomp::parse_profile(&json).map_err(|source| SpecError::Seccomp {
        path: PathBuf::from(path),
        source,
    })
}

#[cfg(test)]
mod capability_mask_tests {
    use super::*;

    #[test]
    fn bounding_set_is_read_from_status() {
        let status = "Name:\tx\nCapBnd:\t00000000feffffff\n";
        let mask = capability_mask(status, "CapBnd:").unwrap();
        assert_eq!(mask & (1 << 24), 0, "CAP_SYS_RESOURCE is not held");
        assert_ne!(mask & 1, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        all_capabilities_up_to(40)
    }

    fn sec(add: &[&str], drop: &[&str]) -> SecuritySpec {
        SecuritySpec {
            capabilities_add: add.iter().map(|s| s.to_string()).collect(),
            capabilities_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn caps(s: &SecuritySpec) -> Result<Vec<String>, SpecError> {
        capabilities(s, &all(), &mut Vec::new())
    }

    #[test]
    fn default_capabilities_are_containerds() {
        let c = caps(&SecuritySpec::default()).unwrap();
        assert_eq!(c, coracle_oci::seccomp::DEFAULT_CAPABILITIES);
        assert_eq!(c.len(), 14);
    }

    #[test]
    fn drop_all_then_add_net_admin() {
        let c = caps(&sec(&["NET_ADMIN"], &["ALL"])).unwrap();
        assert_eq!(c, vec!["CAP_NET_ADMIN"]);
    }

    #[test]
    fn add_all_then_drop_one() {
        let c = caps(&sec(&["all"], &["CHOWN"])).unwrap();
        assert_eq!(c.len(), 40);
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn names_are_normalized_with_or_without_prefix_and_case() {
        let c = caps(&sec(
            &["cap_sys_time", "sys_nice", "CAP_SYS_NICE"],
            &["Kill", "cap_chown"],
        ))
        .unwrap();
        assert!(c.contains(&"CAP_SYS_TIME".to_string()));
        assert_eq!(c.iter().filter(|x| *x == "CAP_SYS_NICE").count(), 1);
        assert!(!c.contains(&"CAP_KILL".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
    }

    #[test]
    fn unknown_capability_is_an_error() {
        let err = caps(&sec(&["NET_ADMIN", "FLY"], &[])).unwrap_err();
        assert!(err.to_string().contains("capabilities.add[1]"), "{err}");
        let err = caps(&sec(&[], &["CAP_CAP_KILL"])).unwrap_err();
        assert!(err.is_invalid_argument(), "{err}");
    }

    #[test]
    fn privileged_gets_every_kernel_capability_whatever_is_dropped() {
        let mut s = sec(&[], &["ALL"]);
        s.privileged = true;
        let kernel = all_capabilities_up_to(37);
        assert_eq!(capabilities(&s, &kernel, &mut Vec::new()).unwrap(), kernel);
    }

    #[test]
    fn ambient_capabilities_are_ignored_with_a_warning() {
        let s = SecuritySpec {
            ambient_capabilities_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        let mut warnings = Vec::new();
        capabilities(&s, &all(), &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let oci = oci_capabilities(&caps(&s).unwrap()).unwrap();
        assert_eq!(oci.ambient().as_ref().map(|a| a.len()), Some(0));
        assert_eq!(oci.inheritable().as_ref().map(|a| a.len()), Some(0));
    }

    #[test]
    fn every_known_capability_converts_to_oci() {
        let oci = oci_capabilities(&all()).unwrap();
        assert_eq!(oci.bounding().as_ref().map(|b| b.len()), Some(41));
        assert_eq!(oci.bounding(), oci.effective());
        assert_eq!(oci.bounding(), oci.permitted());
    }

    #[test]
    fn default_masked_and_readonly_paths_unless_given_none_when_privileged() {
        let mut s = SecuritySpec::default();
        let (m, r) = masked_and_readonly_paths(&s);
        assert!(m.contains(&"/proc/kcore".to_string()) && m.len() == 11);
        assert!(r.contains(&"/proc/sys".to_string()) && r.len() == 5);
        s.masked_paths = vec!["/proc/x".into()];
        s.readonly_paths = vec!["/proc/y".into()];
        assert_eq!(
            masked_and_readonly_paths(&s),
            (vec!["/proc/x".to_string()], vec!["/proc/y".to_string()])
        );
        s.privileged = true;
        assert_eq!(masked_and_readonly_paths(&s), (vec![], vec![]));
    }

    #[test]
    fn runtime_default_seccomp_follows_the_capabilities() {
        let mut s = SecuritySpec {
            seccomp: SeccompProfile::RuntimeDefault,
            ..Default::default()
        };
        let names = |p: &LinuxSeccomp| -> Vec<String> {
            p.syscalls()
                .iter()
                .flatten()
                .flat_map(|r| r.names().clone())
                .collect()
        };
        let base = seccomp(&s, &caps(&s).unwrap()).unwrap().unwrap();
        assert!(!names(&base).contains(&"mount".to_string()));
        s.capabilities_add = vec!["SYS_ADMIN".into()];
        let admin = seccomp(&s, &caps(&s).unwrap()).unwrap().unwrap();
        assert!(names(&admin).contains(&"mount".to_string()));
    }

    #[test]
    fn privileged_or_unconfined_gets_no_seccomp() {
        let mut s = SecuritySpec {
            seccomp: SeccompProfile::RuntimeDefault,
            privileged: true,
            ..Default::default()
        };
        assert!(seccomp(&s, &[]).unwrap().is_none());
        s.privileged = false;
        s.seccomp = SeccompProfile::Unconfined;
        assert!(seccomp(&s, &[]).unwrap().is_none());
    }

    #[test]
    fn localhost_seccomp_is_read_and_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(
            &path,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        let s = SecuritySpec {
            seccomp: SeccompProfile::Localhost(path.display().to_string()),
            ..Default::default()
        };
        let p = seccomp(&s, &[]).unwrap().unwrap();
        assert_eq!(p.syscalls().as_ref().map(|s| s.len()), Some(1));

        std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_BOGUS"}"#).unwrap();
        let err = seccomp(&s, &[]).unwrap_err();
        assert!(matches!(err, SpecError::Seccomp { .. }), "{err}");

        let missing = SecuritySpec {
            seccomp: SeccompProfile::Localhost(dir.path().join("nope.json").display().to_string()),
            ..Default::default()
        };
        assert!(matches!(
            seccomp(&missing, &[]).unwrap_err(),
            SpecError::Io { .. }
        ));

        let relative = SecuritySpec {
            seccomp: SeccompProfile::Localhost("profile.json".into()),
            ..Default::default()
        };
        assert!(seccomp(&relative, &[]).unwrap_err().is_invalid_argument());
    }
}
