//! One scheduling decision, pure: filter nodes (starting where the last search stopped, and
//! stopping once enough feasible nodes are found in a large cluster, as kube-scheduler's
//! percentageOfNodesToScore does), score the feasible ones, pick the best (ties at random),
//! or explain why none fits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use crate::cache::{Cache, Usage};
use crate::plugins;

/// Why a pod fits on no node: how many nodes gave each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    /// Nodes considered.
    pub nodes: usize,
    /// Reason → number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for FitError {
    /// kube-scheduler's wording: `0/3 nodes are available: 1 node(s) had untolerated taint
    /// {…}, 2 Insufficient cpu.`, the "count reason" entries sorted as strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut entries: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, count)| format!("{count} {reason}"))
            .collect();
        entries.sort();
        write!(
            f,
            "0/{} nodes are available: {}.",
            self.nodes,
            entries.join(", ")
        )
    }
}

/// How many feasible nodes to find before scoring, in a cluster of `nodes`.
pub fn feasible_target(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(100)
}

/// Picks a node for `pod`. `start` is where the search begins, advanced past the nodes
/// looked at so the next search starts elsewhere.
pub fn schedule(
    pod: &Pod,
    cache: &Cache,
    start: &mut usize,
    rng: &mut impl Rng,
) -> Result<String, FitError> {
    let count = cache.node_count();
    let usage = Usage::of(pod);
    let target = feasible_target(count);
    let mut feasible = Vec::with_capacity(target.min(count));
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut looked = 0;
    while looked < count && feasible.len() < target {
        let index = (*start + looked) % count;
        looked += 1;
        let Some(node) = cache.node_at(index) else {
            continue;
        };
        match plugins::filter(pod, &usage, node) {
            Ok(()) => feasible.push(node),
            Err(why) => {
                for reason in why {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
        }
    }
    if count > 0 {
        *start = (*start + looked) % count;
    }
    if feasible.is_empty() {
        return Err(FitError {
            nodes: count,
            reasons,
        });
    }
    if feasible.len() == 1 {
        return Ok(feasible[0].name().to_owned());
    }
    // Normalized plugins score 0–100 relative to the best node; weights as kube-scheduler's.
    let affinity: Vec<i64> = feasible
        .iter()
        .map(|n| placement::affinity::preferred_weight(pod, &n.node))
        .collect();
    let soft: Vec<i64> = feasible
        .iter()
        .map(|n| plugins::untolerated_soft_taints(pod, n))
        .collect();
    let max_affinity = affinity.iter().copied().max().unwrap_or(0);
    let max_soft = soft.iter().copied().max().unwrap_or(0);
    let mut best: Vec<usize> = Vec::new();
    let mut best_score = i64::MIN;
    for (i, node) in feasible.iter().enumerate() {
        let mut score = plugins::resource_score(&usage, node);
        if max_affinity > 0 {
            score += 2 * affinity[i] * 100 / max_affinity;
        }
        if max_soft > 0 {
            score += 3 * (100 - soft[i] * 100 / max_soft);
        } else {
            score += 3 * 100;
        }
        if score > best_score {
            best_score = score;
            best.clear();
        }
        if score == best_score {
            best.push(i);
        }
    }
    let chosen = best[rng.random_range(0..best.len())];
    Ok(feasible[chosen].name().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tests::{node, pod};
    use std::sync::Arc;

    #[test]
    fn the_message_users_know() {
        let error = FitError {
            nodes: 3,
            reasons: [
                ("Insufficient cpu".to_owned(), 2),
                (
                    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
                        .to_owned(),
                    1,
                ),
            ]
            .into(),
        };
        assert_eq!(
            error.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu."
        );
    }

    #[test]
    fn picks_a_node_that_fits_and_explains_when_none_does() {
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node("small", "1", true)));
        cache.set_node(Arc::new(node("large", "8", true)));
        cache.set_node(Arc::new(node("down", "8", false)));
        let mut start = 0;
        let mut rng = rand::rng();
        assert_eq!(
            schedule(&pod("4"), &cache, &mut start, &mut rng),
            Ok("large".to_owned())
        );
        let error = schedule(&pod("16"), &cache, &mut start, &mut rng).expect_err("fits nowhere");
        assert_eq!(
            error.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 2 Insufficient cpu."
        );
        assert_eq!(
            schedule(&pod("1"), &Cache::new(), &mut start, &mut rng)
                .expect_err("no nodes")
                .to_string(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn assumed_pods_count() {
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node("a", "2", true)));
        cache.set_node(Arc::new(node("b", "2", true)));
        let mut start = 0;
        let mut rng = rand::rng();
        let mut placed = Vec::new();
        for _ in 0..2 {
            let p = pod("1500m");
            let chosen = schedule(&p, &cache, &mut start, &mut rng).expect("fits");
            cache.assume(&p, &chosen);
            placed.push(chosen);
        }
        placed.sort();
        assert_eq!(
            placed,
            ["a", "b"],
            "the second pod does not fit beside the first"
        );
        assert!(schedule(&pod("1500m"), &cache, &mut start, &mut rng).is_err());
    }

    #[test]
    fn large_clusters_score_a_sample() {
        assert_eq!(feasible_target(50), 50);
        assert_eq!(feasible_target(1000), 420);
        assert_eq!(feasible_target(10_000), 500);
    }
}
