//! `GET pods/{name}/log`: the API server's side of `kubectl logs`. It picks the container,
//! checks the query, and relays the request to `/containerLogs` on the kubelet of the pod's
//! node over TLS — presenting the API server's kubelet client certificate and requiring the
//! kubelet's serving certificate to chain to the cluster CA — streaming the answer back as it
//! comes. Reading the log files is the kubelet's; authorizing `get pods/log` happened before.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use apiserver_registry::object::{Object, str_at};
use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde_json::Value;

use crate::response::Body;
use crate::tls::{TlsError, certificates};

/// The port a kubelet serves on when its Node does not say.
const DEFAULT_KUBELET_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the API server reaches kubelets.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    /// A client presenting `cert`/`key` and trusting kubelets whose certificates chain to
    /// `ca`.
    pub fn new(cert: &Path, key: &Path, ca: &Path) -> Result<KubeletClient, TlsError> {
        let chain = certificates(cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
            path: key.display().to_string(),
            why: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for ca_cert in certificates(ca)? {
            roots.add(ca_cert).map_err(|e| TlsError::File {
                path: ca.display().to_string(),
                why: e.to_string(),
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient { tls: Arc::new(tls) })
    }
}

fn containers(pod: &Object) -> Vec<String> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| {
            pod.get("spec")
                .and_then(|s| s.get(*field))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The container a log request is for: the one named, or the pod's only container.
pub fn container(pod: &Object, name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let all = containers(pod);
    match asked.filter(|c| !c.is_empty()) {
        Some(asked) if all.iter().any(|c| c == asked) => Ok(asked.to_string()),
        Some(asked) => Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<String> = pod
                .get("spec")
                .and_then(|s| s.get("containers"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            match main.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// The query to forward, each parameter checked; `sinceTime` becomes `sinceSeconds`.
pub fn forwarded_query(query: &HashMap<String, String>) -> Result<String, ApiError> {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for key in ["follow", "previous", "timestamps"] {
        match query.get(key).map(String::as_str) {
            None | Some("") | Some("false") => {}
            Some("true") => {
                out.append_pair(key, "true");
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "{key}: {other:?} is not a boolean"
                )));
            }
        }
    }
    let number = |key: &str, min: i64| -> Result<Option<i64>, ApiError> {
        let Some(text) = query.get(key) else {
            return Ok(None);
        };
        let value: i64 = text
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{key}: {text:?} is not an integer")))?;
        if value < min {
            return Err(ApiError::bad_request(format!(
                "{key}: must be greater than or equal to {min}"
            )));
        }
        Ok(Some(value))
    };
    if let Some(lines) = number("tailLines", 0)? {
        out.append_pair("tailLines", &lines.to_string());
    }
    if let Some(bytes) = number("limitBytes", 1)? {
        out.append_pair("limitBytes", &bytes.to_string());
    }
    let since_seconds = number("sinceSeconds", 1)?;
    let since_time = match query.get("sinceTime") {
        Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|_| {
            ApiError::bad_request(format!("sinceTime: {text:?} is not an RFC 3339 time"))
        })?),
        None => None,
    };
    match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        (Some(seconds), None) => {
            out.append_pair("sinceSeconds", &seconds.to_string());
        }
        (None, Some(time)) => {
            let ago = jiff::Timestamp::now().duration_since(time).as_secs().max(1);
            out.append_pair("sinceSeconds", &ago.to_string());
        }
        (None, None) => {}
    }
    Ok(out.finish())
}

/// The kubelet's address and port, from the Node.
fn kubelet_endpoint(node: &Object, name: &str) -> Result<(IpAddr, u16), ApiError> {
    let addresses = node
        .get("status")
        .and_then(|s| s.get("addresses"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pick = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .find_map(|a| {
                a.get("address")
                    .and_then(Value::as_str)?
                    .parse::<IpAddr>()
                    .ok()
            })
    };
    let address = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .ok_or_else(|| ApiError::internal(format!("node {name} reports no address")))?;
    let port = node
        .get("status")
        .and_then(|s| s.get("daemonEndpoints"))
        .and_then(|d| d.get("kubeletEndpoint"))
        .and_then(|k| k.get("Port"))
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((address, port))
}

/// Serves `GET pods/{name}/log` in `namespace`.
pub async fn logs(
    client: Option<&KubeletClient>,
    registry: &Registry,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let pods = registry
        .catalog()
        .get("", "v1", "pods")
        .ok_or_else(ApiError::no_route)?;
    let pod = registry.get(&pods, Some(namespace), name).await?;
    let container = container(&pod, name, query.get("container").map(String::as_str))?;
    let forwarded = forwarded_query(query)?;
    let node_name = str_at(&pod, "spec.nodeName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?
        .to_string();
    let Some(client) = client else {
        return Err(ApiError::internal(
            "the API server has no kubelet client credentials (--kubelet-client-certificate)",
        ));
    };
    let nodes = registry
        .catalog()
        .get("", "v1", "nodes")
        .ok_or_else(ApiError::no_route)?;
    let node = registry.get(&nodes, None, &node_name).await?;
    let (address, port) = kubelet_endpoint(&node, &node_name)?;
    let path = format!("/containerLogs/{namespace}/{name}/{container}?{forwarded}");
    let url = format!("https://{}{path}", std::net::SocketAddr::new(address, port));
    let failed = |why: String| ApiError::internal(format!("Get \"{url}\": {why}"));

    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((address, port)),
    )
    .await
    .map_err(|_| failed("dial tcp: i/o timeout".into()))?
    .map_err(|e| failed(format!("dial tcp: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client.tls));
    let tls = connector
        .connect(ServerName::IpAddress(address.into()), tcp)
        .await
        .map_err(|e| failed(format!("tls: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "kubelet connection ended");
        }
    });
    let request = http::Request::get(&path)
        .header(http::header::HOST, format!("{address}:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(if status.is_client_error() {
            ApiError::bad_request(text)
        } else {
            ApiError::internal(text)
        });
    }
    // Frames are relayed as they arrive (`logs -f`); a broken kubelet stream just ends it.
    let frames = http_body_util::BodyStream::new(response.into_body())
        .take_while(|frame| futures::future::ready(frame.is_ok()))
        .filter_map(|frame| futures::future::ready(frame.ok().map(Ok::<_, Infallible>)));
    let body = http_body_util::StreamBody::new(frames).boxed_unsync();
    let mut reply = Response::new(body);
    *reply.status_mut() = StatusCode::OK;
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str]) -> Object {
        let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
        json!({"spec": {"containers": containers, "initContainers": [{"name": "init"}]}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        assert_eq!(
            container(&pod(&["web"]), "p", None).ok(),
            Some("web".into())
        );
        assert_eq!(
            container(&pod(&["web", "side"]), "p", Some("init")).ok(),
            Some("init".into())
        );
        let many = container(&pod(&["web", "side"]), "p", None)
            .err()
            .map(|e| e.to_string());
        assert!(
            many.as_deref().is_some_and(|m| m.contains(
                "a container name must be specified for pod p, choose one of: [web side init]"
            )),
            "{many:?}"
        );
        let wrong = container(&pod(&["web"]), "p", Some("nope"))
            .err()
            .map(|e| e.to_string());
        assert!(
            wrong
                .as_deref()
                .is_some_and(|m| m.contains("container nope is not valid for pod p")),
            "{wrong:?}"
        );
    }

    #[test]
    fn the_query_is_checked_and_forwarded() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let forwarded = forwarded_query(&query(&[
            ("follow", "true"),
            ("tailLines", "5"),
            ("container", "x"),
        ]));
        assert_eq!(forwarded.ok().as_deref(), Some("follow=true&tailLines=5"));
        for (key, value) in [
            ("tailLines", "-1"),
            ("sinceSeconds", "0"),
            ("follow", "yes"),
            ("sinceTime", "yesterday"),
            ("limitBytes", "x"),
        ] {
            let error = forwarded_query(&query(&[(key, value)]))
                .err()
                .map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|m| m.contains(key)),
                "{key}={value}: {error:?}"
            );
        }
        let both = forwarded_query(&query(&[
            ("sinceSeconds", "5"),
            ("sinceTime", "2026-01-01T00:00:00Z"),
        ]));
        assert!(both.is_err());
        let since =
            forwarded_query(&query(&[("sinceTime", "2000-01-01T00:00:00Z")])).unwrap_or_default();
        assert!(since.starts_with("sinceSeconds="), "{since}");
    }
}
