//! The CRI service: one value implementing both RuntimeService and ImageService.

use std::sync::Arc;

use coracle_runtime::Runtime;

use crate::metrics::Metrics;

/// How pod cgroups are managed; kubelet's `--cgroup-driver` must match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// What the CRI layer needs to know of the daemon's configuration.
#[derive(Clone, Debug)]
pub struct CriOptions {
    /// The effective configuration as JSON, shown by `Status` with verbose (`crictl info`).
    pub effective_config_json: String,
    pub cgroup_driver: CgroupDriver,
}

/// Cheap to clone: tonic clones the service for every connection.
#[derive(Clone)]
pub struct CriService {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) options: Arc<CriOptions>,
    pub(crate) metrics: Arc<Metrics>,
    /// Serves the URLs Exec, Attach and PortForward return.
    pub(crate) streaming: Option<Arc<coracle_streaming::StreamingServer>>,
}

impl CriService {
    pub fn new(runtime: Arc<Runtime>, options: CriOptions) -> Self {
        Self {
            runtime,
            options: Arc::new(options),
            metrics: Arc::new(Metrics::new()),
            streaming: None,
        }
    }

    /// Exec, Attach and PortForward hand out URLs of `server`.
    pub fn with_streaming(mut self, server: Arc<coracle_streaming::StreamingServer>) -> Self {
        self.streaming = Some(server);
        self
    }

    /// The daemon's metrics, for the metrics endpoint.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(&self.runtime)
    }
}
