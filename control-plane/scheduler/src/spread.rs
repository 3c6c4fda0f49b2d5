//! PodTopologySpread: keep the pods a constraint selects evenly spread over the domains of its
//! topology key.
//!
//! For each constraint, the selected pods in the pod's namespace (not terminating) are counted
//! per domain, over the nodes the constraint's inclusion policies admit (the pod's node
//! affinity by default, taints only when asked). `DoNotSchedule` constraints filter: placing
//! the pod may not make its domain exceed the least-loaded domain by more than `maxSkew` (the
//! least counts as 0 while fewer than `minDomains` domains exist). `ScheduleAnyway`
//! constraints score: fewer selected pods in the node's domain is better, each constraint
//! weighted by the log of its domain count, as kube-scheduler does.
//!
//! kube-scheduler's cluster-wide default constraints (spreading a Service's or ReplicaSet's
//! pods when they name none) are not applied; LeastAllocated already spreads such pods.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use kube::core::{Expression, Selector, SelectorExt};
use placement::taints::tolerated;

use crate::cache::{Cache, NodeInfo};
use crate::terms::{Labels, compile_selector};

/// A node without the constraint's topology key.
pub const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// A node whose domain would be too crowded.
pub const SKEW: &str = "node(s) didn't match pod topology spread constraints";

/// One constraint with its counts.
struct Constraint {
    key: String,
    max_skew: i64,
    /// Selected pods per domain value (every admitted domain present, even at 0).
    counts: HashMap<String, i64>,
    /// The least count over the domains (0 while below `minDomains`).
    least: i64,
    /// 1 when the pod is itself selected.
    itself: i64,
    /// The score weight: ln(domains + 2).
    weight: f64,
}

/// What the filter and score need, worked out once per decision.
pub struct Spread {
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
}

fn admits(constraint: &TopologySpreadConstraint, pod: &Pod, node: &NodeInfo) -> bool {
    let honor_affinity = constraint.node_affinity_policy.as_deref() != Some("Ignore");
    let honor_taints = constraint.node_taints_policy.as_deref() == Some("Honor");
    (!honor_affinity || placement::affinity::required_matches(pod, &node.node))
        && (!honor_taints
            || node
                .taints
                .iter()
                .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
                .all(|t| tolerated(pod, t)))
}

fn selector(constraint: &TopologySpreadConstraint, labels: &Labels) -> Option<Selector> {
    let mut selector = compile_selector(constraint.label_selector.as_ref())?;
    let keys = constraint.match_label_keys.iter().flatten();
    selector
        .extend(keys.filter_map(|k| Some(Expression::Equal(k.clone(), labels.get(k)?.clone()))));
    Some(selector)
}

impl Constraint {
    /// Counts for `constraint` over the nodes that have every key in `keys` and that the
    /// constraint admits.
    fn count(
        constraint: &TopologySpreadConstraint,
        keys: &[&str],
        pod: &Pod,
        cache: &Cache,
    ) -> Constraint {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let empty = Labels::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let selector = selector(constraint, labels);
        let key = constraint.topology_key.as_str();
        let mut counts: HashMap<String, i64> = HashMap::new();
        let mut domain_of: HashMap<&str, &str> = HashMap::new();
        for node in cache.nodes() {
            if keys.iter().any(|k| node.label(k).is_none()) || !admits(constraint, pod, node) {
                continue;
            }
            if let Some(value) = node.label(key) {
                counts.entry(value.to_owned()).or_insert(0);
                domain_of.insert(node.name(), value);
            }
        }
        if let Some(selector) = &selector {
            for (_, placed) in cache.pods() {
                if placed.who.deleting
                    || placed.who.namespace != namespace
                    || !selector.matches(&placed.labels)
                {
                    continue;
                }
                if let Some(value) = domain_of.get(placed.node.as_str())
                    && let Some(count) = counts.get_mut(*value)
                {
                    *count += 1;
                }
            }
        }
        let domains = counts.len();
        let min_domains = constraint
            .min_domains
            .and_then(|m| usize::try_from(m).ok())
            .unwrap_or(1);
        let least = if domains < min_domains {
            0
        } else {
            counts.values().copied().min().unwrap_or(0)
        };
        Constraint {
            key: key.to_owned(),
            max_skew: i64::from(constraint.max_skew.max(1)),
            counts,
            least,
            itself: i64::from(selector.is_some_and(|s| s.matches(labels))),
            weight: ((domains + 2) as f64).ln(),
        }
    }
}

fn keys<'a>(constraints: &[&'a TopologySpreadConstraint]) -> Vec<&'a str> {
    constraints
        .iter()
        .map(|c| c.topology_key.as_str())
        .collect()
}

impl Spread {
    /// The state for `pod`, or `None` when it has no spread constraints.
    pub fn prepare(pod: &Pod, cache: &Cache) -> Option<Spread> {
        let constraints = pod.spec.as_ref()?.topology_spread_constraints.as_ref()?;
        if constraints.is_empty() {
            return None;
        }
        let (hard, soft): (Vec<_>, Vec<_>) = constraints
            .iter()
            .partition(|c| c.when_unsatisfiable != "ScheduleAnyway");
        let (hard_keys, soft_keys) = (keys(&hard), keys(&soft));
        Some(Spread {
            hard: hard
                .iter()
                .map(|c| Constraint::count(c, &hard_keys, pod, cache))
                .collect(),
            soft: soft
                .iter()
                .map(|c| Constraint::count(c, &soft_keys, pod, cache))
                .collect(),
        })
    }

    /// Whether the pod may go on `node`; if not, why.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), &'static str> {
        for constraint in &self.hard {
            let Some(value) = node.label(&constraint.key) else {
                return Err(MISSING_LABEL);
            };
            let count = constraint.counts.get(value).copied().unwrap_or(0);
            if count + constraint.itself - constraint.least > constraint.max_skew {
                return Err(SKEW);
            }
        }
        Ok(())
    }

    /// The node's raw score, lower is better; `None` when the node lacks a key (it then
    /// scores nothing).
    pub fn score(&self, node: &NodeInfo) -> Option<f64> {
        if self.soft.is_empty() {
            return Some(0.0);
        }
        let mut score = 0.0;
        for constraint in &self.soft {
            let value = node.label(&constraint.key)?;
            let count = constraint.counts.get(value).copied().unwrap_or(0);
            score += count as f64 * constraint.weight + (constraint.max_skew - 1) as f64;
        }
        Some(score)
    }

    /// Normalizes raw scores to 0–100 (fewest pods best), kube-scheduler's way.
    pub fn normalize(raw: &[Option<f64>]) -> Vec<i64> {
        let known = raw.iter().flatten();
        let max = known.clone().copied().fold(f64::MIN, f64::max);
        let min = known.copied().fold(f64::MAX, f64::min);
        raw.iter()
            .map(|score| match score {
                None => 0,
                Some(_) if max <= 0.0 => 100,
                Some(s) => (100.0 * (max + min - s) / max) as i64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tests::{node, pod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use std::sync::Arc;

    fn cluster(zones: &[(&str, Option<&str>)]) -> Cache {
        let mut cache = Cache::new();
        for (name, zone) in zones {
            let mut n = node(name, "8", true);
            n.metadata.labels = zone.map(|z| [("zone".to_owned(), z.to_owned())].into());
            cache.set_node(Arc::new(n));
        }
        cache
    }

    fn web(name: &str, when: &str, max_skew: i32) -> Pod {
        let mut p = pod("100m");
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.namespace = Some("default".into());
        p.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        if let Some(spec) = p.spec.as_mut() {
            spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
                max_skew,
                topology_key: "zone".into(),
                when_unsatisfiable: when.into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                    match_expressions: None,
                }),
                ..TopologySpreadConstraint::default()
            }]);
        }
        p
    }

    #[test]
    fn do_not_schedule_bounds_the_skew() {
        let mut cache = cluster(&[
            ("a1", Some("a")),
            ("a2", Some("a")),
            ("b1", Some("b")),
            ("x", None),
        ]);
        cache.assume(&web("w0", "DoNotSchedule", 1), "a1");
        let next = web("w1", "DoNotSchedule", 1);
        let state = Spread::prepare(&next, &cache).expect("constraints");
        let verdicts: Vec<_> = cache.nodes().map(|n| state.filter(n)).collect();
        assert_eq!(verdicts, [Err(SKEW), Err(SKEW), Ok(()), Err(MISSING_LABEL)]);
        cache.assume(&next, "b1");
        let third = Spread::prepare(&web("w2", "DoNotSchedule", 1), &cache).expect("constraints");
        assert!(cache.nodes().take(3).all(|n| third.filter(n).is_ok()));
        assert!(Spread::prepare(&pod("1"), &cache).is_none());
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_domain() {
        let mut cache = cluster(&[("a1", Some("a")), ("b1", Some("b")), ("x", None)]);
        cache.assume(&web("w0", "ScheduleAnyway", 1), "a1");
        cache.assume(&web("w1", "ScheduleAnyway", 1), "a1");
        let state = Spread::prepare(&web("w2", "ScheduleAnyway", 1), &cache).expect("constraints");
        assert!(cache.nodes().all(|n| state.filter(n).is_ok()));
        let raw: Vec<_> = cache.nodes().map(|n| state.score(n)).collect();
        assert_eq!(Spread::normalize(&raw), [0, 100, 0]);
    }
}
