//! A custom resource's structural schema applied to its objects: pruning the fields the schema
//! does not name, filling defaults, and validating values (types, enums, bounds, patterns,
//! required fields), with field errors worded as kube-apiserver words them.
//!
//! **Does not** check that a schema is itself structural (the definition's validation does)
//! or evaluate CEL rules (`x-kubernetes-validations`).

use std::collections::BTreeSet;

use apiserver_registry::FieldError;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::{Map, Value};

/// The fields every object has whatever its schema says.
const OBJECT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn child(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn preserves_unknown(schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_preserve_unknown_fields == Some(true)
}

fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => Some(items),
        _ => None,
    }
}

/// The schema of a map's values, when the object is a map.
fn additional(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(values)) => Some(values),
        _ => None,
    }
}

/// The schema of an object's member `field`: a named property, or the map's value schema.
fn schema_of<'a>(schema: &'a JSONSchemaProps, field: &str) -> Option<&'a JSONSchemaProps> {
    schema
        .properties
        .as_ref()
        .and_then(|p| p.get(field))
        .or_else(|| additional(schema))
}

fn allows_any_property(schema: &JSONSchemaProps) -> bool {
    matches!(
        schema.additional_properties,
        Some(JSONSchemaPropsOrBool::Bool(true))
    )
}

/// Removes what `schema` does not name from `value` (fields of objects that do not preserve
/// unknown fields, and nulls where the schema is not nullable); records the removed fields'
/// paths in `unknown`. `root` keeps apiVersion, kind and metadata.
pub fn prune(
    schema: &JSONSchemaProps,
    value: &mut Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let embedded = root || schema.x_kubernetes_embedded_resource == Some(true);
            let keep_unknown = preserves_unknown(schema) || allows_any_property(schema);
            let mut removed = Vec::new();
            for (field, member) in map.iter_mut() {
                if embedded && OBJECT_FIELDS.contains(&field.as_str()) {
                    continue;
                }
                let member_schema = schema_of(schema, field);
                match member_schema {
                    Some(s) if member.is_null() && s.nullable != Some(true) => {
                        removed.push(field.clone())
                    }
                    Some(s) => prune(s, member, &child(path, field), false, unknown),
                    None if keep_unknown => {}
                    None => {
                        if !member.is_null() {
                            unknown.push(child(path, field));
                        }
                        removed.push(field.clone());
                    }
                }
            }
            for field in removed {
                map.remove(&field);
            }
        }
        Value::Array(list) => {
            if let Some(items) = items(schema) {
                for (i, item) in list.iter_mut().enumerate() {
                    prune(items, item, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills the defaults `schema` gives for fields `value` lacks, at every depth.
pub fn default(schema: &JSONSchemaProps, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = &schema.properties {
                for (field, property) in properties {
                    if let Some(default) = &property.default
                        && !map.contains_key(field)
                    {
                        map.insert(field.clone(), default.0.clone());
                    }
                    if let Some(member) = map.get_mut(field) {
                        self::default(property, member);
                    }
                }
            }
            if let Some(values) = additional(schema) {
                for member in map.values_mut() {
                    self::default(values, member);
                }
            }
        }
        Value::Array(list) => {
            if let Some(items) = items(schema) {
                for item in list {
                    self::default(items, item);
                }
            }
        }
        _ => {}
    }
}

/// The JSON type of a value, as schemas name them.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as field errors quote it: strings bare, everything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_matches(wanted: &str, value: &Value) -> bool {
    match (wanted, type_of(value)) {
        (w, actual) if w == actual => true,
        ("number", "integer") => true,
        _ => false,
    }
}

/// Checks `value` (at `path`) against `schema`, adding what is wrong to `errors`. `root`
/// skips apiVersion, kind and metadata, which the generic object checks cover.
pub fn validate(
    schema: &JSONSchemaProps,
    value: &Value,
    path: &str,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    let shown_path = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if schema.nullable != Some(true) && !root {
            let wanted = schema.type_.as_deref().unwrap_or("object");
            errors.push(FieldError::invalid(
                path,
                "null",
                format!("{shown_path} in body must be of type {wanted}: \"null\""),
            ));
        }
        return;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !matches!(type_of(value), "integer" | "string") {
            errors.push(FieldError::invalid(
                path,
                type_of(value),
                format!(
                    "{shown_path} in body must be of type integer or string: \"{}\"",
                    type_of(value)
                ),
            ));
            return;
        }
    } else if let Some(wanted) = schema.type_.as_deref().filter(|t| !t.is_empty())
        && !type_matches(wanted, value)
    {
        errors.push(FieldError::invalid(
            path,
            type_of(value),
            format!(
                "{shown_path} in body must be of type {wanted}: \"{}\"",
                type_of(value)
            ),
        ));
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| &a.0 == value)
    {
        let allowed: Vec<String> = allowed.iter().map(|a| shown(&a.0)).collect();
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        errors.push(FieldError::not_supported(path, shown(value), &allowed));
    }
    match value {
        Value::Number(n) => number(schema, n.as_f64().unwrap_or(0.0), value, path, errors),
        Value::String(s) => string(schema, s, path, errors),
        Value::Array(list) => array(schema, list, path, errors),
        Value::Object(map) => object(schema, map, path, root, errors),
        _ => {}
    }
    combinators(schema, value, path, errors);
}

/// Checks a whole object against its schema; its apiVersion, kind and metadata are left to
/// the generic object checks.
pub fn validate_object(
    schema: &JSONSchemaProps,
    object: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    self::object(schema, object, "", true, errors);
}

fn number(
    schema: &JSONSchemaProps,
    n: f64,
    value: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(max) = schema.maximum {
        let exclusive = schema.exclusive_maximum == Some(true);
        if n > max || (exclusive && n == max) {
            let bound = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errors.push(FieldError::invalid(
                path,
                shown(value),
                format!("{path} in body should be {bound} {max}"),
            ));
        }
    }
    if let Some(min) = schema.minimum {
        let exclusive = schema.exclusive_minimum == Some(true);
        if n < min || (exclusive && n == min) {
            let bound = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errors.push(FieldError::invalid(
                path,
                shown(value),
                format!("{path} in body should be {bound} {min}"),
            ));
        }
    }
    if let Some(factor) = schema.multiple_of.filter(|f| *f > 0.0)
        && (n / factor).fract() != 0.0
    {
        errors.push(FieldError::invalid(
            path,
            shown(value),
            format!("{path} in body should be a multiple of {factor}"),
        ));
    }
}

fn string(schema: &JSONSchemaProps, s: &str, path: &str, errors: &mut Vec<FieldError>) {
    let length = s.chars().count() as i64;
    if let Some(max) = schema.max_length
        && length > max
    {
        errors.push(FieldError::too_long(path, max));
    }
    if let Some(min) = schema.min_length
        && length < min
    {
        errors.push(FieldError::invalid(
            path,
            s,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = &schema.pattern {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => errors.push(FieldError::invalid(
                path,
                s,
                format!("{path} in body should match '{pattern}'"),
            )),
            Ok(_) => {}
            // The definition's validation compiles every pattern; one that does not compile
            // here is a stored definition from before that check, and matches nothing.
            Err(_) => errors.push(FieldError::invalid(
                path,
                s,
                format!("the schema's pattern '{pattern}' does not compile"),
            )),
        }
    }
}

fn array(schema: &JSONSchemaProps, list: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let count = list.len() as i64;
    if let Some(max) = schema.max_items
        && count > max
    {
        errors.push(FieldError::too_many(path, list.len(), max));
    }
    if let Some(min) = schema.min_items
        && count < min
    {
        errors.push(FieldError::invalid(
            path,
            count.to_string(),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    let unique = schema.unique_items == Some(true)
        || matches!(schema.x_kubernetes_list_type.as_deref(), Some("set"));
    if unique {
        let mut seen = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            if !seen.insert(item.to_string()) {
                errors.push(FieldError::duplicate(format!("{path}[{i}]"), shown(item)));
            }
        }
    }
    if schema.x_kubernetes_list_type.as_deref() == Some("map") {
        let keys = schema.x_kubernetes_list_map_keys.as_deref().unwrap_or(&[]);
        let mut seen = BTreeSet::new();
        for (i, item) in list.iter().enumerate() {
            let key: Map<String, Value> =
                keys.iter().map(|k| (k.clone(), item[k].clone())).collect();
            let key = Value::Object(key).to_string();
            if !seen.insert(key.clone()) {
                errors.push(FieldError::duplicate(format!("{path}[{i}]"), key));
            }
        }
    }
    if let Some(items) = items(schema) {
        for (i, item) in list.iter().enumerate() {
            validate(items, item, &format!("{path}[{i}]"), false, errors);
        }
    }
}

fn object(
    schema: &JSONSchemaProps,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    for field in schema.required.iter().flatten() {
        if !map.contains_key(field) {
            errors.push(FieldError::required(child(path, field), ""));
        }
    }
    let count = map.len() as i64;
    if let Some(max) = schema.max_properties
        && count > max
    {
        errors.push(FieldError::invalid(
            path,
            count.to_string(),
            format!("must have at most {max} properties"),
        ));
    }
    if let Some(min) = schema.min_properties
        && count < min
    {
        errors.push(FieldError::invalid(
            path,
            count.to_string(),
            format!("{path} in body should have at least {min} properties"),
        ));
    }
    for (field, member) in map {
        if root && OBJECT_FIELDS.contains(&field.as_str()) {
            continue;
        }
        let member_schema = schema_of(schema, field);
        if let Some(member_schema) = member_schema {
            validate(member_schema, member, &child(path, field), false, errors);
        }
    }
}

/// allOf, anyOf, oneOf and not: value checks only (structural schemas carry no types there).
fn combinators(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let passes = |s: &JSONSchemaProps| {
        let mut found = Vec::new();
        validate(s, value, path, false, &mut found);
        found.is_empty()
    };
    for each in schema.all_of.iter().flatten() {
        validate(each, value, path, false, errors);
    }
    if let Some(any) = &schema.any_of
        && !any.iter().any(passes)
    {
        errors.push(FieldError::invalid(
            path,
            shown(value),
            "must validate at least one schema (anyOf)",
        ));
    }
    if let Some(one) = &schema.one_of
        && one.iter().filter(|s| passes(s)).count() != 1
    {
        errors.push(FieldError::invalid(
            path,
            shown(value),
            "must validate one and only one schema (oneOf)",
        ));
    }
    if let Some(not) = &schema.not
        && passes(not)
    {
        errors.push(FieldError::invalid(
            path,
            shown(value),
            "must not validate the schema (not)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> JSONSchemaProps {
        serde_json::from_value(value).unwrap()
    }

    fn crontab() -> JSONSchemaProps {
        schema(json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string", "maxLength": 10},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "mode": {"type": "string", "enum": ["fast", "slow"]},
                        "port": {"x-kubernetes-int-or-string": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "note": {"type": "string", "nullable": true},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                  "x-kubernetes-list-map-keys": ["name"],
                                  "items": {"type": "object", "properties": {"name": {"type": "string"},
                                            "size": {"type": "integer", "default": 3}}}},
                    },
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            },
        }))
    }

    fn errors_of(value: Value) -> Vec<String> {
        let mut errors = Vec::new();
        validate(&crontab(), &value, "", true, &mut errors);
        errors.iter().map(FieldError::message).collect()
    }

    #[test]
    fn pruning_drops_what_the_schema_does_not_name() {
        let mut value = json!({"apiVersion": "x/v1", "kind": "CronTab", "metadata": {"name": "a"},
            "spec": {"cronSpec": "* * * * */5", "bogus": 1, "note": null, "mode": null,
                     "labels": {"a": "b"}, "extra": {"anything": {"goes": true}},
                     "ports": [{"name": "a", "junk": 2}]},
            "top": true});
        let mut unknown = Vec::new();
        prune(&crontab(), &mut value, "", true, &mut unknown);
        unknown.sort();
        assert_eq!(unknown, ["spec.bogus", "spec.ports[0].junk", "top"]);
        assert_eq!(value["spec"]["note"], Value::Null, "nullable nulls stay");
        assert!(value["spec"].get("note").is_some());
        assert!(value["spec"].get("mode").is_none(), "other nulls go");
        assert_eq!(value["spec"]["extra"]["anything"]["goes"], true);
        assert_eq!(value["metadata"]["name"], "a");
    }

    #[test]
    fn defaults_fill_missing_fields_at_every_depth() {
        let mut value =
            json!({"spec": {"cronSpec": "x", "ports": [{"name": "a"}, {"name": "b", "size": 5}]}});
        default(&crontab(), &mut value);
        assert_eq!(value["spec"]["replicas"], 1);
        assert_eq!(value["spec"]["ports"][0]["size"], 3);
        assert_eq!(value["spec"]["ports"][1]["size"], 5);
    }

    #[test]
    fn validation_words_errors_as_kubernetes_does() {
        assert!(errors_of(json!({"spec": {"cronSpec": "* * * * */5", "port": 80}})).is_empty());
        assert!(errors_of(json!({"spec": {"cronSpec": "* * * * */5", "port": "http"}})).is_empty());
        let errors = errors_of(json!({"spec": {
            "cronSpec": "nope", "replicas": "two", "image": "a-very-long-image", "mode": "medium",
            "port": true, "labels": {"a": 1},
            "ports": [{"name": "a"}, {"name": "a"}]},
            "status": {"ready": "yes"}}));
        let expected = [
            "spec.cronSpec: Invalid value: \"nope\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$'",
            "spec.image: Too long: may not be more than 10 bytes",
            "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
            "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"",
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\"",
            r#"spec.ports[1]: Duplicate value: "{"name":"a"}""#,
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
            "status.ready: Invalid value: \"string\": status.ready in body must be of type boolean: \"string\"",
        ];
        let mut errors = errors;
        errors.sort();
        assert_eq!(errors, expected);
        let errors = errors_of(json!({"spec": {"replicas": 11}}));
        assert_eq!(
            errors,
            [
                "spec.cronSpec: Required value",
                "spec.replicas: Invalid value: \"11\": spec.replicas in body should be less than or equal to 10"
            ]
        );
    }

    #[test]
    fn combinators_check_values() {
        let s = schema(
            json!({"type": "object", "properties": {"v": {"type": "integer",
            "oneOf": [{"minimum": 5}, {"maximum": 2}], "not": {"enum": [7]}}}}),
        );
        let check = |v: Value| {
            let mut errors = Vec::new();
            validate(&s, &json!({"v": v}), "", true, &mut errors);
            errors.len()
        };
        assert_eq!(check(json!(6)), 0);
        assert_eq!(check(json!(1)), 0);
        assert_eq!(check(json!(3)), 1);
        assert_eq!(check(json!(7)), 1);
    }
}
