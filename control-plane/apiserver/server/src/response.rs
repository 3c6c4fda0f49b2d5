//! Responses: JSON bodies, `kind: Status` errors, streams, and what the client accepts.

use std::convert::Infallible;

use apiserver_registry::ApiError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// The body of every response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    json_typed(status, value, "application/json")
}

/// A JSON response with its own content type (aggregated discovery, tables).
pub fn json_typed(status: StatusCode, value: &Value, content_type: &'static str) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Pre-encoded JSON.
pub fn json_bytes(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Pre-encoded JSON with an ETag (cached documents such as OpenAPI).
pub fn raw_json(status: StatusCode, body: Bytes, etag: &str) -> Response<Body> {
    let mut response = json_bytes(status, body);
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response of `body` with the given content type.
pub fn typed(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The error as a `kind: Status` response.
pub fn error(error: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &error.status())
}

/// What representation the client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The objects themselves.
    Object,
    /// A `meta.k8s.io/v1` Table (kubectl get).
    Table,
    /// Aggregated discovery (`apidiscovery.k8s.io/v2`).
    AggregatedDiscovery,
    /// Only the objects' metadata (`meta.k8s.io/v1` PartialObjectMetadata and its list), as
    /// metadata-only clients and informers ask.
    Metadata,
}

/// An object as `meta.k8s.io/v1` PartialObjectMetadata: its metadata alone.
pub fn partial_metadata(mut object: apiserver_registry::Object) -> serde_json::Value {
    let metadata = object
        .remove("metadata")
        .unwrap_or_else(|| serde_json::json!({}));
    serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
}

/// Reads `Accept`: the first media type offered that the server can give, in the client's
/// order. `None` if nothing acceptable (only protobuf, say).
pub fn negotiate(accept: Option<&str>) -> Option<Representation> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Representation::Object);
    };
    for offer in accept.split(',') {
        let mut params = offer.split(';').map(str::trim);
        let media = params.next().unwrap_or("");
        if !matches!(media, "application/json" | "application/*" | "*/*") {
            continue;
        }
        let params: Vec<(&str, &str)> = params.filter_map(|p| p.split_once('=')).collect();
        let get = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        match (get("as"), get("g"), get("v")) {
            (None, _, _) => return Some(Representation::Object),
            (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Some(Representation::Table),
            (
                Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                Some("meta.k8s.io"),
                Some("v1"),
            ) => return Some(Representation::Metadata),
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2")) => {
                return Some(Representation::AggregatedDiscovery);
            }
            _ => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_kubectl_sends() {
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Some(Representation::Table)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
            )),
            Some(Representation::AggregatedDiscovery)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"
            )),
            Some(Representation::Object)
        );
        assert_eq!(negotiate(None), Some(Representation::Object));
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            )),
            Some(Representation::Metadata)
        );
        assert_eq!(negotiate(Some("application/vnd.kubernetes.protobuf")), None);
    }
}
