//! The checks of where a pod asks to run: label selectors, node and pod (anti-)affinity,
//! topology spread constraints and tolerations, with the field paths and words
//! kube-apiserver uses. What the scheduler then does with them is its own business.
//!
//! The fields are read typed (they already parsed as a `Pod`), so a check sees the same
//! values the scheduler will.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Affinity, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::FieldError;
use crate::object::Object;

const SELECTOR_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist"];
const NODE_SELECTOR_OPERATORS: &[&str] = &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"];
const UNSATISFIABLE: &[&str] = &["DoNotSchedule", "ScheduleAnyway"];
const INCLUSION_POLICIES: &[&str] = &["Honor", "Ignore"];
const TOLERATION_OPERATORS: &[&str] = &["Exists", "Equal"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn typed<T: DeserializeOwned>(spec: &Object, field: &str) -> Option<T> {
    spec.get(field)
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The checks of a pod spec's scheduling fields at `path`.
pub fn validate_scheduling(spec: &Object, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(affinity) = typed::<Affinity>(spec, "affinity") {
        validate_affinity(&affinity, &format!("{path}.affinity"), &mut errors);
    }
    if let Some(constraints) =
        typed::<Vec<TopologySpreadConstraint>>(spec, "topologySpreadConstraints")
    {
        validate_spread(
            &constraints,
            &format!("{path}.topologySpreadConstraints"),
            &mut errors,
        );
    }
    if let Some(tolerations) = typed::<Vec<Toleration>>(spec, "tolerations") {
        for (i, toleration) in tolerations.iter().enumerate() {
            validate_toleration(toleration, &format!("{path}.tolerations[{i}]"), &mut errors);
        }
    }
    errors
}

/// The checks of one selector requirement at `at`: a key, a known operator (`operators`;
/// node selectors add `Gt`/`Lt`), and values as the operator needs them.
fn validate_requirement(
    key: &str,
    operator: &str,
    values: &[String],
    operators: &[&str],
    at: &str,
    errors: &mut Vec<FieldError>,
) {
    if key.is_empty() {
        errors.push(FieldError::required(format!("{at}.key"), ""));
    }
    if !operators.contains(&operator) {
        errors.push(FieldError::not_supported(
            format!("{at}.operator"),
            operator,
            operators,
        ));
        return;
    }
    match operator {
        "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
            format!("{at}.values"),
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
            format!("{at}.values"),
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => {
            errors.push(FieldError::required(
                format!("{at}.values"),
                "must be specified single value when `operator` is 'Lt' or 'Gt'",
            ))
        }
        _ => {}
    }
}

/// The checks of a `metav1.LabelSelector` at `path`.
pub fn validate_label_selector(selector: &LabelSelector, path: &str, errors: &mut Vec<FieldError>) {
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        validate_requirement(
            &requirement.key,
            &requirement.operator,
            requirement.values.as_deref().unwrap_or_default(),
            SELECTOR_OPERATORS,
            &format!("{path}.matchExpressions[{i}]"),
            errors,
        );
    }
}

/// The checks of a label selector held as JSON (workloads' `spec.selector`).
pub fn validate_label_selector_value(selector: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match serde_json::from_value::<LabelSelector>(selector.clone()) {
        Ok(selector) => validate_label_selector(&selector, path, &mut errors),
        Err(error) => errors.push(FieldError::invalid(
            path,
            selector.to_string(),
            error.to_string(),
        )),
    }
    errors
}

fn validate_node_requirement(
    requirement: &NodeSelectorRequirement,
    at: &str,
    errors: &mut Vec<FieldError>,
) {
    validate_requirement(
        &requirement.key,
        &requirement.operator,
        requirement.values.as_deref().unwrap_or_default(),
        NODE_SELECTOR_OPERATORS,
        at,
        errors,
    );
}

fn validate_node_term(term: &NodeSelectorTerm, at: &str, errors: &mut Vec<FieldError>) {
    for (i, requirement) in term.match_expressions.iter().flatten().enumerate() {
        validate_node_requirement(requirement, &format!("{at}.matchExpressions[{i}]"), errors);
    }
    for (i, requirement) in term.match_fields.iter().flatten().enumerate() {
        let field_at = format!("{at}.matchFields[{i}]");
        if requirement.key != "metadata.name" {
            errors.push(FieldError::not_supported(
                format!("{field_at}.key"),
                &requirement.key,
                &["metadata.name"],
            ));
        }
        validate_node_requirement(requirement, &field_at, errors);
    }
}

fn validate_pod_term(term: &PodAffinityTerm, at: &str, errors: &mut Vec<FieldError>) {
    if term.topology_key.is_empty() {
        errors.push(FieldError::required(
            format!("{at}.topologyKey"),
            "can not be empty",
        ));
    }
    if let Some(selector) = &term.label_selector {
        validate_label_selector(selector, &format!("{at}.labelSelector"), errors);
    }
    if let Some(selector) = &term.namespace_selector {
        validate_label_selector(selector, &format!("{at}.namespaceSelector"), errors);
    }
}

fn validate_weight(weight: i32, at: &str, errors: &mut Vec<FieldError>) {
    if !(1..=100).contains(&weight) {
        errors.push(FieldError::invalid(
            format!("{at}.weight"),
            weight.to_string(),
            "must be in the range 1-100",
        ));
    }
}

fn validate_affinity(affinity: &Affinity, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(node) = &affinity.node_affinity {
        let at = format!("{path}.nodeAffinity");
        if let Some(required) = &node.required_during_scheduling_ignored_during_execution {
            let at =
                format!("{at}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms");
            if required.node_selector_terms.is_empty() {
                errors.push(FieldError::required(
                    &at,
                    "must have at least one node selector term",
                ));
            }
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                validate_node_term(term, &format!("{at}[{i}]"), errors);
            }
        }
        for (i, preferred) in node
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            validate_weight(preferred.weight, &at, errors);
            validate_node_term(&preferred.preference, &format!("{at}.preference"), errors);
        }
    }
    let pod_kinds = [
        (
            "podAffinity",
            affinity.pod_affinity.as_ref().map(|a| {
                (
                    &a.required_during_scheduling_ignored_during_execution,
                    &a.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
        (
            "podAntiAffinity",
            affinity.pod_anti_affinity.as_ref().map(|a| {
                (
                    &a.required_during_scheduling_ignored_during_execution,
                    &a.preferred_during_scheduling_ignored_during_execution,
                )
            }),
        ),
    ];
    for (kind, terms) in pod_kinds {
        let Some((required, preferred)) = terms else {
            continue;
        };
        let at = format!("{path}.{kind}");
        for (i, term) in required.iter().flatten().enumerate() {
            validate_pod_term(
                term,
                &format!("{at}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                errors,
            );
        }
        for (i, weighted) in preferred.iter().flatten().enumerate() {
            let at = format!("{at}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            validate_weight(weighted.weight, &at, errors);
            validate_pod_term(
                &weighted.pod_affinity_term,
                &format!("{at}.podAffinityTerm"),
                errors,
            );
        }
    }
}

fn validate_spread(
    constraints: &[TopologySpreadConstraint],
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let mut seen = HashSet::new();
    for (i, constraint) in constraints.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if constraint.max_skew <= 0 {
            errors.push(FieldError::invalid(
                format!("{at}.maxSkew"),
                constraint.max_skew.to_string(),
                "must be greater than zero",
            ));
        }
        if constraint.topology_key.is_empty() {
            errors.push(FieldError::required(
                format!("{at}.topologyKey"),
                "can not be empty",
            ));
        }
        if !UNSATISFIABLE.contains(&constraint.when_unsatisfiable.as_str()) {
            errors.push(FieldError::not_supported(
                format!("{at}.whenUnsatisfiable"),
                &constraint.when_unsatisfiable,
                UNSATISFIABLE,
            ));
        }
        if let Some(min) = constraint.min_domains {
            if min <= 0 {
                errors.push(FieldError::invalid(
                    format!("{at}.minDomains"),
                    min.to_string(),
                    "must be greater than 0",
                ));
            } else if constraint.when_unsatisfiable != "DoNotSchedule" {
                errors.push(FieldError::invalid(
                    format!("{at}.minDomains"),
                    min.to_string(),
                    "can only use minDomains if whenUnsatisfiable=DoNotSchedule",
                ));
            }
        }
        for (field, policy) in [
            ("nodeAffinityPolicy", &constraint.node_affinity_policy),
            ("nodeTaintsPolicy", &constraint.node_taints_policy),
        ] {
            if let Some(policy) = policy
                && !INCLUSION_POLICIES.contains(&policy.as_str())
            {
                errors.push(FieldError::not_supported(
                    format!("{at}.{field}"),
                    policy,
                    INCLUSION_POLICIES,
                ));
            }
        }
        if let Some(selector) = &constraint.label_selector {
            validate_label_selector(selector, &format!("{at}.labelSelector"), errors);
        }
        for (j, key) in constraint.match_label_keys.iter().flatten().enumerate() {
            let in_selector = constraint.label_selector.as_ref().is_some_and(|s| {
                s.match_labels.iter().flatten().any(|(k, _)| k == key)
                    || s.match_expressions.iter().flatten().any(|e| &e.key == key)
            });
            if in_selector {
                errors.push(FieldError::invalid(
                    format!("{at}.matchLabelKeys[{j}]"),
                    key,
                    "exists in both matchLabelKeys and labelSelector",
                ));
            }
        }
        if !seen.insert((&constraint.topology_key, &constraint.when_unsatisfiable)) {
            errors.push(FieldError::duplicate(
                at.clone(),
                format!(
                    "{{{}, {}}}",
                    constraint.topology_key, constraint.when_unsatisfiable
                ),
            ));
        }
    }
}

fn validate_toleration(toleration: &Toleration, at: &str, errors: &mut Vec<FieldError>) {
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    let key = toleration.key.as_deref().unwrap_or_default();
    if !TOLERATION_OPERATORS.contains(&operator) {
        errors.push(FieldError::not_supported(
            format!("{at}.operator"),
            operator,
            TOLERATION_OPERATORS,
        ));
    }
    if key.is_empty() && operator != "Exists" {
        errors.push(FieldError::invalid(
            format!("{at}.operator"),
            operator,
            "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
        ));
    }
    if operator == "Exists" && toleration.value.as_deref().is_some_and(|v| !v.is_empty()) {
        errors.push(FieldError::invalid(
            format!("{at}.operator"),
            operator,
            "value must be empty when `operator` is 'Exists'",
        ));
    }
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && !TAINT_EFFECTS.contains(&effect)
    {
        errors.push(FieldError::not_supported(
            format!("{at}.effect"),
            effect,
            TAINT_EFFECTS,
        ));
    }
    if toleration.toleration_seconds.is_some() && toleration.effect.as_deref() != Some("NoExecute")
    {
        errors.push(FieldError::invalid(
            format!("{at}.effect"),
            toleration.effect.clone().unwrap_or_default(),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(spec: Value) -> Vec<String> {
        let spec = spec.as_object().cloned().unwrap_or_default();
        validate_scheduling(&spec, "spec")
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn spread_constraints_are_checked() {
        let found = messages(json!({"topologySpreadConstraints": [
            {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "Sometimes",
             "minDomains": 2, "nodeTaintsPolicy": "Maybe"},
            {"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["app"]},
            {"maxSkew": 1, "topologyKey": "", "whenUnsatisfiable": "DoNotSchedule"},
        ]}));
        assert_eq!(
            found,
            [
                "spec.topologySpreadConstraints[0].maxSkew: Invalid value: \"0\": must be greater than zero",
                "spec.topologySpreadConstraints[0].whenUnsatisfiable: Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\"",
                "spec.topologySpreadConstraints[0].minDomains: Invalid value: \"2\": can only use minDomains if whenUnsatisfiable=DoNotSchedule",
                "spec.topologySpreadConstraints[0].nodeTaintsPolicy: Unsupported value: \"Maybe\": supported values: \"Honor\", \"Ignore\"",
                "spec.topologySpreadConstraints[1].topologyKey: Required value: can not be empty",
                "spec.topologySpreadConstraints[1].matchLabelKeys[0]: Invalid value: \"app\": exists in both matchLabelKeys and labelSelector",
                "spec.topologySpreadConstraints[2].topologyKey: Required value: can not be empty",
                "spec.topologySpreadConstraints[2]: Duplicate value: \"{, DoNotSchedule}\"",
            ]
        );
    }

    #[test]
    fn affinity_terms_and_selectors_are_checked() {
        let found = messages(json!({"affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["x"]}]}]}},
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}, "topologyKey": ""}],
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 0, "podAffinityTerm": {"topologyKey": "zone",
                     "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["a"]}]}}}]}}}));
        assert_eq!(
            found,
            [
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified single value when `operator` is 'Lt' or 'Gt'",
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty",
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: \"0\": must be in the range 1-100",
                "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.labelSelector.matchExpressions[0].operator: Unsupported value: \"Like\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
            ]
        );
    }

    #[test]
    fn tolerations_are_checked() {
        let found = messages(json!({"tolerations": [
            {"operator": "Equal", "value": "x"},
            {"key": "k", "operator": "Exists", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 5},
            {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5},
        ]}));
        assert_eq!(
            found,
            [
                "spec.tolerations[0].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                "spec.tolerations[1].operator: Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'",
                "spec.tolerations[1].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
            ]
        );
        assert!(messages(json!({})).is_empty());
    }
}
