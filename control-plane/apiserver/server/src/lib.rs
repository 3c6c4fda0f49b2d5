//! Basalt's Kubernetes API server: HTTPS (HTTP/2 and HTTP/1.1), authentication and
//! authorization, discovery, and the REST verbs over [`apiserver_registry::Registry`].
//!
//! One request: TLS gives the verified client certificate → `auth` names the user (or the
//! request is anonymous and only health and version are open to it) → `request` reads what the
//! path asks for → the authorizer decides → `discovery` or `handler` answers.
//! **Does not know** how objects are stored or validated; the registry does.

pub mod admission;
pub mod auth;
pub mod certificates;
pub mod discovery;
pub mod handler;
pub mod kubelet_proxy;
pub mod limits;
pub mod metrics;
pub mod node_proxy;
pub mod patch;
pub mod pki;
pub mod pod_exec;
pub mod pod_logs;
pub mod priority;
pub mod request;
pub mod response;
pub mod review;
pub mod service_account_admission;
pub mod system;
pub mod table;
pub mod tls;
pub mod token;
pub mod tolerations;

use std::collections::HashMap;
use std::sync::Arc;

use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use apiserver_authz::Decision;

use crate::auth::{Access, User};
use crate::metrics::RequestLabels;
use crate::response::{Body, Representation};

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The Kubernetes version the API follows (what kubectl and clients see in `/version`).
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "32");

/// The API server.
pub struct ApiServer {
    registry: Registry,
    openapi: apiserver_openapi::OpenApi,
    access: Access,
    definitions: Arc<apiextensions::Definitions>,
    metrics: metrics::Metrics,
    /// The address clients reach it at (for `/api`'s serverAddressByClientCIDRs).
    address: String,
    default_tolerations: tolerations::DefaultTolerations,
    /// How `kubectl logs` reaches kubelets (none: logs are refused with a clear error).
    kubelet: Option<kubelet_proxy::KubeletClient>,
}

impl ApiServer {
    /// An API server over `registry`, serving the custom resources of `definitions`.
    pub fn new(
        registry: Registry,
        access: Access,
        definitions: Arc<apiextensions::Definitions>,
        address: String,
    ) -> ApiServer {
        let version = format!(
            "v{}.{}.0-basalt",
            KUBERNETES_VERSION.0, KUBERNETES_VERSION.1
        );
        ApiServer {
            openapi: apiserver_openapi::OpenApi::new(registry.catalog().clone(), &version),
            registry,
            access,
            definitions,
            metrics: metrics::Metrics::new(),
            address,
            default_tolerations: tolerations::DefaultTolerations::default(),
            kubelet: None,
        }
    }

    /// Gives new pods these tolerations of not-ready and unreachable nodes by default.
    pub fn with_default_tolerations(
        mut self,
        defaults: tolerations::DefaultTolerations,
    ) -> ApiServer {
        self.default_tolerations = defaults;
        self
    }

    /// Reaches kubelets (for `pods/log`) with `client`.
    pub fn with_kubelet_client(mut self, client: kubelet_proxy::KubeletClient) -> ApiServer {
        self.kubelet = Some(client);
        self
    }

    /// Serves TLS connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: rustls::ServerConfig) {
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let server = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that never finishes its handshake must not hold a task forever.
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let user = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|cert| auth::user_from_certificate(cert));
                let user = user.map(Arc::new);
                let service = hyper::service::service_fn(move |request| {
                    let server = server.clone();
                    let user = user.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            server.handle(request, user.as_deref()).await,
                        )
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>, user: Option<&User>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let started = std::time::Instant::now();
        let mut labels = RequestLabels::non_resource(method.as_str());
        let result = self.route(request, user, &mut labels).await;
        let response = result.unwrap_or_else(|e| response::error(&e));
        let code = response.status().as_u16();
        tracing::debug!(%method, %path, status = code, user = user.map(|u| u.name.as_str()), "request");
        let (parts, body) = response.into_parts();
        let body = self.metrics.finish(&labels, code, started.elapsed(), body);
        Response::from_parts(parts, body)
    }

    /// Routes a request; `labels` are set to what it is counted under once it is known.
    async fn route(
        &self,
        request: Request<Incoming>,
        user: Option<&User>,
        labels: &mut RequestLabels,
    ) -> Result<Response<Body>, ApiError> {
        let path = request.uri().path().to_owned();
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => return Ok(response::text(StatusCode::OK, "ok")),
            "/version" => {
                return Ok(response::json(
                    StatusCode::OK,
                    &json!({"major": KUBERNETES_VERSION.0, "minor": KUBERNETES_VERSION.1,
                            "gitVersion": format!("v{}.{}.0-basalt", KUBERNETES_VERSION.0, KUBERNETES_VERSION.1),
                            "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                            "goVersion": "", "compiler": "rustc", "platform": "linux/amd64"}),
                ));
            }
            _ => {}
        }
        let token_user;
        let user = match (user, auth::bearer_token(request.headers())) {
            (Some(user), _) => user,
            (None, Some(token)) => {
                token_user = self
                    .access
                    .authenticator()
                    .authenticate(token, &[])
                    .await
                    .map_err(|why| {
                        tracing::debug!("bearer token refused: {why}");
                        ApiError::unauthorized()
                    })?;
                &token_user
            }
            (None, None) => return Err(ApiError::unauthorized()),
        };
        let impersonated = auth::impersonation(request.headers())?;
        let user = match impersonated {
            Some(target) => &self.access.impersonate(user, target).await?,
            None => user,
        };
        let query: HashMap<String, String> = request
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let accept = header_text(request.headers(), header::ACCEPT);
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let field_selector = query.get("fieldSelector").map_or("", String::as_str);
        let info = request::parse(request.method(), &path, watch, field_selector);
        // A pod's log is the kubelet's text whatever the client accepts (`text/plain` among
        // them); only the errors are JSON, and those are sent regardless.
        let streams_text = info.is_resource && info.subresource.as_deref() == Some("log");
        let representation = response::negotiate(accept)
            .or(streams_text.then_some(Representation::Object))
            .ok_or_else(|| {
                ApiError::not_acceptable(
                    "only the following media types are accepted: application/json",
                )
            })?;
        let apply = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
        *labels = RequestLabels::of(&info, apply);
        let _in_flight = self.metrics.start(labels);
        match self.access.decide(user, &info.attributes(&path)).await {
            Decision::Allow(why) => tracing::trace!(user = %user.name, "allowed: {why}"),
            denied => {
                tracing::debug!(user = %user.name, ?denied, "forbidden");
                return Err(ApiError::forbidden(auth::forbidden_message(
                    user, &info, &path,
                )));
            }
        }
        if path == "/metrics" {
            return Ok(response::typed(
                StatusCode::OK,
                self.metrics.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ));
        }
        if let Some(rest) = path.strip_prefix("/openapi/") {
            return self.openapi(rest, accept);
        }
        if !info.is_resource {
            return self.discovery(&path, representation);
        }
        let resource = self
            .registry
            .catalog()
            .get(&info.group, &info.version, &info.resource)
            .ok_or_else(ApiError::no_route)?;
        if let (true, "nodes", Some("proxy"), Some(name)) = (
            resource.group.is_empty(),
            resource.plural.as_str(),
            info.subresource.as_deref(),
            info.name.as_deref(),
        ) {
            let prefix = format!("/api/v1/nodes/{name}/proxy");
            let rest = path.strip_prefix(&prefix).unwrap_or("");
            return node_proxy::get(self.kubelet.as_ref(), &self.registry, &request, name, rest)
                .await;
        }
        // Streams take the connection over, so they get the request itself, body unread.
        if let (
            true,
            "pods",
            Some(sub @ ("exec" | "attach" | "portforward")),
            Some(ns),
            Some(name),
        ) = (
            resource.group.is_empty(),
            resource.plural.as_str(),
            info.subresource.as_deref(),
            info.namespace.as_deref(),
            info.name.as_deref(),
        ) {
            let (ns, name, sub) = (ns.to_owned(), name.to_owned(), sub.to_owned());
            return pod_exec::stream(
                self.kubelet.as_ref(),
                &self.registry,
                request,
                &ns,
                &name,
                &sub,
            )
            .await;
        }
        let text = |name| {
            header_text(request.headers(), name)
                .unwrap_or("")
                .to_owned()
        };
        let (content_type, user_agent) = (text(header::CONTENT_TYPE), text(header::USER_AGENT));
        let body = read_body(request).await?;
        let call = handler::Call {
            user,
            user_agent: &user_agent,
            access: &self.access,
            definitions: &self.definitions,
            info: &info,
            query: &query,
            representation,
            content_type: &content_type,
            body,
            default_tolerations: &self.default_tolerations,
            kubelet: self.kubelet.as_ref(),
        };
        handler::handle(&self.registry, resource, call).await
    }

    fn openapi(&self, path: &str, accept: Option<&str>) -> Result<Response<Body>, ApiError> {
        let document = match path.split('/').collect::<Vec<_>>().as_slice() {
            ["v2"] => {
                // Only the JSON form is served; clients that ask for protobuf alone get 406.
                let json_ok =
                    accept.is_none_or(|a| a.contains("application/json") || a.contains("*/*"));
                if !json_ok {
                    return Err(ApiError::not_acceptable(
                        "only application/json is served for /openapi/v2",
                    ));
                }
                self.openapi.v2()
            }
            ["v3"] => return Ok(response::json(StatusCode::OK, &self.openapi.v3_index())),
            ["v3", "api", version] => self
                .openapi
                .v3("", version)
                .ok_or_else(ApiError::no_route)?,
            ["v3", "apis", group, version] => self
                .openapi
                .v3(group, version)
                .ok_or_else(ApiError::no_route)?,
            _ => return Err(ApiError::no_route()),
        };
        Ok(response::raw_json(
            StatusCode::OK,
            document.body.clone(),
            &document.hash,
        ))
    }

    fn discovery(
        &self,
        path: &str,
        representation: Representation,
    ) -> Result<Response<Body>, ApiError> {
        let catalog = self.registry.catalog();
        let aggregated = representation == Representation::AggregatedDiscovery;
        const AGGREGATED: &str =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let body = match parts.as_slice() {
            ["api"] if aggregated => {
                return Ok(response::json_typed(
                    StatusCode::OK,
                    &discovery::aggregated(catalog, true),
                    AGGREGATED,
                ));
            }
            ["apis"] if aggregated => {
                return Ok(response::json_typed(
                    StatusCode::OK,
                    &discovery::aggregated(catalog, false),
                    AGGREGATED,
                ));
            }
            ["api"] => Some(discovery::api_versions(&self.address)),
            ["apis"] => Some(discovery::api_group_list(catalog)),
            ["api", version] => discovery::api_resource_list(catalog, "", version),
            ["apis", group] => discovery::api_group(catalog, group),
            ["apis", group, version] => discovery::api_resource_list(catalog, group, version),
            _ => None,
        };
        body.map(|b| response::json(StatusCode::OK, &b))
            .ok_or_else(ApiError::no_route)
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return Ok(Bytes::new());
    }
    match Limited::new(request.into_body(), handler::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(format!(
            "the request body is larger than {} bytes",
            handler::MAX_BODY_BYTES
        ))),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// A header's value, if it is present and readable as text.
fn header_text(headers: &http::HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
