//! RBAC's guard against privilege escalation: a user may write a Role or ClusterRole only
//! with rules they already hold (or with the `escalate` verb on it), and may bind a role only
//! if they hold its rules (or have the `bind` verb on it) — as kube-apiserver's RBAC storage
//! does.

use apiserver_registry::Object;
use serde::Deserialize;

use crate::policy::{Policy, RoleRef};
use crate::rules::{Rule, uncovered};
use crate::{Attributes, ResourceAttributes, User};

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RoleBody {
    rules: Vec<Rule>,
    aggregation_rule: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct BindingBody {
    role_ref: RoleRef,
}

/// Checks a write of an RBAC object by `user`: `resource` is its plural, `namespace` its
/// namespace (`None` for cluster-scoped kinds) and `object` what would be stored. Other
/// resources pass. The error is the 403 message.
pub fn check(
    policy: &Policy,
    user: &User,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
    object: &Object,
) -> Result<(), String> {
    let verb_allowed = |verb: &str, target: &str, target_name: &str| {
        policy
            .allows(
                user,
                &Attributes {
                    verb,
                    resource: Some(ResourceAttributes {
                        group: GROUP,
                        resource: target,
                        subresource: None,
                        name: Some(target_name),
                        namespace,
                    }),
                    path: "",
                },
            )
            .is_some()
    };
    match resource {
        "roles" | "clusterroles" => {
            if verb_allowed("escalate", resource, name) {
                return Ok(());
            }
            let body: RoleBody = RoleBody::deserialize(object)
                .map_err(|e| format!("{resource} {name:?} does not parse: {e}"))?;
            if body.aggregation_rule.is_some() && resource == "clusterroles" {
                // An aggregated role grants whatever any matching role will grant; only one
                // who holds everything may make one.
                let everything = Rule {
                    verbs: vec!["*".into()],
                    api_groups: vec!["*".into()],
                    resources: vec!["*".into()],
                    ..Rule::default()
                };
                if !uncovered(&policy.rules_for(user, None), &[everything]).is_empty() {
                    return Err(format!(
                        "{resource}.{GROUP} {name:?} is forbidden: user {:?} must have cluster-admin privileges to use an aggregationRule",
                        user.name
                    ));
                }
            }
            not_escalating(policy, user, resource, namespace, name, &body.rules)
        }
        "rolebindings" | "clusterrolebindings" => {
            let body: BindingBody = BindingBody::deserialize(object)
                .map_err(|e| format!("{resource} {name:?} does not parse: {e}"))?;
            let role = &body.role_ref;
            let role_resource = if role.kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if verb_allowed("bind", role_resource, &role.name) {
                return Ok(());
            }
            let Some(rules) = policy.role_rules(role, namespace) else {
                return Err(format!(
                    "{resource}.{GROUP} {name:?} is forbidden: {} {:?} not found, and user {:?} may not bind it",
                    role.kind, role.name, user.name
                ));
            };
            not_escalating(policy, user, resource, namespace, name, &rules)
        }
        _ => Ok(()),
    }
}

fn not_escalating(
    policy: &Policy,
    user: &User,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
    requested: &[Rule],
) -> Result<(), String> {
    let owned = policy.rules_for(user, namespace);
    let missing = uncovered(&owned, requested);
    if missing.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = missing.iter().map(|r| describe(r)).collect();
    Err(format!(
        "{resource}.{GROUP} {name:?} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        user.groups,
        listed.join("\n")
    ))
}

fn describe(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if !rule.api_groups.is_empty() {
        parts.push(format!("APIGroups:{:?}", rule.api_groups));
    }
    if !rule.resources.is_empty() {
        parts.push(format!("Resources:{:?}", rule.resources));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{:?}", rule.resource_names));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:{:?}", rule.non_resource_urls));
    }
    parts.push(format!("Verbs:{:?}", rule.verbs));
    format!("{{{}}}", parts.join(", "))
}
