//! remotecommand over SPDY (kubelet's `createHTTPStreamStreams` and the v1–v4
//! protocol handlers): the client opens one stream per stdio channel, tagged with a
//! `streamType` header, plus `error` and, with a tty from v3 on, `resize`.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::{Action, Session, Version};
use crate::protocol;
use crate::request::StdioOptions;
use crate::server::{LINGER, ServerContext};
use crate::spdy::{Connection, ConnectionConfig, IncomingStreams, Role, Stream, StreamWriter};

/// What this server speaks, most preferred first (kubelet's
/// `SupportedStreamingProtocols`). v5 is v4 on SPDY: its close signal is a
/// WebSocket feature, SPDY has half-close.
pub(crate) const PROTOCOLS: &[(&str, Version)] = &[
    (protocol::REMOTECOMMAND_V5, Version::V4),
    (protocol::REMOTECOMMAND_V4, Version::V4),
    (protocol::REMOTECOMMAND_V3, Version::V3),
    (protocol::REMOTECOMMAND_V2, Version::V2),
    (protocol::REMOTECOMMAND_V1, Version::V1),
];

pub(crate) const STREAM_TYPE_HEADER: &str = "streamtype";

#[derive(Default)]
struct ReceivedStreams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// Serves one upgraded connection: waits for the streams, runs the action, reports
/// the outcome and closes.
pub(crate) async fn serve<T>(
    io: T,
    version: Version,
    stdio: StdioOptions,
    action: Action,
    ctx: Arc<ServerContext>,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut config = ConnectionConfig::new(Role::Server);
    config.idle_timeout = Some(ctx.config.stream_idle_timeout);
    let (connection, mut incoming) = Connection::start(io, config);
    let expected = expected_stream_count(version, stdio);
    let received = tokio::time::timeout(
        ctx.config.stream_creation_timeout,
        receive_streams(&mut incoming, expected, version),
    )
    .await;
    let streams = match received {
        Ok(Some(streams)) => streams,
        Ok(None) => {
            debug!("remotecommand: connection closed before the client created its streams");
            return;
        }
        Err(_) => {
            warn!(
                expected,
                "remotecommand: timed out waiting for client to create streams"
            );
            connection.shutdown(LINGER).await;
            return;
        }
    };
    let (session, unused_writers) = streams.into_session(stdio, version);
    super::run(session, action, &ctx.runtime, connection.closed()).await;
    // Only now may stdin and resize be closed on our side: client-go stops sending
    // stdin as soon as the server closes the stdin stream.
    drop(unused_writers);
    connection.shutdown(LINGER).await;
}

/// One stream per requested stdio channel, the error stream, and resize for a tty
/// when the version has it.
fn expected_stream_count(version: Version, stdio: StdioOptions) -> usize {
    1 + usize::from(stdio.stdin)
        + usize::from(stdio.stdout)
        + usize::from(stdio.stderr)
        + usize::from(stdio.tty && version.supports_resize())
}

/// Collects streams until `expected` known ones arrived; `None` if the connection
/// ends first. Unknown stream types are accepted but not counted, as in kubelet.
async fn receive_streams(
    incoming: &mut IncomingStreams,
    expected: usize,
    version: Version,
) -> Option<ReceivedStreams> {
    let mut streams = ReceivedStreams::default();
    let mut received = 0;
    while received < expected {
        let stream = incoming.recv().await?;
        let slot = match stream.headers().get(STREAM_TYPE_HEADER) {
            Some("error") => &mut streams.error,
            Some("stdin") => &mut streams.stdin,
            Some("stdout") => &mut streams.stdout,
            Some("stderr") => &mut streams.stderr,
            Some("resize") if version.supports_resize() => &mut streams.resize,
            other => {
                debug!(stream_type = ?other, "remotecommand: unexpected stream type");
                continue;
            }
        };
        *slot = Some(stream);
        received += 1;
    }
    Some(streams)
}

impl ReceivedStreams {
    /// The session, and the write halves of the streams only the client writes to
    /// (stdin, resize). Those must stay open while the session runs: dropping one
    /// sends our FIN, and client-go answers a FIN on stdin by closing stdin.
    fn into_session(self, stdio: StdioOptions, version: Version) -> (Session, Vec<StreamWriter>) {
        let mut unused_writers = Vec::new();
        let mut reader = |stream: Option<Stream>| {
            stream.map(|stream| {
                let (reader, writer) = stream.into_split();
                unused_writers.push(writer);
                Box::pin(reader) as _
            })
        };
        let stdin = if stdio.stdin {
            reader(self.stdin)
        } else {
            None
        };
        let resize = reader(self.resize);
        // Whatever the client might send on an output stream is discarded.
        let writer = |stream: Option<Stream>| stream.map(|s| Box::pin(s.into_split().1) as _);
        let session = Session {
            stdin,
            stdout: if stdio.stdout {
                writer(self.stdout)
            } else {
                None
            },
            stderr: if stdio.stderr && !stdio.tty {
                writer(self.stderr)
            } else {
                None
            },
            resize,
            error: writer(self.error),
            tty: stdio.tty,
            version,
        };
        (session, unused_writers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> StdioOptions {
        StdioOptions {
            stdin,
            stdout,
            stderr,
            tty,
        }
    }

    #[test]
    fn expected_streams_follow_kubelet() {
        assert_eq!(
            expected_stream_count(Version::V4, stdio(true, true, true, false)),
            4
        );
        assert_eq!(
            expected_stream_count(Version::V4, stdio(true, true, false, true)),
            4
        );
        assert_eq!(
            expected_stream_count(Version::V2, stdio(true, true, false, true)),
            3
        );
        assert_eq!(
            expected_stream_count(Version::V1, stdio(false, true, false, false)),
            2
        );
    }
}
