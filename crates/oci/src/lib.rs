//! Coracle's OCI executor: the Linux part of the OCI runtime spec, as a library.
//!
//! Modules are filled in by the OCI executor issue; each lifecycle operation gets a
//! file of its own (see shared STYLE: youki's `container/` layout).

pub mod cgroups;
pub mod seccomp;
