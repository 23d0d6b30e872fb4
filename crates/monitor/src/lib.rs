//! The container monitor: one small single-threaded process per container, detached
//! from the daemon. It creates the container through `coracle-oci` (so it is the
//! init's parent), owns the container's stdio, writes the CRI log, and records the
//! exit status in a file before it exits. The daemon learns of that exit through a
//! pidfd on the monitor.
//!
//! This library holds the protocol between the daemon and the monitor binary; the
//! binary's own modules live beside `main.rs`, one per responsibility (conmon-rs's
//! layout): `spawn` (the double fork and handshake relay), `supervisor` (setup and the
//! poll loop), `stdio` (pipes, console socket), `cri_log`, `control`, `attach` (the
//! attach socket's clients), `container_input` (stdin and pty of a container or exec),
//! `seqpacket`, `child_reaper`, `exit_file`, `exec` (ExecSync), `exec_session`
//! (interactive exec), `timestamp`, `sys`.
//!
//! Memory: one monitor runs per container, so it is single-threaded, has no async
//! runtime, is linked position-dependent (see `build.rs`) and drops the code pages
//! `create` used once it is done; see `monitor_memory_is_measured` for the figures.

pub mod protocol;
