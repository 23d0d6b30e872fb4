//! remotecommand clients: client-go's `streamProtocolV1..V4` over SPDY and its
//! WebSocket executor (v5 and older) over WebSocket.

use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::transport::{dial_spdy, dial_websocket};
use super::{ClientError, ClientTls, ExecOptions, RemoteCommandOutput};
use crate::protocol;
use crate::remotecommand::websocket::{ERROR, RESIZE, STDERR, STDIN, STDOUT};
use crate::runtime::TerminalSize;
use crate::spdy::{Connection, HeaderBlock, Stream, StreamReader, StreamWriter};
use crate::websocket::{ChannelConfig, ChannelConnection, ChannelKind, Codec};

/// How long the client waits for the server to close once everything was read.
const CLIENT_LINGER: Duration = Duration::from_secs(1);

/// Runs a remotecommand over SPDY, offering `protocols` in order (e.g.
/// `["v4.channel.k8s.io", "v3.channel.k8s.io"]`), and collects the output.
pub async fn exec_spdy(
    url: &str,
    protocols: &[&str],
    options: ExecOptions,
    tls: Option<&ClientTls>,
) -> Result<RemoteCommandOutput, ClientError> {
    let (connection, protocol) = dial_spdy(url, protocols, tls).await?;
    let supports_resize = [
        protocol::REMOTECOMMAND_V3,
        protocol::REMOTECOMMAND_V4,
        protocol::REMOTECOMMAND_V5,
    ]
    .contains(&protocol.as_str());

    // client-go creates the error stream first and never writes to it.
    let error = open(&connection, "error").await?.into_split().0;
    let mut background = Vec::new();
    if let Some(stdin) = options.stdin {
        let (reader, writer) = open(&connection, "stdin").await?.into_split();
        background.push(spawn_stdin(stdin, reader, writer));
    }
    let stdout = if options.stdout {
        Some(open(&connection, "stdout").await?.into_split().0)
    } else {
        None
    };
    let stderr = if options.stderr && !options.tty {
        Some(open(&connection, "stderr").await?.into_split().0)
    } else {
        None
    };
    // client-go opens the resize stream whenever it has a tty, sizes or not.
    if options.tty && supports_resize {
        let (_, writer) = open(&connection, "resize").await?.into_split();
        if let Some(sizes) = options.resize {
            background.push(spawn_resize(sizes, writer));
        }
    }

    let (stdout, stderr, error) =
        tokio::join!(read_all(stdout), read_all(stderr), read_all(Some(error)));
    for task in background {
        task.abort();
    }
    connection.shutdown(CLIENT_LINGER).await;
    Ok(RemoteCommandOutput {
        protocol,
        stdout: stdout?,
        stderr: stderr?,
        error: error?,
    })
}

async fn open(connection: &Connection, stream_type: &str) -> Result<Stream, ClientError> {
    Ok(connection
        .open_stream(HeaderBlock::new().with("streamType", stream_type))
        .await?)
}

/// Runs a remotecommand over WebSocket, offering `protocols` in order (e.g.
/// `["v5.channel.k8s.io"]`), and collects the output once the server closes.
pub async fn exec_websocket(
    url: &str,
    protocols: &[&str],
    options: ExecOptions,
    tls: Option<&ClientTls>,
) -> Result<RemoteCommandOutput, ClientError> {
    let (ws, protocol) = dial_websocket(url, protocols, tls).await?;
    let codec = if protocol.starts_with("base64.") || protocol.contains(".base64.") {
        Codec::Base64
    } else {
        Codec::Binary
    };
    let config = ChannelConfig {
        codec,
        // Our side of the server's channels.
        channels: vec![
            ChannelKind::Write,
            ChannelKind::Read,
            ChannelKind::Read,
            ChannelKind::Read,
            ChannelKind::Write,
        ],
        receive_close_signal: false,
        send_close_signal: protocol == protocol::REMOTECOMMAND_V5,
        idle_timeout: None,
    };
    let (connection, mut channels) = ChannelConnection::start(ws, config);
    let mut take = |index: usize| {
        channels
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default()
    };
    let (stdin, stdout, stderr, error, resize) = (
        take(STDIN),
        take(STDOUT),
        take(STDERR),
        take(ERROR),
        take(RESIZE),
    );

    let mut background = Vec::new();
    if let (Some(source), Some(writer)) = (options.stdin, stdin.writer) {
        background.push(spawn_copy(source, writer));
    }
    if let (true, Some(sizes), Some(writer)) = (options.tty, options.resize, resize.writer) {
        background.push(spawn_resize(sizes, writer));
    }
    // Every channel ends when the server closes the connection.
    let (stdout, stderr, error) = tokio::join!(
        read_all(stdout.reader),
        read_all(stderr.reader),
        read_all(error.reader)
    );
    for task in background {
        task.abort();
    }
    connection.shutdown(CLIENT_LINGER).await;
    Ok(RemoteCommandOutput {
        protocol,
        stdout: stdout?,
        stderr: stderr?,
        error: error?,
    })
}

/// client-go's `copyStdin` (v2 and later): copy stdin, then half-close; and if the
/// server closes the stdin stream first, stop and half-close at once.
fn spawn_stdin(
    mut source: Pin<Box<dyn AsyncRead + Send>>,
    mut server_side: StreamReader,
    mut writer: StreamWriter,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut discard = tokio::io::sink();
        let server_closed = tokio::io::copy(&mut server_side, &mut discard);
        tokio::select! {
            _ = tokio::io::copy(&mut source, &mut writer) => {}
            _ = server_closed => {}
        }
        let _ = writer.shutdown().await;
    })
}

fn spawn_copy<W>(mut source: Pin<Box<dyn AsyncRead + Send>>, mut writer: W) -> JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if tokio::io::copy(&mut source, &mut writer).await.is_ok() {
            let _ = writer.shutdown().await;
        }
    })
}

fn spawn_resize<W>(mut sizes: mpsc::Receiver<TerminalSize>, mut writer: W) -> JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(size) = sizes.recv().await {
            let Ok(json) = serde_json::to_vec(&size) else {
                return;
            };
            if writer.write_all(&json).await.is_err() {
                return;
            }
        }
    })
}

/// Reads a stream to its end; nothing for a stream that was not opened.
async fn read_all<R: AsyncRead + Unpin>(reader: Option<R>) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    if let Some(mut reader) = reader {
        reader
            .read_to_end(&mut out)
            .await
            .map_err(ClientError::io("read remotecommand output"))?;
    }
    Ok(out)
}
