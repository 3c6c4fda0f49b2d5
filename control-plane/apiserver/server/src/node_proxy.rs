//! `GET nodes/{name}/proxy/{path}`: the node's kubelet API through the API server
//! (`kubectl get --raw /api/v1/nodes/n1/proxy/stats/summary`, metrics-server's scrapes). The
//! request goes on to the kubelet with its path and query; the answer comes back as the
//! kubelet gave it, streamed. **Does not** authorize (`get nodes/proxy`, checked before).

use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;

use crate::kubelet_proxy::{self, KubeletClient};
use crate::response::Body;

/// Relays `request` (for `path`, the part after `…/proxy`) to node `name`'s kubelet.
pub async fn get(
    client: Option<&KubeletClient>,
    registry: &Registry,
    request: &Request<Incoming>,
    name: &str,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    if request.method() != Method::GET {
        return Err(ApiError::method_not_allowed(
            "only GET is proxied to kubelets by this server",
        ));
    }
    let nodes = registry
        .catalog()
        .get("", "v1", "nodes")
        .ok_or_else(ApiError::no_route)?;
    let node = registry.get(&nodes, None, name).await?;
    let endpoint = kubelet_proxy::kubelet_endpoint(&node, name)?;
    let client = client.ok_or_else(|| kubelet_proxy::no_client("node proxying"))?;
    let path = if path.is_empty() { "/" } else { path };
    let target = match request.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let url = format!("https://{endpoint}{target}");
    let failed = |why: String| ApiError::internal(format!("Get \"{url}\": {why}"));
    let mut sender = kubelet_proxy::open(client, &endpoint, &url).await?;
    let host = HeaderValue::from_str(&endpoint.to_string()).map_err(|e| failed(e.to_string()))?;
    let forwarded = Request::get(target.as_str())
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (parts, body) = response.into_parts();
    let frames = http_body_util::BodyStream::new(body)
        .scan((), |(), frame| futures::future::ready(frame.ok().map(Ok)));
    let mut reply = Response::new(StreamBody::new(frames).boxed_unsync());
    *reply.status_mut() = parts.status;
    if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
        reply
            .headers_mut()
            .insert(header::CONTENT_TYPE, kind.clone());
    }
    Ok(reply)
}
