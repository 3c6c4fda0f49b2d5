//! A snapshot of the cluster's RBAC objects, resolved for fast decisions: ClusterRoles with
//! their aggregated rules, Roles by namespace, and the bindings that grant them.
//!
//! Built from stored objects by [`crate::rbac::Rbac`] each time one changes; never written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use apiserver_registry::Object;
use apiserver_registry::selector::LabelSelector;
use serde::Deserialize;

use crate::rules::Rule;
use crate::{Attributes, User};

/// The prefix of service-account user names: `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Meta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RoleDoc {
    metadata: Meta,
    rules: Vec<Rule>,
    aggregation_rule: Option<AggregationDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AggregationDoc {
    cluster_role_selectors: Vec<Object>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct BindingDoc {
    metadata: Meta,
    role_ref: RoleRef,
    subjects: Vec<SubjectDoc>,
}

/// What a binding grants: a Role (in the binding's namespace) or a ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SubjectDoc {
    kind: String,
    name: String,
    namespace: String,
}

/// Who a binding names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
}

impl Subject {
    /// A binding's subject; a service account becomes the user it authenticates as (its
    /// namespace defaults to a RoleBinding's own).
    fn from_doc(doc: SubjectDoc, binding_namespace: &str) -> Option<Subject> {
        match doc.kind.as_str() {
            "User" => Some(Subject::User(doc.name)),
            "Group" => Some(Subject::Group(doc.name)),
            "ServiceAccount" => {
                let namespace = if doc.namespace.is_empty() {
                    binding_namespace
                } else {
                    &doc.namespace
                };
                Some(Subject::User(format!(
                    "{SERVICE_ACCOUNT_PREFIX}{namespace}:{}",
                    doc.name
                )))
            }
            _ => None,
        }
    }

    fn names(&self, user: &User) -> bool {
        match self {
            Subject::User(name) => *name == user.name,
            Subject::Group(group) => user.in_group(group),
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::User(name) => format!("User {name:?}"),
            Subject::Group(name) => format!("Group {name:?}"),
        }
    }
}

#[derive(Debug)]
struct Binding {
    kind: &'static str,
    name: String,
    role: RoleRef,
    subjects: Vec<Subject>,
}

/// The stored RBAC objects, by kind.
#[derive(Debug, Default, Clone)]
pub struct Objects<'a> {
    /// ClusterRoles.
    pub cluster_roles: Vec<&'a Object>,
    /// Roles.
    pub roles: Vec<&'a Object>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<&'a Object>,
    /// RoleBindings.
    pub role_bindings: Vec<&'a Object>,
}

/// The resolved policy.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    roles: HashMap<(String, String), Arc<[Rule]>>,
    cluster_bindings: Vec<Binding>,
    bindings: HashMap<String, Vec<Binding>>,
}

fn parse<T: for<'de> Deserialize<'de>>(object: &Object, what: &str) -> Option<T> {
    match T::deserialize(object) {
        Ok(doc) => Some(doc),
        Err(e) => {
            // Stored objects were validated on write; one that no longer parses grants nothing.
            tracing::warn!("ignoring a {what} that does not parse: {e}");
            None
        }
    }
}

impl Policy {
    /// Resolves stored objects into a policy.
    pub fn build(objects: &Objects<'_>) -> Policy {
        let mut policy = Policy::default();
        let cluster_roles: Vec<(RoleDoc, &Object)> = objects
            .cluster_roles
            .iter()
            .filter_map(|o| parse::<RoleDoc>(o, "ClusterRole").map(|d| (d, *o)))
            .collect();
        let by_name: HashMap<&str, usize> = cluster_roles
            .iter()
            .enumerate()
            .map(|(i, (doc, _))| (doc.metadata.name.as_str(), i))
            .collect();
        for (doc, _) in &cluster_roles {
            let mut visiting = HashSet::new();
            let rules =
                aggregated_rules(&cluster_roles, &by_name, &doc.metadata.name, &mut visiting);
            policy
                .cluster_roles
                .insert(doc.metadata.name.clone(), rules.into());
        }
        for doc in objects
            .roles
            .iter()
            .filter_map(|o| parse::<RoleDoc>(o, "Role"))
        {
            policy.roles.insert(
                (doc.metadata.namespace, doc.metadata.name),
                doc.rules.into(),
            );
        }
        for doc in objects
            .cluster_role_bindings
            .iter()
            .filter_map(|o| parse::<BindingDoc>(o, "ClusterRoleBinding"))
        {
            policy
                .cluster_bindings
                .push(binding("ClusterRoleBinding", doc));
        }
        for doc in objects
            .role_bindings
            .iter()
            .filter_map(|o| parse::<BindingDoc>(o, "RoleBinding"))
        {
            let namespace = doc.metadata.namespace.clone();
            policy
                .bindings
                .entry(namespace)
                .or_default()
                .push(binding("RoleBinding", doc));
        }
        policy
    }

    /// The rules a role reference grants in `namespace` (a RoleBinding's), if the role exists.
    pub fn role_rules(&self, role: &RoleRef, namespace: Option<&str>) -> Option<Arc<[Rule]>> {
        match (role.kind.as_str(), namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&role.name).cloned(),
            ("Role", Some(ns)) => self.roles.get(&(ns.to_owned(), role.name.clone())).cloned(),
            _ => None,
        }
    }

    /// The bindings that apply to `user` in `namespace` (cluster-wide ones always), with the
    /// namespace each binding's role is looked up in.
    fn bindings_for<'a>(
        &'a self,
        user: &'a User,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Binding, &'a Subject, Option<&'a str>)> + 'a {
        let cluster = self.cluster_bindings.iter().map(|b| (b, None));
        let local = namespace
            .and_then(|ns| self.bindings.get(ns).map(|list| (ns, list)))
            .into_iter()
            .flat_map(|(ns, list)| list.iter().map(move |b| (b, Some(ns))));
        cluster.chain(local).filter_map(move |(binding, ns)| {
            binding
                .subjects
                .iter()
                .find(|s| s.names(user))
                .map(|subject| (binding, subject, ns))
        })
    }

    /// Why `user` may make `request`, or `None` if no binding grants it.
    pub fn allows(&self, user: &User, request: &Attributes<'_>) -> Option<String> {
        for (binding, subject, namespace) in self.bindings_for(user, request.namespace()) {
            let Some(rules) = self.role_rules(&binding.role, namespace) else {
                continue;
            };
            if rules.iter().any(|rule| rule.allows(request)) {
                let scope = namespace
                    .map(|ns| format!(" in {ns:?}"))
                    .unwrap_or_default();
                return Some(format!(
                    "RBAC: allowed by {} {:?} of {} {:?} to {}{scope}",
                    binding.kind,
                    binding.name,
                    binding.role.kind,
                    binding.role.name,
                    subject.describe()
                ));
            }
        }
        None
    }

    /// Every rule `user` holds in `namespace` (cluster-wide only when `None`).
    pub fn rules_for(&self, user: &User, namespace: Option<&str>) -> Vec<Rule> {
        let mut rules = Vec::new();
        for (binding, _, ns) in self.bindings_for(user, namespace) {
            if let Some(granted) = self.role_rules(&binding.role, ns) {
                rules.extend(granted.iter().cloned());
            }
        }
        rules
    }
}

fn binding(kind: &'static str, doc: BindingDoc) -> Binding {
    let namespace = doc.metadata.namespace;
    Binding {
        kind,
        name: doc.metadata.name,
        role: doc.role_ref,
        subjects: doc
            .subjects
            .into_iter()
            .filter_map(|s| Subject::from_doc(s, &namespace))
            .collect(),
    }
}

/// A ClusterRole's rules: its own, or — when it has an aggregation rule — those of every
/// ClusterRole its selectors match, themselves resolved (the clusterrole-aggregation
/// controller's result, computed here so the policy never lags it).
fn aggregated_rules(
    roles: &[(RoleDoc, &Object)],
    by_name: &HashMap<&str, usize>,
    name: &str,
    visiting: &mut HashSet<String>,
) -> Vec<Rule> {
    let Some(&index) = by_name.get(name) else {
        return Vec::new();
    };
    let (doc, _) = &roles[index];
    let Some(aggregation) = &doc.aggregation_rule else {
        return doc.rules.clone();
    };
    if !visiting.insert(name.to_owned()) {
        return Vec::new();
    }
    let selectors: Vec<LabelSelector> = aggregation
        .cluster_role_selectors
        .iter()
        .map(LabelSelector::from_object)
        .collect();
    let mut rules: Vec<Rule> = Vec::new();
    for (other, object) in roles {
        if other.metadata.name == name
            || !selectors.iter().any(|s| !s.is_empty() && s.matches(object))
        {
            continue;
        }
        for rule in aggregated_rules(roles, by_name, &other.metadata.name, visiting) {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    visiting.remove(name);
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceAttributes;
    use serde_json::{Value, json};

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn pods<'a>(verb: &'a str, namespace: Option<&'a str>) -> Attributes<'a> {
        Attributes {
            verb,
            resource: Some(ResourceAttributes {
                group: "",
                resource: "pods",
                subresource: None,
                name: None,
                namespace,
            }),
            path: "",
        }
    }

    /// The test's stored objects: ClusterRoles, Roles, ClusterRoleBindings, RoleBindings.
    fn stored() -> [Vec<Object>; 4] {
        [
            vec![
                object(json!({"metadata": {"name": "view"},
                    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg-view": "true"}}]}})),
                object(
                    json!({"metadata": {"name": "pod-reader", "labels": {"agg-view": "true"}},
                    "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]}),
                ),
                object(json!({"metadata": {"name": "deleter"},
                    "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}]})),
            ],
            vec![object(
                json!({"metadata": {"name": "creator", "namespace": "team"},
                "rules": [{"verbs": ["create"], "apiGroups": [""], "resources": ["pods"]}]}),
            )],
            vec![object(json!({"metadata": {"name": "viewers"},
                "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
                "subjects": [{"kind": "Group", "name": "readers"}]}))],
            vec![
                object(json!({"metadata": {"name": "create", "namespace": "team"},
                    "roleRef": {"kind": "Role", "name": "creator"},
                    "subjects": [{"kind": "User", "name": "alice"},
                                 {"kind": "ServiceAccount", "name": "robot"}]})),
                object(json!({"metadata": {"name": "delete", "namespace": "team"},
                    "roleRef": {"kind": "ClusterRole", "name": "deleter"},
                    "subjects": [{"kind": "User", "name": "alice"}]})),
            ],
        ]
    }

    fn policy(stored: &[Vec<Object>; 4]) -> Policy {
        Policy::build(&Objects {
            cluster_roles: stored[0].iter().collect(),
            roles: stored[1].iter().collect(),
            cluster_role_bindings: stored[2].iter().collect(),
            role_bindings: stored[3].iter().collect(),
        })
    }

    #[test]
    fn bindings_grant_their_roles_where_they_apply() {
        let policy = policy(&stored());
        let alice = user("alice", &["readers"]);
        assert!(
            policy.allows(&alice, &pods("list", None)).is_some(),
            "aggregated view"
        );
        assert!(
            policy
                .allows(&alice, &pods("create", Some("team")))
                .is_some()
        );
        assert!(
            policy
                .allows(&alice, &pods("create", Some("other")))
                .is_none()
        );
        assert!(
            policy
                .allows(&alice, &pods("delete", Some("team")))
                .is_some()
        );
        assert!(policy.allows(&alice, &pods("delete", None)).is_none());
        let robot = user("system:serviceaccount:team:robot", &[]);
        assert!(
            policy
                .allows(&robot, &pods("create", Some("team")))
                .is_some()
        );
        assert!(policy.allows(&robot, &pods("list", Some("team"))).is_none());
        let reason = policy
            .allows(&alice, &pods("get", Some("x")))
            .unwrap_or_default();
        assert!(
            reason.contains("ClusterRoleBinding \"viewers\""),
            "{reason}"
        );
        assert_eq!(policy.rules_for(&alice, Some("team")).len(), 3);
    }

    #[test]
    fn aggregation_cycles_end() {
        let cyclic = [
            vec![
                object(json!({"metadata": {"name": "a", "labels": {"x": "a"}},
                    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "b"}}]}})),
                object(json!({"metadata": {"name": "b", "labels": {"x": "b"}},
                    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "a"}}]}})),
            ],
            Vec::new(),
            Vec::new(),
            Vec::new(),
        ];
        let policy = policy(&cyclic);
        let role = RoleRef {
            kind: "ClusterRole".into(),
            name: "a".into(),
        };
        assert_eq!(policy.role_rules(&role, None).map(|r| r.len()), Some(0));
    }
}
