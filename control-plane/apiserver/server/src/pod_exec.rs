//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward`: the API server's
//! side of `kubectl exec`, `attach` and `port-forward`. It checks the options, finds the
//! container (or pod) and its kubelet (`kubelet_proxy`), sends the client's upgrade request on
//! to the kubelet's `/exec`, `/attach` or `/portForward`, and once the kubelet has switched
//! protocols, joins the two connections byte for byte — as kube-apiserver's upgrade-aware
//! proxy does. Basalt's kubelets speak kubectl's stream protocols (WebSocket channels, SPDY
//! tunnelled or not) themselves, so nothing is translated here. **Does not** understand the
//! stream protocol (the kubelet's) or authorize (`create` on the subresource, checked before).

use std::collections::HashMap;

use apiserver_registry::object::str_at;
use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::kubelet_proxy::{self, KubeletClient, boolean};
use crate::response::Body;

/// The headers of an upgrade that pass between the client and the kubelet, both ways.
/// Extensions are left out: the stream is relayed as negotiated, and Basalt's kubelet
/// compresses nothing.
const UPGRADE_HEADERS: [HeaderName; 6] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::SEC_WEBSOCKET_ACCEPT,
];
/// The SPDY clients' protocol offer (kubectl falls back to SPDY when the WebSocket upgrade is
/// refused); relayed so the kubelet can say what it supports.
const STREAM_PROTOCOL: &str = "x-stream-protocol-version";

/// What a stream asks for, checked.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    container: Option<String>,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Options {
    /// The options of an `exec` (`exec` true) or `attach` request's `query`, in kube's words
    /// when they are wrong.
    fn parse(query: Option<&str>, exec: bool) -> Result<Options, ApiError> {
        let pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        // `command` repeats, one argument each; the rest are single.
        let command: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        let single: HashMap<String, String> = pairs.into_iter().collect();
        let options = Options {
            container: single.get("container").filter(|c| !c.is_empty()).cloned(),
            command,
            stdin: boolean(&single, "stdin")?,
            stdout: boolean(&single, "stdout")?,
            stderr: boolean(&single, "stderr")?,
            tty: boolean(&single, "tty")?,
        };
        if exec && options.command.is_empty() {
            return Err(ApiError::bad_request("you must specify at least 1 command"));
        }
        if !exec && !options.command.is_empty() {
            return Err(ApiError::bad_request("command: attach takes no command"));
        }
        if !(options.stdin || options.stdout || options.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(options)
    }

    /// The kubelet's query: the command and the streams asked for.
    fn kubelet_query(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for argument in &self.command {
            out.append_pair("command", argument);
        }
        for (key, on) in [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
            ("tty", self.tty),
        ] {
            if on {
                out.append_pair(key, "true");
            }
        }
        out.finish()
    }
}

/// The ports of a port-forward `query` (`ports`, repeated or comma-separated), checked.
fn ports(query: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (key, value) in query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    {
        if key != "ports" {
            continue;
        }
        for text in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let port = text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "ports: invalid value {text:?}: must be between 1 and 65535, inclusive"
                ))
            })?;
            ports.push(port);
        }
    }
    Ok(ports)
}

/// Serves an `exec`, `attach` or `portforward` (`subresource`) request for pod `name` in
/// `namespace` through `client` (none: the server has no kubelet credentials, and refuses).
pub async fn stream(
    client: Option<&KubeletClient>,
    registry: &Registry,
    request: Request<Incoming>,
    namespace: &str,
    name: &str,
    subresource: &str,
) -> Result<Response<Body>, ApiError> {
    let query = request.uri().query();
    let (path, target) = if subresource == "portforward" {
        let ports = ports(query)?;
        let wanted = kubelet_proxy::Wanted::Pod;
        let target = kubelet_proxy::locate(registry, namespace, name, wanted).await?;
        let mut path = format!("/portForward/{namespace}/{name}");
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            path.push_str(&format!("?ports={}", list.join(",")));
        }
        (path, target)
    } else {
        let exec = subresource == "exec";
        let options = Options::parse(query, exec)?;
        let wanted = kubelet_proxy::Wanted::Container(options.container.as_deref());
        let target = kubelet_proxy::locate(registry, namespace, name, wanted).await?;
        let path = format!(
            "/{subresource}/{namespace}/{name}/{}?{}",
            target.container,
            options.kubelet_query()
        );
        (path, target)
    };
    if let Some(phase @ ("Succeeded" | "Failed")) = str_at(&target.pod, "status.phase") {
        let doing = match subresource {
            "exec" => "exec into a container in",
            "attach" => "attach to a container in",
            _ => "forward ports of",
        };
        return Err(ApiError::bad_request(format!(
            "cannot {doing} a completed pod; current phase is {phase}"
        )));
    }
    if !request.headers().contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let client = client.ok_or_else(|| kubelet_proxy::no_client(subresource))?;
    let url = format!("https://{}{path}", target.endpoint);
    let failed = |why: String| ApiError::internal(format!("Get \"{url}\": {why}"));
    let mut kubelet_request = Request::builder()
        .method(request.method().clone())
        .uri(path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let host =
        HeaderValue::from_str(&target.endpoint.to_string()).map_err(|e| failed(e.to_string()))?;
    kubelet_request.headers_mut().insert(header::HOST, host);
    copy_upgrade_headers(request.headers(), kubelet_request.headers_mut());
    let mut sender = kubelet_proxy::open(client, &target.endpoint, &url).await?;
    let kubelet_response = sender
        .send_request(kubelet_request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if kubelet_response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(kubelet_proxy::refusal(kubelet_response, &target.node).await);
    }
    let mut reply = Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    copy_upgrade_headers(kubelet_response.headers(), reply.headers_mut());
    // The client's side upgrades once this 101 has been written; both are awaited apart from
    // the request so the response can go out first.
    tokio::spawn(async move {
        let (from_client, to_kubelet) = tokio::join!(
            hyper::upgrade::on(request),
            hyper::upgrade::on(kubelet_response)
        );
        match (from_client, to_kubelet) {
            (Ok(client), Ok(kubelet)) => {
                let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
                match tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                    Ok((up, down)) => tracing::debug!(up, down, "stream relayed"),
                    Err(error) => tracing::debug!(%error, "stream relay ended"),
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "a stream upgrade failed");
            }
        }
    });
    Ok(reply)
}

fn copy_upgrade_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in UPGRADE_HEADERS
        .iter()
        .cloned()
        .chain([HeaderName::from_static(STREAM_PROTOCOL)])
    {
        for value in from.get_all(&name) {
            to.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(query: &str, exec: bool) -> String {
        match Options::parse(Some(query), exec) {
            Ok(options) => format!("unexpectedly {options:?}"),
            Err(e) => {
                assert_eq!(e.code, 400, "{e}");
                e.message
            }
        }
    }

    #[test]
    fn exec_options_keep_every_argument_in_order() {
        let options = Options::parse(
            Some("command=sh&command=-c&command=echo+%22a+b%22&container=web&stdout=true&tty=1"),
            true,
        );
        assert_eq!(
            options.as_ref().ok(),
            Some(&Options {
                container: Some("web".into()),
                command: vec!["sh".into(), "-c".into(), "echo \"a b\"".into()],
                stdin: false,
                stdout: true,
                stderr: false,
                tty: true,
            })
        );
        assert_eq!(
            options.ok().map(|o| o.kubelet_query()).as_deref(),
            Some("command=sh&command=-c&command=echo+%22a+b%22&stdout=true&tty=true")
        );
    }

    #[test]
    fn ports_are_listed_and_checked() {
        assert_eq!(
            ports(Some("ports=8080&ports=9090,53")).ok(),
            Some(vec![8080, 9090, 53])
        );
        let error = ports(Some("ports=0")).err().map(|e| e.message);
        assert_eq!(
            error.as_deref(),
            Some("ports: invalid value \"0\": must be between 1 and 65535, inclusive")
        );
        assert!(ports(Some("ports=http")).is_err());
    }

    #[test]
    fn bad_options_are_named() {
        assert_eq!(
            error("stdout=true", true),
            "you must specify at least 1 command"
        );
        assert_eq!(
            error("command=ls", true),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(error("command=ls&stdin=yes", true).starts_with("stdin: invalid value \"yes\""));
        assert_eq!(
            error("command=ls&stdout=true", false),
            "command: attach takes no command"
        );
        assert!(Options::parse(Some("stdin=true&tty=true"), false).is_ok());
    }
}
