//! Strategic merge patch, as kubectl sends for built-in types (`kubectl apply`, `edit`, `set`).
//!
//! Like a JSON merge patch, except that some lists merge instead of being replaced: a list of
//! containers merges by `name`, ports by `containerPort`, finalizers as a set, and so on. Which
//! lists do is a property of the Kubernetes types; [`PATCH_META`] lists them (the
//! `patchStrategy` and `patchMergeKey` of Kubernetes' API), and the type structure comes from
//! the k8s-openapi schemas. The directives are honoured: `$patch: replace | delete | merge`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::catalog::Resource;

/// How a field of a type merges: `(type, field, patch strategy, merge key)` — the merge key is
/// "" for a list of scalars merged as a set; `retainKeys` means clients may send `$retainKeys`.
pub const PATCH_META: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
];

/// The merge key of a list field that merges rather than being replaced.
fn meta(type_name: &str, field: &str) -> Option<&'static str> {
    PATCH_META
        .iter()
        .find(|(t, f, strategy, _)| *t == type_name && *f == field && strategy.starts_with("merge"))
        .map(|(_, _, _, key)| *key)
}

/// The type definitions reachable from a resource's schema, by definition name.
pub struct Types {
    root: Option<String>,
    definitions: Map<String, Value>,
}

static TYPES: LazyLock<Mutex<HashMap<String, Arc<Types>>>> = LazyLock::new(Default::default);

impl Types {
    /// The types of `resource` (built once per kind and cached).
    pub fn of(resource: &Resource) -> Arc<Types> {
        if let Some(types) = resource.strategy.merge_types() {
            return types;
        }
        let key = format!("{}/{}/{}", resource.group, resource.version, resource.kind);
        if let Some(types) = TYPES.lock().get(&key) {
            return types.clone();
        }
        let mut generator = SchemaGenerator::new(SchemaSettings::draft07());
        let root = resource.strategy.schema(&mut generator).and_then(|s| {
            s.get("$ref")
                .and_then(Value::as_str)
                .map(|r| definition_name(r).to_owned())
        });
        let mut definitions = generator.take_definitions(false);
        crate::extensions::annotate(&mut definitions);
        let types = Arc::new(Types { root, definitions });
        TYPES.lock().insert(key, types.clone());
        types
    }

    /// The types of one self-contained schema (a custom resource's, which has no `$ref`s).
    pub fn standalone(schema: Value) -> Types {
        const ROOT: &str = "root";
        Types {
            root: Some(ROOT.into()),
            definitions: Map::from_iter([(ROOT.to_owned(), schema)]),
        }
    }

    /// Follows `$ref` and `allOf: [$ref]` to a definition: its name and schema.
    fn resolve<'a>(&'a self, schema: &'a Value) -> (Option<&'a str>, &'a Value) {
        let reference = schema
            .get("$ref")
            .or_else(|| {
                schema
                    .get("allOf")
                    .and_then(|a| a.get(0))
                    .and_then(|s| s.get("$ref"))
            })
            .and_then(Value::as_str);
        match reference.map(definition_name) {
            Some(name) => match self.definitions.get_key_value(name) {
                Some((name, schema)) => (Some(name.as_str()), schema),
                None => (None, schema),
            },
            None => (None, schema),
        }
    }

    fn root_schema(&self) -> Option<&Value> {
        self.root.as_ref().and_then(|r| self.definitions.get(r))
    }

    /// The schema server-side apply merges by.
    pub fn schema(&self) -> apiserver_fieldmanager::Schema<'_> {
        apiserver_fieldmanager::Schema::new(Some(&self.definitions), self.root_schema())
    }
}

fn definition_name(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

/// The schema of a map's member `field`.
fn member<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    let schema = schema?;
    schema
        .get("properties")
        .and_then(|p| p.get(field))
        .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
}

/// Applies a strategic merge patch to `original` (an object of `resource`).
pub fn apply(resource: &Resource, original: Value, patch: &Value) -> Result<Value, String> {
    if !patch.is_object() {
        return Err("a strategic merge patch must be a JSON object".into());
    }
    let types = Types::of(resource);
    let mut original = original;
    match merge_map(
        &types,
        types.root.as_deref(),
        types.root_schema(),
        &mut original,
        patch,
    )? {
        Outcome::Keep => Ok(original),
        Outcome::Delete => Err("the patch deletes the whole object".into()),
    }
}

enum Outcome {
    Keep,
    Delete,
}

fn is_directive(key: &str) -> bool {
    key == "$patch"
        || key == "$retainKeys"
        || key.starts_with("$setElementOrder/")
        || key.starts_with("$deleteFromPrimitiveList/")
}

/// The value with every directive removed (for values inserted where nothing was).
fn strip(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !is_directive(k))
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map(
    types: &Types,
    type_name: Option<&str>,
    schema: Option<&Value>,
    original: &mut Value,
    patch: &Value,
) -> Result<Outcome, String> {
    let Some(patch) = patch.as_object() else {
        *original = patch.clone();
        return Ok(Outcome::Keep);
    };
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(Outcome::Delete),
        Some("replace") => {
            *original = strip(&Value::Object(patch.clone()));
            return Ok(Outcome::Keep);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown $patch directive {other:?}")),
    }
    if !original.is_object() {
        *original = Value::Object(Map::new());
    }
    let Value::Object(target) = original else {
        return Ok(Outcome::Keep);
    };
    let mut orders: Vec<(&str, &Value)> = Vec::new();
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(items)) = target.get_mut(field) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            orders.push((field, value));
            continue;
        }
        if is_directive(key) {
            continue;
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        let (child_name, child_schema) = match member(schema, key) {
            Some(s) => {
                let (name, resolved) = types.resolve(s);
                (name, Some(resolved))
            }
            None => (None, None),
        };
        match value {
            Value::Object(_) => {
                let entry = target
                    .entry(key.clone())
                    .or_insert(Value::Object(Map::new()));
                if let Outcome::Delete = merge_map(types, child_name, child_schema, entry, value)? {
                    target.remove(key);
                }
            }
            Value::Array(items) => {
                let merge_key = type_name.and_then(|t| meta(t, key));
                match (merge_key, target.get_mut(key)) {
                    (Some(merge_key), Some(Value::Array(current))) => {
                        let item_schema = child_schema
                            .and_then(|s| s.get("items"))
                            .map(|i| types.resolve(i));
                        merge_list(types, item_schema, merge_key, current, items)?;
                    }
                    _ => {
                        target.insert(key.clone(), strip(value));
                    }
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let merge_key = type_name.and_then(|t| meta(t, field)).unwrap_or("");
        if let (Some(Value::Array(items)), Some(order)) = (target.get_mut(field), order.as_array())
        {
            reorder(items, order, merge_key);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Outcome::Keep)
}

fn merge_list(
    types: &Types,
    item: Option<(Option<&str>, &Value)>,
    merge_key: &str,
    current: &mut Vec<Value>,
    patch: &[Value],
) -> Result<(), String> {
    if merge_key.is_empty() {
        // A set of scalars: add what is missing.
        for value in patch {
            if !current.contains(value) {
                current.push(value.clone());
            }
        }
        return Ok(());
    }
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *current = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .map(strip)
            .collect();
        return Ok(());
    }
    let (item_name, item_schema) = match item {
        Some((name, schema)) => (name, Some(schema)),
        None => (None, None),
    };
    for element in patch {
        let Some(key) = element.get(merge_key) else {
            return Err(format!("a list element has no merge key {merge_key:?}"));
        };
        let position = current.iter().position(|c| c.get(merge_key) == Some(key));
        if element.get("$patch").and_then(Value::as_str) == Some("delete") {
            current.retain(|c| c.get(merge_key) != Some(key));
            continue;
        }
        match position {
            Some(i) => {
                if let Outcome::Delete =
                    merge_map(types, item_name, item_schema, &mut current[i], element)?
                {
                    current.remove(i);
                }
            }
            None => current.push(strip(element)),
        }
    }
    Ok(())
}

/// Puts the listed elements first, in the given order; the rest keep theirs after them.
fn reorder(items: &mut Vec<Value>, order: &[Value], merge_key: &str) {
    let key_of = |v: &Value| {
        if merge_key.is_empty() {
            v.clone()
        } else {
            v.get(merge_key).cloned().unwrap_or(Value::Null)
        }
    };
    let mut ordered = Vec::with_capacity(items.len());
    for wanted in order {
        let wanted = key_of(wanted);
        if let Some(i) = items.iter().position(|v| key_of(v) == wanted) {
            ordered.push(items.remove(i));
        }
    }
    ordered.append(items);
    *items = ordered;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::builtin;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}, "finalizers": ["a", "b"]},
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "side:1"}
            ]}}
        }})
    }

    fn patch(original: Value, patch: Value) -> Value {
        let catalog = builtin::catalog();
        let resource = catalog.get("apps", "v1", "deployments").unwrap();
        apply(&resource, original, &patch).unwrap()
    }

    #[test]
    fn lists_merge_by_their_keys() {
        let patched = patch(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
                {"name": "logger", "image": "log:1"}
            ]}}}}),
        );
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().unwrap().len(), 3);
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(containers[2]["name"], "logger");
    }

    #[test]
    fn directives() {
        let patched = patch(
            deployment(),
            json!({
                "metadata": {"labels": {"tier": null, "env": "dev"}, "finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                "spec": {
                    "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
                    "template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}],
                                          "$setElementOrder/containers": [{"name": "web"}]}}
                }
            }),
        );
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "web", "env": "dev"})
        );
        assert_eq!(patched["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
        let containers = patched["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "web");

        let replaced = patch(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}),
        );
        assert_eq!(
            replaced["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "x"}])
        );
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        let original = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "i", "command": ["a", "b"]}]}}}});
        let patched = patch(
            original,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "command": ["c"]}]}}}}),
        );
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["command"],
            json!(["c"])
        );
    }
}
