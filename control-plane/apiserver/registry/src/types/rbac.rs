//! Roles and bindings: well-formed rules, role references RBAC can resolve, subjects of a
//! known kind, and a binding's role reference fixed once made.

use serde_json::Value;

use super::{immutable, list};
use crate::error::FieldError;
use crate::object::Object;
use crate::strategy::{Strategy, normalize_as};
use crate::validation::path_segment_name;

const GROUP: &str = "rbac.authorization.k8s.io";

fn strings(value: &Value, key: &str) -> usize {
    value.get(key).and_then(Value::as_array).map_or(0, Vec::len)
}

/// Roles (`cluster: false`) and ClusterRoles.
pub struct RoleStrategy {
    /// Whether this is the cluster-scoped kind.
    pub cluster: bool,
}

impl Strategy for RoleStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        if self.cluster {
            normalize_as::<k8s_openapi::api::rbac::v1::ClusterRole>(object)
        } else {
            normalize_as::<k8s_openapi::api::rbac::v1::Role>(object)
        }
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(if self.cluster {
            generator.subschema_for::<k8s_openapi::api::rbac::v1::ClusterRole>()
        } else {
            generator.subschema_for::<k8s_openapi::api::rbac::v1::Role>()
        })
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (i, rule) in list(object, "rules").iter().enumerate() {
            let at = |field: &str| format!("rules[{i}].{field}");
            if strings(rule, "verbs") == 0 {
                errors.push(FieldError::required(
                    at("verbs"),
                    "verbs must contain at least one value",
                ));
            }
            if strings(rule, "nonResourceURLs") > 0 {
                if !self.cluster {
                    errors.push(FieldError::invalid(
                        at("nonResourceURLs"),
                        "",
                        "namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if strings(rule, "apiGroups") > 0 || strings(rule, "resources") > 0 {
                    errors.push(FieldError::invalid(
                        at("nonResourceURLs"),
                        "",
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
                continue;
            }
            if strings(rule, "apiGroups") == 0 {
                errors.push(FieldError::required(
                    at("apiGroups"),
                    "resource rules must supply at least one api group",
                ));
            }
            if strings(rule, "resources") == 0 {
                errors.push(FieldError::required(
                    at("resources"),
                    "resource rules must supply at least one resource",
                ));
            }
        }
        errors
    }
}

/// RoleBindings (`cluster: false`) and ClusterRoleBindings.
pub struct BindingStrategy {
    /// Whether this is the cluster-scoped kind.
    pub cluster: bool,
}

impl Strategy for BindingStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        if self.cluster {
            normalize_as::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(object)
        } else {
            normalize_as::<k8s_openapi::api::rbac::v1::RoleBinding>(object)
        }
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(if self.cluster {
            generator.subschema_for::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>()
        } else {
            generator.subschema_for::<k8s_openapi::api::rbac::v1::RoleBinding>()
        })
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let role = object.get("roleRef");
        let text = |v: Option<&Value>, key: &str| {
            v.and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let group = text(role, "apiGroup");
        if group != GROUP {
            errors.push(FieldError::not_supported(
                "roleRef.apiGroup",
                group,
                &[GROUP],
            ));
        }
        let kind = text(role, "kind");
        let kinds: &[&str] = if self.cluster {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        if !kinds.contains(&kind.as_str()) {
            errors.push(FieldError::not_supported("roleRef.kind", kind, kinds));
        }
        let name = text(role, "name");
        if name.is_empty() {
            errors.push(FieldError::required("roleRef.name", ""));
        } else {
            errors.extend(path_segment_name("roleRef.name", &name));
        }
        for (i, subject) in list(object, "subjects").iter().enumerate() {
            let at = |field: &str| format!("subjects[{i}].{field}");
            let name = text(Some(subject), "name");
            let group = text(Some(subject), "apiGroup");
            if name.is_empty() {
                errors.push(FieldError::required(at("name"), ""));
            }
            match text(Some(subject), "kind").as_str() {
                "ServiceAccount" => {
                    if !group.is_empty() {
                        errors.push(FieldError::not_supported(at("apiGroup"), group, &[""]));
                    }
                    if self.cluster && text(Some(subject), "namespace").is_empty() {
                        errors.push(FieldError::required(at("namespace"), ""));
                    }
                }
                "User" | "Group" => {
                    if group != GROUP {
                        errors.push(FieldError::not_supported(at("apiGroup"), group, &[GROUP]));
                    }
                }
                other => errors.push(FieldError::not_supported(
                    at("kind"),
                    other,
                    &["ServiceAccount", "User", "Group"],
                )),
            }
        }
        errors
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        if new.get("roleRef") != old.get("roleRef") {
            errors.push(immutable("roleRef"));
        }
        errors
    }

    fn prepare_for_create(&self, object: &mut Object) {
        default_subject_groups(object);
    }

    fn prepare_for_update(&self, new: &mut Object, _old: &Object) {
        default_subject_groups(new);
    }
}

/// Users and groups are RBAC's own kinds; clients often leave the group out.
fn default_subject_groups(object: &mut Object) {
    if let Some(Value::Object(role)) = object.get_mut("roleRef")
        && role.get("apiGroup").is_none_or(|g| g.as_str() == Some(""))
    {
        role.insert("apiGroup".into(), Value::from(GROUP));
    }
    let Some(Value::Array(subjects)) = object.get_mut("subjects") else {
        return;
    };
    for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
        let kind = subject.get("kind").and_then(Value::as_str);
        if matches!(kind, Some("User" | "Group")) && subject.get("apiGroup").is_none() {
            subject.insert("apiGroup".into(), Value::from(GROUP));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn rules_must_be_complete_and_fit_the_scope() {
        let role = RoleStrategy { cluster: false };
        let ok = object(
            json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
        );
        assert!(role.validate(&ok).is_empty());
        let bad = object(json!({"rules": [
            {"apiGroups": [""], "resources": ["pods"]},
            {"verbs": ["get"], "nonResourceURLs": ["/x"]},
            {"verbs": ["get"], "resources": ["pods"]}]}));
        assert_eq!(
            fields(&role.validate(&bad)),
            [
                "rules[0].verbs",
                "rules[1].nonResourceURLs",
                "rules[2].apiGroups"
            ]
        );
        let cluster = RoleStrategy { cluster: true };
        let urls = object(json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}]}));
        assert!(cluster.validate(&urls).is_empty());
    }

    #[test]
    fn bindings_name_a_resolvable_role_and_known_subjects() {
        let cluster = BindingStrategy { cluster: true };
        let mut binding = object(json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "sa"}]}));
        cluster.prepare_for_create(&mut binding);
        assert_eq!(binding["roleRef"]["apiGroup"], GROUP);
        assert_eq!(
            fields(&cluster.validate(&binding)),
            ["subjects[1].namespace"]
        );
        let to_role = object(
            json!({"roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "Robot", "name": "x"}]}),
        );
        assert_eq!(
            fields(&cluster.validate(&to_role)),
            ["roleRef.kind", "subjects[0].kind"]
        );
        let namespaced = BindingStrategy { cluster: false };
        let mut changed = to_role.clone();
        changed["roleRef"]["name"] = json!("other");
        changed["subjects"] = json!([]);
        let errors = namespaced.validate_update(&changed, &to_role);
        assert_eq!(fields(&errors), ["roleRef"]);
    }
}
