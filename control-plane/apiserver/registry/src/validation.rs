//! The validation every object shares: names, labels, annotations, and the metadata rules of
//! Kubernetes' apimachinery, with its error wording.

use serde_json::Value;

use crate::error::FieldError;
use crate::object::{Object, metadata};

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const TOTAL_ANNOTATION_BYTES: usize = 256 * 1024;

fn is_label_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

/// Whether `s` is an RFC 1123 label: lowercase alphanumerics and '-', starting and ending
/// alphanumeric, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter().all(|&c| is_label_char(c))
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

/// Errors for a name that must be an RFC 1123 label (namespaces, services, container names).
pub fn dns1123_label(field: &str, value: &str) -> Option<FieldError> {
    (!is_dns1123_label(value)).then(|| {
        FieldError::invalid(
            field,
            value,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    })
}

/// Errors for a name that must be an RFC 1123 subdomain (most objects).
pub fn dns1123_subdomain(field: &str, value: &str) -> Option<FieldError> {
    (!is_dns1123_subdomain(value)).then(|| {
        FieldError::invalid(
            field,
            value,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    })
}

/// Errors for a name that only has to be usable as a path segment (e.g. RBAC roles).
pub fn path_segment_name(field: &str, value: &str) -> Option<FieldError> {
    if value == "." || value == ".." {
        return Some(FieldError::invalid(field, value, "may not be '.' or '..'"));
    }
    value
        .contains(['/', '%'])
        .then(|| FieldError::invalid(field, value, "may not contain '/' or '%'"))
}

/// How a resource's object names are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// An RFC 1123 subdomain (the default).
    Subdomain,
    /// An RFC 1123 label (namespaces, services).
    Label,
    /// Anything usable as a path segment (RBAC objects).
    PathSegment,
}

impl NameRule {
    /// Errors for `value` under this rule.
    pub fn check(self, field: &str, value: &str) -> Option<FieldError> {
        match self {
            NameRule::Subdomain => dns1123_subdomain(field, value),
            NameRule::Label => dns1123_label(field, value),
            NameRule::PathSegment => path_segment_name(field, value),
        }
    }
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if prefix.is_some_and(|p| p.is_empty() || !is_dns1123_subdomain(p)) {
        return false;
    }
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// Errors in a label key.
pub fn label_key(field: &str, key: &str) -> Option<FieldError> {
    (!is_qualified_name(key)).then(|| {
        FieldError::invalid(
            field,
            key,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
             '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') \
             with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        )
    })
}

/// Errors in a label value.
pub fn label_value(field: &str, value: &str) -> Option<FieldError> {
    (!is_label_value(value)).then(|| {
        FieldError::invalid(
            field,
            value,
            "a valid label must be an empty string or consist of alphanumeric characters, '-', \
             '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  \
             or 'my_value',  or '12345', regex used for validation is \
             '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        )
    })
}

/// Errors in a map of labels at `field`.
pub fn labels(field: &str, labels: &serde_json::Map<String, Value>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels {
        errors.extend(label_key(field, key));
        match value.as_str() {
            Some(v) => errors.extend(label_value(&format!("{field}[{key}]"), v)),
            None => errors.push(FieldError::invalid(
                format!("{field}[{key}]"),
                value.to_string(),
                "must be a string",
            )),
        }
    }
    errors
}

/// The metadata checks every object gets.
pub fn object_meta(object: &Object, namespaced: bool, rule: NameRule) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(meta) = metadata(object) else {
        return vec![FieldError::required("metadata", "")];
    };
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) => errors.extend(rule.check("metadata.name", name)),
    }
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if namespaced {
        if ns.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            errors.extend(dns1123_label("metadata.namespace", ns));
        }
    } else if !ns.is_empty() {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    for (field, value) in meta {
        let path = format!("metadata.{field}");
        match (field.as_str(), value) {
            ("labels", Value::Object(map)) => errors.extend(labels(&path, map)),
            ("annotations", Value::Object(map)) => {
                let mut total = 0;
                for (key, value) in map {
                    errors.extend(label_key(&path, &key.to_ascii_lowercase()));
                    total += key.len() + value.as_str().map_or(0, str::len);
                    if !value.is_string() {
                        errors.push(FieldError::invalid(
                            format!("{path}[{key}]"),
                            value.to_string(),
                            "must be a string",
                        ));
                    }
                }
                if total > TOTAL_ANNOTATION_BYTES {
                    errors.push(FieldError {
                        field: path,
                        kind: crate::error::FieldErrorKind::Invalid,
                        detail: format!("must have at most {TOTAL_ANNOTATION_BYTES} bytes"),
                        value: None,
                    });
                }
            }
            ("labels" | "annotations", Value::Null) => {}
            ("labels" | "annotations", other) => errors.push(FieldError::invalid(
                path,
                other.to_string(),
                "must be a map of strings",
            )),
            ("finalizers", Value::Array(list)) => {
                for (i, f) in list.iter().enumerate() {
                    match f.as_str() {
                        Some(f) if is_qualified_name(f) => {}
                        _ => errors.push(FieldError::invalid(
                            format!("{path}[{i}]"),
                            f.to_string().trim_matches('"'),
                            "must be a qualified name",
                        )),
                    }
                }
            }
            ("generation", Value::Number(n)) if n.as_i64().is_some_and(|g| g < 0) => errors.push(
                FieldError::invalid(path, n.to_string(), "must be greater than or equal to 0"),
            ),
            _ => {}
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-web"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("/name"));
        assert!(is_label_value(""));
        assert!(!is_label_value("bad value"));
        assert!(path_segment_name("f", "system:admin").is_none());
        assert!(path_segment_name("f", "a/b").is_some());
    }

    #[test]
    fn metadata_errors_name_the_field() {
        let object = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "bad value"}}});
        let errors = object_meta(
            object.as_object().unwrap_or(&Object::new()),
            true,
            NameRule::Subdomain,
        );
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["metadata.name", "metadata.namespace", "metadata.labels[ok]"]
        );
    }
}
