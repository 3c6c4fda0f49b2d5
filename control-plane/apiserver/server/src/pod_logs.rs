//! `GET pods/{name}/log`: the API server's side of `kubectl logs`. It checks the query, picks
//! the container, finds the kubelet of the pod's node from its Node, and relays the request to
//! the kubelet's `/containerLogs` over TLS — presenting the API server's kubelet client
//! certificate and requiring the kubelet's serving certificate to chain to the cluster CA —
//! streaming the answer back as it comes (`kubectl logs -f`), as kube-apiserver does.
//! **Does not** read log files (the kubelet's) or authorize `get pods/log` (done before the
//! handler, like any request).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apiserver_registry::object::{Object, str_at};
use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited, StreamBody};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::response::Body;
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
fn boolean(query: &HashMap<String, String>, key: &str) -> Result<bool, ApiError> {
    match query.get(key).map(String::as_str) {
        None | Some("" | "0" | "f" | "F" | "false" | "False" | "FALSE") => Ok(false),
        Some("1" | "t" | "T" | "true" | "True" | "TRUE") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key}: invalid value {other:?}: must be true or false"
        ))),
    }
}

/// An integer parameter that must be at least `min`.
fn integer(query: &HashMap<String, String>, key: &str, min: i64) -> Result<Option<i64>, ApiError> {
    let Some(text) = query.get(key) else {
        return Ok(None);
    };
    let value: i64 = text.parse().map_err(|_| {
        ApiError::bad_request(format!("{key}: invalid value {text:?}: must be an integer"))
    })?;
    if value < min {
        return Err(ApiError::bad_request(format!(
            "{key}: invalid value {value}: must be greater than or equal to {min}"
        )));
    }
    Ok(Some(value))
}

/// The query to send the kubelet, each parameter checked: `follow`, `previous`,
/// `timestamps`, `tailLines` (≥ 0), `limitBytes` (≥ 1), `sinceSeconds` (≥ 1) or `sinceTime`
/// (RFC 3339). Others (`container`, `pretty`, …) are not the kubelet's and are dropped, as
/// kube does.
///
/// `sinceTime` is sent as the `sinceSeconds` it amounts to at `now`, rounded up so no line
/// at that instant is lost, and at least 1 (a time in the future asks for the last second):
/// the kubelet takes seconds only, and they measure from its own clock, so a skew between
/// the two hosts shifts the window by that much.
pub fn forwarded_query(
    query: &HashMap<String, String>,
    now: jiff::Timestamp,
) -> Result<String, ApiError> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in ["follow", "previous", "timestamps"] {
        if boolean(query, key)? {
            out.append_pair(key, "true");
        }
    }
    if let Some(lines) = integer(query, "tailLines", 0)? {
        out.append_pair("tailLines", &lines.to_string());
    }
    if let Some(bytes) = integer(query, "limitBytes", 1)? {
        out.append_pair("limitBytes", &bytes.to_string());
    }
    let since_seconds = integer(query, "sinceSeconds", 1)?;
    let since_time = query
        .get("sinceTime")
        .map(|text| {
            text.parse::<jiff::Timestamp>().map_err(|_| {
                ApiError::bad_request(format!(
                    "sinceTime: invalid value {text:?}: must be an RFC 3339 time"
                ))
            })
        })
        .transpose()?;
    let since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        (Some(seconds), None) => Some(seconds),
        (None, Some(time)) => {
            let ago = now.duration_since(time);
            let whole = ago.as_secs() + i64::from(ago.subsec_nanos() > 0);
            Some(whole.max(1))
        }
        (None, None) => None,
    };
    if let Some(seconds) = since {
        out.append_pair("sinceSeconds", &seconds.to_string());
    }
    Ok(out.finish())
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
fn reason(status: StatusCode) -> &'static str {
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

/// Serves `GET pods/{name}/log` in `namespace` with `query`'s options, through `client`
/// (none: the server was given no kubelet credentials, and the request is refused).
pub async fn logs(
    client: Option<&KubeletClient>,
    registry: &Registry,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    // The options are checked first, as kube-apiserver decodes them before it reads the pod.
    let forwarded = forwarded_query(query, jiff::Timestamp::now())?;
    let pods = registry
        .catalog()
        .get("", "v1", "pods")
        .ok_or_else(ApiError::no_route)?;
    let pod = registry.get(&pods, Some(namespace), name).await?;
    let container = container(&pod, name, query.get("container").map(String::as_str))?;
    let node_name = str_at(&pod, "spec.nodeName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_owned();
    let Some(client) = client else {
        return Err(ApiError::unavailable(
            "the API server has no kubelet client credentials (--kubelet-client-certificate), \
             so it cannot reach kubelets for logs",
        ));
    };
    let nodes = registry
        .catalog()
        .get("", "v1", "nodes")
        .ok_or_else(ApiError::no_route)?;
    let node = registry.get(&nodes, None, &node_name).await?;
    let endpoint = kubelet_endpoint(&node, &node_name)?;
    let path = if forwarded.is_empty() {
        format!("/containerLogs/{namespace}/{name}/{container}")
    } else {
        format!("/containerLogs/{namespace}/{name}/{container}?{forwarded}")
    };
    // Failures read as kube-apiserver's do: `Get "https://…": what went wrong`.
    let url = format!("https://{endpoint}{path}");
    let failed = |why: String| {
        tracing::debug!(%url, "reaching the kubelet failed: {why}");
        ApiError::internal(format!("Get \"{url}\": {why}"))
    };

    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(client, &endpoint))
        .await
        .map_err(|_| {
            failed(format!(
                "dial tcp {endpoint}: no TLS connection within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(failed)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(connected))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // The connection lives on until the body has been relayed, or the client has gone and
    // dropped it.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "the kubelet connection ended");
        }
    });
    let host = HeaderValue::from_str(&endpoint.to_string()).map_err(|e| failed(e.to_string()))?;
    let request = http::Request::get(&path)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        // kubectl shows the kubelet's own words (`container "c" in pod "p" is waiting to
        // start`), under the kubelet's status.
        let text = Limited::new(response.into_body(), MAX_ERROR_BYTES)
            .collect()
            .await
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        let message = if text.is_empty() {
            format!("the kubelet on node {node_name} answered {status}")
        } else {
            text
        };
        return Err(ApiError {
            code: status.as_u16(),
            reason: reason(status),
            message,
            details: None,
        });
    }
    // Frames go out as they arrive (`logs -f`); a kubelet stream that breaks just ends the
    // client's.
    let frames = http_body_util::BodyStream::new(response.into_body()).scan((), |(), frame| {
        futures::future::ready(match frame {
            Ok(frame) => Some(Ok(frame)),
            Err(error) => {
                tracing::debug!(%error, "the kubelet's log stream broke");
                None
            }
        })
    });
    let mut reply = Response::new(StreamBody::new(frames).boxed_unsync());
    *reply.status_mut() = StatusCode::OK;
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(reply)
}

/// A TLS connection to the kubelet at `endpoint`, its certificate checked for the host.
async fn connect(
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

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
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
    fn the_query_is_checked_and_forwarded() {
        let now = at("2026-01-01T00:00:00Z");
        let forwarded = forwarded_query(
            &query(&[
                ("follow", "true"),
                ("previous", "false"),
                ("timestamps", "1"),
                ("tailLines", "5"),
                ("limitBytes", "100"),
                ("sinceSeconds", "60"),
                ("container", "x"),
                ("pretty", "true"),
            ]),
            now,
        );
        assert_eq!(
            forwarded.ok().as_deref(),
            Some("follow=true&timestamps=true&tailLines=5&limitBytes=100&sinceSeconds=60")
        );
        assert_eq!(forwarded_query(&query(&[]), now).ok().as_deref(), Some(""));
        assert_eq!(
            forwarded_query(&query(&[("tailLines", "0")]), now)
                .ok()
                .as_deref(),
            Some("tailLines=0")
        );
        for (key, value) in [
            ("follow", "yes"),
            ("previous", "2"),
            ("timestamps", "on"),
            ("tailLines", "-1"),
            ("tailLines", "ten"),
            ("sinceSeconds", "0"),
            ("sinceSeconds", "1.5"),
            ("limitBytes", "0"),
            ("limitBytes", "x"),
            ("sinceTime", "yesterday"),
        ] {
            let error = forwarded_query(&query(&[(key, value)]), now);
            let error = message(error);
            assert!(
                error.starts_with(&format!("{key}: ")),
                "{key}={value}: {error}"
            );
        }
        assert_eq!(
            message(forwarded_query(
                &query(&[("sinceSeconds", "5"), ("sinceTime", "2025-12-31T23:00:00Z")]),
                now,
            )),
            "at most one of sinceTime or sinceSeconds may be specified"
        );
    }

    #[test]
    fn since_time_becomes_seconds_rounded_up_and_at_least_one() {
        let now = at("2026-01-01T00:00:00.500Z");
        let since = |time: &str| forwarded_query(&query(&[("sinceTime", time)]), now).ok();
        assert_eq!(
            since("2025-12-31T23:59:00Z").as_deref(),
            Some("sinceSeconds=61")
        );
        assert_eq!(
            since("2025-12-31T23:59:00.500Z").as_deref(),
            Some("sinceSeconds=60")
        );
        assert_eq!(
            since("2030-01-01T00:00:00Z").as_deref(),
            Some("sinceSeconds=1")
        );
        assert_eq!(
            since("2025-12-31T19:59:00-04:00").as_deref(),
            Some("sinceSeconds=61")
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
