//! The built-in types' own rules: defaults, checks and immutable fields. Everything else they
//! share lives in the generic storage.

pub mod certificates;
pub mod config;
pub mod limits;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod rbac;
pub mod scheduling;
pub mod service;
pub mod workload;

use serde_json::Value;

use crate::error::FieldError;
use crate::object::Object;

/// Sets `object[key]` to `value` unless it holds a non-null value.
pub(crate) fn default(object: &mut Object, key: &str, value: Value) {
    if object.get(key).is_none_or(Value::is_null) {
        object.insert(key.to_owned(), value);
    }
}

/// A list field as a slice (empty when missing).
pub(crate) fn list<'a>(object: &'a Object, key: &str) -> &'a [Value] {
    object
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The error for changing a field that may not change.
pub(crate) fn immutable(field: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        kind: crate::error::FieldErrorKind::Invalid,
        detail: "field is immutable".into(),
        value: None,
    }
}
