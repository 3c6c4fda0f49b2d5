//! The operations on values that apply and field tracking are built from, each guided by the
//! type's [`Schema`]: the set of fields a value sets, the merge of an applied configuration
//! into a live object, the fields one version of an object changed against another, and the
//! removal of fields nobody owns any more.

use serde_json::{Map, Value};

use crate::path::Element;
use crate::schema::{ListType, Schema};
use crate::set::{EMPTY, FieldSet};

/// The fields `object` sets, as apply records them for the manager that sent it: every leaf,
/// every list item, every map entry and every empty object; not the fields of a struct that
/// merely lead to those.
pub fn field_set(schema: Schema<'_>, object: &Map<String, Value>) -> Result<FieldSet, String> {
    let mut out = FieldSet::default();
    let mut path = Vec::new();
    for (name, value) in object {
        path.push(Element::Field(name.clone()));
        collect(
            schema.field(name),
            value,
            !schema.declares(name),
            &mut path,
            &mut out,
        )?;
        path.pop();
    }
    Ok(out)
}

fn collect(
    schema: Schema<'_>,
    value: &Value,
    is_entry: bool,
    path: &mut Vec<Element>,
    out: &mut FieldSet,
) -> Result<(), String> {
    match value {
        Value::Object(map) if !schema.atomic_map() => {
            for (name, child) in map {
                path.push(Element::Field(name.clone()));
                collect(schema.field(name), child, !schema.declares(name), path, out)?;
                path.pop();
            }
            if map.is_empty() || is_entry {
                out.insert(path);
            }
        }
        Value::Array(items) if schema.list_type() != ListType::Atomic => {
            let list = schema.list_type();
            let items_schema = schema.items();
            for item in items {
                let element = schema
                    .item_element(&list, item)
                    .map_err(|e| format!("{}: {e}", crate::path::display(path)))?;
                path.push(element);
                if out.contains(path) {
                    let at = crate::path::display(path);
                    return Err(format!("{at}: the list has two items with this key"));
                }
                collect(items_schema, item, true, path, out)?;
                out.insert(path);
                path.pop();
            }
            if items.is_empty() || is_entry {
                out.insert(path);
            }
        }
        _ => out.insert(path),
    }
    Ok(())
}

/// `live` with the applied `config` merged in: objects merge key by key, keyed lists and sets
/// item by item (new items after the live ones), and anything atomic is replaced. A field the
/// configuration sets to null is removed.
pub fn merge(schema: Schema<'_>, live: &Value, config: &Value) -> Value {
    match (live, config) {
        (Value::Object(live), Value::Object(config)) if !schema.atomic_map() => {
            let mut out = live.clone();
            for (name, value) in config {
                if value.is_null() {
                    out.remove(name);
                    continue;
                }
                let merged = match live.get(name) {
                    Some(current) => merge(schema.field(name), current, value),
                    None => without_nulls(value),
                };
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(live), Value::Array(config)) => {
            let list = schema.list_type();
            let keyed = |items: &[Value]| -> Option<Vec<Element>> {
                items
                    .iter()
                    .map(|i| schema.item_element(&list, i).ok())
                    .collect()
            };
            let (Some(live_keys), Some(config_keys)) = (keyed(live), keyed(config)) else {
                return without_nulls(&Value::Array(config.clone()));
            };
            let items_schema = schema.items();
            let mut out = live.clone();
            for (element, item) in config_keys.iter().zip(config) {
                match live_keys.iter().position(|k| k == element) {
                    Some(i) => out[i] = merge(items_schema, &live[i], item),
                    None => out.push(without_nulls(item)),
                }
            }
            Value::Array(out)
        }
        (_, config) => without_nulls(config),
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Fields the new version has and the old did not.
    pub added: FieldSet,
    /// Fields whose value changed.
    pub modified: FieldSet,
    /// Fields the old version had and the new does not.
    pub removed: FieldSet,
}

/// Compares two versions of an object, field by field as the schema separates them.
pub fn compare(
    schema: Schema<'_>,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
) -> Comparison {
    let mut out = Comparison::default();
    let mut path = Vec::new();
    compare_maps(schema, Some(old), Some(new), &mut path, &mut out);
    out
}

fn compare_maps(
    schema: Schema<'_>,
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
    path: &mut Vec<Element>,
    out: &mut Comparison,
) {
    let names = old.into_iter().chain(new).flat_map(|m| m.keys());
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            continue;
        }
        path.push(Element::Field(name.clone()));
        let (before, after) = (old.and_then(|m| m.get(name)), new.and_then(|m| m.get(name)));
        compare_values(schema.field(name), before, after, path, out);
        path.pop();
    }
}

fn compare_values(
    schema: Schema<'_>,
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Vec<Element>,
    out: &mut Comparison,
) {
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    match (old, new) {
        (None, None) => return,
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(a), Some(b)) => {
            if a == b {
                return;
            }
        }
    }
    match (as_map(old), as_map(new), as_list(old), as_list(new)) {
        (Some(Some(a)), Some(Some(b)), _, _) if !schema.atomic_map() => {
            compare_maps(schema, Some(a), Some(b), path, out)
        }
        (None, Some(Some(b)), _, _) if !schema.atomic_map() => {
            compare_maps(schema, None, Some(b), path, out)
        }
        (Some(Some(a)), None, _, _) if !schema.atomic_map() => {
            compare_maps(schema, Some(a), None, path, out)
        }
        (_, _, a, b) if !matches!(a, Some(None)) && !matches!(b, Some(None)) => {
            let (a, b) = (a.flatten(), b.flatten());
            if !compare_lists(schema, a, b, path, out) && old.is_some() && new.is_some() {
                out.modified.insert(path);
            }
        }
        _ => {
            if old.is_some() && new.is_some() {
                out.modified.insert(path);
            }
        }
    }
}

fn as_map(value: Option<&Value>) -> Option<Option<&Map<String, Value>>> {
    value.map(Value::as_object)
}

fn as_list(value: Option<&Value>) -> Option<Option<&Vec<Value>>> {
    value.map(Value::as_array)
}

fn find<'v>(items: &[(Element, &'v Value)], element: &Element) -> Option<&'v Value> {
    items.iter().find(|(k, _)| k == element).map(|(_, v)| *v)
}

fn named<'v>(
    schema: Schema<'_>,
    list: &ListType<'_>,
    items: Option<&'v Vec<Value>>,
) -> Option<Vec<(Element, &'v Value)>> {
    let Some(items) = items else {
        return Some(Vec::new());
    };
    items
        .iter()
        .map(|i| schema.item_element(list, i).ok().map(|e| (e, i)))
        .collect()
}

/// Compares keyed lists item by item; false when the list is atomic (or its items cannot be
/// named), so it compares whole.
fn compare_lists(
    schema: Schema<'_>,
    old: Option<&Vec<Value>>,
    new: Option<&Vec<Value>>,
    path: &mut Vec<Element>,
    out: &mut Comparison,
) -> bool {
    let list = schema.list_type();
    if list == ListType::Atomic {
        return false;
    }
    let (Some(before), Some(after)) = (named(schema, &list, old), named(schema, &list, new)) else {
        return false;
    };
    let items = schema.items();
    for (element, item) in &before {
        path.push(element.clone());
        compare_values(items, Some(item), find(&after, element), path, out);
        path.pop();
    }
    for (element, item) in &after {
        if find(&before, element).is_none() {
            path.push(element.clone());
            compare_values(items, None, Some(item), path, out);
            path.pop();
        }
    }
    true
}

/// Removes from `object` the fields of `last` (what a manager applied before) that `keep`
/// (what it applies now, and what every other manager owns) no longer holds. A field with
/// something kept below it stays, and is pruned inside instead.
pub fn prune(
    schema: Schema<'_>,
    object: &mut Map<String, Value>,
    last: &FieldSet,
    keep: &FieldSet,
) {
    for element in last.elements() {
        let Element::Field(name) = element else {
            continue;
        };
        if last.has_member(element) && !keep.mentions(element) {
            object.remove(name);
        } else if let (Some(below), Some(value)) = (last.child(element), object.get_mut(name)) {
            let kept = keep.child(element).unwrap_or(&EMPTY);
            prune_value(schema.field(name), value, below, kept);
        }
    }
}

fn prune_value(schema: Schema<'_>, value: &mut Value, last: &FieldSet, keep: &FieldSet) {
    match value {
        Value::Object(map) => prune(schema, map, last, keep),
        Value::Array(items) => {
            let list = schema.list_type();
            let items_schema = schema.items();
            let mut index = 0;
            items.retain_mut(|item| {
                index += 1;
                let element = match schema.item_element(&list, item) {
                    Ok(element) => element,
                    // Positions are only named in lists apply does not track item by item.
                    Err(_) => Element::Index(index - 1),
                };
                if !last.mentions(&element) {
                    return true;
                }
                if last.has_member(&element) && !keep.mentions(&element) {
                    return false;
                }
                if let Some(below) = last.child(&element) {
                    let kept = keep.child(&element).unwrap_or(&EMPTY);
                    prune_value(items_schema, item, below, kept);
                }
                true
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn definitions() -> Value {
        json!({
            "Pod": {"type": "object", "properties": {
                "metadata": {"type": "object", "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}
                }},
                "spec": {"$ref": "#/definitions/Spec"}
            }},
            "Spec": {"type": "object", "properties": {
                "containers": {"type": "array", "items": {"$ref": "#/definitions/Container"},
                               "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
                "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                             "properties": {"matchLabels": {"type": "object"}}},
                "replicas": {"type": "integer"}
            }},
            "Container": {"type": "object", "properties": {
                "name": {"type": "string"}, "image": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}}
            }}
        })
    }

    fn with_schema<T>(f: impl FnOnce(Schema<'_>) -> T) -> T {
        let definitions = definitions();
        let root = json!({"$ref": "#/definitions/Pod"});
        f(Schema::new(definitions.as_object(), Some(&root)))
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn encoded(set: &FieldSet) -> Value {
        set.to_fields_v1()
    }

    #[test]
    fn the_field_set_of_a_configuration() {
        let config = object(json!({
            "metadata": {"labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "containers": [{"name": "web", "image": "nginx", "args": ["-x"]}]}
        }));
        let set = with_schema(|s| field_set(s, &config)).unwrap();
        assert_eq!(
            encoded(&set),
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}, "f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}},
                    "f:replicas": {}, "f:selector": {}
                }
            })
        );
        let duplicate = object(json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}));
        let error = with_schema(|s| field_set(s, &duplicate)).unwrap_err();
        assert!(error.contains(r#".spec.containers[name="a"]"#), "{error}");
        let keyless = object(json!({"spec": {"containers": [{"image": "a"}]}}));
        let error = with_schema(|s| field_set(s, &keyless)).unwrap_err();
        assert!(error.contains("key field \"name\""), "{error}");
    }

    #[test]
    fn merge_keeps_what_the_configuration_does_not_mention() {
        let live = json!({
            "metadata": {"labels": {"app": "web", "team": "a"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web", "x": "y"}},
                     "containers": [{"name": "web", "image": "nginx:1", "args": ["a", "b"]},
                                    {"name": "side", "image": "side:1"}]}
        });
        let config = json!({
            "metadata": {"labels": {"team": null}},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "containers": [{"name": "web", "image": "nginx:2", "args": ["c"]},
                                    {"name": "new", "image": "new:1"}]}
        });
        let merged = with_schema(|s| merge(s, &live, &config));
        assert_eq!(
            merged,
            json!({
                "metadata": {"labels": {"app": "web"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                         "containers": [{"name": "web", "image": "nginx:2", "args": ["c"]},
                                        {"name": "side", "image": "side:1"},
                                        {"name": "new", "image": "new:1"}]}
            })
        );
    }

    #[test]
    fn compare_names_added_modified_and_removed_fields() {
        let old = object(
            json!({"spec": {"replicas": 1, "containers": [{"name": "web", "image": "a"}, {"name": "old"}]}}),
        );
        let new = object(json!({"metadata": {"labels": {"x": "1"}},
                                "spec": {"replicas": 2, "containers": [{"name": "web", "image": "b"}]}}));
        let comparison = with_schema(|s| compare(s, &old, &new));
        assert_eq!(
            encoded(&comparison.added),
            json!({"f:metadata": {".": {}, "f:labels": {".": {}, "f:x": {}}}})
        );
        assert_eq!(
            encoded(&comparison.modified),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {"f:image": {}}}, "f:replicas": {}}})
        );
        assert_eq!(
            encoded(&comparison.removed),
            json!({"f:spec": {"f:containers": {"k:{\"name\":\"old\"}": {".": {}, "f:name": {}}}}})
        );
    }

    #[test]
    fn prune_removes_only_what_nobody_keeps() {
        let mut live = object(json!({
            "metadata": {"labels": {"app": "web", "gone": "1"}},
            "spec": {"replicas": 3, "containers": [
                {"name": "web", "image": "nginx", "imagePullPolicy": "Always"},
                {"name": "side", "image": "side:1", "imagePullPolicy": "Always"}]}
        }));
        let last = with_schema(|s| field_set(s, &object(json!({
            "metadata": {"labels": {"app": "web", "gone": "1"}},
            "spec": {"replicas": 3, "containers": [{"name": "web", "image": "nginx"}, {"name": "side", "image": "side:1"}]}
        })))).unwrap();
        let now = with_schema(|s| {
            field_set(
                s,
                &object(json!({
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}
                })),
            )
        })
        .unwrap();
        // Another manager owns the replicas.
        let mut other = FieldSet::default();
        other.insert(&[
            Element::Field("spec".into()),
            Element::Field("replicas".into()),
        ]);
        with_schema(|s| prune(s, &mut live, &last, &now.union(&other)));
        assert_eq!(
            Value::Object(live),
            json!({
                "metadata": {"labels": {"app": "web"}},
                "spec": {"replicas": 3, "containers": [{"name": "web", "image": "nginx", "imagePullPolicy": "Always"}]}
            })
        );
    }
}
