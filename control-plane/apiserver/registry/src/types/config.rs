//! ConfigMaps and Secrets: key names, secret types, immutability.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};

use super::{default, immutable};
use crate::error::FieldError;
use crate::object::Object;
use crate::strategy::{Strategy, normalize_as};

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && !key.starts_with("..")
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn keys(object: &Object, fields: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for field in fields {
        if let Some(map) = object.get(*field).and_then(Value::as_object) {
            for key in map.keys().filter(|k| !is_config_key(k)) {
                errors.push(FieldError::invalid(
                    *field,
                    key,
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' \
                     (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation \
                     is '[-._a-zA-Z0-9]+')",
                ));
            }
        }
    }
    errors
}

fn immutable_data(new: &Object, old: &Object, fields: &[&str]) -> Vec<FieldError> {
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return Vec::new();
    }
    let mut errors = Vec::new();
    if new.get("immutable") != Some(&Value::Bool(true)) {
        errors.push(FieldError::forbidden(
            "immutable",
            "field is immutable when `immutable` is set",
        ));
    }
    for field in fields {
        if new.get(*field) != old.get(*field) {
            errors.push(FieldError::forbidden(
                *field,
                "field is immutable when `immutable` is set",
            ));
        }
    }
    errors
}

/// ConfigMaps.
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<ConfigMap>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<ConfigMap>())
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        keys(object, &["data", "binaryData"])
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        errors.extend(immutable_data(new, old, &["data", "binaryData"]));
        errors
    }
}

/// Secrets.
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<Secret>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<Secret>())
    }

    fn prepare_for_create(&self, object: &mut Object) {
        default(object, "type", json!("Opaque"));
        fold_string_data(object);
    }

    fn prepare_for_update(&self, new: &mut Object, _old: &Object) {
        default(new, "type", json!("Opaque"));
        fold_string_data(new);
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let mut errors = keys(object, &["data"]);
        let ty = object.get("type").and_then(Value::as_str).unwrap_or("");
        let data = object.get("data").and_then(Value::as_object);
        let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
        let required: &[&str] = match ty {
            "kubernetes.io/tls" => &["tls.crt", "tls.key"],
            "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
            _ => &[],
        };
        for key in required.iter().filter(|k| !has(k)) {
            errors.push(FieldError::required(format!("data[{key}]"), ""));
        }
        errors
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        if new.get("type") != old.get("type") {
            errors.push(immutable("type"));
        }
        errors.extend(immutable_data(new, old, &["data"]));
        errors
    }
}

/// `stringData` is write-only: its entries are encoded into `data`, as the API server does.
fn fold_string_data(object: &mut Object) {
    use base64::Engine;
    let Some(Value::Object(strings)) = object.remove("stringData") else {
        return;
    };
    let data = crate::object::map_mut(object, "data");
    for (key, value) in strings {
        if let Value::String(text) = value {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            data.insert(key, Value::String(encoded));
        }
    }
}
