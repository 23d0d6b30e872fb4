//! The streaming server's lifecycle: bind, accept (optionally TLS), hand URLs out,
//! shut down with every connection closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{MAX_IN_FLIGHT_REQUESTS, StreamingConfig};
use crate::error::StreamingError;
use crate::http_server;
use crate::request::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::request_cache::{CachedRequest, RequestCache};
use crate::runtime::StreamingRuntime;
use crate::tls;

/// How long we wait for the client to close its side after we finished ours.
pub(crate) const LINGER: Duration = Duration::from_secs(5);
/// A TLS handshake must complete within this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection task needs.
pub(crate) struct ServerContext {
    pub(crate) config: StreamingConfig,
    pub(crate) runtime: Arc<dyn StreamingRuntime>,
    pub(crate) cache: RequestCache,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// The running streaming server.
pub struct StreamingServer {
    ctx: Arc<ServerContext>,
    local_addr: SocketAddr,
    base_url: String,
    accept_loop: JoinHandle<()>,
}

impl StreamingServer {
    /// Binds `config.address` and starts accepting connections.
    pub async fn start(
        config: StreamingConfig,
        runtime: Arc<dyn StreamingRuntime>,
    ) -> Result<Self, StreamingError> {
        let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener =
            TcpListener::bind(config.address)
                .await
                .map_err(|source| StreamingError::Bind {
                    address: config.address,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StreamingError::io("streaming server local address", source))?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{local_addr}");
        let ctx = Arc::new(ServerContext {
            cache: RequestCache::new(config.token_ttl, MAX_IN_FLIGHT_REQUESTS),
            config,
            runtime,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        info!(url = %base_url, "streaming server listening");
        let accept_loop = tokio::spawn(accept_connections(listener, acceptor, ctx.clone()));
        Ok(Self {
            ctx,
            local_addr,
            base_url,
            accept_loop,
        })
    }

    /// The address actually bound (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Validates an exec request and returns its single-use URL.
    pub fn get_exec(&self, request: ExecRequest) -> Result<String, StreamingError> {
        request.validate()?;
        self.url_for("exec", CachedRequest::Exec(request))
    }

    /// Validates an attach request and returns its single-use URL.
    pub fn get_attach(&self, request: AttachRequest) -> Result<String, StreamingError> {
        request.validate()?;
        self.url_for("attach", CachedRequest::Attach(request))
    }

    /// Validates a port-forward request and returns its single-use URL.
    pub fn get_port_forward(&self, request: PortForwardRequest) -> Result<String, StreamingError> {
        request.validate()?;
        self.url_for("portforward", CachedRequest::PortForward(request))
    }

    /// Stops accepting, closes every connection (upgraded ones included) and waits
    /// for their tasks to end.
    pub async fn shutdown(self) {
        self.ctx.shutdown.cancel();
        self.ctx.tasks.close();
        let _ = self.accept_loop.await;
        self.ctx.tasks.wait().await;
        info!(url = %self.base_url, "streaming server stopped");
    }

    fn url_for(&self, method: &str, request: CachedRequest) -> Result<String, StreamingError> {
        let token = self.ctx.cache.insert(request)?;
        Ok(format!("{}/{method}/{token}", self.base_url))
    }
}

async fn accept_connections(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    ctx: Arc<ServerContext>,
) {
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let ctx2 = ctx.clone();
                let acceptor = acceptor.clone();
                ctx.tasks.spawn(async move {
                    let shutdown = ctx2.shutdown.clone();
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = serve_tcp(tcp, peer, acceptor, ctx2) => {}
                    }
                });
            }
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                warn!(%err, "streaming server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_tcp(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    ctx: Arc<ServerContext>,
) {
    // Interactive sessions send keystrokes one by one.
    let _ = tcp.set_nodelay(true);
    match acceptor {
        None => serve_io(tcp, peer, ctx).await,
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_io(tls, peer, ctx).await,
                Ok(Err(err)) => debug!(%peer, %err, "streaming server: tls handshake failed"),
                Err(_) => debug!(%peer, "streaming server: tls handshake timed out"),
            }
        }
    }
}

async fn serve_io<I>(io: I, peer: SocketAddr, ctx: Arc<ServerContext>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Err(err) = http_server::serve_connection(io, ctx).await {
        debug!(%peer, %err, "streaming server: http connection ended with an error");
    }
}
