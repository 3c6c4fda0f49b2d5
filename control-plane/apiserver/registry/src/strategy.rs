//! What differs between resources: decoding, defaults, validation and which fields a write
//! may touch. The generic storage in `store` calls these hooks; each built-in type only
//! supplies what is its own (kube-apiserver's "strategy" pattern, not a handler per type).

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::FieldError;
use crate::object::Object;

/// The per-resource behaviour of the generic storage.
pub trait Strategy: Send + Sync {
    /// Decodes and normalises a client's object: checks every field has the right type and
    /// drops the fields the type does not have (returned, so strict field validation can
    /// refuse them). The error names the field.
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        Ok((object, Vec::new()))
    }

    /// Fills defaults and resets what clients may not set on create.
    fn prepare_for_create(&self, _object: &mut Object) {}

    /// Fills defaults on update; `old` is the stored object.
    fn prepare_for_update(&self, _new: &mut Object, _old: &Object) {}

    /// The type's own checks of a new object (metadata is checked generically).
    fn validate(&self, _object: &Object) -> Vec<FieldError> {
        Vec::new()
    }

    /// The type's checks of an update (immutable fields); by default those of a new object.
    fn validate_update(&self, new: &Object, _old: &Object) -> Vec<FieldError> {
        self.validate(new)
    }

    /// A reference to the type's OpenAPI schema, adding its definitions to `generator`
    /// (built-in types; custom resources publish theirs from their definition).
    fn schema(&self, _generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        None
    }

    /// The types server-side apply and strategic merge read, when the strategy has its own
    /// (a custom resource's schema); built-in types derive theirs from [`Strategy::schema`].
    fn merge_types(&self) -> Option<std::sync::Arc<crate::strategic::Types>> {
        None
    }

    /// Whether `status` is cleared when an object is created (true for most types; a node's
    /// kubelet creates it with status).
    fn reset_status_on_create(&self) -> bool {
        true
    }
}

/// A built-in type with no rules beyond its schema.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    /// The strategy for `T`.
    pub const fn new() -> Typed<T> {
        Typed(PhantomData)
    }
}

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Typed::new()
    }
}

impl<T: DeserializeOwned + Serialize + schemars::JsonSchema> Strategy for Typed<T> {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<T>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<T>())
    }
}

/// Decodes `object` as `T` and encodes it back: wrong types fail with the field's path,
/// fields `T` does not have are dropped and listed.
pub fn normalize_as<T: DeserializeOwned + Serialize>(
    object: Object,
) -> Result<(Object, Vec<String>), String> {
    let value = Value::Object(object);
    // Tracking the path costs on every field; only a body that fails needs it, for the message.
    let typed: T = match T::deserialize(&value) {
        Ok(typed) => typed,
        Err(_) => serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            }
        })?,
    };
    let normalized = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    dropped_fields(&value, &normalized, "", &mut unknown);
    match normalized {
        Value::Object(map) => Ok((map, unknown)),
        _ => Err("the object is not a JSON object".into()),
    }
}

/// Lists the fields of `given` (not null) that `kept` lacks.
fn dropped_fields(given: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (given, kept) {
        (Value::Object(given), Value::Object(kept)) => {
            for (key, value) in given {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match kept.get(key) {
                    Some(kept) => dropped_fields(value, kept, &field, out),
                    None if !value.is_null() && !is_empty_container(value) => out.push(field),
                    None => {}
                }
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (i, (g, k)) in given.iter().zip(kept).enumerate() {
                dropped_fields(g, k, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// k8s-openapi leaves out empty lists and maps it was given; they are not unknown fields.
fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn normalizing_names_bad_fields_and_drops_unknown_ones() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "bogus": 1},
                            "data": {"a": "b"}, "extra": true});
        let (normalized, mut unknown) =
            normalize_as::<ConfigMap>(object.as_object().cloned().unwrap_or_default()).unwrap();
        unknown.sort();
        assert_eq!(unknown, ["extra", "metadata.bogus"]);
        assert_eq!(normalized["data"]["a"], "b");
        let wrong = json!({"metadata": {"name": "c"}, "data": {"a": 1}});
        let error =
            normalize_as::<ConfigMap>(wrong.as_object().cloned().unwrap_or_default()).unwrap_err();
        assert!(
            error.starts_with("data.a: invalid type: integer `1`"),
            "{error}"
        );
    }
}
