//! What a request asks for, read from its method and path the way kube-apiserver reads them:
//! `/api/v1/namespaces/{ns}/{resource}/{name}/{subresource}`, `/apis/{group}/{version}/…`.

use apiserver_authz::{Attributes, ResourceAttributes};
use http::Method;

/// The parts of a resource request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// Whether the path names a resource (rather than discovery, health, …).
    pub is_resource: bool,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The API group ("" for core).
    pub group: String,
    /// The version.
    pub version: String,
    /// The namespace, if the path has one.
    pub namespace: Option<String>,
    /// The resource's plural name.
    pub resource: String,
    /// The object's name, if the path has one.
    pub name: Option<String>,
    /// The subresource, if any.
    pub subresource: Option<String>,
}

/// Namespace subresources, which look like resources under a namespace in the path.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl RequestInfo {
    /// What the authorizers judge; `path` is the request's path.
    pub fn attributes<'a>(&'a self, path: &'a str) -> Attributes<'a> {
        Attributes {
            verb: &self.verb,
            resource: self.is_resource.then(|| ResourceAttributes {
                group: &self.group,
                resource: &self.resource,
                subresource: self.subresource.as_deref(),
                name: self.name.as_deref(),
                namespace: self.namespace.as_deref(),
            }),
            path,
        }
    }
}

/// Reads a request. `watch` is whether `?watch=true` was given; `field_selector` is the
/// `fieldSelector` parameter (a list or watch of one object by `metadata.name` names it, so
/// it is authorized as that object, as kube-apiserver does).
pub fn parse(method: &Method, path: &str, watch: bool, field_selector: &str) -> RequestInfo {
    let mut info = parse_path(method, path, watch);
    if matches!(info.verb.as_str(), "list" | "watch")
        && let Some(name) = field_selector.strip_prefix("metadata.name=")
        && !name.is_empty()
        && !name.contains(',')
    {
        info.name = Some(name.to_owned());
    }
    info
}

fn non_resource(method: &Method) -> RequestInfo {
    RequestInfo {
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    }
}

fn parse_path(method: &Method, path: &str, watch: bool) -> RequestInfo {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return non_resource(method),
    };
    if rest.is_empty() {
        return non_resource(method);
    }
    let mut info = RequestInfo {
        is_resource: true,
        group: group.to_owned(),
        version: version.to_owned(),
        ..RequestInfo::default()
    };
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = Some(rest[1].to_owned());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    // A namespace object itself: namespaces/{name}[/status]
    if rest[0] == "namespaces" {
        info.resource = "namespaces".into();
        info.name = info.namespace.take();
        info.subresource = rest.get(2).map(|s| s.to_string());
    } else {
        info.resource = rest[0].to_owned();
        info.name = rest.get(1).map(|s| s.to_string());
        info.subresource = rest.get(2).map(|s| s.to_string());
        // A proxy subresource carries a path of its own: nodes/{name}/proxy/stats/summary.
        if rest.len() > 3 && rest[2] != "proxy" {
            return non_resource(method);
        }
    }
    info.verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if info.name.is_some() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if info.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
    .to_owned();
    // Opening a stream into a pod is a write whichever method opens it: a WebSocket client
    // must GET, and `get` alone (what read-only roles grant) must not let it in.
    if info.verb == "get"
        && matches!(
            info.subresource.as_deref(),
            Some("exec" | "attach" | "portforward")
        )
    {
        info.verb = "create".to_owned();
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str) -> RequestInfo {
        parse(&method, path, false, "")
    }

    #[test]
    fn paths() {
        let pods = info(Method::GET, "/api/v1/namespaces/default/pods");
        assert_eq!(
            (
                pods.verb.as_str(),
                pods.resource.as_str(),
                pods.namespace.as_deref()
            ),
            ("list", "pods", Some("default"))
        );
        let status = info(
            Method::PUT,
            "/apis/apps/v1/namespaces/ns/deployments/web/status",
        );
        assert_eq!(status.group, "apps");
        assert_eq!(status.name.as_deref(), Some("web"));
        assert_eq!(status.subresource.as_deref(), Some("status"));
        assert_eq!(status.verb, "update");
        let ns = info(Method::GET, "/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.resource.as_str(), ns.name.as_deref(), ns.namespace),
            ("namespaces", Some("kube-system"), None)
        );
        let finalize = info(Method::PUT, "/api/v1/namespaces/x/finalize");
        assert_eq!(
            (finalize.name.as_deref(), finalize.subresource.as_deref()),
            (Some("x"), Some("finalize"))
        );
        // kubectl logs: GET …/pods/NAME/log?container=C&follow=true
        let log = info(Method::GET, "/api/v1/namespaces/ns/pods/web/log");
        assert_eq!(
            (
                log.verb.as_str(),
                log.resource.as_str(),
                log.name.as_deref(),
                log.subresource.as_deref()
            ),
            ("get", "pods", Some("web"), Some("log"))
        );
        // kubectl exec over WebSocket GETs, and is still a write.
        let exec = info(Method::GET, "/api/v1/namespaces/ns/pods/web/exec");
        assert_eq!(
            (exec.verb.as_str(), exec.subresource.as_deref()),
            ("create", Some("exec"))
        );
        assert_eq!(
            info(Method::POST, "/api/v1/namespaces/ns/pods/web/attach").verb,
            "create"
        );
        let proxy = info(Method::GET, "/api/v1/nodes/n1/proxy/stats/summary");
        assert_eq!(
            (
                proxy.verb.as_str(),
                proxy.name.as_deref(),
                proxy.subresource.as_deref()
            ),
            ("get", Some("n1"), Some("proxy"))
        );
        let nodes = info(Method::DELETE, "/api/v1/nodes");
        assert_eq!(nodes.verb, "deletecollection");
        assert!(parse(&Method::GET, "/api/v1/pods", true, "").verb == "watch");
        let one = parse(
            &Method::GET,
            "/api/v1/namespaces/a/secrets",
            true,
            "metadata.name=s",
        );
        assert_eq!(one.name.as_deref(), Some("s"));
        assert_eq!(info(Method::GET, "/apis").verb, "get");
        assert!(!info(Method::GET, "/api/v1").is_resource);
        assert!(!info(Method::GET, "/healthz").is_resource);
    }
}
