//! The OCI seccomp object compiled to a BPF filter with libseccomp.
