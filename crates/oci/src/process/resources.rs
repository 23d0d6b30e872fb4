//! The one place the executor calls the cgroups and seccomp modules (written in
//! parallel on other branches). Until they are merged, this file is the stand-in: the
//! call sites in create/exec/pause/ps/update/delete are real, and merging those modules
//! is a change to this file only.
//!
//! Stand-in behaviour: a spec that asks for a cgroup (cgroupsPath or resources) runs
//! without one (warned); a spec with seccomp is refused rather than run unconfined.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("cgroup {op}: {msg}")]
    Cgroup { op: &'static str, msg: String },
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// A cgroup v1 controller directory to bind into the container's /sys/fs/cgroup.
#[derive(Debug, Clone)]
pub struct CgroupMount {
    pub name: String,
    pub host_path: PathBuf,
}

/// The container's cgroup, or none when this build has no cgroup support.
#[derive(Debug, Default)]
pub struct Cgroup {
    _private: (),
}

fn unavailable(op: &'static str) -> ResourceError {
    ResourceError::Cgroup {
        op,
        msg: "cgroup support is not built into this executor yet".into(),
    }
}

impl Cgroup {
    /// Create (or adopt) the container's cgroup from the spec.
    pub fn create(spec: &Spec, _container_id: &str) -> Result<Option<Self>, ResourceError> {
        let linux = spec.linux().as_ref();
        if linux.is_some_and(|l| l.cgroups_path().is_some() || l.resources().is_some()) {
            tracing::warn!(
                "cgroupsPath/resources requested but cgroups are not available: ignored"
            );
        }
        Ok(None)
    }

    /// Rebuild from the persisted form.
    pub fn from_state(_value: &serde_json::Value) -> Result<Self, ResourceError> {
        Err(unavailable("load"))
    }

    pub fn to_state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    pub fn add_task(&self, _pid: i32) -> Result<(), ResourceError> {
        Err(unavailable("add task"))
    }

    pub fn update(&self, _resources: &LinuxResources) -> Result<(), ResourceError> {
        Err(unavailable("update"))
    }

    pub fn freeze(&self) -> Result<(), ResourceError> {
        Err(unavailable("freeze"))
    }

    pub fn thaw(&self) -> Result<(), ResourceError> {
        Err(unavailable("thaw"))
    }

    pub fn is_frozen(&self) -> bool {
        false
    }

    pub fn pids(&self) -> Result<Vec<i32>, ResourceError> {
        Err(unavailable("pids"))
    }

    pub fn delete(&self) -> Result<(), ResourceError> {
        Ok(())
    }

    pub fn mount_sources(&self) -> Vec<CgroupMount> {
        Vec::new()
    }
}

/// A compiled seccomp filter, loaded in the init right before execve.
#[derive(Debug)]
pub struct SeccompFilter {
    _private: (),
}

/// Compile in the parent (allocation happens here, not in the init).
pub fn compile_seccomp(
    seccomp: Option<&LinuxSeccomp>,
) -> Result<Option<SeccompFilter>, ResourceError> {
    match seccomp {
        None => Ok(None),
        Some(_) => Err(ResourceError::Seccomp(
            "seccomp support is not built into this executor yet; refusing to run unconfined"
                .into(),
        )),
    }
}

impl SeccompFilter {
    /// Load into the calling process (after no_new_privs). Returns the notify fd when
    /// the filter has a SCMP_ACT_NOTIFY action.
    pub fn load(&self) -> Result<Option<OwnedFd>, ResourceError> {
        Err(ResourceError::Seccomp("not built in".into()))
    }
}
