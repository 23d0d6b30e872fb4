//! The five capability sets of `process.capabilities`: the bounding set is dropped
//! first (needs CAP_SETPCAP, so before the uid switch), then effective, inheritable,
//! permitted (capset; effective must stay a subset of permitted at every step) and
//! ambient (prctl), after the uid switch.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {0}")]
    Unknown(String),
    #[error("{op} {set}: {source}")]
    Apply {
        op: &'static str,
        set: &'static str,
        source: caps::errors::CapsError,
    },
}

fn convert(set: &Option<Capabilities>) -> Result<Option<CapsHashSet>, CapsError> {
    let Some(set) = set else { return Ok(None) };
    let mut out = HashSet::new();
    for c in set {
        let name = format!("CAP_{c}");
        match Capability::from_str(&name) {
            Ok(cap) => {
                out.insert(cap);
            }
            Err(_) => return Err(CapsError::Unknown(name)),
        }
    }
    Ok(Some(out))
}

/// The sets, converted once (before the user switch, while errors can still be reported).
#[derive(Debug, Default)]
pub struct CapPlan {
    bounding: Option<CapsHashSet>,
    effective: Option<CapsHashSet>,
    permitted: Option<CapsHashSet>,
    inheritable: Option<CapsHashSet>,
    ambient: Option<CapsHashSet>,
}

impl CapPlan {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<Option<Self>, CapsError> {
        let Some(c) = caps else { return Ok(None) };
        Ok(Some(CapPlan {
            bounding: convert(c.bounding())?,
            effective: convert(c.effective())?,
            permitted: convert(c.permitted())?,
            inheritable: convert(c.inheritable())?,
            ambient: convert(c.ambient())?,
        }))
    }

    pub fn drop_bounding(&self) -> Result<(), CapsError> {
        let Some(keep) = &self.bounding else {
            return Ok(());
        };
        let supported = caps::runtime::thread_all_supported();
        for cap in supported.difference(keep) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|source| CapsError::Apply {
                op: "drop",
                set: "bounding",
                source,
            })?;
        }
        Ok(())
    }

    pub fn apply(&self) -> Result<(), CapsError> {
        let empty = CapsHashSet::new();
        let set = |which: CapSet, name: &'static str, v: &Option<CapsHashSet>| {
            caps::set(None, which, v.as_ref().unwrap_or(&empty)).map_err(|source| {
                CapsError::Apply {
                    op: "set",
                    set: name,
                    source,
                }
            })
        };
        set(CapSet::Effective, "effective", &self.effective)?;
        set(CapSet::Inheritable, "inheritable", &self.inheritable)?;
        set(CapSet::Permitted, "permitted", &self.permitted)?;
        // An ambient capability must be both permitted and inheritable; like runc,
        // one that is not is warned about and skipped, not fatal.
        let _ = caps::clear(None, CapSet::Ambient);
        for cap in self.ambient.iter().flatten() {
            if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
                tracing::warn!(%cap, error = %e, "cannot raise ambient capability (not in permitted and inheritable)");
            }
        }
        Ok(())
    }
}
