//! `linux.namespaces` and `hostname`. The pod's net, ipc and uts namespaces are pinned
//! files joined by path (no pause container); pid is the pod's (a path), the
//! container's own (new) or the node's (absent).

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::SpecError;
use crate::model::{NamespaceMode, PodNamespaces};

/// Where a namespace of the container comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceSource {
    /// A new namespace of its own.
    New,
    /// The node's: the namespace is left out of the spec.
    Host,
    /// Join the namespace at this path (a pinned ns file or `/proc/<pid>/ns/<kind>`).
    Path(PathBuf),
}

/// The container's network, IPC, UTS and PID namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePaths {
    pub network: NamespaceSource,
    pub ipc: NamespaceSource,
    pub uts: NamespaceSource,
    pub pid: NamespaceSource,
}

/// Mount always new; net/ipc/uts/pid as given; a cgroup namespace on a pure cgroup v2
/// host unless privileged (containerd); no user namespace.
pub(super) fn build_namespaces(
    paths: &NamespacePaths,
    privileged: bool,
    cgroup2_unified: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = vec![namespace(LinuxNamespaceType::Mount, None)];
    for (typ, source, field) in [
        (
            LinuxNamespaceType::Network,
            &paths.network,
            "namespaces.network",
        ),
        (LinuxNamespaceType::Ipc, &paths.ipc, "namespaces.ipc"),
        (LinuxNamespaceType::Uts, &paths.uts, "namespaces.uts"),
        (LinuxNamespaceType::Pid, &paths.pid, "namespaces.pid"),
    ] {
        match source {
            NamespaceSource::Host => {}
            NamespaceSource::New => out.push(namespace(typ, None)),
            NamespaceSource::Path(p) if p.is_absolute() => {
                out.push(namespace(typ, Some(p.clone())));
            }
            NamespaceSource::Path(p) => {
                return Err(SpecError::invalid(
                    field,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
    }
    if cgroup2_unified && !privileged {
        out.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path);
    ns
}

/// `hostname` needs a UTS namespace of the container's own: a joined one (the pod's,
/// pinned with its hostname already set) or the host's must not be renamed, and
/// runtimes refuse a hostname there (crates/oci `HostnameWithoutUts`).
pub(super) fn hostname_for(paths: &NamespacePaths, hostname: &str) -> Option<String> {
    (paths.uts == NamespaceSource::New).then(|| hostname.to_string())
}

/// The sources must agree with what the request asked for: a caller that mixes up
/// the pod's and the node's namespaces would otherwise go unnoticed.
pub(super) fn check_modes(modes: &PodNamespaces, paths: &NamespacePaths) -> Result<(), SpecError> {
    let node = |mode: NamespaceMode, source: &NamespaceSource, field: &'static str| {
        let host = *source == NamespaceSource::Host;
        if (mode == NamespaceMode::Node) != host {
            return Err(SpecError::invalid(
                field,
                format!("mode {mode:?} does not match namespace {source:?}"),
            ));
        }
        Ok(())
    };
    // Network and IPC follow the pod whatever the container's request says: they are
    // pod-level in Kubernetes, and a config without a security context names POD.
    node(modes.pid, &paths.pid, "namespaces.pid")?;
    let pid_matches = match modes.pid {
        NamespaceMode::Container => paths.pid == NamespaceSource::New,
        // POD in a pod that shares no PID namespace: one of its own.
        NamespaceMode::Pod => !matches!(paths.pid, NamespaceSource::Host),
        NamespaceMode::Target => matches!(paths.pid, NamespaceSource::Path(_)),
        NamespaceMode::Node => true,
    };
    if !pid_matches {
        return Err(SpecError::invalid(
            "namespaces.pid",
            format!(
                "mode {:?} does not match namespace {:?}",
                modes.pid, paths.pid
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(kind: &str) -> NamespaceSource {
        NamespaceSource::Path(PathBuf::from(format!("/run/coracle/pods/p/ns/{kind}")))
    }

    fn pod_paths() -> NamespacePaths {
        NamespacePaths {
            network: pinned("net"),
            ipc: pinned("ipc"),
            uts: pinned("uts"),
            pid: NamespaceSource::New,
        }
    }

    fn kinds(ns: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        ns.iter().map(|n| (n.typ(), n.path().clone())).collect()
    }

    #[test]
    fn pod_namespaces_are_joined_by_path_and_mount_pid_are_new() {
        let ns = build_namespaces(&pod_paths(), false, false).unwrap();
        assert_eq!(
            kinds(&ns),
            vec![
                (LinuxNamespaceType::Mount, None),
                (
                    LinuxNamespaceType::Network,
                    Some("/run/coracle/pods/p/ns/net".into())
                ),
                (
                    LinuxNamespaceType::Ipc,
                    Some("/run/coracle/pods/p/ns/ipc".into())
                ),
                (
                    LinuxNamespaceType::Uts,
                    Some("/run/coracle/pods/p/ns/uts".into())
                ),
                (LinuxNamespaceType::Pid, None),
            ]
        );
    }

    #[test]
    fn host_namespaces_are_left_out() {
        let paths = NamespacePaths {
            network: NamespaceSource::Host,
            ipc: NamespaceSource::Host,
            uts: NamespaceSource::Host,
            pid: NamespaceSource::Host,
        };
        let ns = build_namespaces(&paths, false, false).unwrap();
        assert_eq!(kinds(&ns), vec![(LinuxNamespaceType::Mount, None)]);
    }

    #[test]
    fn cgroup_namespace_only_on_pure_v2_and_not_privileged() {
        let has_cgroup = |privileged, v2| {
            build_namespaces(&pod_paths(), privileged, v2)
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        };
        assert!(has_cgroup(false, true));
        assert!(!has_cgroup(true, true));
        assert!(!has_cgroup(false, false));
    }

    #[test]
    fn relative_namespace_path_is_invalid() {
        let mut paths = pod_paths();
        paths.pid = NamespaceSource::Path("proc/1/ns/pid".into());
        assert!(
            build_namespaces(&paths, false, false)
                .unwrap_err()
                .is_invalid_argument()
        );
    }

    #[test]
    fn hostname_only_with_a_new_uts_namespace() {
        assert_eq!(hostname_for(&pod_paths(), "web-0"), None);
        let mut paths = pod_paths();
        paths.uts = NamespaceSource::New;
        assert_eq!(hostname_for(&paths, "web-0").as_deref(), Some("web-0"));
        paths.uts = NamespaceSource::Host;
        assert_eq!(hostname_for(&paths, "web-0"), None);
    }

    #[test]
    fn namespace_sources_must_match_the_requested_modes() {
        let mut modes = PodNamespaces {
            pid: NamespaceMode::Container,
            ..Default::default()
        };
        assert!(check_modes(&modes, &pod_paths()).is_ok());
        // Network and IPC follow the pod whatever the container says.
        modes.network = NamespaceMode::Node;
        assert!(check_modes(&modes, &pod_paths()).is_ok());
        // PID: NODE needs the host's; POD takes the pod's or, without one, a new one.
        modes.pid = NamespaceMode::Node;
        assert!(check_modes(&modes, &pod_paths()).is_err());
        modes.pid = NamespaceMode::Pod;
        assert!(check_modes(&modes, &pod_paths()).is_ok());
        let mut paths = pod_paths();
        paths.pid = NamespaceSource::Path("/proc/42/ns/pid".into());
        assert!(check_modes(&modes, &paths).is_ok());
        paths.pid = NamespaceSource::Host;
        assert!(check_modes(&modes, &paths).is_err());
        modes.pid = NamespaceMode::Target;
        paths.pid = NamespaceSource::New;
        assert!(check_modes(&modes, &paths).is_err());
    }
}
