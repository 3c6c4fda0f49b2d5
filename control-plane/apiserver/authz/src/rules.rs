//! Policy rules: whether one grants a request, and whether one set of rules covers another
//! (the check that stops a user from granting more than they hold).

use serde::{Deserialize, Serialize};

use crate::Attributes;

/// One RBAC rule, with absent lists read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    /// Verbs (`*` for all).
    pub verbs: Vec<String>,
    /// API groups (`""` is core, `*` all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    /// Resources, `resource/subresource`, `*`, `resource/*` or `*/subresource`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Object names; empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Non-resource paths, exact or ending in `*`.
    #[serde(rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

const ALL: &str = "*";

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == ALL || v == value)
}

/// Whether a rule's resource entry names `resource` (with an optional subresource).
fn names_resource(entry: &str, resource: &str, subresource: Option<&str>) -> bool {
    if entry == ALL {
        return true;
    }
    match subresource {
        None => entry == resource,
        Some(sub) => match entry.split_once('/') {
            Some((r, s)) => (r == resource || r == ALL) && (s == sub || s == ALL),
            None => false,
        },
    }
}

/// Whether a non-resource rule entry names `path` (`/apis/*` covers everything under it).
fn names_path(entry: &str, path: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => entry == path,
    }
}

impl Rule {
    /// Whether this rule grants the request.
    pub fn allows(&self, request: &Attributes<'_>) -> bool {
        if !has(&self.verbs, request.verb) {
            return false;
        }
        match request.resource {
            Some(resource) => {
                has(&self.api_groups, resource.group)
                    && self
                        .resources
                        .iter()
                        .any(|r| names_resource(r, resource.resource, resource.subresource))
                    && (self.resource_names.is_empty()
                        || resource
                            .name
                            .is_some_and(|n| self.resource_names.iter().any(|r| r == n)))
            }
            None => self
                .non_resource_urls
                .iter()
                .any(|u| names_path(u, request.path)),
        }
    }

    /// Whether this rule grants everything `other` grants.
    pub fn covers(&self, other: &Rule) -> bool {
        let verbs = other.verbs.iter().all(|v| has(&self.verbs, v));
        if !verbs {
            return false;
        }
        if !other.non_resource_urls.is_empty() {
            return other.non_resource_urls.iter().all(|u| {
                self.non_resource_urls
                    .iter()
                    .any(|mine| covers_path(mine, u))
            });
        }
        other.api_groups.iter().all(|g| has(&self.api_groups, g))
            && other
                .resources
                .iter()
                .all(|r| self.resources.iter().any(|mine| covers_resource(mine, r)))
            && (self.resource_names.is_empty()
                || (!other.resource_names.is_empty()
                    && other
                        .resource_names
                        .iter()
                        .all(|n| self.resource_names.contains(n))))
    }
}

/// Whether a path entry covers another (which may itself be a prefix pattern).
fn covers_path(mine: &str, theirs: &str) -> bool {
    match mine.strip_suffix('*') {
        Some(prefix) => theirs.starts_with(prefix),
        None => mine == theirs,
    }
}

/// Whether a resource entry covers another, wildcards included.
fn covers_resource(mine: &str, theirs: &str) -> bool {
    if mine == ALL || mine == theirs {
        return true;
    }
    // `pods/*` covers `pods/log`; `*/status` covers `deployments/status`.
    match (mine.split_once('/'), theirs.split_once('/')) {
        (Some((mr, ms)), Some((tr, ts))) => (mr == ALL || mr == tr) && (ms == ALL || ms == ts),
        _ => false,
    }
}

/// Whether `owned` together grant everything every rule of `requested` grants. Returns the
/// rules that are not covered.
pub fn uncovered<'a>(owned: &[Rule], requested: &'a [Rule]) -> Vec<&'a Rule> {
    requested
        .iter()
        .flat_map(atoms)
        .filter(|atom| !owned.iter().any(|o| o.covers(&atom.rule)))
        .map(|atom| atom.source)
        .fold(Vec::new(), |mut missing, rule| {
            if !missing.iter().any(|m: &&Rule| std::ptr::eq(*m, rule)) {
                missing.push(rule);
            }
            missing
        })
}

struct Atom<'a> {
    rule: Rule,
    source: &'a Rule,
}

/// A rule broken into single-verb, single-group, single-resource, single-name rules, so a
/// request is covered when each piece is covered by some owned rule (no single owned rule
/// need grant it all).
fn atoms(rule: &Rule) -> Vec<Atom<'_>> {
    let one = |v: &String| vec![v.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        if !rule.non_resource_urls.is_empty() {
            for url in &rule.non_resource_urls {
                out.push(Atom {
                    rule: Rule {
                        verbs: one(verb),
                        non_resource_urls: one(url),
                        ..Rule::default()
                    },
                    source: rule,
                });
            }
            continue;
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                let names: Vec<Vec<String>> = if rule.resource_names.is_empty() {
                    vec![Vec::new()]
                } else {
                    rule.resource_names.iter().map(one).collect()
                };
                for resource_names in names {
                    out.push(Atom {
                        rule: Rule {
                            verbs: one(verb),
                            api_groups: one(group),
                            resources: one(resource),
                            resource_names,
                            non_resource_urls: Vec::new(),
                        },
                        source: rule,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResourceAttributes;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Rule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            ..Rule::default()
        }
    }

    fn request<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            resource: Some(ResourceAttributes {
                group,
                resource,
                subresource: sub,
                name,
                namespace: Some("default"),
            }),
            path: "",
        }
    }

    #[test]
    fn matching() {
        let pods = rule(&["get", "list"], &[""], &["pods", "pods/log"]);
        assert!(pods.allows(&request("get", "", "pods", None, Some("x"))));
        assert!(pods.allows(&request("get", "", "pods", Some("log"), Some("x"))));
        assert!(!pods.allows(&request("get", "", "pods", Some("exec"), Some("x"))));
        assert!(!pods.allows(&request("delete", "", "pods", None, Some("x"))));
        assert!(!pods.allows(&request("get", "apps", "pods", None, None)));
        let status = rule(&["*"], &["*"], &["*/status"]);
        assert!(status.allows(&request(
            "update",
            "apps",
            "deployments",
            Some("status"),
            None
        )));
        assert!(!status.allows(&request("update", "apps", "deployments", None, None)));
        let mut named = rule(&["get"], &[""], &["configmaps"]);
        named.resource_names = vec!["cfg".into()];
        assert!(named.allows(&request("get", "", "configmaps", None, Some("cfg"))));
        assert!(!named.allows(&request("get", "", "configmaps", None, Some("other"))));
        assert!(!named.allows(&request("get", "", "configmaps", None, None)));
        let urls = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/apis/*".into(), "/version".into()],
            ..Rule::default()
        };
        let path = |p| Attributes {
            verb: "get",
            resource: None,
            path: p,
        };
        assert!(urls.allows(&path("/apis/apps/v1")));
        assert!(urls.allows(&path("/version")));
        assert!(!urls.allows(&path("/version/x")));
        assert!(!urls.allows(&path("/api")));
    }

    #[test]
    fn coverage() {
        let admin = vec![rule(&["*"], &["*"], &["*"])];
        let reader = vec![
            rule(&["get", "list"], &[""], &["pods"]),
            rule(&["watch"], &[""], &["pods"]),
        ];
        let wanted = vec![rule(&["get", "list", "watch"], &[""], &["pods"])];
        assert!(uncovered(&admin, &wanted).is_empty());
        // Covered only by two owned rules together.
        assert!(uncovered(&reader, &wanted).is_empty());
        let more = vec![rule(&["get", "delete"], &[""], &["pods"])];
        assert_eq!(uncovered(&reader, &more).len(), 1);
        // A wildcard is only covered by a wildcard.
        assert_eq!(
            uncovered(&reader, &[rule(&["*"], &[""], &["pods"])]).len(),
            1
        );
        let subs = vec![rule(&["get"], &[""], &["pods/*"])];
        assert!(uncovered(&subs, &[rule(&["get"], &[""], &["pods/log"])]).is_empty());
        assert_eq!(
            uncovered(&subs, &[rule(&["get"], &[""], &["pods"])]).len(),
            1
        );
        let mut named = rule(&["get"], &[""], &["secrets"]);
        named.resource_names = vec!["a".into()];
        let any_secret = rule(&["get"], &[""], &["secrets"]);
        assert!(
            uncovered(
                std::slice::from_ref(&any_secret),
                std::slice::from_ref(&named)
            )
            .is_empty()
        );
        assert_eq!(uncovered(&[named], &[any_secret]).len(), 1);
    }
}
