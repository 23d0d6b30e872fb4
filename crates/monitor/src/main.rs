//! `coracle-monitor`: see the library's docs for the protocol.
//!
//! ```text
//! coracle-monitor run    MonitorConfig JSON on stdin, one Handshake line on stdout
//! coracle-monitor exec   ExecConfig JSON on stdin; exits with the process's code
//! coracle-monitor pod-init  PodInitConfig JSON on stdin, one Handshake line on stdout
//! ```
//!
//! Single-threaded, no async runtime: one of these runs per container for its whole
//! life, so its size is the node's cost per container.

mod attach;
mod child_reaper;
mod container_input;
mod control;
mod cri_log;
mod error;
mod exec;
mod exec_session;
mod exit_file;
mod pod_init;
mod seqpacket;
mod spawn;
mod stdio;
mod supervisor;
mod sys;
mod timestamp;

use std::io::Write;

const USAGE: &str = "usage: coracle-monitor run|exec|pod-init (config JSON on stdin)";

fn main() {
    sys::default_sigpipe();
    let mut args = std::env::args_os().skip(1);
    let cmd = args.next();
    let code = match (cmd.as_ref().and_then(|c| c.to_str()), args.next()) {
        (Some("run"), None) => spawn::main(),
        (Some("exec"), None) => exec::main(),
        (Some("pod-init"), None) => pod_init::main(),
        (Some("--version"), None) => {
            println!("coracle-monitor {}", env!("CARGO_PKG_VERSION"));
            0
        }
        (Some("-h" | "--help"), None) => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code)
}

/// Report an error where the monitor keeps them: its stderr, which is `<dir>/monitor.log`
/// once the monitor runs (before that, the spawner's stderr). One write per message.
pub(crate) fn report(msg: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(&timestamp::now());
    let _ = write!(line, " coracle-monitor[{}]: {msg}", std::process::id());
    line.push(b'\n');
    let _ = std::io::stderr().write_all(&line);
}
