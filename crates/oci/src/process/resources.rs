//! The one place the executor calls the cgroups and seccomp modules: the call sites
//! in create/exec/pause/ps/update/delete go through these small adapters, which turn
//! the modules' errors into the executor's and keep the persisted form in one place.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources, LinuxSeccomp,
    Spec,
};

use crate::cgroups::{CgroupError, ContainerCgroup};
use crate::seccomp::{self, SeccompProgram};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("cgroup {op}: {msg}")]
    Cgroup { op: &'static str, msg: String },
    #[error("seccomp: {0}")]
    Seccomp(String),
}

fn cgroup_error(op: &'static str) -> impl FnOnce(CgroupError) -> ResourceError {
    move |err| ResourceError::Cgroup {
        op,
        msg: err.to_string(),
    }
}

/// A cgroup hierarchy directory to bind into the container's /sys/fs/cgroup.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    pub name: String,
    pub host_path: PathBuf,
}

/// The container's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    inner: ContainerCgroup,
}

impl Cgroup {
    /// Creates the container's cgroup at `linux.cgroupsPath` (or `/coracle/<id>`) with
    /// `linux.resources` applied. Every container gets one: pause, ps, kill --all and
    /// update work on it.
    pub fn create(spec: &Spec, container_id: &str) -> Result<Option<Self>, ResourceError> {
        let linux = spec.linux().as_ref();
        let path = linux.and_then(|l| l.cgroups_path().as_deref());
        let resources = linux
            .and_then(|l| l.resources().clone())
            .map(|mut resources| {
                resources.set_devices(Some(device_rules(spec, &resources)));
                resources
            });
        let inner = ContainerCgroup::create(path.map(Path::new), container_id, resources.as_ref())
            .map_err(cgroup_error("create"))?;
        Ok(Some(Self { inner }))
    }

    /// Rebuild from the persisted form.
    pub fn from_state(value: &serde_json::Value) -> Result<Self, ResourceError> {
        let inner = serde_json::from_value(value.clone()).map_err(|err| ResourceError::Cgroup {
            op: "load",
            msg: err.to_string(),
        })?;
        Ok(Self { inner })
    }

    /// The persisted form; an error rather than a silent null, which would make a
    /// later delete forget the cgroup.
    pub fn to_state(&self) -> Result<serde_json::Value, ResourceError> {
        serde_json::to_value(&self.inner).map_err(|err| ResourceError::Cgroup {
            op: "save",
            msg: err.to_string(),
        })
    }

    pub fn add_task(&self, pid: i32) -> Result<(), ResourceError> {
        self.inner.add_task(pid).map_err(cgroup_error("add task"))
    }

    pub fn update(&self, resources: &LinuxResources) -> Result<(), ResourceError> {
        self.inner.update(resources).map_err(cgroup_error("update"))
    }

    pub fn freeze(&self) -> Result<(), ResourceError> {
        self.inner.freeze().map_err(cgroup_error("freeze"))
    }

    pub fn thaw(&self) -> Result<(), ResourceError> {
        self.inner.thaw().map_err(cgroup_error("thaw"))
    }

    /// A freezer that cannot be read counts as not frozen: state must answer.
    pub fn is_frozen(&self) -> bool {
        self.inner.is_frozen().unwrap_or(false)
    }

    pub fn pids(&self) -> Result<Vec<i32>, ResourceError> {
        self.inner.pids().map_err(cgroup_error("pids"))
    }

    pub fn oom_kill_count(&self) -> Result<u64, ResourceError> {
        self.inner
            .oom_kill_count()
            .map_err(cgroup_error("read oom kill count"))
    }

    pub fn stats(&self) -> Result<crate::cgroups::CgroupStats, ResourceError> {
        self.inner.stats().map_err(cgroup_error("read stats"))
    }

    pub fn delete(&self) -> Result<(), ResourceError> {
        self.inner.delete().map_err(cgroup_error("delete"))
    }

    pub fn mount_sources(&self) -> Vec<CgroupMount> {
        self.inner
            .mount_sources()
            .into_iter()
            .map(|source| CgroupMount {
                name: source.name,
                host_path: source.host_path,
            })
            .collect()
    }
}

/// The spec's device rules, then what every container needs whatever they say, as
/// runc's `AllowedDevices`: a spec that denies all devices (what `runc spec` writes)
/// must still get /dev/null and friends, and the devices it lists in `linux.devices`.
fn device_rules(spec: &Spec, resources: &LinuxResources) -> Vec<LinuxDeviceCgroup> {
    let mut rules = resources.devices().clone().unwrap_or_default();
    let allow = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access(access.to_owned());
        if let Some(major) = major {
            rule = rule.major(major);
        }
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        rule.build().ok()
    };
    let defaults = [
        // mknod of anything: the device cgroup still decides on open.
        allow(LinuxDeviceType::C, None, None, "m"),
        allow(LinuxDeviceType::B, None, None, "m"),
        allow(LinuxDeviceType::C, Some(1), Some(3), "rwm"), // null
        allow(LinuxDeviceType::C, Some(1), Some(5), "rwm"), // zero
        allow(LinuxDeviceType::C, Some(1), Some(7), "rwm"), // full
        allow(LinuxDeviceType::C, Some(1), Some(8), "rwm"), // random
        allow(LinuxDeviceType::C, Some(1), Some(9), "rwm"), // urandom
        allow(LinuxDeviceType::C, Some(5), Some(0), "rwm"), // tty
        allow(LinuxDeviceType::C, Some(5), Some(2), "rwm"), // ptmx
        allow(LinuxDeviceType::C, Some(136), None, "rwm"),  // pts/*
    ];
    rules.extend(defaults.into_iter().flatten());
    let listed = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    rules.extend(
        listed
            .iter()
            .filter_map(|d| allow(d.typ(), Some(d.major()), Some(d.minor()), "rwm")),
    );
    rules
}

/// A compiled seccomp filter, loaded in the init right before execve.
#[derive(Debug)]
pub struct SeccompFilter {
    program: SeccompProgram,
}

/// Compile in the parent (allocation happens here, not in the init), so a bad
/// profile fails create with a message naming the field.
pub fn compile_seccomp(
    seccomp: Option<&LinuxSeccomp>,
) -> Result<Option<SeccompFilter>, ResourceError> {
    seccomp
        .map(|spec| {
            seccomp::compile(spec)
                .map(|program| SeccompFilter { program })
                .map_err(|err| ResourceError::Seccomp(err.to_string()))
        })
        .transpose()
}

impl SeccompFilter {
    /// Load into the calling process (after no_new_privs, or with CAP_SYS_ADMIN).
    /// Returns the notify fd when the filter has a SCMP_ACT_NOTIFY action.
    pub fn load(&self) -> Result<Option<OwnedFd>, ResourceError> {
        self.program
            .load()
            .map_err(|err| ResourceError::Seccomp(err.to_string()))
    }
}
