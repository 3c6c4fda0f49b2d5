//! The `paths` of a document: every resource's collection, item and subresource URLs with
//! their operations, parameters and Kubernetes' vendor extensions.

use std::sync::Arc;

use apiserver_registry::Resource;
use serde_json::{Map, Value, json};

use crate::Refs;

/// Swagger 2.0 or OpenAPI 3.0: parameters, bodies and responses are written differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Swagger 2.0.
    V2,
    /// OpenAPI 3.0.
    V3,
}

fn query(name: &str, description: &str, kind: &str, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V3 => {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
        }
        Flavor::V2 => {
            json!({"name": name, "in": "query", "description": description, "type": kind, "uniqueItems": true})
        }
    }
}

fn path_param(name: &str, description: &str, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V3 => {
            json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
        }
        Flavor::V2 => {
            json!({"name": name, "in": "path", "required": true, "description": description, "type": "string", "uniqueItems": true})
        }
    }
}

fn write_params(flavor: Flavor, patch: bool) -> Vec<Value> {
    let mut params = vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
            "string",
            flavor,
        ),
        query(
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
            "string",
            flavor,
        ),
        query(
            "fieldValidation",
            "How the server handles fields it does not know or that appear twice: Ignore, Warn or Strict.",
            "string",
            flavor,
        ),
    ];
    if patch {
        params.push(query("force", "Force is going to \"force\" Apply requests: re-acquire conflicting fields owned by other people.", "boolean", flavor));
    }
    params
}

fn list_params(flavor: Flavor) -> Vec<Value> {
    [
        (
            "allowWatchBookmarks",
            "Request watch events with type BOOKMARK.",
            "boolean",
        ),
        (
            "continue",
            "The continue token of the previous page.",
            "string",
        ),
        (
            "fieldSelector",
            "Restrict the returned objects by their fields.",
            "string",
        ),
        (
            "labelSelector",
            "Restrict the returned objects by their labels.",
            "string",
        ),
        (
            "limit",
            "The maximum number of objects to return.",
            "integer",
        ),
        (
            "resourceVersion",
            "Which resource versions the request may be served from.",
            "string",
        ),
        (
            "resourceVersionMatch",
            "How resourceVersion is applied: Exact or NotOlderThan.",
            "string",
        ),
        (
            "sendInitialEvents",
            "Start a watch with the current state as ADDED events.",
            "boolean",
        ),
        (
            "timeoutSeconds",
            "Timeout for the list/watch call.",
            "integer",
        ),
        ("watch", "Watch for changes instead of listing.", "boolean"),
    ]
    .iter()
    .map(|(name, description, kind)| query(name, description, kind, flavor))
    .collect()
}

struct Op<'a> {
    resource: &'a Resource,
    /// The kind the operation takes, when not the resource's (a Scale).
    kind: Option<(&'static str, &'static str, &'static str)>,
    action: &'static str,
    id: String,
    params: Vec<Value>,
    body: Option<(&'a str, Vec<&'static str>)>,
    response: &'a str,
}

fn op(op: Op<'_>, flavor: Flavor) -> Value {
    let r = op.resource;
    let mut params = op.params;
    let mut value = json!({
        "operationId": op.id,
        "description": format!("{} {}", op.action, r.kind),
        "tags": [tag(r)],
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": match op.kind {
            Some((group, version, kind)) => json!({"group": group, "version": version, "kind": kind}),
            None => json!({"group": r.group, "version": r.version, "kind": r.kind}),
        },
    });
    match flavor {
        Flavor::V3 => {
            if let Some((schema, types)) = op.body {
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| (t.to_string(), json!({"schema": {"$ref": schema}})))
                    .collect();
                value["requestBody"] = json!({"content": content, "required": true});
            }
            value["responses"] = json!({
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": op.response}}}},
                "401": {"description": "Unauthorized"},
            });
        }
        Flavor::V2 => {
            if let Some((schema, types)) = op.body {
                params.push(json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": schema}}));
                value["consumes"] = json!(types);
            }
            value["produces"] = json!(["application/json"]);
            value["responses"] = json!({"200": {"description": "OK", "schema": {"$ref": op.response}}, "401": {"description": "Unauthorized"}});
        }
    }
    value["parameters"] = Value::Array(params);
    value
}

fn tag(r: &Resource) -> String {
    let group = if r.group.is_empty() {
        "core".to_owned()
    } else {
        r.group.replace('.', "_")
    };
    format!("{group}_{}", r.version)
}

fn camel(r: &Resource) -> String {
    let group: String = r
        .group
        .split('.')
        .next()
        .unwrap_or("")
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
        .collect();
    let version: String = r
        .version
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { c.to_ascii_uppercase() } else { c })
        .collect();
    let group = if group.is_empty() {
        "Core".to_owned()
    } else {
        group
    };
    format!("{group}{version}")
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// Every path of `resources`.
pub fn paths(resources: &[Arc<Resource>], refs: &Refs, flavor: Flavor) -> Map<String, Value> {
    let mut paths = Map::new();
    let status = format!("{}io.k8s.apimachinery.pkg.apis.meta.v1.Status", refs.prefix);
    let scale = format!("{}io.k8s.api.autoscaling.v1.Scale", refs.prefix);
    for r in resources {
        let Some((object, list)) = refs.by_plural.get(&r.plural) else {
            continue;
        };
        let base = format!("/{}", crate::gv_path(&r.group, &r.version));
        let scoped = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let ns_param = || {
            if r.namespaced {
                vec![path_param(
                    "namespace",
                    "object name and auth scope, such as for teams and projects",
                    flavor,
                )]
            } else {
                vec![]
            }
        };
        let name_param = || path_param("name", &format!("name of the {}", r.kind), flavor);
        let id = |verb: &str, suffix: &str| {
            let scope = if r.namespaced { "Namespaced" } else { "" };
            format!("{verb}{}{scope}{}{suffix}", camel(r), r.kind)
        };

        let mut collection = Map::new();
        if r.allows("list") {
            let mut params = ns_param();
            params.extend(list_params(flavor));
            collection.insert(
                "get".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "list",
                        id: id("list", ""),
                        params,
                        body: None,
                        response: list,
                    },
                    flavor,
                ),
            );
        }
        if r.allows("create") {
            let mut params = ns_param();
            params.extend(write_params(flavor, false));
            collection.insert(
                "post".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "post",
                        id: id("create", ""),
                        params,
                        body: Some((object, vec!["*/*"])),
                        response: object,
                    },
                    flavor,
                ),
            );
        }
        if r.allows("deletecollection") {
            let mut params = ns_param();
            params.extend(list_params(flavor));
            collection.insert(
                "delete".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "deletecollection",
                        id: id("deleteCollection", ""),
                        params,
                        body: None,
                        response: &status,
                    },
                    flavor,
                ),
            );
        }
        paths.insert(scoped.clone(), Value::Object(collection));
        if r.namespaced && r.allows("list") {
            let all = format!("{base}/{}", r.plural);
            let get = op(
                Op {
                    resource: r,
                    kind: None,
                    action: "list",
                    id: format!("list{}{}ForAllNamespaces", camel(r), r.kind),
                    params: list_params(flavor),
                    body: None,
                    response: list,
                },
                flavor,
            );
            paths.insert(all, json!({"get": get}));
        }

        let mut item = Map::new();
        let item_params = || {
            let mut params = vec![name_param()];
            params.extend(ns_param());
            params
        };
        if r.allows("get") {
            item.insert(
                "get".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "get",
                        id: id("read", ""),
                        params: item_params(),
                        body: None,
                        response: object,
                    },
                    flavor,
                ),
            );
        }
        if r.allows("update") {
            let mut params = item_params();
            params.extend(write_params(flavor, false));
            item.insert(
                "put".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "put",
                        id: id("replace", ""),
                        params,
                        body: Some((object, vec!["*/*"])),
                        response: object,
                    },
                    flavor,
                ),
            );
        }
        if r.allows("patch") {
            let mut params = item_params();
            params.extend(write_params(flavor, true));
            item.insert(
                "patch".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "patch",
                        id: id("patch", ""),
                        params,
                        body: Some((object, PATCH_TYPES.to_vec())),
                        response: object,
                    },
                    flavor,
                ),
            );
        }
        if r.allows("delete") {
            let mut params = item_params();
            params.push(query(
                "gracePeriodSeconds",
                "The duration in seconds before the object should be deleted.",
                "integer",
                flavor,
            ));
            params.push(query("propagationPolicy", "Whether and how garbage collection will be performed: Orphan, Background or Foreground.", "string", flavor));
            params.push(query("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All.", "string", flavor));
            item.insert(
                "delete".into(),
                op(
                    Op {
                        resource: r,
                        kind: None,
                        action: "delete",
                        id: id("delete", ""),
                        params,
                        body: None,
                        response: object,
                    },
                    flavor,
                ),
            );
        }
        paths.insert(format!("{scoped}/{{name}}"), Value::Object(item));

        for sub in &r.subresources {
            let response = match sub.name {
                "status" => object.as_str(),
                "scale" => scale.as_str(),
                _ => continue,
            };
            let mut ops = Map::new();
            let suffix = if sub.name == "status" {
                "Status"
            } else {
                "Scale"
            };
            let kind = (sub.name == "scale").then_some(("autoscaling", "v1", "Scale"));
            ops.insert(
                "get".into(),
                op(
                    Op {
                        resource: r,
                        kind,
                        action: "get",
                        id: id("read", suffix),
                        params: item_params(),
                        body: None,
                        response,
                    },
                    flavor,
                ),
            );
            let mut params = item_params();
            params.extend(write_params(flavor, false));
            ops.insert(
                "put".into(),
                op(
                    Op {
                        resource: r,
                        kind,
                        action: "put",
                        id: id("replace", suffix),
                        params,
                        body: Some((response, vec!["*/*"])),
                        response,
                    },
                    flavor,
                ),
            );
            let mut params = item_params();
            params.extend(write_params(flavor, true));
            ops.insert(
                "patch".into(),
                op(
                    Op {
                        resource: r,
                        kind,
                        action: "patch",
                        id: id("patch", suffix),
                        params,
                        body: Some((response, PATCH_TYPES.to_vec())),
                        response,
                    },
                    flavor,
                ),
            );
            paths.insert(
                format!("{scoped}/{{name}}/{}", sub.name),
                Value::Object(ops),
            );
        }
    }
    paths
}
