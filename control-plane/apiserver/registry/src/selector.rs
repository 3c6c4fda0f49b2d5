//! Label and field selectors: parsed from the query string, matched against objects.
//!
//! Written here because the grammar is Kubernetes' own (`a=b,c!=d,e in (x,y),!f`) and small;
//! no crate parses it.

use serde_json::Value;

use crate::object::{Object, label, value_at};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`
    Equals(String, String),
    /// `key!=value` (also true when the label is missing)
    NotEquals(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the label is missing)
    NotIn(String, Vec<String>),
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
}

/// A label selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements.
    pub requirements: Vec<Requirement>,
}

/// A selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

impl LabelSelector {
    /// Parses the query-string form.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether the object's labels satisfy every requirement.
    pub fn matches(&self, object: &Object) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(object, k) == Some(v),
            Requirement::NotEquals(k, v) => label(object, k) != Some(v),
            Requirement::In(k, vs) => label(object, k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => {
                !label(object, k).is_some_and(|l| vs.iter().any(|v| v == l))
            }
            Requirement::Exists(k) => label(object, k).is_some(),
            Requirement::DoesNotExist(k) => label(object, k).is_none(),
        })
    }

    /// The selector a `metav1.LabelSelector` object (matchLabels and matchExpressions) means.
    pub fn from_object(selector: &Object) -> LabelSelector {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push(Requirement::Equals(
                    k.clone(),
                    v.as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        for expression in crate::types::list(selector, "matchExpressions") {
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let values =
                crate::types::list(expression.as_object().unwrap_or(&Object::new()), "values")
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
            requirements.push(match expression.get("operator").and_then(Value::as_str) {
                Some("In") => Requirement::In(key, values),
                Some("NotIn") => Requirement::NotIn(key, values),
                Some("Exists") => Requirement::Exists(key),
                _ => Requirement::DoesNotExist(key),
            });
        }
        LabelSelector { requirements }
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl std::fmt::Display for LabelSelector {
    /// The query-string form (`app=web,tier in (a,b)`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<String, SelectorError> {
    let key = key.trim();
    if key.is_empty() || crate::validation::label_key("", key).is_some() {
        return Err(SelectorError(format!("{whole}: invalid label key {key:?}")));
    }
    Ok(key.to_owned())
}

fn check_value(value: &str, whole: &str) -> Result<String, SelectorError> {
    let value = value.trim();
    if crate::validation::label_value("", value).is_some() {
        return Err(SelectorError(format!(
            "{whole}: invalid label value {value:?}"
        )));
    }
    Ok(value.to_owned())
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("{whole}: expected a set in parentheses")))?;
    inner.split(',').map(|v| check_value(v, whole)).collect()
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(check_key(key, part)?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            check_key(key, part)?,
            check_value(value, part)?,
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(
            check_key(key, part)?,
            check_value(value, part)?,
        ));
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or("");
    let rest = words.next().unwrap_or("").trim_start();
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(
            check_key(key, part)?,
            parse_set(set, part)?,
        ));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(
            check_key(key, part)?,
            parse_set(set, part)?,
        ));
    }
    if rest.is_empty() {
        return Ok(Requirement::Exists(check_key(key, part)?));
    }
    Err(SelectorError(part.to_owned()))
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field's path, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared with.
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

/// A field selector: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The terms.
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the query-string form; `supported` names the fields this resource can be
    /// selected by besides `metadata.name` and `metadata.namespace`.
    pub fn parse(text: &str, supported: &[&str]) -> Result<FieldSelector, SelectorError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, false)
            } else {
                return Err(SelectorError(format!("{part}: expected field=value")));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace")
                && !supported.contains(&field)
            {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push(FieldTerm {
                field: field.to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object satisfies every term. A missing field compares as "".
    pub fn matches(&self, object: &Object) -> bool {
        self.terms.iter().all(|term| {
            let actual = match value_at(object, &term.field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (actual == term.value) != term.negated
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an equality term requires of `field`, if any (used to narrow a list to one
    /// name or namespace).
    pub fn required(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: serde_json::Value) -> Object {
        json!({"metadata": {"name": "p", "labels": labels}, "spec": {"nodeName": "n1"}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn label_selectors() {
        let s = LabelSelector::parse("app=web, tier in (fe,be),!legacy,env!=prod,track").unwrap();
        assert_eq!(s.requirements.len(), 5);
        assert!(s.matches(&pod(json!({"app": "web", "tier": "fe", "track": "x"}))));
        assert!(!s.matches(&pod(json!({"app": "web", "tier": "db", "track": "x"}))));
        assert!(!s.matches(&pod(
            json!({"app": "web", "tier": "fe", "track": "x", "legacy": ""})
        )));
        let notin = LabelSelector::parse("tier notin (db)").unwrap();
        assert!(notin.matches(&pod(json!({}))));
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("bad key=1").is_err());
        assert!(LabelSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn field_selectors() {
        let s =
            FieldSelector::parse("spec.nodeName=n1,metadata.name!=q", &["spec.nodeName"]).unwrap();
        assert!(s.matches(&pod(json!({}))));
        assert_eq!(s.required("spec.nodeName"), Some("n1"));
        let unsupported = FieldSelector::parse("spec.other=1", &["spec.nodeName"]).unwrap_err();
        assert_eq!(
            unsupported.to_string(),
            "unable to parse requirement: field label not supported: spec.other"
        );
        let empty_node = FieldSelector::parse("spec.nodeName=", &["spec.nodeName"]).unwrap();
        assert!(!empty_node.matches(&pod(json!({}))));
    }
}
