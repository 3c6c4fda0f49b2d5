//! `GET pods/{name}/log`: the API server's side of `kubectl logs`. It checks the query,
//! finds the container and its kubelet (`kubelet_proxy`), and relays the request to the
//! kubelet's `/containerLogs`, streaming the answer back as it comes (`kubectl logs -f`), as
//! kube-apiserver does. **Does not** read log files (the kubelet's).

use std::collections::HashMap;

use apiserver_registry::{ApiError, Registry};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, StreamBody};

use crate::kubelet_proxy::{self, KubeletClient, boolean};
use crate::response::Body;

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
    let asked = query.get("container").map(String::as_str);
    let wanted = kubelet_proxy::Wanted::Container(asked);
    let target = kubelet_proxy::locate(registry, namespace, name, wanted).await?;
    let client = client.ok_or_else(|| kubelet_proxy::no_client("logs"))?;
    let container = &target.container;
    let path = if forwarded.is_empty() {
        format!("/containerLogs/{namespace}/{name}/{container}")
    } else {
        format!("/containerLogs/{namespace}/{name}/{container}?{forwarded}")
    };
    let url = format!("https://{}{path}", target.endpoint);
    let mut sender = kubelet_proxy::open(client, &target.endpoint, &url).await?;
    let failed = |why: String| ApiError::internal(format!("Get \"{url}\": {why}"));
    let host =
        HeaderValue::from_str(&target.endpoint.to_string()).map_err(|e| failed(e.to_string()))?;
    let request = http::Request::get(&path)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(kubelet_proxy::refusal(response, &target.node).await);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
