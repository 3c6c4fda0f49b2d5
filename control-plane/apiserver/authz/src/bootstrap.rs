//! The default cluster roles and bindings every cluster starts with, and their
//! reconciliation at start: a missing one is created; one marked
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` gains any default rule or subject
//! it lacks (nothing a user added is removed; `"false"` leaves it alone).
//!
//! The roles mean what kube-apiserver's defaults of the same names mean, so manifests and
//! habits carry over: `cluster-admin`, the aggregated `admin`/`edit`/`view`, `system:node`,
//! `system:kube-scheduler`, `system:discovery`, …

use apiserver_registry::store::WriteOptions;
use apiserver_registry::{ApiError, Object, Registry};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::rules::{Rule, uncovered};

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const NODE_CLIENT: &str = "system:certificates.k8s.io:certificatesigningrequests:nodeclient";
const SELF_NODE_CLIENT: &str =
    "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient";
const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// Every verb of an ordinary resource (no escalate, bind or impersonate).
const EVERY: &[&str] = apiserver_registry::catalog::ALL_VERBS;

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn paths(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

fn object(value: Value) -> Object {
    match value {
        Value::Object(object) => object,
        _ => Object::new(),
    }
}

fn metadata(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut all: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    all.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    json!({"name": name, "labels": all, "annotations": {AUTOUPDATE: "true"}})
}

fn role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Object {
    object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, labels), "rules": rules,
    }))
}

/// A role whose rules are those of every ClusterRole labelled `aggregate-to-<to>`.
fn aggregated(name: &str, labels: &[(&str, &str)], to: &str) -> Object {
    object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": metadata(name, labels),
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE_TO}{to}"): "true"}}]},
        "rules": [],
    }))
}

fn binding(name: &str, subjects: &[(&str, &str)]) -> Object {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, who)| json!({"kind": kind, "name": who, "apiGroup": "rbac.authorization.k8s.io"}))
        .collect();
    object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": metadata(name, &[]),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    }))
}

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Object> {
    let to_admin = [("rbac.authorization.k8s.io/aggregate-to-admin", "true")];
    let to_edit = [("rbac.authorization.k8s.io/aggregate-to-edit", "true")];
    let to_view = [("rbac.authorization.k8s.io/aggregate-to-view", "true")];
    let health = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    vec![
        role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), paths(&["*"], &["*"])],
        ),
        role(
            "system:discovery",
            &[],
            vec![paths(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            &[],
            vec![paths(&["get"], &health)],
        ),
        role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:monitoring",
            &[],
            vec![paths(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        aggregated("admin", &[], "admin"),
        aggregated("edit", &to_admin, "edit"),
        aggregated("view", &to_edit, "view"),
        role(
            "system:aggregate-to-admin",
            &to_admin,
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    EVERY,
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            &to_edit,
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(
                    &["create"],
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                ),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
            ],
        ),
        role(
            "system:aggregate-to-view",
            &to_view,
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
        ),
        // What a kubelet may do at most; the Node authorizer narrows it to the kubelet's own
        // objects, so by default nobody is bound to it.
        role(
            "system:node",
            &[],
            vec![
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                ),
                rule(READ, &[""], &["endpoints", "services"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                    &[""],
                    &["nodes"],
                ),
                rule(
                    &["patch", "update"],
                    &[""],
                    &["nodes/status", "pods/status"],
                ),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["create", "delete", "get", "list", "watch"],
                    &[""],
                    &["pods"],
                ),
                rule(
                    &["create"],
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                ),
                rule(&["get", "list", "watch"], &[""], &["configmaps", "secrets"]),
                rule(
                    &["create", "get", "list", "watch"],
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                ),
                rule(
                    &["create", "delete", "get", "patch", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
            ],
        ),
        role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        role(
            "system:kube-scheduler",
            &[],
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["create", "get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "namespaces",
                        "nodes",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                        "replicationcontrollers",
                        "services",
                    ],
                ),
                rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                rule(&["create"], &[""], &["bindings", "pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(READ, &["apps"], &["replicasets", "statefulsets"]),
                rule(READ, &["policy"], &["poddisruptionbudgets"]),
                rule(
                    READ,
                    &["storage.k8s.io"],
                    &[
                        "csidrivers",
                        "csinodes",
                        "csistoragecapacities",
                        "storageclasses",
                    ],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        // The CSR approver grants a kubelet's client certificate request to those who may
        // `create` these: a bootstrapping kubelet its first one, a node its renewals.
        role(
            NODE_CLIENT,
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        role(
            SELF_NODE_CLIENT,
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        // Basalt runs its controllers in one process; the garbage collector and the
        // namespace controller among them must act on every resource, custom ones included
        // (kube-controller-manager's own roles for those two are as wide). It may not
        // escalate, bind or impersonate.
        role(
            "system:kube-controller-manager",
            &[],
            vec![
                rule(EVERY, &["*"], &["*"]),
                // The CSR approver and signer act for these signers only.
                json!({"verbs": ["approve"], "apiGroups": ["certificates.k8s.io"],
                       "resources": ["signers"],
                       "resourceNames": ["kubernetes.io/kube-apiserver-client-kubelet",
                                         "kubernetes.io/kubelet-serving"]}),
                json!({"verbs": ["sign"], "apiGroups": ["certificates.k8s.io"],
                       "resources": ["signers"],
                       "resourceNames": ["kubernetes.io/kube-apiserver-client-kubelet",
                                         "kubernetes.io/kubelet-serving",
                                         "kubernetes.io/kube-apiserver-client"]}),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Object> {
    let authenticated = ("Group", crate::AUTHENTICATED);
    vec![
        binding("cluster-admin", &[("Group", crate::MASTERS)]),
        binding("system:discovery", &[authenticated]),
        binding("system:basic-user", &[authenticated]),
        binding(
            "system:public-info-viewer",
            &[authenticated, ("Group", "system:unauthenticated")],
        ),
        binding("system:monitoring", &[("Group", "system:monitoring")]),
        binding(
            "system:node-bootstrapper",
            &[("Group", "system:bootstrappers")],
        ),
        binding(NODE_CLIENT, &[("Group", "system:bootstrappers")]),
        binding(SELF_NODE_CLIENT, &[("Group", "system:nodes")]),
        binding(
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Rules {
    rules: Vec<Rule>,
}

fn autoupdate(object: &Object) -> bool {
    apiserver_registry::object::metadata(object)
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str)
        != Some("false")
}

/// The defaults merged into a stored object, or `None` if it already has them all.
fn merged(resource: &str, stored: &Object, default: &Object) -> Option<Object> {
    if !autoupdate(stored) {
        return None;
    }
    let mut object = stored.clone();
    let mut changed = false;
    if resource == "clusterroles" {
        if let Some(rule) = default.get("aggregationRule")
            && stored.get("aggregationRule").is_none_or(Value::is_null)
        {
            object.insert("aggregationRule".into(), rule.clone());
            changed = true;
        }
        let have = Rules::deserialize(stored).unwrap_or_default();
        let want = Rules::deserialize(default).unwrap_or_default();
        let missing: Vec<Value> = uncovered(&have.rules, &want.rules)
            .into_iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect();
        if !missing.is_empty() {
            let rules = object
                .entry("rules")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = rules {
                list.extend(missing);
            }
            changed = true;
        }
    } else {
        let wanted = default
            .get("subjects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let subjects = object
            .entry("subjects")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = subjects {
            for subject in wanted {
                let present = list.iter().any(|s| {
                    s.get("kind") == subject.get("kind") && s.get("name") == subject.get("name")
                });
                if !present {
                    list.push(subject);
                    changed = true;
                }
            }
        }
    }
    changed.then_some(object)
}

/// Creates the default roles and bindings that are missing and adds what the stored ones
/// lack.
pub async fn reconcile(registry: &Registry) -> Result<(), ApiError> {
    let write = WriteOptions::default();
    for (resource, defaults) in [
        ("clusterroles", cluster_roles()),
        ("clusterrolebindings", cluster_role_bindings()),
    ] {
        let Some(resource) = registry
            .catalog()
            .get("rbac.authorization.k8s.io", "v1", resource)
        else {
            return Err(ApiError::internal(format!("{resource} are not served")));
        };
        for default in defaults {
            let name = apiserver_registry::object::name(&default).to_owned();
            match registry.get(&resource, None, &name).await {
                Ok(_) => {
                    let plural = resource.plural.clone();
                    let outcome = registry
                        .update_with(&resource, None, &name, None, &write, &|stored| {
                            Ok(merged(&plural, &stored, &default).unwrap_or(stored))
                        })
                        .await;
                    outcome?;
                }
                Err(e) if e.code == 404 => {
                    match registry.create(&resource, None, default, &write).await {
                        Ok(_) => tracing::info!(%name, kind = %resource.kind, "created"),
                        // Another server created it first.
                        Err(e) if e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_reconcile_adds_only_what_is_missing() {
        for role in cluster_roles() {
            let rules = Rules::deserialize(&role).unwrap();
            assert!(
                !rules.rules.is_empty() || role.contains_key("aggregationRule"),
                "{role:?}"
            );
        }
        let default = &cluster_roles()[0];
        assert!(merged("clusterroles", default, default).is_none());
        let mut trimmed = default.clone();
        trimmed.insert("rules".into(), json!([]));
        let fixed = merged("clusterroles", &trimmed, default).unwrap();
        assert_eq!(fixed["rules"].as_array().map(Vec::len), Some(2));
        let mut pinned = trimmed.clone();
        pinned.insert(
            "metadata".into(),
            json!({"name": "cluster-admin", "annotations": {AUTOUPDATE: "false"}}),
        );
        assert!(merged("clusterroles", &pinned, default).is_none());
        let binding = &cluster_role_bindings()[0];
        let mut extra = binding.clone();
        extra.insert(
            "subjects".into(),
            json!([{"kind": "User", "name": "someone"}]),
        );
        let fixed = merged("clusterrolebindings", &extra, binding).unwrap();
        assert_eq!(fixed["subjects"].as_array().map(Vec::len), Some(2));
    }
}
