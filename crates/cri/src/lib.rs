//! The CRI gRPC server: RuntimeService and ImageService, `runtime.v1` and
//! `runtime.v1alpha2`, over a unix socket. Validates requests, translates CRI to the
//! runtime's model and back, and maps errors to gRPC codes in one place.

pub mod api_version;
mod container_create;
mod container_list;
mod container_status;
pub mod error;
mod events;
mod image_service;
pub mod metrics;
mod pod_metrics;
pub mod rpc_log;
mod runtime_service;
mod sandbox_list;
mod sandbox_run;
mod sandbox_status;
pub mod server;
pub mod service;
pub mod socket;
mod stats;
mod status;
pub mod streaming;
mod translate;
pub mod version;

pub use metrics::{Metrics, serve_metrics};
pub use server::{MAX_MESSAGE_BYTES, ServeError, serve};
pub use service::{CgroupDriver, CriOptions, CriService};
pub use socket::{ListenSocket, SocketError, bind};
