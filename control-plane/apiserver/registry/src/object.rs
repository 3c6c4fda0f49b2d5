//! Objects as the registry handles them — JSON maps — and their `metadata` fields.
//!
//! The registry is generic over resources (custom resources included), so objects stay JSON;
//! typed Kubernetes structs appear only where a strategy checks or defaults a built-in type.

use serde_json::{Map, Value};

/// A Kubernetes object: a JSON map with `apiVersion`, `kind` and `metadata`.
pub type Object = Map<String, Value>;

/// Reads a string at a dotted path (`spec.nodeName`).
pub fn str_at<'a>(object: &'a Object, path: &str) -> Option<&'a str> {
    value_at(object, path).and_then(Value::as_str)
}

/// Reads the value at a dotted path.
pub fn value_at<'a>(object: &'a Object, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = object.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The map at `key`, created (or replaced, if not a map) when missing.
pub fn map_mut<'a>(object: &'a mut Object, key: &str) -> &'a mut Object {
    let entry = object
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(map) => map,
        _ => unreachable!("replaced by a map just above"),
    }
}

/// The object's metadata, if it is a map.
pub fn metadata(object: &Object) -> Option<&Object> {
    object.get("metadata").and_then(Value::as_object)
}

/// The object's metadata, created when missing.
pub fn metadata_mut(object: &mut Object) -> &mut Object {
    map_mut(object, "metadata")
}

/// A string field of the metadata ("" when missing).
pub fn meta_str<'a>(object: &'a Object, field: &str) -> &'a str {
    metadata(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(object: &Object) -> &str {
    meta_str(object, "name")
}

/// `metadata.namespace`.
pub fn namespace(object: &Object) -> &str {
    meta_str(object, "namespace")
}

/// `metadata.resourceVersion`.
pub fn resource_version(object: &Object) -> &str {
    meta_str(object, "resourceVersion")
}

/// `metadata.uid`.
pub fn uid(object: &Object) -> &str {
    meta_str(object, "uid")
}

/// Sets `metadata.resourceVersion` to a store revision.
pub fn set_resource_version(object: &mut Object, revision: i64) {
    metadata_mut(object).insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
}

/// A string map of the metadata (`labels`, `annotations`), empty when missing.
pub fn string_map<'a>(object: &'a Object, field: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
    metadata(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|map| map.iter())
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
}

/// A label's value.
pub fn label<'a>(object: &'a Object, key: &str) -> Option<&'a str> {
    metadata(object)?
        .get("labels")?
        .as_object()?
        .get(key)?
        .as_str()
}

/// `metadata.finalizers`.
pub fn finalizers(object: &Object) -> Vec<String> {
    metadata(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `metadata.finalizers` (removing the field when empty).
pub fn set_finalizers(object: &mut Object, finalizers: &[String]) {
    let meta = metadata_mut(object);
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert(
            "finalizers".into(),
            Value::Array(finalizers.iter().cloned().map(Value::String).collect()),
        );
    }
}

/// Whether deletion has begun (`metadata.deletionTimestamp` is set).
pub fn is_deleting(object: &Object) -> bool {
    metadata(object).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|v| !v.is_null()))
}

/// `metadata.generation` (0 when missing).
pub fn generation(object: &Object) -> i64 {
    metadata(object)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The current time as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// A time as Kubernetes writes timestamps.
pub fn timestamp(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            _ => Object::new(),
        }
    }

    #[test]
    fn paths_and_metadata() {
        let mut pod = object(json!({
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"nodeName": "n1"}
        }));
        assert_eq!(str_at(&pod, "spec.nodeName"), Some("n1"));
        assert_eq!(str_at(&pod, "spec.missing"), None);
        assert_eq!(name(&pod), "web");
        assert_eq!(label(&pod, "app"), Some("web"));
        set_resource_version(&mut pod, 42);
        assert_eq!(resource_version(&pod), "42");
        set_finalizers(&mut pod, &[]);
        assert!(finalizers(&pod).is_empty());
        assert!(!is_deleting(&pod));
        assert_eq!(now().len(), "2026-01-01T00:00:00Z".len());
    }
}
