//! A store member as a server: the etcd v3 gRPC API over [`store_raft::StoreNode`].
//!
//! Each etcd service lives in its own module and only translates: validate and convert the
//! wire request (`convert`), call the node, convert the answer and map errors to etcd's gRPC
//! codes (`status`). The replication, batching, linearizability and watch semantics are the
//! node's. The `basalt-store` binary wires this up from etcd-style flags.

mod cluster;
mod convert;
mod kv;
mod lease;
mod maintenance;
mod status;
mod watch;

use std::net::SocketAddr;
use std::time::Duration;

pub use convert::Limits;
pub use maintenance::API_VERSION;
use store_proto::etcdserverpb::cluster_server::ClusterServer;
use store_proto::etcdserverpb::kv_server::KvServer;
use store_proto::etcdserverpb::lease_server::LeaseServer;
use store_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use store_proto::etcdserverpb::watch_server::WatchServer;
use store_raft::{StoreNode, Tls};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// How the client API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Request size limits.
    pub limits: Limits,
    /// Interval of progress notifications for watchers that ask for them.
    pub watch_progress_interval: Duration,
    /// Serve over TLS with this identity; with `client_cert_auth`, clients must present a
    /// certificate signed by its CA.
    pub tls: Option<Tls>,
    /// Require client certificates (etcd's `--client-cert-auth`).
    pub client_cert_auth: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            watch_progress_interval: Duration::from_secs(600),
            tls: None,
            client_cert_auth: false,
        }
    }
}

/// gRPC allows this much beyond the largest request for framing and the other fields, as
/// etcd does, so that an oversized value reaches validation and gets a clear error.
const GRPC_OVERHEAD: usize = 512 * 1024;

/// Serves the etcd API of `node` on `addr` until `shutdown` resolves.
pub async fn serve(
    node: StoreNode,
    addr: SocketAddr,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!("listening for clients on {addr}: {e}");
            return Ok(());
        }
    };
    serve_listener(node, listener, config, shutdown).await
}

/// Serves the etcd API of `node` on an already bound listener until `shutdown` resolves.
pub async fn serve_listener(
    node: StoreNode,
    listener: tokio::net::TcpListener,
    config: ApiConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max_decode = config.limits.max_request_bytes + GRPC_OVERHEAD;
    let kv = KvServer::new(kv::KvService::new(node.clone(), config.limits))
        .max_decoding_message_size(max_decode);
    let watch = WatchServer::new(watch::WatchService::new(
        node.clone(),
        config.watch_progress_interval,
        config.limits.max_request_bytes,
    ))
    .max_decoding_message_size(max_decode);
    let lease = LeaseServer::new(lease::LeaseService::new(node.clone()))
        .max_decoding_message_size(max_decode);
    let cluster = ClusterServer::new(cluster::ClusterService::new(node.clone()))
        .max_decoding_message_size(max_decode);
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService::new(node))
        .max_decoding_message_size(max_decode);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        let mut server_tls =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
        if config.client_cert_auth {
            server_tls = server_tls.client_ca_root(Certificate::from_pem(&tls.ca));
        }
        builder = builder.tls_config(server_tls)?;
    }
    builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(kv)
        .add_service(watch)
        .add_service(lease)
        .add_service(cluster)
        .add_service(maintenance)
        .serve_with_incoming_shutdown(
            // tonic applies TCP_NODELAY only to sockets it accepts itself; without it, small
            // responses wait out the client's delayed ACK (about 40 ms).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
