//! Work inside a pod's network namespace. setns(2) changes only the calling thread,
//! so the work runs on a short-lived thread of its own that ends right after: a
//! pooled thread (tokio's blocking pool) must never be left in a pod's namespace.
//! Sockets made there stay in that namespace; files read through
//! `/proc/thread-self/net` show it.

use std::io;
use std::path::{Path, PathBuf};

/// Runs `work` on a new thread that first joins the network namespace at `netns`
/// (stays in the daemon's own when `None`).
pub(crate) async fn run_in_netns<T: Send + 'static>(
    netns: Option<PathBuf>,
    thread_name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || {
            let result = match netns.as_deref() {
                Some(path) => join_network_namespace(path).and_then(|()| work()),
                None => work(),
            };
            let _ = sender.send(result);
        })?;
    receiver.await.map_err(|_| {
        io::Error::other(format!("the {thread_name} thread ended without an answer"))
    })?
}

fn join_network_namespace(path: &Path) -> io::Result<()> {
    let context =
        |op: &str, e: io::Error| io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| context("open", e))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| context("setns", e.into()))
}
