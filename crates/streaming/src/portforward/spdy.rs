//! Port forwarding over SPDY (kubelet's `portforward/httpstream.go`). For every
//! forwarded TCP connection the client opens an `error` and a `data` stream with the
//! same `requestID` and the target `port`. Once both are there, the data stream goes
//! to the runtime; a failure is reported on the error stream, which is then closed.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::debug;

use super::{forward_error_message, parse_port};
use crate::error::StreamingError;
use crate::server::{LINGER, ServerContext};
use crate::spdy::{
    Connection, ConnectionConfig, HeaderBlock, Role, RstStatus, Stream, StreamWriter,
};

pub(crate) const PROTOCOLS: &[&str] = &[crate::protocol::PORTFORWARD_V1];

const STREAM_TYPE_HEADER: &str = "streamtype";
const PORT_HEADER: &str = "port";
const REQUEST_ID_HEADER: &str = "requestid";

/// The error stream's JSON (kubelet's `portForwardErrResponse`): recent clients keep
/// the session when `closeConnection` is false; older ones print the text.
#[derive(Serialize)]
struct ForwardErrorResponse {
    #[serde(rename = "closeConnection", skip_serializing_if = "std::ops::Not::not")]
    close_connection: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
}

#[derive(Default)]
struct PendingPair {
    data: Option<Stream>,
    error: Option<Stream>,
    timeout: Option<delay_queue::Key>,
}

/// Accepts only streams kubelet accepts: a valid port and a known stream type.
fn validate_headers(headers: &HeaderBlock) -> Result<(), String> {
    let port = headers
        .get(PORT_HEADER)
        .ok_or_else(|| format!("{PORT_HEADER:?} header is required"))?;
    parse_port(port)?;
    match headers.get(STREAM_TYPE_HEADER) {
        Some("error" | "data") => Ok(()),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err(format!("{STREAM_TYPE_HEADER:?} header is required")),
    }
}

pub(crate) async fn serve<T>(io: T, pod_sandbox_id: String, ctx: Arc<ServerContext>)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut config = ConnectionConfig::new(Role::Server);
    config.idle_timeout = Some(ctx.config.stream_idle_timeout);
    config.stream_filter = Some(Arc::new(validate_headers));
    let (connection, mut incoming) = Connection::start(io, config);
    let mut pending: HashMap<String, PendingPair> = HashMap::new();
    let mut timeouts: DelayQueue<String> = DelayQueue::new();
    let mut forwards = JoinSet::new();
    loop {
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { break };
                let request_id = request_id(&stream);
                let pair = pending.entry(request_id.clone()).or_default();
                if pair.timeout.is_none() {
                    pair.timeout = Some(timeouts.insert(request_id.clone(), ctx.config.stream_creation_timeout));
                }
                if let Err(message) = pair.add(stream) {
                    let message = format!("error processing stream for request {request_id}: {message}");
                    debug!(%message, "portforward");
                    pair.print_error(&message).await;
                }
                if pair.is_complete() {
                    if let Some(pair) = pending.remove(&request_id) {
                        if let Some(key) = &pair.timeout {
                            timeouts.remove(key);
                        }
                        start_forward(&mut forwards, pair, &pod_sandbox_id, &ctx);
                    }
                }
            }
            Some(expired) = timeouts.next(), if !timeouts.is_empty() => {
                let request_id = expired.into_inner();
                if let Some(mut pair) = pending.remove(&request_id) {
                    pair.timeout = None;
                    let message = format!("timed out waiting for streams of request {request_id}");
                    debug!(%message, "portforward");
                    pair.print_error(&message).await;
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    // The client is gone: stop forwarding for it.
    forwards.shutdown().await;
    connection.shutdown(LINGER).await;
}

/// The stream's `requestID`. Very old clients send none; kubelet then pairs streams
/// by id (error stream `n`, data stream `n+2`), which works without concurrency.
fn request_id(stream: &Stream) -> String {
    if let Some(id) = stream.headers().get(REQUEST_ID_HEADER) {
        return id.to_owned();
    }
    let id = stream.id();
    match stream.headers().get(STREAM_TYPE_HEADER) {
        Some("data") => id.saturating_sub(2).to_string(),
        _ => id.to_string(),
    }
}

impl PendingPair {
    fn add(&mut self, stream: Stream) -> Result<(), &'static str> {
        let (slot, what) = match stream.headers().get(STREAM_TYPE_HEADER) {
            Some("error") => (&mut self.error, "error stream already assigned"),
            _ => (&mut self.data, "data stream already assigned"),
        };
        if slot.is_some() {
            stream.reset(RstStatus::PROTOCOL_ERROR);
            return Err(what);
        }
        *slot = Some(stream);
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.data.is_some() && self.error.is_some()
    }

    async fn print_error(&mut self, message: &str) {
        if let Some(error) = &mut self.error {
            let _ = error.write_all(message.as_bytes()).await;
        }
    }
}

fn start_forward(
    forwards: &mut JoinSet<()>,
    pair: PendingPair,
    pod_sandbox_id: &str,
    ctx: &Arc<ServerContext>,
) {
    let (Some(data), Some(error)) = (pair.data, pair.error) else {
        return;
    };
    // Validated by the stream filter; a bad value cannot get here.
    let Some(Ok(port)) = data.headers().get(PORT_HEADER).map(parse_port) else {
        return;
    };
    let (_, error) = error.into_split();
    let forward = ctx
        .runtime
        .port_forward(pod_sandbox_id.to_owned(), port, Box::new(data));
    let pod_sandbox_id = pod_sandbox_id.to_owned();
    forwards.spawn(async move {
        if let Err(err) = forward.await {
            report_error(error, port, &pod_sandbox_id, &err).await;
        }
    });
}

async fn report_error(
    mut error: StreamWriter,
    port: u16,
    pod_sandbox_id: &str,
    err: &StreamingError,
) {
    // A reset or broken pipe towards the pod is routine; anything else may mean the
    // whole forward is broken, and the client may close the session.
    let routine = matches!(
        err.io_kind(),
        Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    );
    let response = ForwardErrorResponse {
        close_connection: !routine,
        message: forward_error_message(port, pod_sandbox_id, err),
    };
    debug!(message = %response.message, "portforward");
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    let _ = error.write_all(&bytes).await;
    let _ = error.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_need_a_port_and_a_known_type() {
        let ok = HeaderBlock::new()
            .with("streamType", "data")
            .with("port", "80");
        assert!(validate_headers(&ok).is_ok());
        let no_port = HeaderBlock::new().with("streamType", "data");
        assert!(validate_headers(&no_port).is_err());
        let zero = HeaderBlock::new()
            .with("streamType", "data")
            .with("port", "0");
        assert!(validate_headers(&zero).is_err());
        let big = HeaderBlock::new()
            .with("streamType", "data")
            .with("port", "65536");
        assert!(validate_headers(&big).is_err());
        let bad_type = HeaderBlock::new()
            .with("streamType", "stdin")
            .with("port", "80");
        assert!(validate_headers(&bad_type).is_err());
    }

    #[test]
    fn error_response_json_is_kubelets() {
        let response = ForwardErrorResponse {
            close_connection: true,
            message: "boom".into(),
        };
        assert_eq!(
            serde_json::to_string(&response).expect("json"),
            r#"{"closeConnection":true,"message":"boom"}"#
        );
        let routine = ForwardErrorResponse {
            close_connection: false,
            message: "reset".into(),
        };
        assert_eq!(
            serde_json::to_string(&routine).expect("json"),
            r#"{"message":"reset"}"#
        );
    }
}
