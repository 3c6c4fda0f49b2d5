//! Kubernetes' JSONPath as custom resources' printer columns use it (`.spec.replicas`,
//! `.status.conditions[?(@.type=="Ready")].status`), evaluated with `serde_json_path`, which
//! implements RFC 9535: a Kubernetes path is an RFC 9535 query once it is rooted at `$`.

use serde_json::Value;

/// A parsed path.
#[derive(Debug, Clone)]
pub struct JsonPath(serde_json_path::JsonPath);

impl JsonPath {
    /// Parses a Kubernetes path: `.a.b`, optionally wrapped in `{…}`.
    pub fn parse(path: &str) -> Result<JsonPath, String> {
        let inner = path
            .strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or(path)
            .trim();
        if !inner.starts_with('.') && !inner.starts_with('[') {
            return Err("must be a JSONPath starting with '.', such as .spec.replicas".into());
        }
        serde_json_path::JsonPath::parse(&format!("${inner}"))
            .map(JsonPath)
            .map_err(|e| format!("is not a valid JSONPath: {e}"))
    }

    /// What the path finds in `value`: nothing, one value, or several.
    pub fn find<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        self.0.query(value).all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubernetes_paths_find_values() {
        let object = json!({"spec": {"replicas": 3}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        let replicas = JsonPath::parse(".spec.replicas").unwrap();
        assert_eq!(replicas.find(&object), [&json!(3)]);
        let ready = JsonPath::parse(r#".status.conditions[?(@.type=="Ready")].status"#).unwrap();
        assert_eq!(ready.find(&object), [&json!("True")]);
        let braces = JsonPath::parse("{.spec.replicas}").unwrap();
        assert_eq!(braces.find(&object).len(), 1);
        assert!(
            JsonPath::parse(".spec.missing")
                .unwrap()
                .find(&object)
                .is_empty()
        );
        assert!(JsonPath::parse("spec.replicas").is_err());
        assert!(JsonPath::parse(".spec[").is_err());
    }
}
