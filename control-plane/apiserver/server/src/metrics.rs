//! `/metrics`: the server's Prometheus metrics, under kube-apiserver's names so existing
//! dashboards and alerts read them — requests by verb, resource, scope and code with their
//! latency, requests in flight, open watches — and the process's memory and descriptors.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::request::RequestInfo;
use crate::response::Body;

/// kube-apiserver's latency buckets, in seconds.
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// What a request is counted under.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`.
    pub verb: String,
    /// The API group.
    pub group: String,
    /// The version.
    pub version: String,
    /// The resource (empty for non-resource paths).
    pub resource: String,
    /// The subresource.
    pub subresource: String,
    /// `resource` (one object), `namespace`, `cluster`, or empty for non-resource paths.
    pub scope: String,
    /// Always `apiserver`.
    pub component: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
    component: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

impl RequestLabels {
    /// The labels of a parsed request; `apply` is whether it is a server-side apply.
    pub fn of(info: &RequestInfo, apply: bool) -> RequestLabels {
        let verb = match info.verb.as_str() {
            "get" if info.is_resource => "GET",
            "list" => "LIST",
            "watch" => "WATCH",
            "create" => "POST",
            "update" => "PUT",
            "patch" if apply => "APPLY",
            "patch" => "PATCH",
            "delete" | "deletecollection" => "DELETE",
            other => return RequestLabels::non_resource(other),
        };
        let scope = if info.name.is_some() {
            "resource"
        } else if info.namespace.is_some() {
            "namespace"
        } else {
            "cluster"
        };
        RequestLabels {
            verb: verb.into(),
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone().unwrap_or_default(),
            scope: scope.into(),
            component: "apiserver".into(),
        }
    }

    /// The labels of a non-resource request with this (lower-case) method.
    pub fn non_resource(method: &str) -> RequestLabels {
        RequestLabels {
            verb: method.to_ascii_uppercase(),
            component: "apiserver".into(),
            ..RequestLabels::default()
        }
    }

    fn with_code(&self, code: u16) -> CodeLabels {
        CodeLabels {
            verb: self.verb.clone(),
            group: self.group.clone(),
            version: self.version.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            scope: self.scope.clone(),
            component: self.component.clone(),
            code: code.to_string(),
        }
    }

    fn mutating(&self) -> bool {
        !matches!(
            self.verb.as_str(),
            "GET" | "LIST" | "WATCH" | "HEAD" | "OPTIONS"
        )
    }
}

type Durations = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Durations,
    inflight: Family<KindLabels, Gauge>,
    longrunning: Family<RequestLabels, Gauge>,
    resident_memory: Gauge,
    open_fds: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        let durations: Durations =
            Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component (watches excluded)",
            durations.clone(),
        );
        let inflight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "apiserver_current_inflight_requests",
            "Requests being served now, by kind (readOnly or mutating)",
            inflight.clone(),
        );
        let longrunning = Family::<RequestLabels, Gauge>::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Long-running requests (watches) open now",
            longrunning.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident_memory.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            open_fds.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            inflight,
            longrunning,
            resident_memory,
            open_fds,
        }
    }

    /// Marks a request as started; the returned guard ends it.
    pub fn start(&self, labels: &RequestLabels) -> InFlight {
        let request_kind = if labels.mutating() {
            "mutating"
        } else {
            "readOnly"
        };
        let gauge = self
            .inflight
            .get_or_create(&KindLabels { request_kind })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// Counts a finished request and its latency; an open watch is counted as long-running
    /// until `body` ends, and its latency is not observed.
    pub fn finish(&self, labels: &RequestLabels, code: u16, took: Duration, body: Body) -> Body {
        self.requests.get_or_create(&labels.with_code(code)).inc();
        if labels.verb != "WATCH" {
            self.durations
                .get_or_create(labels)
                .observe(took.as_secs_f64());
            return body;
        }
        if code >= 300 {
            return body;
        }
        let gauge = self.longrunning.get_or_create(labels).clone();
        gauge.inc();
        http_body_util::BodyExt::boxed_unsync(Guarded {
            body,
            _open: InFlight(gauge),
        })
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory() {
            self.resident_memory.set(rss);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(fds.count()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!("encoding metrics: {e}");
        }
        text
    }
}

/// The resident set size, from `/proc/self/status`.
fn resident_memory() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Decrements its gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A response body that holds a guard until the body ends.
struct Guarded {
    body: Body,
    _open: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn requests_are_counted_under_kube_apiserver_names() {
        let metrics = Metrics::new();
        let info =
            crate::request::parse(&Method::GET, "/api/v1/namespaces/default/pods", false, "");
        let labels = RequestLabels::of(&info, false);
        assert_eq!(
            (labels.verb.as_str(), labels.scope.as_str()),
            ("LIST", "namespace")
        );
        {
            let _inflight = metrics.start(&labels);
            let text = metrics.render();
            assert!(
                text.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"} 1"),
                "{text}"
            );
        }
        let body = http_body_util::BodyExt::boxed_unsync(http_body_util::Empty::new());
        drop(metrics.finish(&labels, 200, Duration::from_millis(3), body));
        let text = metrics.render();
        assert!(text.contains("apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\",component=\"apiserver\",code=\"200\"} 1"), "{text}");
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"} 0"));
        assert!(text.contains("process_resident_memory_bytes "));

        let watch = crate::request::parse(&Method::GET, "/api/v1/pods", true, "");
        let labels = RequestLabels::of(&watch, false);
        let body = http_body_util::BodyExt::boxed_unsync(http_body_util::Empty::new());
        let open = metrics.finish(&labels, 200, Duration::from_millis(1), body);
        assert!(metrics.render().contains("apiserver_longrunning_requests{verb=\"WATCH\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"cluster\",component=\"apiserver\"} 1"));
        drop(open);
        assert!(
            metrics
                .render()
                .contains("scope=\"cluster\",component=\"apiserver\"} 0")
        );
    }
}
