//! Preemption, pure: when a pod fits nowhere, find the node where evicting the fewest and
//! least important lower-priority pods would let it fit, as kube-scheduler's DefaultPreemption
//! does — all lower-priority pods are set aside, the pod must then fit, and victims are
//! reprieved from the most important down while it still fits. Or say why no node would do,
//! for the `preemption: …` tail of the FailedScheduling message.
//!
//! Only failures of the node's own filters (resources, pod count, host ports) count as
//! fixable; a node that topology spread or inter-pod (anti-)affinity rules out is not
//! considered, though evicting the pods that repel could sometimes help.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;

use crate::cache::{Cache, Placement};
use crate::plugins;
use crate::schedule::Prepared;

/// A pod to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// Its uid.
    pub uid: String,
    /// Who it is.
    pub who: Placement,
}

/// The node to make room on, and the pods to evict there.
#[derive(Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// The pods to evict.
    pub victims: Vec<Victim>,
}

/// Filter failures that removing pods can fix.
fn resolvable(reason: &str) -> bool {
    reason.starts_with("Insufficient ")
        || reason == "Too many pods"
        || reason == "node(s) didn't have free ports for the requested pod ports"
}

/// Whether `pod` may preempt at all.
pub fn may_preempt(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.preemption_policy.as_deref() != Some("Never"))
}

/// The best node to preempt on for `pod`, or the message tail saying why there is none.
pub fn find(pod: &Pod, cache: &Cache) -> Result<Candidate, String> {
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let prepared = Prepared::new(pod, cache);
    let usage = &prepared.usage;
    let mut lower: HashMap<&str, Vec<(&String, &crate::cache::Placed)>> = HashMap::new();
    for node in cache.nodes() {
        lower.insert(node.name(), Vec::new());
    }
    for node in cache.nodes() {
        for (uid, placed) in cache.pods_on(node.name()) {
            if placed.who.priority < priority
                && let Some(list) = lower.get_mut(placed.node.as_str())
            {
                list.push((uid, placed));
            }
        }
    }
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut candidates = Vec::new();
    for node in cache.nodes() {
        let fixable = prepared.beyond_node(node).is_ok()
            && match plugins::filter(pod, usage, node) {
                Ok(()) => true,
                Err(why) => why.iter().all(|r| resolvable(r)),
            };
        if !fixable {
            *reasons
                .entry("Preemption is not helpful for scheduling")
                .or_default() += 1;
            continue;
        }
        let mut victims = lower.remove(node.name()).unwrap_or_default();
        // Pods already on their way out are not counted twice.
        victims.retain(|(_, p)| !p.who.deleting);
        let mut trial = node.clone();
        for (_, placed) in &victims {
            trial.remove(&placed.usage);
        }
        if victims.is_empty() || plugins::filter(pod, usage, &trial).is_err() {
            *reasons
                .entry("No preemption victims found for incoming pod")
                .or_default() += 1;
            continue;
        }
        // Reprieve the most important (then the oldest) first, as long as the pod still fits.
        victims.sort_by(|a, b| {
            b.1.who
                .priority
                .cmp(&a.1.who.priority)
                .then(a.1.who.created.cmp(&b.1.who.created))
        });
        let mut chosen = Vec::new();
        for (uid, placed) in victims {
            trial.add(&placed.usage);
            if plugins::filter(pod, usage, &trial).is_err() {
                trial.remove(&placed.usage);
                chosen.push(Victim {
                    uid: uid.clone(),
                    who: placed.who.clone(),
                });
            }
        }
        candidates.push(Candidate {
            node: node.name().to_owned(),
            victims: chosen,
        });
    }
    // Least harm: the lowest most-important victim, then the lowest sum, then the fewest.
    let harm = |c: &Candidate| {
        let top = c
            .victims
            .iter()
            .map(|v| v.who.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum: i64 = c.victims.iter().map(|v| i64::from(v.who.priority)).sum();
        (top, sum, c.victims.len(), c.node.clone())
    };
    match candidates.into_iter().min_by_key(harm) {
        Some(best) => Ok(best),
        None => {
            let mut entries: Vec<String> = reasons
                .iter()
                .map(|(reason, count)| format!("{count} {reason}"))
                .collect();
            entries.sort();
            Err(format!(
                "preemption: 0/{} nodes are available: {}.",
                cache.node_count(),
                entries.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tests::{node, pod};
    use std::sync::Arc;

    fn placed(name: &str, cpu: &str, priority: i32, on: &str) -> Pod {
        let mut p = pod(cpu);
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        if let Some(spec) = p.spec.as_mut() {
            spec.priority = Some(priority);
            spec.node_name = Some(on.into());
        }
        p
    }

    fn urgent(cpu: &str, priority: i32) -> Pod {
        let mut p = pod(cpu);
        if let Some(spec) = p.spec.as_mut() {
            spec.priority = Some(priority);
        }
        p
    }

    #[test]
    fn evicts_the_least_that_makes_room() {
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node("n1", "4", true)));
        cache.set_node(Arc::new(node("n2", "4", true)));
        for p in [
            placed("a", "2", 10, "n1"),
            placed("b", "1", 5, "n1"),
            placed("c", "1", 1, "n1"),
            placed("d", "3", 100, "n2"),
            placed("e", "1", 50, "n2"),
        ] {
            cache.set_pod(&p);
        }
        // 2 cpu wanted: on n1, evicting b and c (priorities 5, 1) is enough; on n2 it would
        // take e (50), worse.
        let best = find(&urgent("2", 20), &cache).unwrap();
        assert_eq!(best.node, "n1");
        let mut names: Vec<&str> = best.victims.iter().map(|v| v.who.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn says_why_nothing_helps() {
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node("n1", "1", true)));
        cache.set_node(Arc::new(node("n2", "1", false)));
        cache.set_pod(&placed("a", "1", 100, "n1"));
        assert_eq!(
            find(&urgent("1", 10), &cache),
            Err("preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.".to_owned())
        );
    }
}
