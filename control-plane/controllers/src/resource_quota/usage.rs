//! What a namespace uses of what a ResourceQuota limits, pure: which pods count (not
//! finished, not past their deletion, within the quota's scopes), what they request and
//! limit, and how amounts are written back as quantities.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ScopedResourceSelectorRequirement};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use placement::resources::{Resources, Side, pod_amounts};

/// Whether a pod still counts against quota: not finished, and not past its deletion.
pub fn counts(pod: &Pod, now: jiff::Timestamp) -> bool {
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let gone_by = pod.metadata.deletion_timestamp.as_ref().is_some_and(|at| {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        at.0.checked_add(jiff::SignedDuration::from_secs(grace))
            .is_ok_and(|end| end <= now)
    });
    !finished && !gone_by
}

fn best_effort(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| &s.containers).all(|c| {
        c.resources.as_ref().is_none_or(|r| {
            let none = |list: &Option<BTreeMap<String, Quantity>>| {
                list.as_ref()
                    .is_none_or(|l| !l.contains_key("cpu") && !l.contains_key("memory"))
            };
            none(&r.requests) && none(&r.limits)
        })
    })
}

fn scope_matches(
    scope: &str,
    requirement: Option<&ScopedResourceSelectorRequirement>,
    pod: &Pod,
) -> bool {
    let spec = pod.spec.as_ref();
    match scope {
        "Terminating" => spec.and_then(|s| s.active_deadline_seconds).is_some(),
        "NotTerminating" => spec.and_then(|s| s.active_deadline_seconds).is_none(),
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => {
            let class = spec.and_then(|s| s.priority_class_name.as_deref());
            let values = requirement
                .and_then(|r| r.values.as_deref())
                .unwrap_or_default();
            match requirement.map(|r| r.operator.as_str()) {
                None | Some("Exists") => class.is_some(),
                Some("DoesNotExist") => class.is_none(),
                Some("In") => class.is_some_and(|c| values.iter().any(|v| v == c)),
                Some("NotIn") => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether the quota has scopes (then it tracks pods only).
pub fn scoped(quota: &ResourceQuota) -> bool {
    let spec = quota.spec.as_ref();
    spec.and_then(|s| s.scopes.as_ref())
        .is_some_and(|s| !s.is_empty())
        || spec
            .and_then(|s| s.scope_selector.as_ref())
            .and_then(|s| s.match_expressions.as_ref())
            .is_some_and(|e| !e.is_empty())
}

/// Whether `pod` is within every scope of `quota`.
pub fn in_scope(quota: &ResourceQuota, pod: &Pod) -> bool {
    let Some(spec) = quota.spec.as_ref() else {
        return true;
    };
    spec.scopes
        .iter()
        .flatten()
        .all(|s| scope_matches(s, None, pod))
        && spec
            .scope_selector
            .iter()
            .flat_map(|s| s.match_expressions.iter().flatten())
            .all(|r| scope_matches(&r.scope_name, Some(r), pod))
}

/// The pod resources a quota may name, and where they are counted.
fn pod_resource(name: &str) -> Option<(Side, &str)> {
    match name {
        "cpu" | "memory" | "ephemeral-storage" => Some((Side::Requests, name)),
        _ => name
            .strip_prefix("requests.")
            .map(|r| (Side::Requests, r))
            .or_else(|| name.strip_prefix("limits.").map(|r| (Side::Limits, r))),
    }
}

/// Whether `name` is counted from pods.
pub fn from_pods(name: &str) -> bool {
    matches!(name, "pods" | "count/pods") || pod_resource(name).is_some()
}

/// The usage of each pod-counted resource in `hard` by `pods` (already filtered to those
/// that count and are in scope), in thousandths.
pub fn pod_usage<'a>(hard: impl Iterator<Item = &'a str>, pods: &[&Pod]) -> BTreeMap<String, i64> {
    let sums = |side: Side| -> Resources {
        let mut total = Resources::default();
        for spec in pods.iter().filter_map(|p| p.spec.as_ref()) {
            total.add(&pod_amounts(spec, side));
        }
        total
    };
    let (requests, limits) = (sums(Side::Requests), sums(Side::Limits));
    let count = i64::try_from(pods.len())
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    hard.filter_map(|name| {
        let used = match name {
            "pods" | "count/pods" => count,
            _ => {
                let (side, resource) = pod_resource(name)?;
                match side {
                    Side::Requests => requests.get(resource),
                    Side::Limits => limits.get(resource),
                }
            }
        };
        Some((name.to_owned(), used))
    })
    .collect()
}

/// `milli` thousandths of `resource` written as Kubernetes writes such an amount: cores or
/// millicores for cpu, bytes with the largest exact binary suffix for the rest.
pub fn quantity(resource: &str, milli: i64) -> Quantity {
    let cpu = matches!(resource, "cpu" | "requests.cpu" | "limits.cpu");
    if cpu {
        return Quantity(if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        });
    }
    if milli % 1000 != 0 {
        return Quantity(format!("{milli}m"));
    }
    let whole = milli / 1000;
    if whole != 0 && resource_is_bytes(resource) {
        for (suffix, size) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if whole % size == 0 {
                return Quantity(format!("{}{suffix}", whole / size));
            }
        }
    }
    Quantity(whole.to_string())
}

fn resource_is_bytes(resource: &str) -> bool {
    ["memory", "ephemeral-storage", "storage", "hugepages-"]
        .iter()
        .any(|unit| resource.contains(unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, PodSpec, PodStatus, ResourceQuotaSpec, ResourceRequirements,
    };

    fn pod(cpu: &str, memory_limit: Option<&str>, phase: &str) -> Pod {
        let mut limits = BTreeMap::new();
        if let Some(m) = memory_limit {
            limits.insert("memory".to_owned(), Quantity(m.into()));
        }
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_owned(), Quantity(cpu.into()))].into()),
                        limits: Some(limits),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn running_pods_count_and_sum() {
        let now = jiff::Timestamp::now();
        let pods = [
            pod("500m", Some("128Mi"), "Running"),
            pod("1", None, "Pending"),
            pod("2", None, "Succeeded"),
        ];
        let counted: Vec<&Pod> = pods.iter().filter(|p| counts(p, now)).collect();
        assert_eq!(counted.len(), 2);
        let hard = ["pods", "requests.cpu", "limits.memory", "configmaps"];
        let used = pod_usage(hard.iter().copied(), &counted);
        assert_eq!(
            used.len(),
            3,
            "configmaps are not counted from pods: {used:?}"
        );
        assert_eq!(quantity("pods", used["pods"]), Quantity("2".into()));
        assert_eq!(
            quantity("requests.cpu", used["requests.cpu"]),
            Quantity("1500m".into())
        );
        assert_eq!(
            quantity("limits.memory", used["limits.memory"]),
            Quantity("128Mi".into())
        );
        assert_eq!(quantity("requests.cpu", 2000), Quantity("2".into()));
        assert_eq!(quantity("memory", 0), Quantity("0".into()));
    }

    #[test]
    fn scopes_pick_pods() {
        let quota = ResourceQuota {
            spec: Some(ResourceQuotaSpec {
                scopes: Some(vec!["BestEffort".into()]),
                ..ResourceQuotaSpec::default()
            }),
            ..ResourceQuota::default()
        };
        assert!(scoped(&quota));
        assert!(!in_scope(&quota, &pod("1", None, "Running")));
        let bare = Pod {
            spec: Some(PodSpec {
                containers: vec![Container::default()],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert!(in_scope(&quota, &bare));
    }
}
