//! `CreateContainer`: the CRI container config translated to the runtime's
//! ContainerSpec, with every rule the CRI contract (`api.proto`) states checked here so
//! that the runtime only ever sees a request it can honour.

use std::path::{Component, Path};

use coracle_runtime::model::{
    ContainerMetadata, ContainerSpec, DeviceSpec, HugepageLimit, MountSpec, NamespaceMode,
    PodNamespaces, Propagation, ResourcesSpec, SeccompProfile, SecuritySpec,
    SupplementalGroupsPolicy,
};
use k8s_cri::v1::{self, security_profile::ProfileType};

use crate::error::CriError;
use crate::translate::namespace_mode_from_cri;

/// Longest container name accepted: a DNS subdomain's limit, well above the 63 bytes
/// of the DNS labels kubelet sends, so crictl and critest names fit too.
const MAX_NAME_LEN: usize = 253;

fn invalid(field: &'static str, reason: impl Into<String>) -> CriError {
    CriError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

fn unsupported(what: &'static str) -> CriError {
    CriError::Unsupported { what }
}

pub(crate) fn container_config_to_spec(
    config: &v1::ContainerConfig,
) -> Result<ContainerSpec, CriError> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("metadata", "missing"))?;
    validate_container_name(&metadata.name)?;
    let image = config
        .image
        .as_ref()
        .map(|image| image.image.as_str())
        .filter(|image| !image.is_empty())
        .ok_or_else(|| invalid("image.image", "missing"))?;
    if !config.cdi_devices.is_empty() {
        return Err(unsupported("CDI devices"));
    }
    no_nul_in_all("command", &config.command)?;
    no_nul_in_all("args", &config.args)?;
    if !config.working_dir.is_empty() {
        absolute_path("working_dir", &config.working_dir)?;
    }
    validate_log_path(&config.log_path)?;
    let linux = config.linux.clone().unwrap_or_default();
    let resources = linux
        .resources
        .as_ref()
        .map(linux_resources_from_cri)
        .transpose()?
        .unwrap_or_default();
    let security = security_from_cri(&linux.security_context.unwrap_or_default())?;
    Ok(ContainerSpec {
        metadata: ContainerMetadata {
            name: metadata.name.clone(),
            attempt: metadata.attempt,
        },
        image: image.to_owned(),
        user_specified_image: config
            .image
            .as_ref()
            .map(|image| image.user_specified_image.clone())
            .unwrap_or_default(),
        command: config.command.clone(),
        args: config.args.clone(),
        working_dir: config.working_dir.clone(),
        envs: config
            .envs
            .iter()
            .map(env_from_cri)
            .collect::<Result<_, _>>()?,
        mounts: config
            .mounts
            .iter()
            .map(mount_from_cri)
            .collect::<Result<_, _>>()?,
        devices: config
            .devices
            .iter()
            .map(device_from_cri)
            .collect::<Result<_, _>>()?,
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        log_path: config.log_path.clone(),
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        resources,
        security,
    })
}

/// The name ends up in the container's reservation key, log messages and tools' output:
/// kubelet sends DNS labels; this accepts those and what docker accepts
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), and nothing that could act as a path.
fn validate_container_name(name: &str) -> Result<(), CriError> {
    let field = "metadata.name";
    if name.is_empty() {
        return Err(invalid(field, "missing"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(field, format!("longer than {MAX_NAME_LEN} bytes")));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(invalid(
            field,
            format!("{name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ));
    }
    Ok(())
}

/// A NUL cannot cross execve or any path syscall; refuse it here with the field's name
/// rather than fail later inside the container's setup.
fn no_nul(field: &'static str, value: &str) -> Result<(), CriError> {
    if value.contains('\0') {
        return Err(invalid(field, "must not contain a NUL byte"));
    }
    Ok(())
}

fn no_nul_in_all(field: &'static str, values: &[String]) -> Result<(), CriError> {
    values.iter().try_for_each(|value| no_nul(field, value))
}

fn absolute_path(field: &'static str, path: &str) -> Result<(), CriError> {
    no_nul(field, path)?;
    if path.is_empty() {
        return Err(invalid(field, "missing"));
    }
    if !path.starts_with('/') {
        return Err(invalid(field, format!("{path:?} is not an absolute path")));
    }
    Ok(())
}

fn has_parent_component(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
}

/// The log file lives under the pod's log directory, which kubelet owns: the path may
/// not leave it.
fn validate_log_path(log_path: &str) -> Result<(), CriError> {
    let field = "log_path";
    no_nul(field, log_path)?;
    if log_path.starts_with('/') {
        return Err(invalid(
            field,
            "must be relative to the pod's log_directory",
        ));
    }
    if has_parent_component(log_path) {
        return Err(invalid(field, "must not contain \"..\""));
    }
    Ok(())
}

fn env_from_cri(env: &v1::KeyValue) -> Result<(String, String), CriError> {
    let field = "envs";
    if env.key.is_empty() {
        return Err(invalid(field, "empty variable name"));
    }
    // `KEY=VALUE` is what execve gets: a '=' in the name would change the split.
    if env.key.contains('=') {
        return Err(invalid(field, format!("name {:?} contains '='", env.key)));
    }
    no_nul(field, &env.key)?;
    no_nul(field, &env.value)?;
    Ok((env.key.clone(), env.value.clone()))
}

fn propagation_from_cri(value: i32) -> Result<Propagation, CriError> {
    match v1::MountPropagation::try_from(value) {
        Ok(v1::MountPropagation::PropagationPrivate) => Ok(Propagation::Private),
        Ok(v1::MountPropagation::PropagationHostToContainer) => Ok(Propagation::HostToContainer),
        Ok(v1::MountPropagation::PropagationBidirectional) => Ok(Propagation::Bidirectional),
        Err(_) => Err(invalid(
            "mounts.propagation",
            format!("unknown propagation {value}"),
        )),
    }
}

pub(crate) fn propagation_to_cri(propagation: Propagation) -> v1::MountPropagation {
    match propagation {
        Propagation::Private => v1::MountPropagation::PropagationPrivate,
        Propagation::HostToContainer => v1::MountPropagation::PropagationHostToContainer,
        Propagation::Bidirectional => v1::MountPropagation::PropagationBidirectional,
    }
}

fn mount_from_cri(mount: &v1::Mount) -> Result<MountSpec, CriError> {
    // Image volumes (KEP 4639) come with an empty host_path: say what is missing
    // before complaining about it.
    if mount
        .image
        .as_ref()
        .is_some_and(|image| !image.image.is_empty())
    {
        return Err(unsupported("image volume mounts"));
    }
    if !mount.uid_mappings.is_empty() || !mount.gid_mappings.is_empty() {
        return Err(unsupported("id-mapped mounts (user namespaces)"));
    }
    absolute_path("mounts.container_path", &mount.container_path)?;
    absolute_path("mounts.host_path", &mount.host_path)?;
    let propagation = propagation_from_cri(mount.propagation)?;
    // api.proto, Mount.recursive_read_only: "readonly must be explicitly set to true,
    // and propagation must be PRIVATE (0)".
    if mount.recursive_read_only {
        if !mount.readonly {
            return Err(invalid(
                "mounts.recursive_read_only",
                format!("{} is not readonly", mount.container_path),
            ));
        }
        if propagation != Propagation::Private {
            return Err(invalid(
                "mounts.recursive_read_only",
                format!(
                    "{} has a propagation other than private",
                    mount.container_path
                ),
            ));
        }
    }
    Ok(MountSpec {
        container_path: mount.container_path.clone(),
        host_path: mount.host_path.clone(),
        readonly: mount.readonly,
        recursive_read_only: mount.recursive_read_only,
        propagation,
        selinux_relabel: mount.selinux_relabel,
    })
}

fn device_from_cri(device: &v1::Device) -> Result<DeviceSpec, CriError> {
    absolute_path("devices.container_path", &device.container_path)?;
    absolute_path("devices.host_path", &device.host_path)?;
    if !device
        .permissions
        .chars()
        .all(|c| matches!(c, 'r' | 'w' | 'm'))
    {
        return Err(invalid(
            "devices.permissions",
            format!("{:?} is not made of r, w and m", device.permissions),
        ));
    }
    Ok(DeviceSpec {
        container_path: device.container_path.clone(),
        host_path: device.host_path.clone(),
        permissions: device.permissions.clone(),
    })
}

/// CRI `LinuxContainerResources` as CreateContainer and UpdateContainerResources give
/// them. 0 / empty means "not set"; -1 means "unlimited" where the kernel (and runc)
/// know that value; any other negative number is refused.
pub(crate) fn linux_resources_from_cri(
    r: &v1::LinuxContainerResources,
) -> Result<ResourcesSpec, CriError> {
    not_negative("resources.cpu_period", r.cpu_period)?;
    not_below_minus_one("resources.cpu_quota", r.cpu_quota)?;
    not_negative("resources.cpu_shares", r.cpu_shares)?;
    not_below_minus_one("resources.memory_limit_in_bytes", r.memory_limit_in_bytes)?;
    not_below_minus_one(
        "resources.memory_swap_limit_in_bytes",
        r.memory_swap_limit_in_bytes,
    )?;
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(
            "resources.oom_score_adj",
            format!("{} is outside -1000..=1000", r.oom_score_adj),
        ));
    }
    validate_cpu_list("resources.cpuset_cpus", &r.cpuset_cpus)?;
    validate_cpu_list("resources.cpuset_mems", &r.cpuset_mems)?;
    let hugepage_limits = r
        .hugepage_limits
        .iter()
        .map(hugepage_limit_from_cri)
        .collect::<Result<_, _>>()?;
    for (key, value) in &r.unified {
        validate_unified_key(key)?;
        no_nul("resources.unified", value)?;
    }
    Ok(ResourcesSpec {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits,
        unified: r.unified.clone().into_iter().collect(),
    })
}

/// UpdateContainerResources: a field the update leaves at 0 / empty is "not
/// specified" (api.proto) and keeps its current value, as containerd applies updates;
/// kubelet removes a CPU limit with `cpu_quota: -1`, not with 0.
pub(crate) fn merge_resources_update(
    current: &ResourcesSpec,
    update: &ResourcesSpec,
) -> ResourcesSpec {
    let pick = |new: i64, old: i64| if new == 0 { old } else { new };
    let pick_str = |new: &String, old: &String| if new.is_empty() { old } else { new }.clone();
    let mut unified = current.unified.clone();
    unified.extend(update.unified.clone());
    ResourcesSpec {
        cpu_period: pick(update.cpu_period, current.cpu_period),
        cpu_quota: pick(update.cpu_quota, current.cpu_quota),
        cpu_shares: pick(update.cpu_shares, current.cpu_shares),
        memory_limit_in_bytes: pick(update.memory_limit_in_bytes, current.memory_limit_in_bytes),
        memory_swap_limit_in_bytes: pick(
            update.memory_swap_limit_in_bytes,
            current.memory_swap_limit_in_bytes,
        ),
        oom_score_adj: pick(update.oom_score_adj, current.oom_score_adj),
        cpuset_cpus: pick_str(&update.cpuset_cpus, &current.cpuset_cpus),
        cpuset_mems: pick_str(&update.cpuset_mems, &current.cpuset_mems),
        hugepage_limits: if update.hugepage_limits.is_empty() {
            current.hugepage_limits.clone()
        } else {
            update.hugepage_limits.clone()
        },
        unified,
    }
}

/// api.proto, LinuxSandboxSecurityContext.privileged: "If a privileged container is to
/// be executed within it, this MUST be true." The runtime's PodSpec does not keep that
/// flag, so the check reads the sandbox config CreateContainer repeats; a request
/// without one gets no privileged container.
pub(crate) fn check_privileged_allowed(
    config: &v1::ContainerConfig,
    sandbox_config: Option<&v1::PodSandboxConfig>,
) -> Result<(), CriError> {
    let wants_privileged = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|sc| sc.privileged);
    let sandbox_privileged = sandbox_config
        .and_then(|c| c.linux.as_ref())
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|sc| sc.privileged);
    if wants_privileged && !sandbox_privileged {
        return Err(invalid(
            "security_context.privileged",
            "the pod sandbox is not privileged",
        ));
    }
    Ok(())
}

fn not_negative(field: &'static str, value: i64) -> Result<(), CriError> {
    if value < 0 {
        return Err(invalid(field, format!("{value} is negative")));
    }
    Ok(())
}

fn not_below_minus_one(field: &'static str, value: i64) -> Result<(), CriError> {
    if value < -1 {
        return Err(invalid(
            field,
            format!("{value} is negative (only -1, unlimited, is allowed)"),
        ));
    }
    Ok(())
}

/// The kernel's list format (`0-3,5,7-8`), as cpuset.cpus and cpuset.mems take it.
fn validate_cpu_list(field: &'static str, list: &str) -> Result<(), CriError> {
    if list.is_empty() {
        return Ok(());
    }
    let bad = || invalid(field, format!("{list:?} is not a list like 0-3,5"));
    for item in list.split(',') {
        let (low, high) = item.split_once('-').unwrap_or((item, item));
        let parse = |n: &str| {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            n.parse::<u32>().map_err(|_| bad())
        };
        if parse(low)? > parse(high)? {
            return Err(bad());
        }
    }
    Ok(())
}

/// `<size><unit-prefix>B` as the hugetlb control files are named (`2MB`, `1GB`).
fn hugepage_limit_from_cri(limit: &v1::HugepageLimit) -> Result<HugepageLimit, CriError> {
    let size = &limit.page_size;
    let well_formed = size
        .strip_suffix('B')
        .and_then(|s| s.strip_suffix(['K', 'M', 'G', 'T', 'P']))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !well_formed {
        return Err(invalid(
            "resources.hugepage_limits.page_size",
            format!("{size:?} is not like 2MB or 1GB"),
        ));
    }
    Ok(HugepageLimit {
        page_size: size.clone(),
        limit: limit.limit,
    })
}

/// A unified key names a file in the container's cgroup directory (`memory.high`):
/// anything that could reach another file is refused.
fn validate_unified_key(key: &str) -> Result<(), CriError> {
    let field = "resources.unified";
    no_nul(field, key)?;
    let well_formed = !key.contains('/')
        && !key.starts_with('.')
        && key
            .split_once('.')
            .is_some_and(|(c, f)| !c.is_empty() && !f.is_empty());
    if !well_formed {
        return Err(invalid(
            field,
            format!("{key:?} is not a cgroup file name like memory.high"),
        ));
    }
    Ok(())
}

fn security_from_cri(sc: &v1::LinuxContainerSecurityContext) -> Result<SecuritySpec, CriError> {
    let capabilities = sc.capabilities.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.as_ref().map(|v| v.value);
    let run_as_group = sc.run_as_group.as_ref().map(|v| v.value);
    if let Some(uid) = run_as_user {
        id_in_range("security_context.run_as_user", uid)?;
    }
    if let Some(gid) = run_as_group {
        id_in_range("security_context.run_as_group", gid)?;
        // api.proto: "run_as_group should only be specified when run_as_user or
        // run_as_username is specified; otherwise, the runtime MUST error."
        if run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(invalid(
                "security_context.run_as_group",
                "set without run_as_user or run_as_username",
            ));
        }
    }
    // Both user fields may come together: kubelet adds the image's user name to a
    // request that already has a uid. Which one wins is the runtime's call.
    no_nul("security_context.run_as_username", &sc.run_as_username)?;
    for &gid in &sc.supplemental_groups {
        id_in_range("security_context.supplemental_groups", gid)?;
    }
    let supplemental_groups_policy =
        match v1::SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy) {
            Ok(v1::SupplementalGroupsPolicy::Merge) => SupplementalGroupsPolicy::Merge,
            Ok(v1::SupplementalGroupsPolicy::Strict) => SupplementalGroupsPolicy::Strict,
            Err(_) => {
                return Err(invalid(
                    "security_context.supplemental_groups_policy",
                    format!("unknown policy {}", sc.supplemental_groups_policy),
                ));
            }
        };
    for path in &sc.masked_paths {
        absolute_path("security_context.masked_paths", path)?;
    }
    for path in &sc.readonly_paths {
        absolute_path("security_context.readonly_paths", path)?;
    }
    reject_localhost_apparmor(sc)?;
    Ok(SecuritySpec {
        privileged: sc.privileged,
        capabilities_add: capabilities.add_capabilities,
        capabilities_drop: capabilities.drop_capabilities,
        ambient_capabilities_add: capabilities.add_ambient_capabilities,
        namespaces: container_namespaces_from_cri(sc.namespace_options.as_ref())?,
        run_as_user,
        run_as_group,
        run_as_username: sc.run_as_username.clone(),
        readonly_rootfs: sc.readonly_rootfs,
        supplemental_groups: sc.supplemental_groups.clone(),
        supplemental_groups_policy,
        no_new_privs: sc.no_new_privs,
        masked_paths: sc.masked_paths.clone(),
        readonly_paths: sc.readonly_paths.clone(),
        seccomp: seccomp_from_cri(sc)?,
    })
}

/// A uid or gid the kernel can hold: `uid_t` is 32 bits and `(uid_t)-1` means "none".
fn id_in_range(field: &'static str, id: i64) -> Result<(), CriError> {
    if !(0..i64::from(u32::MAX)).contains(&id) {
        return Err(invalid(
            field,
            format!("{id} is not a valid id (0..{})", u32::MAX),
        ));
    }
    Ok(())
}

/// AppArmor is not applied by coracle. The runtime default and unconfined mean no
/// profile of the user's own, so they run as they are; a named profile is a request for
/// confinement the runtime would silently drop, so it is refused.
fn reject_localhost_apparmor(sc: &v1::LinuxContainerSecurityContext) -> Result<(), CriError> {
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.starts_with("localhost/");
    let named = sc
        .apparmor
        .as_ref()
        .is_some_and(|p| p.profile_type == ProfileType::Localhost as i32);
    if named || legacy {
        return Err(unsupported("AppArmor localhost profiles"));
    }
    Ok(())
}

fn container_namespaces_from_cri(
    options: Option<&v1::NamespaceOption>,
) -> Result<PodNamespaces, CriError> {
    let options = options.cloned().unwrap_or_default();
    // kubelet sends NODE for pods with hostUsers unset or true: that is no user
    // namespace, which is what coracle does.
    if let Some(userns) = &options.userns_options {
        if userns.mode != v1::NamespaceMode::Node as i32 {
            return Err(unsupported(
                "user namespaces for containers (hostUsers: false)",
            ));
        }
    }
    let network = namespace_mode_from_cri("namespace_options.network", options.network)?;
    let ipc = namespace_mode_from_cri("namespace_options.ipc", options.ipc)?;
    let pid = namespace_mode_from_cri("namespace_options.pid", options.pid)?;
    // Network and IPC namespaces are the pod's pinned ones or the node's; the CRI has
    // no way for kubelet to ask for others.
    for (mode, what) in [
        (
            network,
            "a network namespace other than the pod's or the node's",
        ),
        (ipc, "an IPC namespace other than the pod's or the node's"),
    ] {
        if matches!(mode, NamespaceMode::Container | NamespaceMode::Target) {
            return Err(unsupported(what));
        }
    }
    if pid == NamespaceMode::Target && options.target_id.is_empty() {
        return Err(invalid(
            "namespace_options.target_id",
            "missing for pid mode TARGET",
        ));
    }
    Ok(PodNamespaces {
        network,
        ipc,
        pid,
        target_id: options.target_id,
    })
}

/// The `seccomp` field when present; otherwise the deprecated `seccomp_profile_path`,
/// whose empty value means unconfined (api.proto).
fn seccomp_from_cri(sc: &v1::LinuxContainerSecurityContext) -> Result<SeccompProfile, CriError> {
    match &sc.seccomp {
        Some(profile) => seccomp_from_security_profile(profile),
        #[allow(deprecated)]
        None => seccomp_from_legacy_path(&sc.seccomp_profile_path),
    }
}

fn seccomp_from_security_profile(
    profile: &v1::SecurityProfile,
) -> Result<SeccompProfile, CriError> {
    let field = "security_context.seccomp";
    let kind = ProfileType::try_from(profile.profile_type).map_err(|_| {
        invalid(
            field,
            format!("unknown profile type {}", profile.profile_type),
        )
    })?;
    // api.proto, SecurityProfile.localhost_ref: "Must only be set if ProfileType is
    // Localhost. For seccomp, it must be an absolute path to the seccomp profile."
    if kind != ProfileType::Localhost && !profile.localhost_ref.is_empty() {
        return Err(invalid(
            "security_context.seccomp.localhost_ref",
            format!("set for profile type {}", kind.as_str_name()),
        ));
    }
    match kind {
        ProfileType::RuntimeDefault => Ok(SeccompProfile::RuntimeDefault),
        ProfileType::Unconfined => Ok(SeccompProfile::Unconfined),
        ProfileType::Localhost => localhost_profile(
            "security_context.seccomp.localhost_ref",
            &profile.localhost_ref,
        ),
    }
}

/// `runtime/default`, `docker/default`, `unconfined`, `localhost/<absolute path>`, or
/// empty for unconfined.
fn seccomp_from_legacy_path(path: &str) -> Result<SeccompProfile, CriError> {
    let field = "security_context.seccomp_profile_path";
    match path {
        "" | "unconfined" => Ok(SeccompProfile::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompProfile::RuntimeDefault),
        _ => match path.strip_prefix("localhost/") {
            Some(file) => localhost_profile(field, file),
            None => Err(invalid(field, format!("unknown profile {path:?}"))),
        },
    }
}

fn localhost_profile(field: &'static str, path: &str) -> Result<SeccompProfile, CriError> {
    absolute_path(field, path)?;
    // kubelet joins its seccomp root and the pod's relative profile name: a ".." could
    // only come from a hand-made request reaching for another file.
    if has_parent_component(path) {
        return Err(invalid(field, "must not contain \"..\""));
    }
    Ok(SeccompProfile::Localhost(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> v1::ContainerConfig {
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: "web".into(),
                attempt: 1,
            }),
            image: Some(v1::ImageSpec {
                image: "sha256:abc".into(),
                user_specified_image: "busybox:latest".into(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into()],
            args: vec!["-c".into(), "sleep 1".into()],
            working_dir: "/work".into(),
            envs: vec![
                v1::KeyValue {
                    key: "B".into(),
                    value: "2".into(),
                },
                v1::KeyValue {
                    key: "A".into(),
                    value: "1".into(),
                },
            ],
            mounts: vec![mount()],
            devices: vec![v1::Device {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }],
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("note".to_string(), "x".to_string())].into(),
            log_path: "web/1.log".into(),
            stdin: true,
            stdin_once: true,
            tty: true,
            linux: Some(v1::LinuxContainerConfig {
                resources: Some(resources()),
                security_context: Some(security_context()),
            }),
            ..Default::default()
        }
    }

    fn mount() -> v1::Mount {
        v1::Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/data".into(),
            readonly: true,
            selinux_relabel: true,
            propagation: v1::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }
    }

    fn resources() -> v1::LinuxContainerResources {
        v1::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![v1::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            memory_swap_limit_in_bytes: 128 << 20,
        }
    }

    fn security_context() -> v1::LinuxContainerSecurityContext {
        v1::LinuxContainerSecurityContext {
            capabilities: Some(v1::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["ALL".into()],
                add_ambient_capabilities: vec!["CAP_NET_RAW".into()],
            }),
            namespace_options: Some(v1::NamespaceOption {
                network: v1::NamespaceMode::Node as i32,
                pid: v1::NamespaceMode::Container as i32,
                ipc: v1::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            run_as_user: Some(v1::Int64Value { value: 1000 }),
            run_as_group: Some(v1::Int64Value { value: 2000 }),
            readonly_rootfs: true,
            supplemental_groups: vec![3000, 4000],
            supplemental_groups_policy: v1::SupplementalGroupsPolicy::Strict as i32,
            no_new_privs: true,
            masked_paths: vec!["/proc/kcore".into()],
            readonly_paths: vec!["/proc/sys".into()],
            seccomp: Some(v1::SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }
    }

    fn with(change: impl FnOnce(&mut v1::ContainerConfig)) -> Result<ContainerSpec, CriError> {
        let mut config = config();
        change(&mut config);
        container_config_to_spec(&config)
    }

    fn with_security(
        change: impl FnOnce(&mut v1::LinuxContainerSecurityContext),
    ) -> Result<ContainerSpec, CriError> {
        with(|c| change(c.linux.as_mut().unwrap().security_context.as_mut().unwrap()))
    }

    fn with_resources(
        change: impl FnOnce(&mut v1::LinuxContainerResources),
    ) -> Result<ContainerSpec, CriError> {
        with(|c| change(c.linux.as_mut().unwrap().resources.as_mut().unwrap()))
    }

    fn with_mount(change: impl FnOnce(&mut v1::Mount)) -> Result<ContainerSpec, CriError> {
        with(|c| change(&mut c.mounts[0]))
    }

    #[track_caller]
    fn assert_invalid(result: Result<ContainerSpec, CriError>, field: &str) {
        match result {
            Err(CriError::InvalidArgument { field: f, reason }) => {
                assert_eq!(f, field, "reason: {reason}");
            }
            other => panic!("expected invalid {field}, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_unsupported(result: Result<ContainerSpec, CriError>, what: &str) {
        match result {
            Err(CriError::Unsupported { what: w }) => assert!(w.contains(what), "{w}"),
            other => panic!("expected unsupported {what}, got {other:?}"),
        }
    }

    fn seccomp_of(result: Result<ContainerSpec, CriError>) -> SeccompProfile {
        result.unwrap().security.seccomp
    }

    #[test]
    fn full_config_is_translated() {
        let spec = container_config_to_spec(&config()).unwrap();
        assert_eq!(spec.metadata.name, "web");
        assert_eq!(spec.metadata.attempt, 1);
        assert_eq!(spec.image, "sha256:abc");
        assert_eq!(spec.command, ["/bin/sh"]);
        assert_eq!(spec.args, ["-c", "sleep 1"]);
        assert_eq!(spec.working_dir, "/work");
        assert_eq!(spec.labels["app"], "web");
        assert_eq!(spec.annotations["note"], "x");
        assert_eq!(spec.log_path, "web/1.log");
        assert!(spec.stdin && spec.stdin_once && spec.tty);
        assert_eq!(
            spec.devices,
            [DeviceSpec {
                container_path: "/dev/fuse".into(),
                host_path: "/dev/fuse".into(),
                permissions: "rwm".into(),
            }]
        );
        assert_eq!(
            spec.mounts,
            [MountSpec {
                container_path: "/data".into(),
                host_path: "/var/lib/data".into(),
                readonly: true,
                recursive_read_only: false,
                propagation: Propagation::HostToContainer,
                selinux_relabel: true,
            }]
        );
    }

    #[test]
    fn envs_keep_request_order() {
        let spec = container_config_to_spec(&config()).unwrap();
        assert_eq!(
            spec.envs,
            [("B".into(), "2".into()), ("A".into(), "1".into())]
        );
    }

    #[test]
    fn resources_are_translated() {
        let spec = container_config_to_spec(&config()).unwrap();
        let r = spec.resources;
        assert_eq!(
            (r.cpu_period, r.cpu_quota, r.cpu_shares),
            (100_000, 50_000, 512)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.memory_swap_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, 999);
        assert_eq!(
            (r.cpuset_cpus.as_str(), r.cpuset_mems.as_str()),
            ("0-1,3", "0")
        );
        assert_eq!(r.hugepage_limits[0].page_size, "2MB");
        assert_eq!(r.hugepage_limits[0].limit, 4 << 20);
        assert_eq!(r.unified["memory.high"], "1000000");
    }

    #[test]
    fn security_context_is_translated() {
        let s = container_config_to_spec(&config()).unwrap().security;
        assert_eq!(s.capabilities_add, ["NET_ADMIN"]);
        assert_eq!(s.capabilities_drop, ["ALL"]);
        assert_eq!(s.ambient_capabilities_add, ["CAP_NET_RAW"]);
        assert_eq!(s.run_as_user, Some(1000));
        assert_eq!(s.run_as_group, Some(2000));
        assert!(s.readonly_rootfs && s.no_new_privs && !s.privileged);
        assert_eq!(s.supplemental_groups, [3000, 4000]);
        assert_eq!(
            s.supplemental_groups_policy,
            SupplementalGroupsPolicy::Strict
        );
        assert_eq!(s.masked_paths, ["/proc/kcore"]);
        assert_eq!(s.readonly_paths, ["/proc/sys"]);
        assert_eq!(s.seccomp, SeccompProfile::RuntimeDefault);
        assert_eq!(
            s.namespaces,
            PodNamespaces {
                network: NamespaceMode::Node,
                ipc: NamespaceMode::Pod,
                pid: NamespaceMode::Container,
                target_id: String::new(),
            }
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let minimal = v1::ContainerConfig {
            metadata: config().metadata,
            image: config().image,
            ..Default::default()
        };
        let spec = container_config_to_spec(&minimal).unwrap();
        assert_eq!(spec.resources, ResourcesSpec::default());
        assert_eq!(spec.security, SecuritySpec::default());
        assert_eq!(spec.security.run_as_user, None);
        assert_eq!(spec.security.seccomp, SeccompProfile::Unconfined);
    }

    #[test]
    fn privileged_is_kept() {
        let spec = with_security(|s| s.privileged = true).unwrap();
        assert!(spec.security.privileged);
    }

    #[test]
    fn missing_metadata_is_invalid() {
        assert_invalid(with(|c| c.metadata = None), "metadata");
    }

    #[test]
    fn empty_container_name_is_invalid() {
        assert_invalid(
            with(|c| c.metadata.as_mut().unwrap().name.clear()),
            "metadata.name",
        );
    }

    #[test]
    fn container_name_with_slash_or_nul_is_invalid() {
        for name in ["a/b", "a\0b", "..", ".hidden", "-x", "a b", "web\n"] {
            assert_invalid(
                with(|c| c.metadata.as_mut().unwrap().name = name.into()),
                "metadata.name",
            );
        }
    }

    #[test]
    fn kubelet_and_critest_style_names_are_valid() {
        for name in [
            "busybox",
            "web-0",
            "container-for-create-test-0b6f3c5e-8d2b-4d3b-9a59-2f4f0c1a0d2e",
            "A_b.c",
            "1",
        ] {
            with(|c| c.metadata.as_mut().unwrap().name = name.into()).unwrap();
        }
    }

    #[test]
    fn overlong_container_name_is_invalid() {
        assert_invalid(
            with(|c| c.metadata.as_mut().unwrap().name = "a".repeat(MAX_NAME_LEN + 1)),
            "metadata.name",
        );
    }

    #[test]
    fn missing_image_is_invalid() {
        assert_invalid(with(|c| c.image = None), "image.image");
        assert_invalid(
            with(|c| c.image.as_mut().unwrap().image.clear()),
            "image.image",
        );
    }

    #[test]
    fn empty_env_key_is_invalid() {
        assert_invalid(with(|c| c.envs[0].key.clear()), "envs");
    }

    #[test]
    fn env_key_with_equals_is_invalid() {
        assert_invalid(with(|c| c.envs[0].key = "A=B".into()), "envs");
    }

    #[test]
    fn nul_in_command_args_or_env_is_invalid() {
        assert_invalid(with(|c| c.command[0] = "/bin/sh\0".into()), "command");
        assert_invalid(with(|c| c.args[0] = "\0".into()), "args");
        assert_invalid(with(|c| c.envs[0].value = "a\0".into()), "envs");
    }

    #[test]
    fn relative_working_dir_is_invalid() {
        assert_invalid(with(|c| c.working_dir = "work".into()), "working_dir");
        assert_eq!(with(|c| c.working_dir.clear()).unwrap().working_dir, "");
    }

    #[test]
    fn absolute_log_path_is_invalid() {
        assert_invalid(with(|c| c.log_path = "/var/log/x.log".into()), "log_path");
    }

    #[test]
    fn log_path_with_dotdot_is_invalid() {
        for path in ["../x.log", "web/../../x.log", "web/.."] {
            assert_invalid(with(|c| c.log_path = path.into()), "log_path");
        }
    }

    #[test]
    fn empty_log_path_means_no_log() {
        assert_eq!(with(|c| c.log_path.clear()).unwrap().log_path, "");
    }

    #[test]
    fn mount_relative_container_path_is_invalid() {
        assert_invalid(
            with_mount(|m| m.container_path = "data".into()),
            "mounts.container_path",
        );
        assert_invalid(
            with_mount(|m| m.container_path.clear()),
            "mounts.container_path",
        );
    }

    #[test]
    fn mount_without_host_path_is_invalid() {
        assert_invalid(with_mount(|m| m.host_path.clear()), "mounts.host_path");
        assert_invalid(
            with_mount(|m| m.host_path = "relative".into()),
            "mounts.host_path",
        );
    }

    #[test]
    fn mount_propagation_is_translated() {
        for (cri, model) in [
            (
                v1::MountPropagation::PropagationPrivate,
                Propagation::Private,
            ),
            (
                v1::MountPropagation::PropagationHostToContainer,
                Propagation::HostToContainer,
            ),
            (
                v1::MountPropagation::PropagationBidirectional,
                Propagation::Bidirectional,
            ),
        ] {
            let spec = with_mount(|m| m.propagation = cri as i32).unwrap();
            assert_eq!(spec.mounts[0].propagation, model);
            assert_eq!(propagation_to_cri(model), cri);
        }
    }

    #[test]
    fn unknown_mount_propagation_is_invalid() {
        assert_invalid(with_mount(|m| m.propagation = 7), "mounts.propagation");
    }

    #[test]
    fn recursive_read_only_mount_is_kept() {
        let spec = with_mount(|m| {
            m.recursive_read_only = true;
            m.propagation = v1::MountPropagation::PropagationPrivate as i32;
        })
        .unwrap();
        assert!(spec.mounts[0].recursive_read_only && spec.mounts[0].readonly);
    }

    #[test]
    fn recursive_read_only_without_readonly_is_invalid() {
        assert_invalid(
            with_mount(|m| {
                m.recursive_read_only = true;
                m.readonly = false;
                m.propagation = v1::MountPropagation::PropagationPrivate as i32;
            }),
            "mounts.recursive_read_only",
        );
    }

    #[test]
    fn recursive_read_only_with_propagation_is_invalid() {
        for propagation in [
            v1::MountPropagation::PropagationHostToContainer,
            v1::MountPropagation::PropagationBidirectional,
        ] {
            assert_invalid(
                with_mount(|m| {
                    m.recursive_read_only = true;
                    m.propagation = propagation as i32;
                }),
                "mounts.recursive_read_only",
            );
        }
    }

    #[test]
    fn id_mapped_mount_is_unsupported() {
        let mapping = v1::IdMapping {
            host_id: 100_000,
            container_id: 0,
            length: 65536,
        };
        assert_unsupported(with_mount(|m| m.uid_mappings = vec![mapping]), "id-mapped");
        assert_unsupported(with_mount(|m| m.gid_mappings = vec![mapping]), "id-mapped");
    }

    #[test]
    fn image_volume_mount_is_unsupported() {
        assert_unsupported(
            with_mount(|m| {
                m.host_path.clear();
                m.image = Some(v1::ImageSpec {
                    image: "sha256:def".into(),
                    ..Default::default()
                });
            }),
            "image volume",
        );
    }

    #[test]
    fn device_paths_must_be_absolute() {
        assert_invalid(
            with(|c| c.devices[0].container_path = "dev/fuse".into()),
            "devices.container_path",
        );
        assert_invalid(
            with(|c| c.devices[0].host_path.clear()),
            "devices.host_path",
        );
    }

    #[test]
    fn device_permissions_other_than_rwm_are_invalid() {
        assert_invalid(
            with(|c| c.devices[0].permissions = "rx".into()),
            "devices.permissions",
        );
        with(|c| c.devices[0].permissions = "rw".into()).unwrap();
    }

    #[test]
    fn cdi_devices_are_unsupported() {
        assert_unsupported(
            with(|c| {
                c.cdi_devices = vec![v1::CdiDevice {
                    name: "vendor.com/gpu=0".into(),
                }];
            }),
            "CDI",
        );
    }

    #[test]
    fn windows_config_is_ignored() {
        with(|c| c.windows = Some(v1::WindowsContainerConfig::default())).unwrap();
    }

    #[test]
    fn negative_resources_are_invalid() {
        assert_invalid(
            with_resources(|r| r.cpu_period = -1),
            "resources.cpu_period",
        );
        assert_invalid(
            with_resources(|r| r.cpu_shares = -2),
            "resources.cpu_shares",
        );
        assert_invalid(with_resources(|r| r.cpu_quota = -2), "resources.cpu_quota");
        assert_invalid(
            with_resources(|r| r.memory_limit_in_bytes = -5),
            "resources.memory_limit_in_bytes",
        );
        assert_invalid(
            with_resources(|r| r.memory_swap_limit_in_bytes = -2),
            "resources.memory_swap_limit_in_bytes",
        );
    }

    #[test]
    fn minus_one_means_unlimited_for_quota_and_memory() {
        let spec = with_resources(|r| {
            r.cpu_quota = -1;
            r.memory_limit_in_bytes = -1;
            r.memory_swap_limit_in_bytes = -1;
        })
        .unwrap();
        assert_eq!(spec.resources.cpu_quota, -1);
        assert_eq!(spec.resources.memory_limit_in_bytes, -1);
        assert_eq!(spec.resources.memory_swap_limit_in_bytes, -1);
    }

    #[test]
    fn oom_score_adj_out_of_range_is_invalid() {
        assert_invalid(
            with_resources(|r| r.oom_score_adj = 1001),
            "resources.oom_score_adj",
        );
        assert_invalid(
            with_resources(|r| r.oom_score_adj = -1001),
            "resources.oom_score_adj",
        );
        with_resources(|r| r.oom_score_adj = -1000).unwrap();
    }

    #[test]
    fn malformed_cpuset_is_invalid() {
        for list in ["a", "1-", "3-1", "1,,2", "-1", "0 -1"] {
            assert_invalid(
                with_resources(|r| r.cpuset_cpus = list.into()),
                "resources.cpuset_cpus",
            );
        }
        assert_invalid(
            with_resources(|r| r.cpuset_mems = "x".into()),
            "resources.cpuset_mems",
        );
    }

    #[test]
    fn malformed_hugepage_size_is_invalid() {
        for size in ["", "2M", "MB", "2XB", "2 MB"] {
            assert_invalid(
                with_resources(|r| r.hugepage_limits[0].page_size = size.into()),
                "resources.hugepage_limits.page_size",
            );
        }
        with_resources(|r| r.hugepage_limits[0].page_size = "1GB".into()).unwrap();
    }

    #[test]
    fn unified_key_that_escapes_the_cgroup_dir_is_invalid() {
        for key in ["../memory.max", "a/b.c", ".x", "memory", "memory.", ".."] {
            assert_invalid(
                with_resources(|r| r.unified = [(key.to_string(), "1".to_string())].into()),
                "resources.unified",
            );
        }
    }

    #[test]
    fn linux_resources_from_cri_is_reusable_for_updates() {
        let spec = linux_resources_from_cri(&resources()).unwrap();
        assert_eq!(spec.cpu_shares, 512);
        assert!(linux_resources_from_cri(&v1::LinuxContainerResources::default()).is_ok());
        assert!(
            linux_resources_from_cri(&v1::LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn resources_update_keeps_what_it_does_not_set() {
        let current = linux_resources_from_cri(&resources()).unwrap();
        let update = linux_resources_from_cri(&v1::LinuxContainerResources {
            cpu_quota: -1,
            memory_limit_in_bytes: 128 << 20,
            unified: [("memory.low".to_string(), "5".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
        let merged = merge_resources_update(&current, &update);
        assert_eq!(merged.cpu_quota, -1);
        assert_eq!(merged.memory_limit_in_bytes, 128 << 20);
        assert_eq!(merged.cpu_period, 100_000);
        assert_eq!(merged.cpu_shares, 512);
        assert_eq!(merged.cpuset_cpus, "0-1,3");
        assert_eq!(merged.hugepage_limits, current.hugepage_limits);
        assert_eq!(merged.unified["memory.high"], "1000000");
        assert_eq!(merged.unified["memory.low"], "5");
        assert_eq!(
            merge_resources_update(&current, &ResourcesSpec::default()),
            current
        );
    }

    fn sandbox(privileged: bool) -> v1::PodSandboxConfig {
        v1::PodSandboxConfig {
            linux: Some(v1::LinuxPodSandboxConfig {
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn privileged_container_in_unprivileged_sandbox_is_invalid() {
        let mut privileged = config();
        let sc = privileged.linux.as_mut().unwrap();
        sc.security_context.as_mut().unwrap().privileged = true;
        let err = check_privileged_allowed(&privileged, Some(&sandbox(false))).unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
        assert!(check_privileged_allowed(&privileged, None).is_err());
        check_privileged_allowed(&privileged, Some(&sandbox(true))).unwrap();
        check_privileged_allowed(&config(), Some(&sandbox(false))).unwrap();
        check_privileged_allowed(&config(), None).unwrap();
    }

    #[test]
    fn run_as_group_without_user_is_invalid() {
        assert_invalid(
            with_security(|s| s.run_as_user = None),
            "security_context.run_as_group",
        );
        let by_name = with_security(|s| {
            s.run_as_user = None;
            s.run_as_username = "nobody".into();
        })
        .unwrap();
        assert_eq!(by_name.security.run_as_username, "nobody");
        assert_eq!(by_name.security.run_as_group, Some(2000));
    }

    #[test]
    fn run_as_user_out_of_range_is_invalid() {
        for uid in [-1, i64::from(u32::MAX), 1 << 40] {
            assert_invalid(
                with_security(|s| s.run_as_user = Some(v1::Int64Value { value: uid })),
                "security_context.run_as_user",
            );
        }
        assert_invalid(
            with_security(|s| s.run_as_group = Some(v1::Int64Value { value: -1 })),
            "security_context.run_as_group",
        );
    }

    #[test]
    fn negative_supplemental_group_is_invalid() {
        assert_invalid(
            with_security(|s| s.supplemental_groups = vec![-3]),
            "security_context.supplemental_groups",
        );
    }

    #[test]
    fn unknown_supplemental_groups_policy_is_invalid() {
        assert_invalid(
            with_security(|s| s.supplemental_groups_policy = 5),
            "security_context.supplemental_groups_policy",
        );
    }

    #[test]
    fn relative_masked_or_readonly_path_is_invalid() {
        assert_invalid(
            with_security(|s| s.masked_paths = vec!["proc/kcore".into()]),
            "security_context.masked_paths",
        );
        assert_invalid(
            with_security(|s| s.readonly_paths = vec![String::new()]),
            "security_context.readonly_paths",
        );
    }

    #[test]
    fn target_pid_namespace_is_translated_with_its_target() {
        let spec = with_security(|s| {
            s.namespace_options = Some(v1::NamespaceOption {
                pid: v1::NamespaceMode::Target as i32,
                target_id: "abc".into(),
                ..Default::default()
            });
        })
        .unwrap();
        assert_eq!(spec.security.namespaces.pid, NamespaceMode::Target);
        assert_eq!(spec.security.namespaces.target_id, "abc");
    }

    #[test]
    fn target_pid_namespace_without_target_id_is_invalid() {
        assert_invalid(
            with_security(|s| {
                s.namespace_options = Some(v1::NamespaceOption {
                    pid: v1::NamespaceMode::Target as i32,
                    ..Default::default()
                });
            }),
            "namespace_options.target_id",
        );
    }

    #[test]
    fn unknown_namespace_mode_is_invalid() {
        assert_invalid(
            with_security(|s| s.namespace_options.as_mut().unwrap().pid = 9),
            "namespace_options.pid",
        );
    }

    #[test]
    fn container_scoped_network_or_ipc_is_unsupported() {
        assert_unsupported(
            with_security(|s| {
                s.namespace_options.as_mut().unwrap().network = v1::NamespaceMode::Container as i32;
            }),
            "network namespace",
        );
        assert_unsupported(
            with_security(|s| {
                s.namespace_options.as_mut().unwrap().ipc = v1::NamespaceMode::Target as i32;
            }),
            "IPC namespace",
        );
    }

    #[test]
    fn user_namespace_is_unsupported() {
        assert_unsupported(
            with_security(|s| {
                s.namespace_options.as_mut().unwrap().userns_options = Some(v1::UserNamespace {
                    mode: v1::NamespaceMode::Pod as i32,
                    ..Default::default()
                });
            }),
            "user namespaces",
        );
    }

    #[test]
    fn node_user_namespace_is_accepted() {
        with_security(|s| {
            s.namespace_options.as_mut().unwrap().userns_options = Some(v1::UserNamespace {
                mode: v1::NamespaceMode::Node as i32,
                ..Default::default()
            });
        })
        .unwrap();
    }

    fn profile(kind: ProfileType, localhost_ref: &str) -> Option<v1::SecurityProfile> {
        Some(v1::SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: localhost_ref.into(),
        })
    }

    #[test]
    fn seccomp_profile_types_are_translated() {
        assert_eq!(
            seccomp_of(with_security(
                |s| s.seccomp = profile(ProfileType::Unconfined, "")
            )),
            SeccompProfile::Unconfined
        );
        assert_eq!(
            seccomp_of(with_security(|s| {
                s.seccomp = profile(ProfileType::Localhost, "/var/lib/kubelet/seccomp/a.json");
            })),
            SeccompProfile::Localhost("/var/lib/kubelet/seccomp/a.json".into())
        );
    }

    #[test]
    fn seccomp_localhost_without_absolute_ref_is_invalid() {
        for reference in ["", "a.json", "localhost/a.json", "/x/../etc/shadow"] {
            assert_invalid(
                with_security(|s| s.seccomp = profile(ProfileType::Localhost, reference)),
                "security_context.seccomp.localhost_ref",
            );
        }
    }

    #[test]
    fn seccomp_localhost_ref_on_other_profile_type_is_invalid() {
        assert_invalid(
            with_security(|s| s.seccomp = profile(ProfileType::RuntimeDefault, "/a.json")),
            "security_context.seccomp.localhost_ref",
        );
    }

    #[test]
    fn unknown_seccomp_profile_type_is_invalid() {
        assert_invalid(
            with_security(|s| {
                s.seccomp = Some(v1::SecurityProfile {
                    profile_type: 9,
                    localhost_ref: String::new(),
                });
            }),
            "security_context.seccomp",
        );
    }

    #[allow(deprecated)]
    fn legacy(path: &str) -> Result<ContainerSpec, CriError> {
        with_security(|s| {
            s.seccomp = None;
            s.seccomp_profile_path = path.into();
        })
    }

    #[test]
    fn seccomp_field_wins_over_deprecated_path() {
        #[allow(deprecated)]
        let spec = with_security(|s| s.seccomp_profile_path = "unconfined".into());
        assert_eq!(seccomp_of(spec), SeccompProfile::RuntimeDefault);
    }

    #[test]
    fn deprecated_seccomp_path_defaults_to_unconfined() {
        assert_eq!(seccomp_of(legacy("")), SeccompProfile::Unconfined);
        assert_eq!(seccomp_of(legacy("unconfined")), SeccompProfile::Unconfined);
    }

    #[test]
    fn deprecated_seccomp_path_runtime_default_is_parsed() {
        assert_eq!(
            seccomp_of(legacy("runtime/default")),
            SeccompProfile::RuntimeDefault
        );
        assert_eq!(
            seccomp_of(legacy("docker/default")),
            SeccompProfile::RuntimeDefault
        );
    }

    #[test]
    fn deprecated_seccomp_path_localhost_is_parsed() {
        assert_eq!(
            seccomp_of(legacy("localhost//etc/seccomp/p.json")),
            SeccompProfile::Localhost("/etc/seccomp/p.json".into())
        );
        assert_invalid(
            legacy("localhost/p.json"),
            "security_context.seccomp_profile_path",
        );
    }

    #[test]
    fn unknown_deprecated_seccomp_path_is_invalid() {
        assert_invalid(legacy("default"), "security_context.seccomp_profile_path");
    }

    #[test]
    fn apparmor_localhost_profile_is_unsupported() {
        assert_unsupported(
            with_security(|s| s.apparmor = profile(ProfileType::Localhost, "k8s-profile")),
            "AppArmor",
        );
        #[allow(deprecated)]
        let legacy = with_security(|s| s.apparmor_profile = "localhost/k8s-profile".into());
        assert_unsupported(legacy, "AppArmor");
        with_security(|s| s.apparmor = profile(ProfileType::RuntimeDefault, "")).unwrap();
    }
}
