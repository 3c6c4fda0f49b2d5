//! How the values of a type merge, read from its OpenAPI schema: whether an object is a
//! granular map (each key owned on its own) or atomic (`x-kubernetes-map-type: atomic`), and
//! whether a list is atomic, a set, or a map keyed by some of its items' fields
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`). A value the schema says nothing
//! about is handled as Kubernetes handles unknown content: objects granular, lists atomic.

use serde_json::{Map, Value};

use crate::path::Element;

/// A position in a type's schema. The definitions resolve `$ref`s.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    definitions: Option<&'a Map<String, Value>>,
    node: Option<&'a Value>,
}

/// How a list's items are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType<'a> {
    /// The list is one value, owned and replaced whole.
    Atomic,
    /// Items are scalars, each owned on its own.
    Set,
    /// Items are objects named by these fields.
    Map(Vec<&'a str>),
}

impl<'a> Schema<'a> {
    /// The schema `root`, whose `$ref`s name entries of `definitions`.
    pub fn new(definitions: Option<&'a Map<String, Value>>, root: Option<&'a Value>) -> Schema<'a> {
        Schema {
            definitions,
            node: None,
        }
        .at(root)
    }

    /// A schema that knows nothing: every object granular, every list atomic.
    pub fn unknown() -> Schema<'static> {
        Schema {
            definitions: None,
            node: None,
        }
    }

    fn at(self, node: Option<&'a Value>) -> Schema<'a> {
        let node = node.map(|n| self.resolve(n));
        Schema { node, ..self }
    }

    fn resolve(&self, node: &'a Value) -> &'a Value {
        let reference = node
            .get("$ref")
            .or_else(|| {
                node.get("allOf")
                    .and_then(|a| a.get(0))
                    .and_then(|s| s.get("$ref"))
            })
            .and_then(Value::as_str);
        let target = reference
            .map(|r| r.rsplit('/').next().unwrap_or(r))
            .and_then(|name| self.definitions.and_then(|d| d.get(name)));
        target.unwrap_or(node)
    }

    fn extension(&self, name: &str) -> Option<&'a Value> {
        self.node.and_then(|n| n.get(name))
    }

    /// The schema of member `name` of an object.
    pub fn field(&self, name: &str) -> Schema<'a> {
        let member = self.node.and_then(|n| {
            n.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| n.get("additionalProperties").filter(|a| a.is_object()))
        });
        self.at(member)
    }

    /// Whether `name` is a declared field (not a key of a map of values).
    pub fn declares(&self, name: &str) -> bool {
        self.node
            .and_then(|n| n.get("properties"))
            .is_some_and(|p| p.get(name).is_some())
    }

    /// The schema of a list's items.
    pub fn items(&self) -> Schema<'a> {
        self.at(self.node.and_then(|n| n.get("items")))
    }

    /// Whether an object here is owned and replaced whole.
    pub fn atomic_map(&self) -> bool {
        self.extension("x-kubernetes-map-type")
            .and_then(Value::as_str)
            == Some("atomic")
    }

    /// How a list here merges.
    pub fn list_type(&self) -> ListType<'a> {
        match self
            .extension("x-kubernetes-list-type")
            .and_then(Value::as_str)
        {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<&str> = self
                    .extension("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                }
            }
            _ => ListType::Atomic,
        }
    }

    /// The element naming `item` of a list of this type (the schema is the list's).
    pub fn item_element(&self, list: &ListType<'_>, item: &Value) -> Result<Element, String> {
        match list {
            ListType::Set => Ok(Element::value(item)),
            ListType::Map(keys) => {
                let items = self.items();
                let mut fields = Vec::with_capacity(keys.len());
                for key in keys {
                    let value = item
                        .get(*key)
                        .filter(|v| !v.is_null())
                        .or_else(|| items.field(key).node.and_then(|n| n.get("default")))
                        .ok_or_else(|| {
                            format!("an item of the list has no value for its key field {key:?}")
                        })?;
                    fields.push((*key, value));
                }
                Ok(Element::key(fields))
            }
            ListType::Atomic => Err("an atomic list's items are not named".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_kubernetes_extensions_through_references() {
        let definitions = json!({
            "Port": {"type": "object", "properties": {"port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}},
            "Spec": {"type": "object", "properties": {
                "ports": {"type": "array", "items": {"$ref": "#/definitions/Port"},
                          "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"]},
                "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "args": {"type": "array", "items": {"type": "string"}},
                "selector": {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-map-type": "atomic"}
            }}
        });
        let definitions = definitions.as_object().unwrap();
        let root = json!({"$ref": "#/definitions/Spec"});
        let spec = Schema::new(Some(definitions), Some(&root));
        let ports = spec.field("ports");
        let list = ports.list_type();
        assert_eq!(list, ListType::Map(vec!["port", "protocol"]));
        assert_eq!(
            ports
                .item_element(&list, &json!({"port": 53}))
                .unwrap()
                .encode(),
            r#"k:{"port":53,"protocol":"TCP"}"#
        );
        assert!(
            ports
                .item_element(&list, &json!({"protocol": "UDP"}))
                .is_err()
        );
        assert_eq!(spec.field("finalizers").list_type(), ListType::Set);
        assert_eq!(spec.field("args").list_type(), ListType::Atomic);
        assert!(spec.field("selector").atomic_map());
        assert!(spec.declares("ports") && !spec.declares("other"));
        assert_eq!(Schema::unknown().field("x").list_type(), ListType::Atomic);
    }
}
