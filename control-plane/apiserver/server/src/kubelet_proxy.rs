//! How the API server reaches kubelets for the pod subresources they serve (`log`, `exec`,
//! `attach`): its kubelet client certificate, which container of a pod a request means, the
//! kubelet of the pod's node (from the Node's addresses and kubelet port), a TLS connection
//! to it that checks the kubelet's serving certificate, and a kubelet's refusal relayed as a
//! Status. **Does not** know what any subresource asks of the kubelet (see `pod_logs`,
//! `pod_exec`) or authorize requests (done before the handler, like any request).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apiserver_registry::object::{Object, str_at};
use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::tls::{TlsError, certificates};

/// The port a kubelet serves on when its Node does not say (kube's default).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How long reaching a kubelet (TCP and the TLS handshake) may take, as kube-apiserver allows.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a kubelet's error answer that is read into the Status message.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How the API server reaches kubelets: its client certificate and the CA kubelets' serving
/// certificates must chain to.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeletClient").finish_non_exhaustive()
    }
}

impl KubeletClient {
    /// A client presenting `cert`/`key` (PEM) and trusting kubelets whose serving
    /// certificates chain to a CA in `ca` (PEM).
    pub fn new(cert: &Path, key: &Path, ca: &Path) -> Result<KubeletClient, TlsError> {
        let file_error = |path: &Path, why: &dyn fmt::Display| TlsError::File {
            path: path.display().to_string(),
            why: why.to_string(),
        };
        let chain = certificates(cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, &e))?;
        let mut roots = RootCertStore::empty();
        for ca_cert in certificates(ca)? {
            roots.add(ca_cert).map_err(|e| file_error(ca, &e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)?;
        // The kubelet's log stream is one long HTTP/1.1 response.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient { tls: Arc::new(tls) })
    }
}

/// The names of the pod's containers in `field` (`containers`, `initContainers`, …).
fn names(pod: &Object, field: &str) -> Vec<String> {
    pod.get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The container a log request is for: the one `asked` for, which must be one of the pod's
/// containers, init containers or ephemeral containers, or else the pod's only container.
/// The errors are kube-apiserver's and kubectl's words.
pub fn container(pod: &Object, pod_name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let main = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    if let Some(asked) = asked.filter(|c| !c.is_empty()) {
        return if [&main, &init, &ephemeral]
            .iter()
            .any(|names| names.iter().any(|c| c == asked))
        {
            Ok(asked.to_owned())
        } else {
            Err(ApiError::bad_request(format!(
                "container {asked} is not valid for pod {pod_name}"
            )))
        };
    }
    match main.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        ))),
        _ => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            if !ephemeral.is_empty() {
                message.push_str(&format!(
                    " or one of the ephemeral containers: [{}]",
                    ephemeral.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

/// A boolean parameter, read as Go's `strconv.ParseBool` reads it (absent or empty: false).
pub(crate) fn boolean(query: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("" | "0" | "f" | "F" | "false" | "False" | "FALSE") => Ok(false),
        Some("1" | "t" | "T" | "true" | "True" | "TRUE") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key}: invalid value {other:?}: must be true or false"
        ))),
    }
}

/// Where a node's kubelet serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletEndpoint {
    /// The host to reach, which the kubelet's serving certificate must name.
    pub host: KubeletHost,
    /// The port (`status.daemonEndpoints.kubeletEndpoint.Port`, else 10250).
    pub port: u16,
}

/// A kubelet's host: an address, or a host name resolved when connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletHost {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

impl fmt::Display for KubeletEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            KubeletHost::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            KubeletHost::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// The kubelet of Node `node` (named `name`): its InternalIP — the address its serving
/// certificate names — else its ExternalIP, else its Hostname; and its port.
pub fn kubelet_endpoint(node: &Object, name: &str) -> Result<KubeletEndpoint, ApiError> {
    let addresses: &[Value] = node
        .get("status")
        .and_then(|s| s.get("addresses"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let of_type = |kind: &'static str| {
        addresses
            .iter()
            .filter(move |a| a.get("type").and_then(Value::as_str) == Some(kind))
            .filter_map(|a| a.get("address").and_then(Value::as_str))
            .filter(|a| !a.is_empty())
    };
    let ip = |kind| of_type(kind).find_map(|a| a.parse::<IpAddr>().ok());
    let host = ip("InternalIP")
        .or_else(|| ip("ExternalIP"))
        .map(KubeletHost::Ip)
        .or_else(|| {
            of_type("Hostname")
                .next()
                .map(|h| match h.parse::<IpAddr>() {
                    Ok(ip) => KubeletHost::Ip(ip),
                    Err(_) => KubeletHost::Name(h.to_owned()),
                })
        })
        .ok_or_else(|| {
            ApiError::internal(format!(
                "node {name} has no InternalIP, ExternalIP or Hostname address in status.addresses"
            ))
        })?;
    let port = node
        .get("status")
        .and_then(|s| s.get("daemonEndpoints"))
        .and_then(|d| d.get("kubeletEndpoint"))
        .and_then(|k| k.get("Port"))
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(KubeletEndpoint { host, port })
}

/// The Kubernetes reason kube gives an error status it relays.
pub(crate) fn reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ if status.is_server_error() => "InternalError",
        _ => "",
    }
}

/// A TLS connection to the kubelet at `endpoint`, its certificate checked for the host.
pub(crate) async fn connect(
    client: &KubeletClient,
    endpoint: &KubeletEndpoint,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let (tcp, server_name) = match &endpoint.host {
        KubeletHost::Ip(ip) => (
            tokio::net::TcpStream::connect((*ip, endpoint.port)).await,
            ServerName::IpAddress((*ip).into()),
        ),
        KubeletHost::Name(name) => (
            tokio::net::TcpStream::connect((name.as_str(), endpoint.port)).await,
            ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} is not a valid host name: {e}"))?,
        ),
    };
    let tcp = tcp.map_err(|e| format!("dial tcp {endpoint}: {e}"))?;
    // The request is one small write; it should not wait on Nagle's algorithm.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "setting TCP_NODELAY on the kubelet connection");
    }
    tokio_rustls::TlsConnector::from(Arc::clone(&client.tls))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))
}

/// Where a request for one of a pod's containers goes.
#[derive(Debug)]
pub struct PodTarget {
    /// The pod as stored.
    pub pod: Object,
    /// The container meant (see [`container`]; empty for the whole pod).
    pub container: String,
    /// The node the pod is bound to.
    pub node: String,
    /// Its kubelet.
    pub endpoint: KubeletEndpoint,
}

/// What a request is for: one container (the one named, or the pod's only one), or the
/// whole pod (port forwarding).
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// A container, by name if given.
    Container(Option<&'a str>),
    /// The pod.
    Pod,
}

/// Finds pod `name` in `namespace`, the container `wanted` and its node's kubelet. The
/// errors are kube-apiserver's: no such pod (404), no such container or no node yet (400).
pub async fn locate(
    registry: &Registry,
    namespace: &str,
    name: &str,
    wanted: Wanted<'_>,
) -> Result<PodTarget, ApiError> {
    let catalog = registry.catalog();
    let pods = catalog
        .get("", "v1", "pods")
        .ok_or_else(ApiError::no_route)?;
    let pod = registry.get(&pods, Some(namespace), name).await?;
    let container = match wanted {
        Wanted::Container(asked) => container(&pod, name, asked)?,
        Wanted::Pod => String::new(),
    };
    let node = str_at(&pod, "spec.nodeName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_owned();
    let nodes = catalog
        .get("", "v1", "nodes")
        .ok_or_else(ApiError::no_route)?;
    let endpoint = kubelet_endpoint(&registry.get(&nodes, None, &node).await?, &node)?;
    Ok(PodTarget {
        pod,
        container,
        node,
        endpoint,
    })
}

/// An HTTP/1.1 connection to the kubelet at `endpoint` (which may be upgraded), its failures
/// worded as kube-apiserver's: `Get "https://…": what went wrong`.
pub async fn open(
    client: &KubeletClient,
    endpoint: &KubeletEndpoint,
    url: &str,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>, ApiError> {
    let failed = |why: String| {
        tracing::debug!(%url, "reaching the kubelet failed: {why}");
        ApiError::internal(format!("Get \"{url}\": {why}"))
    };
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(client, endpoint))
        .await
        .map_err(|_| {
            failed(format!(
                "dial tcp {endpoint}: no TLS connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(failed)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(connected))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // The connection lives on until the answer has been relayed (or the stream upgraded and
    // ended), or the client has gone and dropped it.
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "the kubelet connection ended");
        }
    });
    Ok(sender)
}

/// A kubelet's refusal as the client sees it: the kubelet's own words (`container "c" in
/// pod "p" is waiting to start`) under the kubelet's status.
pub async fn refusal(response: Response<Incoming>, node: &str) -> ApiError {
    let status = response.status();
    let text = Limited::new(response.into_body(), MAX_ERROR_BYTES)
        .collect()
        .await
        .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        format!("the kubelet on node {node} answered {status}")
    } else {
        text
    };
    ApiError {
        code: status.as_u16(),
        reason: reason(status),
        message,
        details: None,
    }
}

/// The error for a server without kubelet credentials, which cannot serve `what`.
pub fn no_client(what: &str) -> ApiError {
    ApiError::unavailable(format!(
        "the API server has no kubelet client credentials (--kubelet-client-certificate), \
         so it cannot reach kubelets for {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    fn pod(containers: &[&str], init: &[&str]) -> Object {
        let named = |names: &[&str]| names.iter().map(|c| json!({"name": c})).collect::<Vec<_>>();
        object(
            json!({"spec": {"containers": named(containers), "initContainers": named(init),
                               "ephemeralContainers": [{"name": "debugger"}]}}),
        )
    }

    fn message(result: Result<String, ApiError>) -> String {
        match result {
            Ok(ok) => format!("unexpectedly Ok({ok})"),
            Err(e) => {
                assert_eq!(e.code, 400, "{e}");
                e.message
            }
        }
    }

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        assert_eq!(
            container(&pod(&["web"], &[]), "p", None).ok(),
            Some("web".into())
        );
        assert_eq!(
            container(&pod(&["web"], &["init"]), "p", Some("")).ok(),
            Some("web".into())
        );
        for asked in ["side", "init", "debugger"] {
            assert_eq!(
                container(&pod(&["web", "side"], &["init"]), "p", Some(asked)).ok(),
                Some(asked.into())
            );
        }
        assert_eq!(
            message(container(&pod(&["web", "side"], &["init"]), "p", None)),
            "a container name must be specified for pod p, choose one of: [web side] \
             or one of the init containers: [init] or one of the ephemeral containers: [debugger]"
        );
        assert_eq!(
            message(container(&object(json!({"spec": {}})), "p", None)),
            "a container name must be specified for pod p"
        );
        assert_eq!(
            message(container(&pod(&["web"], &[]), "p", Some("nope"))),
            "container nope is not valid for pod p"
        );
    }

    #[test]
    fn the_kubelet_is_found_at_the_nodes_internal_ip_and_port() {
        let node = |addresses: Value, port: Value| {
            object(json!({"status": {"addresses": addresses,
                                     "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}}))
        };
        let internal = node(
            json!([{"type": "Hostname", "address": "n1"},
                   {"type": "ExternalIP", "address": "203.0.113.9"},
                   {"type": "InternalIP", "address": "10.0.0.7"}]),
            json!(11250),
        );
        let found = kubelet_endpoint(&internal, "n1").ok();
        assert_eq!(
            found.as_ref().map(ToString::to_string).as_deref(),
            Some("10.0.0.7:11250")
        );
        let external = node(
            json!([{"type": "Hostname", "address": "n1"},
                   {"type": "ExternalIP", "address": "2001:db8::9"}]),
            json!(0),
        );
        assert_eq!(
            kubelet_endpoint(&external, "n1")
                .ok()
                .map(|e| e.to_string())
                .as_deref(),
            Some("[2001:db8::9]:10250")
        );
        let named = node(
            json!([{"type": "Hostname", "address": "n1.example"}]),
            json!(null),
        );
        assert_eq!(
            kubelet_endpoint(&named, "n1").ok(),
            Some(KubeletEndpoint {
                host: KubeletHost::Name("n1.example".into()),
                port: DEFAULT_KUBELET_PORT
            })
        );
        let error = kubelet_endpoint(&node(json!([]), json!(null)), "n1").err();
        assert!(
            error
                .as_ref()
                .is_some_and(|e| e.message.contains("node n1 has no InternalIP")),
            "{error:?}"
        );
    }
}
