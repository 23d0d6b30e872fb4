//! The container monitor: one small single-threaded process per container, detached
//! from the daemon. It creates the container through `coracle-oci` (so it is the
//! init's parent), owns the container's stdio, writes the CRI log, and records the
//! exit status in a file before it exits. The daemon learns of that exit through a
//! pidfd on the monitor.
//!
//! This library holds the protocol between the daemon and the monitor binary; the
//! binary's own modules live beside `main.rs`.

pub mod protocol;
