//! DefaultTolerationSeconds: a new pod that does not say how long it tolerates its node
//! being not ready or unreachable gets a toleration for each, with the server's default
//! (300 s, kube-apiserver's), so the taint-eviction controller moves it off a dead node after
//! that long rather than at once.

use serde_json::{Value, json};

use apiserver_registry::Object;

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// How long new pods tolerate a not-ready or unreachable node, by default.
#[derive(Clone, Copy, Debug)]
pub struct DefaultTolerations {
    /// `--default-not-ready-toleration-seconds`.
    pub not_ready_seconds: i64,
    /// `--default-unreachable-toleration-seconds`.
    pub unreachable_seconds: i64,
}

impl Default for DefaultTolerations {
    fn default() -> DefaultTolerations {
        DefaultTolerations {
            not_ready_seconds: 300,
            unreachable_seconds: 300,
        }
    }
}

/// Whether a toleration covers `key`'s NoExecute taint (kube's test: the key or any key, and
/// the NoExecute effect or any effect).
fn covers(toleration: &Value, key: &str) -> bool {
    let field = |name| toleration.get(name).and_then(Value::as_str).unwrap_or("");
    let key_ok = field("key") == key || field("key").is_empty();
    let effect_ok = field("effect") == "NoExecute" || field("effect").is_empty();
    key_ok && effect_ok
}

impl DefaultTolerations {
    /// Adds the default tolerations a pod about to be created lacks.
    pub fn admit(&self, pod: &mut Object) {
        let Some(Value::Object(spec)) = pod.get_mut("spec") else {
            return;
        };
        let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
        if tolerations.is_null() {
            *tolerations = json!([]);
        }
        // Anything else is the validator's to refuse.
        let Some(list) = tolerations.as_array_mut() else {
            return;
        };
        for (key, seconds) in [
            (NOT_READY, self.not_ready_seconds),
            (UNREACHABLE, self.unreachable_seconds),
        ] {
            if !list.iter().any(|t| covers(t, key)) {
                list.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": seconds}),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: Value) -> Object {
        json!({"spec": {"containers": [], "tolerations": tolerations}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn adds_what_is_missing_and_keeps_what_is_there() {
        let defaults = DefaultTolerations::default();
        let mut bare = pod(Value::Null);
        defaults.admit(&mut bare);
        assert_eq!(
            bare["spec"]["tolerations"],
            json!([
                {"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        let mut own = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        defaults.admit(&mut own);
        let list = own["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["tolerationSeconds"], 5);
        assert_eq!(list[1]["key"], NOT_READY);
        let mut everything = pod(json!([{"operator": "Exists"}]));
        defaults.admit(&mut everything);
        assert_eq!(
            everything["spec"]["tolerations"].as_array().map(Vec::len),
            Some(1)
        );
    }
}
