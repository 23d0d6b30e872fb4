//! Serving RuntimeService and ImageService, v1 and v1alpha2, on the unix socket.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::sync::Notify;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tower::util::MapRequestLayer;

use crate::api_version::route_api_version;
use crate::rpc_log::RpcLogLayer;
use crate::service::CriService;
use crate::socket::ListenSocket;

/// kubelet's CRI client allows 16 MiB messages each way; so do we.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Replies may be larger: an ExecSync keeps up to 16 MiB of stdout and of stderr.
pub const MAX_REPLY_BYTES: usize = 2 * MAX_MESSAGE_BYTES + 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the socket was already served")]
    ListenerTaken,
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
/// finish for at most `grace`. Pods and containers are not touched: they outlive us.
pub async fn serve(
    service: CriService,
    mut socket: ListenSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> Result<(), ServeError> {
    let listener = socket.listener.take().ok_or(ServeError::ListenerTaken)?;
    let incoming = UnixListenerStream::new(listener);
    let router_layer = RpcLogLayer::new(service.metrics());
    let runtime_service = RuntimeServiceServer::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES);
    let image_service = ImageServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES);
    let router = Server::builder()
        .layer(router_layer)
        .layer(MapRequestLayer::new(route_api_version::<tonic::body::Body>))
        .add_service(runtime_service)
        .add_service(image_service);

    let shutdown_began = Arc::new(Notify::new());
    let signal_shutdown = {
        let shutdown_began = shutdown_began.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new requests, waiting for in-flight ones");
            shutdown_began.notify_one();
        }
    };
    let server = router.serve_with_incoming_shutdown(incoming, signal_shutdown);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = async { shutdown_began.notified().await; tokio::time::sleep(grace).await } => {
            // Streams such as GetContainerEvents never end on their own.
            tracing::warn!(grace_seconds = grace.as_secs_f64(), "requests still in flight after the grace period; exiting anyway");
        }
    }
    drop(socket);
    Ok(())
}
