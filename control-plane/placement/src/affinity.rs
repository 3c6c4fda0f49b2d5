//! Node selectors and node affinity: whether a node's labels and name satisfy what a pod
//! asks for.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    let bound = || values.first().and_then(|x| number(x));
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((value.and_then(number), bound()), (Some(v), Some(x)) if v > x),
        "Lt" => matches!((value.and_then(number), bound()), (Some(v), Some(x)) if v < x),
        _ => false,
    }
}

/// Whether `node` satisfies `term`: every expression on its labels and every field
/// (`metadata.name`); an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = node
                .metadata
                .name
                .as_deref()
                .filter(|_| r.key == "metadata.name");
            requirement_matches(r, value)
        })
}

/// Whether `node` has every label of the pod's `nodeSelector` and satisfies one term of
/// its required node affinity.
pub fn required_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// The summed weights of the pod's preferred node-affinity terms `node` satisfies.
pub fn preferred_weight(pod: &Pod, node: &Node) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            terms
                .iter()
                .filter(|t| term_matches(&t.preference, node))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, zone: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("zone".to_owned(), zone.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn terms_match_labels_and_names() {
        let n = node("n1", "a");
        let term = |r| NodeSelectorTerm {
            match_expressions: Some(vec![r]),
            match_fields: None,
        };
        assert!(term_matches(
            &term(requirement("zone", "In", &["a", "c"])),
            &n
        ));
        assert!(!term_matches(
            &term(requirement("zone", "NotIn", &["a"])),
            &n
        ));
        assert!(term_matches(
            &term(requirement("rack", "DoesNotExist", &[])),
            &n
        ));
        assert!(!term_matches(&term(requirement("zone", "Gt", &["1"])), &n));
        assert!(!term_matches(&NodeSelectorTerm::default(), &n));
        let by_name = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![requirement("metadata.name", "In", &["n1"])]),
        };
        assert!(term_matches(&by_name, &n));
        assert!(!term_matches(&by_name, &node("n2", "a")));
    }

    #[test]
    fn node_selectors_need_every_label() {
        let pod = Pod {
            spec: Some(PodSpec {
                node_selector: Some([("zone".to_owned(), "b".to_owned())].into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert!(!required_matches(&pod, &node("n1", "a")));
        assert!(required_matches(&pod, &node("n1", "b")));
        assert!(required_matches(&Pod::default(), &node("n1", "a")));
    }
}
