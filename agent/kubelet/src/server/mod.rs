//! The kubelet's HTTPS API on port 10250, which the API server calls for `kubectl logs`,
//! `exec`, `attach` and `port-forward`: TLS with a serving certificate the cluster trusts, a
//! client certificate required from the cluster CA, and only the users it is told to trust
//! (the API server's kubelet client) let through. It routes `/healthz`, `/containerLogs`,
//! `/exec`, `/attach`, `/portForward`, `/stats/summary`, `/metrics` and `/metrics/resource`;
//! what they answer is their modules'.

mod logs;
mod port_forward;
mod spdy;
pub mod stats;
mod stream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::runtime::Runtime;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file is unusable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The port could not be bound.
    #[error("listening on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn file_error(path: &Path, why: impl ToString) -> Error {
    Error::File {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The TLS setup: `cert`/`key` served, client certificates from `client_ca` required.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, Error> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(client_ca).map_err(|e| file_error(client_ca, e))? {
        roots
            .add(ca.map_err(|e| file_error(client_ca, e))?)
            .map_err(|e| file_error(client_ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| file_error(client_ca, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The user a client certificate names (its subject's common name).
fn user_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// The server's shared state.
pub struct Server {
    runtime: Runtime,
    authorized: Vec<String>,
    fifo_dir: PathBuf,
    stats: Arc<stats::Stats>,
}

impl Server {
    /// A server answering from containerd through `runtime` and `stats`, for clients named
    /// in `authorized`, making exec FIFOs in `fifo_dir`.
    pub fn new(
        runtime: Runtime,
        authorized: Vec<String>,
        fifo_dir: PathBuf,
        stats: Arc<stats::Stats>,
    ) -> Server {
        Server {
            runtime,
            authorized,
            fifo_dir,
            stats,
        }
    }

    /// Binds `address` and serves until the process ends.
    pub async fn serve(
        self: Arc<Self>,
        address: SocketAddr,
        tls: rustls::ServerConfig,
    ) -> Result<(), Error> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Listen { address, source })?;
        tracing::info!(%address, "serving the kubelet API");
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let server = Arc::clone(&self);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    acceptor.accept(stream),
                );
                let Ok(Ok(stream)) = handshake.await else {
                    tracing::debug!(%peer, "TLS handshake failed");
                    return;
                };
                let user = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(user_of);
                let service = hyper::service::service_fn(move |request| {
                    let server = Arc::clone(&server);
                    let user = user.clone();
                    async move { Ok::<_, Infallible>(server.handle(request, user.as_deref()).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(error) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, %error, "connection ended");
                }
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>, user: Option<&str>) -> Response<Body> {
        let Some(user) = user else {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        };
        if !self.authorized.iter().any(|allowed| allowed == user) {
            return text(
                StatusCode::FORBIDDEN,
                format!("Forbidden (user={user}, verb=get, resource=nodes)\n"),
            );
        }
        let path = request.uri().path().to_string();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // SPDY clients POST; they are told what this kubelet speaks instead.
        let streaming = matches!(
            parts.as_slice(),
            ["exec" | "attach", _, _, _] | ["portForward", _, _]
        );
        let allowed = request.method() == http::Method::GET
            || (streaming && request.method() == http::Method::POST);
        if !allowed {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            );
        }
        let query: HashMap<String, String> = request
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        match parts.as_slice() {
            ["healthz"] => text(StatusCode::OK, "ok".into()),
            ["stats", "summary"] => {
                let mut response = text(StatusCode::OK, self.stats.summary().await.to_string());
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                response
            }
            ["metrics"] => metrics(self.stats.kubelet_metrics().await),
            ["metrics", "resource"] => metrics(self.stats.resource_metrics().await),
            ["containerLogs", namespace, pod, container] => {
                self.container_logs(namespace, pod, container, &query).await
            }
            ["portForward", namespace, pod] => {
                let (namespace, pod) = (namespace.to_string(), pod.to_string());
                self.port_forward(request, &namespace, &pod).await
            }
            [kind @ ("exec" | "attach"), namespace, pod, container] => {
                let (exec, namespace, pod, container) = (
                    *kind == "exec",
                    namespace.to_string(),
                    pod.to_string(),
                    container.to_string(),
                );
                self.stream(request, exec, &namespace, &pod, &container)
                    .await
            }
            _ => text(StatusCode::NOT_FOUND, format!("no handler for {path}\n")),
        }
    }

    async fn container_logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        query: &HashMap<String, String>,
    ) -> Response<Body> {
        let options = match logs::Options::parse(query) {
            Ok(options) => options,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        let target =
            match logs::find(&self.runtime, namespace, pod, container, options.previous).await {
                Ok(target) => target,
                Err((code, message)) => {
                    return text(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        message,
                    );
                }
            };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(logs::stream(self.runtime.clone(), target, options, tx));
        let body = StreamBody::new(
            ReceiverStream::new(rx).map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
        );
        let mut response = Response::new(body.boxed_unsync());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        response
    }
}

impl Server {
    /// Forwards connections to pod `namespace/pod`'s ports.
    async fn port_forward(
        &self,
        request: Request<Incoming>,
        namespace: &str,
        pod: &str,
    ) -> Response<Body> {
        let netns = match self.pod_netns(namespace, pod).await {
            Ok(netns) => netns,
            Err((status, message)) => return text(status, message),
        };
        let (switch, transport) = match port_forward::accept(request.headers()) {
            Ok(accepted) => accepted,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        let Ok(response) = switch.body(Empty::new().boxed_unsync()) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "building the 101".into());
        };
        let target = port_forward::Target {
            pod: format!("{namespace}/{pod}"),
            netns,
        };
        tokio::spawn(async move {
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => port_forward::serve(upgraded, transport, target).await,
                Err(error) => tracing::debug!(%error, "a port-forward upgrade failed"),
            }
        });
        response
    }

    /// The network namespace of running pod `namespace/pod` (`None`: the node's), from the
    /// runtime spec of one of its running containers.
    async fn pod_netns(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<Option<PathBuf>, (StatusCode, String)> {
        let containers = self
            .runtime
            .containers(&[
                (crate::pods::labels::POD_NAMESPACE, namespace),
                (crate::pods::labels::POD_NAME, pod),
            ])
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        for container in containers {
            let running = matches!(
                self.runtime.task(&container.id).await,
                Ok(Some(crate::runtime::TaskState::Running { .. }))
            );
            if !running {
                continue;
            }
            let Ok(spec) = self.runtime.container_spec(&container.id).await else {
                continue;
            };
            let namespaces = spec
                .pointer("/linux/namespaces")
                .and_then(|n| n.as_array())
                .cloned()
                .unwrap_or_default();
            let path = namespaces
                .iter()
                .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
                .and_then(|n| n.get("path"))
                .and_then(|p| p.as_str())
                .map(PathBuf::from);
            return Ok(path);
        }
        Err((
            StatusCode::NOT_FOUND,
            format!("pod not found (\"{namespace}/{pod}\"): no container of it is running"),
        ))
    }

    /// Opens an exec or attach stream into the running `container` of pod `namespace/pod`.
    async fn stream(
        &self,
        request: Request<Incoming>,
        exec: bool,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Response<Body> {
        let options = match stream::Options::parse(request.uri().query(), exec) {
            Ok(options) => options,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        let target = match logs::find(&self.runtime, namespace, pod, container, false).await {
            Ok(target) => target,
            Err((code, message)) => {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND);
                return text(status, message);
            }
        };
        let running = matches!(
            self.runtime.task(&target.container_id).await,
            Ok(Some(crate::runtime::TaskState::Running { .. }))
        );
        if !running {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container:?} in pod {pod:?} is not running"),
            );
        }
        let (switch, protocol) = match stream::accept(request.headers()) {
            Ok(accepted) => accepted,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        let Ok(response) = switch.body(Empty::new().boxed_unsync()) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "building the 101".into());
        };
        let runtime = self.runtime.clone();
        let fifo_dir = self.fifo_dir.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(request).await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    tracing::debug!(%error, "a stream upgrade failed");
                    return;
                }
            };
            let socket = stream::Socket::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            if exec {
                let target = stream::ExecTarget {
                    runtime,
                    container_id: target.container_id,
                    fifo_dir,
                };
                stream::exec(socket, protocol, target, options).await;
            } else {
                let target = stream::AttachTarget {
                    runtime,
                    container_id: target.container_id,
                    log: target.path,
                };
                stream::attach(socket, target, options).await;
            }
        });
        response
    }
}

fn metrics(body: String) -> Response<Body> {
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    response
}
