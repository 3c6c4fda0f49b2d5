//! One step of a field path, in the two spellings Kubernetes uses: the keys of a `fieldsV1`
//! document (`f:spec`, `k:{"name":"web"}`, `v:"a"`, `i:0`) and the dotted form conflict
//! messages show (`.spec.containers[name="web"].image`).

use std::fmt;

use serde_json::{Map, Value};

/// A step from a value to one of its members.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    /// A struct field or a map key.
    Field(String),
    /// An item of an associative list, named by its key fields: a JSON object, keys sorted.
    Key(String),
    /// An item of a set, named by its JSON value.
    Value(String),
    /// A position in a list that has neither keys nor set semantics.
    Index(usize),
}

impl Element {
    /// The element naming the list item whose key fields have these values.
    pub fn key<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Element {
        let mut fields: Vec<_> = fields.into_iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let object: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        Element::Key(Value::Object(object).to_string())
    }

    /// The element naming a set item.
    pub fn value(item: &Value) -> Element {
        Element::Value(item.to_string())
    }

    /// The key of this element in a `fieldsV1` document.
    pub fn encode(&self) -> String {
        match self {
            Element::Field(name) => format!("f:{name}"),
            Element::Key(json) => format!("k:{json}"),
            Element::Value(json) => format!("v:{json}"),
            Element::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `fieldsV1` key.
    pub fn decode(text: &str) -> Result<Element, String> {
        let (prefix, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not a field path element"))?;
        match prefix {
            "f" => Ok(Element::Field(rest.to_owned())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(fields)) => {
                    Ok(Element::key(fields.iter().map(|(k, v)| (k.as_str(), v))))
                }
                _ => Err(format!("{text:?}: a key element must be a JSON object")),
            },
            "v" => serde_json::from_str::<Value>(rest)
                .map(|v| Element::value(&v))
                .map_err(|e| format!("{text:?}: a value element must be JSON: {e}")),
            "i" => rest
                .parse()
                .map(Element::Index)
                .map_err(|_| format!("{text:?}: an index element must be a number")),
            _ => Err(format!(
                "{text:?}: unknown field path element prefix {prefix:?}"
            )),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Element::Field(name) => write!(f, ".{name}"),
            Element::Key(json) => {
                let fields: Map<String, Value> = serde_json::from_str(json).unwrap_or_default();
                let shown: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", shown.join(","))
            }
            Element::Value(json) => write!(f, "[={json}]"),
            Element::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object's root, shown as conflict messages show it.
pub fn display(path: &[Element]) -> String {
    path.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn elements_round_trip_through_fields_v1_keys() {
        let key = Element::key([("protocol", &json!("TCP")), ("containerPort", &json!(80))]);
        assert_eq!(key.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        for element in [
            Element::Field("spec".into()),
            key,
            Element::value(&json!("a")),
            Element::Index(3),
        ] {
            assert_eq!(Element::decode(&element.encode()).unwrap(), element);
        }
        assert!(Element::decode("x:1").is_err());
        assert!(Element::decode("k:[1]").is_err());
        assert!(Element::decode("spec").is_err());
    }

    #[test]
    fn paths_display_like_kubernetes() {
        let path = [
            Element::Field("spec".into()),
            Element::Field("containers".into()),
            Element::key([("name", &json!("web"))]),
            Element::Field("image".into()),
        ];
        assert_eq!(display(&path), r#".spec.containers[name="web"].image"#);
        assert_eq!(display(&[Element::value(&json!("x"))]), r#"[="x"]"#);
    }
}
