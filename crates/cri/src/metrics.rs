//! The daemon's own Prometheus metrics: per-RPC counts, errors and latency, pods and
//! containers by state, image pulls (bytes and durations), and the container
//! monitors alive. Served as OpenMetrics text (what Prometheus scrapes) on `metrics_address` when the config
//! sets one (off by default); counted always, which costs a few atomic adds per RPC.
//!
//! prometheus-client (the Prometheus project's Rust client) does the text format and
//! the histogram buckets; a hand-written encoder would have to track the exposition
//! format's escaping and `_total`/`_bucket` conventions itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coracle_runtime::Runtime;
use coracle_runtime::model::{ContainerState, PodState};
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcErrorLabels {
    rpc: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

fn rpc_histogram() -> Histogram {
    // 0.25 ms .. ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn pull_histogram() -> Histogram {
    // 50 ms .. ~27 min.
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_errors: Family<RpcErrorLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    image_pulls: Family<OutcomeLabels, Counter>,
    image_pull_duration: Histogram,
    image_pull_bytes: Counter,
    pods: Family<StateLabels, Gauge>,
    containers: Family<StateLabels, Gauge>,
    monitors_alive: Gauge,
    /// One scrape at a time: the pull-bytes counter is levelled with the image
    /// store's count by a read-then-add that two scrapes must not interleave.
    render: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("coracle");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register("rpc_requests", "CRI RPCs handled", rpc_requests.clone());
        let rpc_errors = Family::<RpcErrorLabels, Counter>::default();
        registry.register(
            "rpc_errors",
            "CRI RPCs that failed, by gRPC code",
            rpc_errors.clone(),
        );
        let rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(rpc_histogram);
        registry.register(
            "rpc_duration_seconds",
            "Time to answer a CRI RPC",
            rpc_duration.clone(),
        );
        let image_pulls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "image_pulls",
            "PullImage calls, by outcome",
            image_pulls.clone(),
        );
        let image_pull_duration = pull_histogram();
        registry.register(
            "image_pull_duration_seconds",
            "Time of successful image pulls",
            image_pull_duration.clone(),
        );
        let image_pull_bytes = Counter::default();
        registry.register(
            "image_pull_bytes",
            "Blob bytes received from registries",
            image_pull_bytes.clone(),
        );
        let pods = Family::<StateLabels, Gauge>::default();
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        let containers = Family::<StateLabels, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let monitors_alive = Gauge::default();
        registry.register(
            "monitors_alive",
            "Container monitor processes running",
            monitors_alive.clone(),
        );
        Self {
            registry,
            rpc_requests,
            rpc_errors,
            rpc_duration,
            image_pulls,
            image_pull_duration,
            image_pull_bytes,
            pods,
            containers,
            monitors_alive,
            render: std::sync::Mutex::new(()),
        }
    }

    /// Counts one RPC (`rpc` is the gRPC path's last segment, e.g. "RunPodSandbox");
    /// `error` is the gRPC code name of a failure.
    pub fn record_rpc(&self, rpc: &str, elapsed: Duration, error: Option<&str>) {
        let labels = RpcLabels {
            rpc: rpc.to_owned(),
        };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            self.rpc_errors
                .get_or_create(&RpcErrorLabels {
                    rpc: labels.rpc,
                    code: code.to_owned(),
                })
                .inc();
        }
    }

    pub fn record_pull(&self, elapsed: Duration, succeeded: bool) {
        let outcome = if succeeded { "success" } else { "failure" };
        self.image_pulls
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        if succeeded {
            self.image_pull_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// The whole exposition, with the state gauges read from the runtime now.
    pub fn render(&self, runtime: &Runtime) -> String {
        // Guards no data of its own: a poisoned lock is still a usable lock.
        let _one_at_a_time = self.render.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh_state(runtime);
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "encoding metrics failed");
        }
        text
    }

    fn refresh_state(&self, runtime: &Runtime) {
        let pods = runtime.pods().list();
        for (state, name) in [(PodState::Ready, "ready"), (PodState::NotReady, "notready")] {
            let count = pods.iter().filter(|p| p.state == state).count();
            self.pods
                .get_or_create(&state_label(name))
                .set(to_i64(count));
        }
        let containers = runtime.containers().list();
        for (state, name) in [
            (ContainerState::Created, "created"),
            (ContainerState::Running, "running"),
            (ContainerState::Exited, "exited"),
            (ContainerState::Unknown, "unknown"),
        ] {
            let count = containers
                .iter()
                .filter(|c| !c.creating && c.state == state)
                .count();
            self.containers
                .get_or_create(&state_label(name))
                .set(to_i64(count));
        }
        self.monitors_alive.set(to_i64(runtime.monitors_alive()));
        // The image store counts bytes as they arrive; bring the counter level with it.
        let received = runtime.images().blob_bytes();
        let counted = self.image_pull_bytes.get();
        if received > counted {
            self.image_pull_bytes.inc_by(received - counted);
        }
    }
}

fn state_label(state: &str) -> StateLabels {
    StateLabels {
        state: state.to_owned(),
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsServeError {
    #[error("metrics endpoint: bind {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the metrics endpoint and serves `GET /metrics` until the task is dropped.
/// Returns the bound address (port 0 picks a free one).
pub async fn serve_metrics(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsServeError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| MetricsServeError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsServeError::Bind { address, source })?;
    let task = tokio::spawn(accept_loop(listener, metrics, runtime));
    Ok((bound, task))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, runtime) = (Arc::clone(&metrics), Arc::clone(&runtime));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, &metrics, &runtime);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %err, "metrics endpoint: connection ended");
            }
        });
    }
}

/// prometheus-client writes the OpenMetrics text format (Prometheus's own text format
/// plus `# EOF` and `_total` naming rules); Prometheus negotiates it by this type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond<B>(
    request: &hyper::Request<B>,
    metrics: &Metrics,
    runtime: &Runtime,
) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) =
        if request.method() == hyper::Method::GET && request.uri().path() == "/metrics" {
            (hyper::StatusCode::OK, CONTENT_TYPE, metrics.render(runtime))
        } else {
            (
                hyper::StatusCode::NOT_FOUND,
                "text/plain",
                "not found: the metrics are at GET /metrics\n".to_owned(),
            )
        };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        text
    }

    #[test]
    fn rpcs_are_counted_timed_and_errors_coded() {
        let metrics = Metrics::new();
        metrics.record_rpc("RunPodSandbox", Duration::from_millis(3), None);
        metrics.record_rpc("RunPodSandbox", Duration::from_millis(5), Some("NotFound"));
        let text = encode(&metrics);
        assert!(
            text.contains("coracle_rpc_requests_total{rpc=\"RunPodSandbox\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("coracle_rpc_errors_total{rpc=\"RunPodSandbox\",code=\"NotFound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("coracle_rpc_duration_seconds_count{rpc=\"RunPodSandbox\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn failed_pulls_are_counted_but_not_timed() {
        let metrics = Metrics::new();
        metrics.record_pull(Duration::from_secs(1), true);
        metrics.record_pull(Duration::from_secs(9), false);
        let text = encode(&metrics);
        assert!(
            text.contains("coracle_image_pulls_total{outcome=\"failure\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("coracle_image_pull_duration_seconds_count 1"),
            "{text}"
        );
    }
}
