//! One scheduling decision, pure: prepare what the plugins need from the whole cluster, filter
//! nodes (starting where the last search stopped, and stopping once enough feasible nodes are
//! found in a large cluster, as kube-scheduler's percentageOfNodesToScore does), score the
//! feasible ones, pick the best (ties at random), or explain why none fits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use crate::cache::{Cache, NodeInfo, Usage};
use crate::images;
use crate::interpod::InterPod;
use crate::plugins;
use crate::spread::Spread;

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

/// What one decision works out before looking at nodes: the pod's usage, its images, and
/// the state of the plugins that look beyond a single node.
pub struct Prepared {
    /// What the pod takes.
    pub usage: Usage,
    images: Vec<String>,
    spread: Option<Spread>,
    inter_pod: Option<InterPod>,
}

impl Prepared {
    /// Prepares a decision for `pod`.
    pub fn new(pod: &Pod, cache: &Cache) -> Prepared {
        Prepared {
            usage: Usage::of(pod),
            images: if cache.knows_images() {
                images::of_pod(pod)
            } else {
                Vec::new()
            },
            spread: Spread::prepare(pod, cache),
            inter_pod: InterPod::prepare(pod, cache),
        }
    }

    /// The filters that look at other nodes' pods: topology spread, then inter-pod
    /// (anti-)affinity. Evicting pods of lower priority cannot be counted on to fix them.
    pub fn beyond_node(&self, node: &NodeInfo) -> Result<(), &'static str> {
        if let Some(spread) = &self.spread {
            spread.filter(node)?;
        }
        if let Some(inter_pod) = &self.inter_pod {
            inter_pod.filter(node)?;
        }
        Ok(())
    }

    /// Every filter, with the room preemption reserved on the node for pods of at least the
    /// pod's priority taken.
    pub fn filter(&self, pod: &Pod, node: &NodeInfo, cache: &Cache) -> Result<(), Vec<String>> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        let reserved = cache.with_nominees(node, uid, priority);
        plugins::filter(pod, &self.usage, reserved.as_ref().unwrap_or(node))?;
        self.beyond_node(node)
            .map_err(|reason| vec![reason.to_owned()])
    }

    /// The feasible nodes' scores, kube-scheduler's plugins with its default weights:
    /// resources 1 each, ImageLocality 1, node affinity 2, inter-pod affinity 2, topology
    /// spread 2, taints 3. Plugins that score relative to the other nodes are normalized
    /// to 0–100 over the feasible ones.
    fn scores(&self, pod: &Pod, feasible: &[&NodeInfo], cache: &Cache) -> Vec<i64> {
        let relative = |raw: Vec<i64>| -> Vec<i64> {
            let max = raw.iter().copied().max().unwrap_or(0);
            let min = raw.iter().copied().min().unwrap_or(0);
            raw.iter()
                .map(|s| {
                    if max == min {
                        0
                    } else {
                        100 * (s - min) / (max - min)
                    }
                })
                .collect()
        };
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
        let inter_pod = self
            .inter_pod
            .as_ref()
            .map(|state| relative(feasible.iter().map(|n| state.score(n)).collect()));
        let spread = self.spread.as_ref().map(|state| {
            Spread::normalize(&feasible.iter().map(|n| state.score(n)).collect::<Vec<_>>())
        });
        feasible
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let mut score = plugins::resource_score(&self.usage, node);
                if max_affinity > 0 {
                    score += 2 * affinity[i] * 100 / max_affinity;
                }
                score += if max_soft > 0 {
                    3 * (100 - soft[i] * 100 / max_soft)
                } else {
                    3 * 100
                };
                score += 2 * inter_pod.as_ref().map_or(0, |s| s[i]);
                score += 2 * spread.as_ref().map_or(0, |s| s[i]);
                score + images::score(&self.images, node, cache)
            })
            .collect()
    }
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
    let prepared = Prepared::new(pod, cache);
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
        match prepared.filter(pod, node, cache) {
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
    let scores = prepared.scores(pod, &feasible, cache);
    let best_score = scores.iter().copied().max().unwrap_or(0);
    let best: Vec<usize> = (0..feasible.len())
        .filter(|&i| scores[i] == best_score)
        .collect();
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
