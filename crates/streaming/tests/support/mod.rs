//! Shared by the integration tests: a fake runtime and a TCP echo server.
//!
//! The fake runtime interprets the command instead of running it:
//! - `echo ARGS...`: ARGS joined by spaces and a newline on stdout, exit 0;
//! - `cat`: stdin copied to stdout until EOF, exit 0;
//! - `exit N`: exit code N;
//! - `stderr TEXT...`: TEXT on stderr (stdout if there is none), exit 0;
//! - `tty`: prints `tty=<bool> stdin=<bool> stderr=<bool>`;
//! - `resize N`: prints `WxH` for each of the next N resize events, exit 0;
//! - `fail`: the runtime errors;
//! - `sleep`: never finishes (drop is counted in `dropped`).
//!
//! Container `missing` is not found. `attach` prints `attached ID` then echoes stdin.
//! `port_forward` connects to 127.0.0.1:PORT and copies both ways.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coracle_streaming::{
    AsyncReadWrite, BoxFuture, ProcessIo, StreamingConfig, StreamingError, StreamingRuntime,
    StreamingServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every test is bounded by this: a protocol bug shows as a timeout, not a hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default, Clone)]
pub struct FakeRuntime {
    /// `sleep` execs dropped before they finished (the client went away).
    pub dropped: Arc<AtomicUsize>,
}

struct DropCounter(Arc<AtomicUsize>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl FakeRuntime {
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    async fn run(
        self,
        container_id: String,
        cmd: Vec<String>,
        mut io: ProcessIo,
    ) -> Result<i32, StreamingError> {
        if container_id == "missing" {
            return Err(StreamingError::NotFound {
                kind: "container",
                id: container_id,
            });
        }
        let args = cmd[1..].join(" ");
        match cmd[0].as_str() {
            "echo" => write(&mut io, false, format!("{args}\n").as_bytes()).await,
            "cat" => copy_stdin_to_stdout(&mut io).await.map(|()| 0),
            "exit" => Ok(args.parse().unwrap_or(1)),
            "stderr" => write(&mut io, true, format!("{args}\n").as_bytes()).await,
            "tty" => {
                let line = format!(
                    "tty={} stdin={} stderr={}\n",
                    io.tty,
                    io.stdin.is_some(),
                    io.stderr.is_some()
                );
                write(&mut io, false, line.as_bytes()).await
            }
            "resize" => {
                let count: usize = args.parse().unwrap_or(0);
                let mut resize = io
                    .resize
                    .take()
                    .ok_or_else(|| StreamingError::Runtime("no resize channel".into()))?;
                for _ in 0..count {
                    let Some(size) = resize.recv().await else {
                        break;
                    };
                    write(
                        &mut io,
                        false,
                        format!("{}x{}\n", size.width, size.height).as_bytes(),
                    )
                    .await?;
                }
                Ok(0)
            }
            "fail" => Err(StreamingError::Runtime("boom".into())),
            "sleep" => {
                let _counter = DropCounter(self.dropped.clone());
                std::future::pending::<()>().await;
                Ok(0)
            }
            other => Err(StreamingError::Runtime(format!(
                "fake runtime: unknown command {other}"
            ))),
        }
    }
}

async fn write(io: &mut ProcessIo, to_stderr: bool, bytes: &[u8]) -> Result<i32, StreamingError> {
    let out = match (to_stderr, io.stderr.as_mut()) {
        (true, Some(stderr)) => Some(stderr),
        _ => io.stdout.as_mut(),
    };
    if let Some(out) = out {
        out.write_all(bytes)
            .await
            .map_err(|err| StreamingError::io("write output", err))?;
    }
    Ok(0)
}

async fn copy_stdin_to_stdout(io: &mut ProcessIo) -> Result<(), StreamingError> {
    if let (Some(stdin), Some(stdout)) = (io.stdin.as_mut(), io.stdout.as_mut()) {
        tokio::io::copy(stdin, stdout)
            .await
            .map_err(|err| StreamingError::io("copy stdin to stdout", err))?;
    }
    Ok(())
}

impl StreamingRuntime for FakeRuntime {
    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        io: ProcessIo,
    ) -> BoxFuture<'static, Result<i32, StreamingError>> {
        Box::pin(self.clone().run(container_id, cmd, io))
    }

    fn attach(
        &self,
        container_id: String,
        mut io: ProcessIo,
    ) -> BoxFuture<'static, Result<(), StreamingError>> {
        Box::pin(async move {
            write(
                &mut io,
                false,
                format!("attached {container_id}\n").as_bytes(),
            )
            .await?;
            copy_stdin_to_stdout(&mut io).await
        })
    }

    fn port_forward(
        &self,
        _pod: String,
        port: u16,
        mut stream: Box<dyn AsyncReadWrite>,
    ) -> BoxFuture<'static, Result<(), StreamingError>> {
        Box::pin(async move {
            let mut target = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|err| StreamingError::io(format!("connect to port {port}"), err))?;
            tokio::io::copy_bidirectional(&mut stream, &mut target)
                .await
                .map_err(|err| StreamingError::io("copy", err))?;
            Ok(())
        })
    }
}

/// A started server with the fake runtime behind it.
pub struct TestServer {
    pub server: StreamingServer,
    pub runtime: FakeRuntime,
}

pub async fn start_server(config: StreamingConfig) -> TestServer {
    let runtime = FakeRuntime::default();
    let server = StreamingServer::start(config, Arc::new(runtime.clone()))
        .await
        .expect("start streaming server");
    TestServer { server, runtime }
}

pub async fn start_default_server() -> TestServer {
    start_server(StreamingConfig::default()).await
}

/// A TCP server on 127.0.0.1 echoing every connection until EOF, then closing it.
pub async fn start_echo_server() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind echo server");
    let addr = listener.local_addr().expect("echo server address");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
                let _ = writer.shutdown().await;
            });
        }
    });
    addr
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    listener.local_addr().expect("address").port()
}

/// `n` bytes of a pattern that makes misordered chunks visible.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Runs `future` with [`TEST_TIMEOUT`].
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test timed out")
}

/// Reads a stream to its end, for tests of raw HTTP answers.
pub async fn read_to_string<R: tokio::io::AsyncRead + Unpin>(mut reader: R) -> String {
    let mut out = String::new();
    reader.read_to_string(&mut out).await.expect("read");
    out
}
