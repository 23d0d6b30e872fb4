//! Port forwarding: TCP connections into the pod's network namespace, carried over
//! SPDY (many connections per HTTP connection) or WebSocket (one per port).

pub(crate) mod spdy;
pub(crate) mod websocket;

/// kubelet's error text, `uid` being empty for CRI runtimes.
pub(crate) fn forward_error_message(
    port: u16,
    pod_sandbox_id: &str,
    err: &crate::StreamingError,
) -> String {
    format!("error forwarding port {port} to pod {pod_sandbox_id}, uid : {err}")
}

/// Parses a port as kubelet does (`ParseUint(.., 10, 16)` and > 0).
pub(crate) fn parse_port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(0) => Err(format!("port {value:?} must be > 0")),
        Ok(port) => Ok(port),
        Err(err) => Err(format!("unable to parse {value:?} as a port: {err}")),
    }
}
