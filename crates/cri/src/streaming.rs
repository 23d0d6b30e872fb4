//! CRI `Exec`, `Attach` and `PortForward`: the checks, then a single-use URL from the
//! streaming server (`crates/streaming`); and the runtime behind that server, which
//! runs the sessions the clients open there through `coracle_runtime`.

use std::sync::Arc;

use coracle_runtime::{Runtime, RuntimeError, StreamIo, TerminalSize};
use coracle_streaming::{
    AsyncReadWrite, AttachRequest, BoxFuture, ErrorKind, ExecRequest, PortForwardRequest,
    ProcessIo, StreamingError, StreamingRuntime, StreamingServer,
};
use k8s_cri::v1;
use tonic::{Code, Status};

use crate::error::{CriError, cause_chain};
use crate::service::CriService;

impl CriService {
    fn streaming_server(&self) -> Result<&StreamingServer, Status> {
        self.streaming.as_deref().ok_or_else(|| {
            Status::unavailable("the streaming server is not running (see the daemon's log)")
        })
    }

    /// The container must exist and run: kubelet and crictl expect the error here,
    /// not after the client upgraded its connection.
    fn require_running(&self, id: &str) -> Result<(), Status> {
        self.runtime
            .running_container(id)
            .map(drop)
            .map_err(|err| CriError::from(err).into())
    }

    pub(crate) fn get_exec(&self, request: v1::ExecRequest) -> Result<String, Status> {
        self.require_running(&request.container_id)?;
        let request = ExecRequest {
            container_id: request.container_id,
            cmd: request.cmd,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        self.streaming_server()?
            .get_exec(request)
            .map_err(streaming_status)
    }

    pub(crate) fn get_attach(&self, request: v1::AttachRequest) -> Result<String, Status> {
        self.require_running(&request.container_id)?;
        let request = AttachRequest {
            container_id: request.container_id,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        };
        self.streaming_server()?
            .get_attach(request)
            .map_err(streaming_status)
    }

    pub(crate) fn get_port_forward(
        &self,
        request: v1::PortForwardRequest,
    ) -> Result<String, Status> {
        self.runtime
            .ready_pod(&request.pod_sandbox_id)
            .map_err(CriError::from)?;
        let request = PortForwardRequest {
            pod_sandbox_id: request.pod_sandbox_id,
            port: request.port,
        };
        self.streaming_server()?
            .get_port_forward(request)
            .map_err(streaming_status)
    }
}

fn streaming_status(err: StreamingError) -> Status {
    let code = match err.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, err.to_string())
}

/// The runtime the streaming server calls for each session a client opened.
pub struct RuntimeSessions {
    runtime: Arc<Runtime>,
}

impl RuntimeSessions {
    pub fn new(runtime: Arc<Runtime>) -> Arc<Self> {
        Arc::new(Self { runtime })
    }
}

impl StreamingRuntime for RuntimeSessions {
    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        io: ProcessIo,
    ) -> BoxFuture<'static, Result<i32, StreamingError>> {
        let runtime = Arc::clone(&self.runtime);
        Box::pin(async move {
            runtime
                .exec_streaming(&container_id, cmd, stream_io(io))
                .await
                .map_err(runtime_error)
        })
    }

    fn attach(
        &self,
        container_id: String,
        io: ProcessIo,
    ) -> BoxFuture<'static, Result<(), StreamingError>> {
        let runtime = Arc::clone(&self.runtime);
        Box::pin(async move {
            runtime
                .attach(&container_id, stream_io(io))
                .await
                .map_err(runtime_error)
        })
    }

    fn port_forward(
        &self,
        pod_sandbox_id: String,
        port: u16,
        mut stream: Box<dyn AsyncReadWrite>,
    ) -> BoxFuture<'static, Result<(), StreamingError>> {
        let runtime = Arc::clone(&self.runtime);
        Box::pin(async move {
            let mut target = runtime
                .port_forward_connect(&pod_sandbox_id, port)
                .await
                .map_err(runtime_error)?;
            tokio::io::copy_bidirectional(&mut stream, &mut target)
                .await
                .map(drop)
                .map_err(|source| {
                    StreamingError::io(
                        format!("forwarding to port {port} of pod {pod_sandbox_id}"),
                        source,
                    )
                })
        })
    }
}

/// The session's streams in the runtime's types; resize events are relayed by a task
/// that ends with either side.
fn stream_io(io: ProcessIo) -> StreamIo {
    let resize = io.resize.map(|mut from| {
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(size) = from.recv().await {
                let size = TerminalSize {
                    width: size.width,
                    height: size.height,
                };
                if sender.send(size).await.is_err() {
                    break;
                }
            }
        });
        receiver
    });
    StreamIo {
        stdin: io.stdin,
        stdout: io.stdout,
        stderr: io.stderr,
        tty: io.tty,
        resize,
    }
}

fn runtime_error(err: RuntimeError) -> StreamingError {
    match err {
        RuntimeError::NotFound { kind, id } => StreamingError::NotFound { kind, id },
        RuntimeError::FailedPrecondition(message) => StreamingError::FailedPrecondition(message),
        other => StreamingError::Runtime(cause_chain(&other)),
    }
}
