//! StopContainer: the image's STOPSIGNAL (or SIGTERM), then SIGKILL to every process
//! of the container at the timeout. Idempotent: a stopped container is success.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::model::ContainerState;
use crate::{Runtime, RuntimeError};

/// How long to wait for the exit after SIGKILL before giving up with an error.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl Runtime {
    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let container = self.existing_container(id)?;
        if container.state == ContainerState::Exited {
            return Ok(());
        }
        if !timeout.is_zero() && container.state == ContainerState::Running {
            let signal = stop_signal(&container.stop_signal);
            self.signal_container(id, signal, false).await?;
            if self.wait_container_exit(id, timeout).await {
                return Ok(());
            }
            tracing::info!(container = %id, ?timeout, "no exit after the stop signal: SIGKILL");
        }
        self.signal_container(id, Signal::SIGKILL, true).await?;
        if self.wait_container_exit(id, KILL_GRACE).await {
            return Ok(());
        }
        Err(RuntimeError::FailedPrecondition(format!(
            "container {id} did not exit within {KILL_GRACE:?} of SIGKILL"
        )))
    }

    /// Sends `signal` to the init, or with `all` to every process of the container.
    /// A container that is already gone is not an error.
    pub(crate) async fn signal_container(
        &self,
        id: &str,
        signal: Signal,
        all: bool,
    ) -> Result<(), RuntimeError> {
        let oci_root = self.dirs.oci_root();
        let container_id = id.to_owned();
        let sent = tokio::task::spawn_blocking(move || {
            let container = coracle_oci::Container::load(&oci_root, &container_id)?;
            container.kill(signal, all)
        })
        .await?;
        match sent {
            Ok(()) => Ok(()),
            // Stopped already, or its executor state is gone: nothing to signal.
            Err(coracle_oci::ContainerError::WrongStatus { .. })
            | Err(coracle_oci::ContainerError::State(coracle_oci::state::StateError::NotFound(
                _,
            ))) => Ok(()),
            Err(source) => Err(RuntimeError::Oci {
                op: "signal",
                id: id.to_owned(),
                source: Box::new(source),
            }),
        }
    }
}

/// The image's STOPSIGNAL, by name or number; SIGTERM when unset or unknown.
fn stop_signal(name: &str) -> Signal {
    if name.is_empty() {
        return Signal::SIGTERM;
    }
    coracle_oci::parse_signal(name).unwrap_or_else(|| {
        tracing::warn!(signal = %name, "unknown STOPSIGNAL in the image: using SIGTERM");
        Signal::SIGTERM
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_stop_signal_is_used() {
        assert_eq!(stop_signal(""), Signal::SIGTERM);
        assert_eq!(stop_signal("SIGQUIT"), Signal::SIGQUIT);
        assert_eq!(stop_signal("2"), Signal::SIGINT);
        assert_eq!(stop_signal("BOGUS"), Signal::SIGTERM);
    }
}
