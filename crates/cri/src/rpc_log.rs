//! One log line per RPC: at debug with its duration when it succeeds, at warn with
//! the gRPC code and the whole cause chain when it fails; and the RPC's count,
//! latency and error code in the daemon's metrics.
//!
//! It sits in front of every service, so no handler has to remember to log. Handler
//! errors travel as a trailers-only response, so `grpc-status` is in the headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use tower::{Layer, Service};

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct RpcLogLayer {
    metrics: Arc<Metrics>,
}

impl RpcLogLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct RpcLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcLog<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let rpc = request.uri().path().to_owned();
        let started = Instant::now();
        let response = self.inner.call(request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let result = response.await;
            let elapsed = started.elapsed();
            let error = log_outcome(&rpc, elapsed, &result);
            let name = rpc.rsplit('/').next().unwrap_or(&rpc);
            metrics.record_rpc(name, elapsed, error.as_deref());
            result
        })
    }
}

/// Logs the outcome; returns the gRPC code's name when the RPC failed.
fn log_outcome<B, E: std::fmt::Display>(
    rpc: &str,
    elapsed: Duration,
    result: &Result<http::Response<B>, E>,
) -> Option<String> {
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    match result {
        Err(err) => {
            tracing::warn!(rpc, duration_ms, error = %err, "rpc failed in transport");
            Some("Transport".to_owned())
        }
        Ok(response) => match grpc_error(response.headers()) {
            None => {
                tracing::debug!(rpc, duration_ms, "rpc");
                None
            }
            Some((code, message)) => {
                tracing::warn!(rpc, duration_ms, code = ?code, error = %message, "rpc failed");
                Some(format!("{code:?}"))
            }
        },
    }
}

/// The gRPC code and decoded message when the response headers carry an error.
fn grpc_error(headers: &http::HeaderMap) -> Option<(tonic::Code, String)> {
    let status = headers.get("grpc-status")?.to_str().ok()?;
    let code = tonic::Code::from_bytes(status.as_bytes());
    if code == tonic::Code::Ok {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
        .map(|raw| percent_decode_str(raw).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    Some((code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_headers_are_decoded() {
        let status = tonic::Status::not_found("pod a b: not here");
        let response = status.into_http::<()>();
        let (code, message) = grpc_error(response.headers()).unwrap();
        assert_eq!(code, tonic::Code::NotFound);
        assert_eq!(message, "pod a b: not here");
    }

    #[test]
    fn success_headers_are_not_an_error() {
        let mut headers = http::HeaderMap::new();
        assert!(grpc_error(&headers).is_none());
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert!(grpc_error(&headers).is_none());
    }
}
