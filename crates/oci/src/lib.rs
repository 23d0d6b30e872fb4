//! Coracle's OCI executor: the Linux part of the OCI runtime spec, as a library.
//!
//! `Container::create` forks (see [`process`]): call it from a single-threaded
//! process. Layout follows youki's libcontainer: one file per lifecycle operation
//! under [`container`], the process chain under [`process`], rootfs work under
//! [`rootfs`].

pub mod cgroups;
pub mod container;
pub mod hooks;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod state;
mod sys;

pub use container::{
    Container, ContainerError, CreateOptions, ExecOptions, ExecProcess, parse_signal,
};
pub use process::Stdio;
pub use state::{OciState, Status};
