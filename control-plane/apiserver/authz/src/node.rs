//! The Node authorizer and the NodeRestriction admission check: a kubelet (user
//! `system:node:<name>` in group `system:nodes`) may change only its own Node and Lease and
//! the pods bound to it, and may read only the secrets, config maps and service-account
//! tokens those pods use.
//!
//! Requests it does not grant get no opinion, so RBAC may still grant them.

use apiserver_registry::object::{metadata, str_at};
use apiserver_registry::selector::FieldSelector;
use apiserver_registry::store::ListOptions;
use apiserver_registry::{Object, Registry};
use async_trait::async_trait;
use serde_json::Value;

use crate::{Attributes, Authorizer, Decision, ResourceAttributes, User};

/// The group every kubelet is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of kubelets' user names.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of nodes' heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The annotation that marks a mirror pod (a static pod's reflection in the API).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The node a kubelet's user is for, if it is one.
pub fn node_name(user: &User) -> Option<&str> {
    if !user.in_group(NODES_GROUP) {
        return None;
    }
    user.name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

/// The Node authorizer.
pub struct NodeAuthorizer {
    registry: Registry,
}

/// What a pod may refer to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Referent {
    Secret,
    ConfigMap,
    ServiceAccount,
}

impl NodeAuthorizer {
    /// An authorizer that looks pods up in `registry`.
    pub fn new(registry: Registry) -> NodeAuthorizer {
        NodeAuthorizer { registry }
    }

    /// Whether the pod `namespace/name` is bound to `node`.
    async fn bound(&self, node: &str, namespace: Option<&str>, name: Option<&str>) -> bool {
        let (Some(namespace), Some(name)) = (namespace, name) else {
            return false;
        };
        let Some(pods) = self.registry.catalog().get("", "v1", "pods") else {
            return false;
        };
        match self.registry.get(&pods, Some(namespace), name).await {
            Ok(pod) => str_at(&pod, "spec.nodeName") == Some(node),
            Err(_) => false,
        }
    }

    /// Whether a pod bound to `node` in `namespace` uses the object `name`.
    async fn used(
        &self,
        node: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        what: Referent,
    ) -> bool {
        let (Some(namespace), Some(name)) = (namespace, name) else {
            return false;
        };
        let Some(pods) = self.registry.catalog().get("", "v1", "pods") else {
            return false;
        };
        let Ok(fields) =
            FieldSelector::parse(&format!("spec.nodeName={node}"), &pods.field_selectors)
        else {
            return false;
        };
        let options = ListOptions {
            fields,
            ..ListOptions::default()
        };
        match self.registry.list(&pods, Some(namespace), &options).await {
            Ok(page) => page.items.iter().any(|pod| references(pod, what, name)),
            Err(e) => {
                tracing::warn!("listing pods on node {node}: {}", e.message);
                false
            }
        }
    }
}

#[async_trait]
impl Authorizer for NodeAuthorizer {
    async fn authorize(&self, user: &User, request: &Attributes<'_>) -> Decision {
        let (Some(node), Some(resource)) = (node_name(user), request.resource) else {
            return Decision::NoOpinion;
        };
        let verb = request.verb;
        let ResourceAttributes {
            group,
            resource: plural,
            subresource,
            name,
            namespace,
        } = resource;
        let read = matches!(verb, "get" | "list" | "watch");
        let own = name == Some(node);
        let allowed = match (group, plural, subresource) {
            ("", "nodes", None | Some("status")) => {
                // A new Node's name is in its body; admission checks it.
                read || (verb == "create" && subresource.is_none())
                    || (own && matches!(verb, "update" | "patch" | "delete"))
            }
            ("coordination.k8s.io", "leases", None) => {
                namespace == Some(NODE_LEASE_NAMESPACE)
                    && (verb == "create"
                        || (own && matches!(verb, "get" | "update" | "patch" | "delete")))
            }
            ("", "pods", None) => {
                // Creating is allowed for mirror pods only; admission checks.
                read || verb == "create"
                    || (verb == "delete" && self.bound(node, namespace, name).await)
            }
            ("", "pods", Some("status")) => {
                matches!(verb, "get" | "update" | "patch")
                    && self.bound(node, namespace, name).await
            }
            ("", "pods", Some("eviction")) => {
                verb == "create" && self.bound(node, namespace, name).await
            }
            ("", "secrets", None) => {
                read && self.used(node, namespace, name, Referent::Secret).await
            }
            ("", "configmaps", None) => {
                read && self.used(node, namespace, name, Referent::ConfigMap).await
            }
            ("", "serviceaccounts", Some("token")) => {
                verb == "create"
                    && self
                        .used(node, namespace, name, Referent::ServiceAccount)
                        .await
            }
            ("" | "events.k8s.io", "events", None) => {
                matches!(verb, "create" | "update" | "patch")
            }
            ("", "services" | "endpoints", None) | ("discovery.k8s.io", "endpointslices", None) => {
                read
            }
            ("certificates.k8s.io", "certificatesigningrequests", None) => read || verb == "create",
            ("authentication.k8s.io", "tokenreviews", None)
            | ("authorization.k8s.io", "subjectaccessreviews", None) => verb == "create",
            _ => false,
        };
        if allowed {
            Decision::Allow(format!("node {node:?} may {verb} {plural}"))
        } else {
            Decision::NoOpinion
        }
    }
}

/// NodeRestriction: what a kubelet may write, judged on the object itself. `Err` is the
/// 403 message. Other users pass.
pub fn admit(
    user: &User,
    group: &str,
    resource: &str,
    verb: &str,
    object: &Object,
) -> Result<(), String> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    if verb != "create" {
        return Ok(());
    }
    let name = metadata(object)
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match (group, resource) {
        ("", "nodes") if name != node => Err(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        )),
        ("coordination.k8s.io", "leases") if name != node => Err(format!(
            "node {node:?} is not allowed to modify lease {name:?}"
        )),
        ("", "pods") => {
            let mirror = metadata(object)
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(MIRROR_ANNOTATION))
                .is_some();
            if !mirror {
                return Err(format!(
                    "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
                ));
            }
            if str_at(object, "spec.nodeName") != Some(node) {
                return Err(format!(
                    "node {node:?} can only create pods with spec.nodeName set to itself"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn items<'a>(object: &'a Object, key: &str) -> &'a [Value] {
    object
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Whether a pod refers to a secret, config map or service account called `name`.
fn references(pod: &Object, what: Referent, name: &str) -> bool {
    let Some(spec) = pod.get("spec").and_then(Value::as_object) else {
        return false;
    };
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    if what == Referent::ServiceAccount {
        return is(spec.get("serviceAccountName"));
    }
    let (volume_key, volume_name, env_ref, env_from_ref) = match what {
        Referent::Secret => ("secret", "secretName", "secretKeyRef", "secretRef"),
        _ => ("configMap", "name", "configMapKeyRef", "configMapRef"),
    };
    if what == Referent::Secret
        && items(spec, "imagePullSecrets")
            .iter()
            .any(|s| is(s.get("name")))
    {
        return true;
    }
    for volume in items(spec, "volumes") {
        if is(volume.get(volume_key).and_then(|v| v.get(volume_name))) {
            return true;
        }
        let projected = volume
            .get("projected")
            .and_then(|p| p.get("sources"))
            .and_then(Value::as_array);
        if projected.is_some_and(|sources| {
            sources
                .iter()
                .any(|s| is(s.get(volume_key).and_then(|v| v.get("name"))))
        }) {
            return true;
        }
    }
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|key| items(spec, key))
        .any(|container| {
            let env = container.get("env").and_then(Value::as_array);
            let env_from = container.get("envFrom").and_then(Value::as_array);
            env.is_some_and(|vars| {
                vars.iter().any(|v| {
                    is(v.get("valueFrom")
                        .and_then(|f| f.get(env_ref))
                        .and_then(|r| r.get("name")))
                })
            }) || env_from.is_some_and(|sources| {
                sources
                    .iter()
                    .any(|s| is(s.get(env_from_ref).and_then(|r| r.get("name"))))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn references_are_found_wherever_a_pod_names_them() {
        let p = pod(json!({"spec": {
            "serviceAccountName": "robot",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [{"name": "a", "secret": {"secretName": "vol"}},
                        {"name": "b", "configMap": {"name": "cfg"}},
                        {"name": "c", "projected": {"sources": [{"secret": {"name": "proj"}}]}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "envfrom"}}]}]}}));
        for secret in ["pull", "vol", "proj", "env"] {
            assert!(references(&p, Referent::Secret, secret), "{secret}");
        }
        assert!(!references(&p, Referent::Secret, "cfg"));
        assert!(references(&p, Referent::ConfigMap, "cfg"));
        assert!(references(&p, Referent::ConfigMap, "envfrom"));
        assert!(!references(&p, Referent::ConfigMap, "vol"));
        assert!(references(&p, Referent::ServiceAccount, "robot"));
    }

    #[test]
    fn kubelets_create_only_their_own_objects() {
        let kubelet = User {
            name: "system:node:n1".into(),
            groups: vec![NODES_GROUP.into()],
        };
        let named = |name: &str| pod(json!({"metadata": {"name": name}}));
        assert!(admit(&kubelet, "", "nodes", "create", &named("n1")).is_ok());
        assert!(admit(&kubelet, "", "nodes", "create", &named("n2")).is_err());
        assert!(
            admit(
                &kubelet,
                "coordination.k8s.io",
                "leases",
                "create",
                &named("n2")
            )
            .is_err()
        );
        let plain = pod(json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}));
        assert!(admit(&kubelet, "", "pods", "create", &plain).is_err());
        let mirror = pod(
            json!({"metadata": {"name": "p", "annotations": {MIRROR_ANNOTATION: "x"}},
                                "spec": {"nodeName": "n1"}}),
        );
        assert!(admit(&kubelet, "", "pods", "create", &mirror).is_ok());
        let elsewhere = pod(
            json!({"metadata": {"name": "p", "annotations": {MIRROR_ANNOTATION: "x"}},
                                   "spec": {"nodeName": "n2"}}),
        );
        assert!(admit(&kubelet, "", "pods", "create", &elsewhere).is_err());
        let admin = User {
            name: "admin".into(),
            groups: vec![],
        };
        assert!(admit(&admin, "", "nodes", "create", &named("n2")).is_ok());
    }
}
