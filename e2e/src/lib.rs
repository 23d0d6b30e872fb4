//! The end-to-end harness: the real `coracled` binary on a temp socket with temp
//! root and state dirs, a CRI client speaking gRPC as kubelet and crictl do, and a
//! real registry on 127.0.0.1 loaded with the `hack/test-images` images.

pub mod cri;
pub mod daemon;
pub mod fixtures;
pub mod network;
pub mod pod_net;
pub mod registry;

pub use daemon::{Daemon, DaemonOptions};
pub use registry::{Registry, TestImage};

use std::path::PathBuf;

/// The workspace root (the e2e crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e crate has a parent directory")
        .to_owned()
}

/// Tests that need root say so loudly instead of skipping: CI runs as root, and a
/// skipped kernel test would hide a broken runtime.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this end-to-end test needs root (namespaces, mounts, cgroups); run the suite as root"
    );
}
