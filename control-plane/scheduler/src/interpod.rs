//! InterPodAffinity: where a pod may go given the pods already placed, by topology domain
//! (the nodes sharing a value of the term's topology key).
//!
//! Filter, as kube-scheduler's: each of the pod's required affinity terms must find a pod
//! selected by all of them in the node's domain (unless no pod anywhere is selected and the
//! pod selects itself — the first of a group); none of its required anti-affinity terms may
//! find one; and no placed pod's required anti-affinity may select the pod in the node's
//! domain.
//! Score: the weights of preferred terms either way (placed pods' required affinity counts
//! 1), summed over the node's domains. Everything is worked out once per decision, then each
//! node is a few label lookups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::cache::{Cache, NodeInfo};
use crate::terms::{Labels, PodTerms, Term};

/// A topology domain: a node label key and value.
type Domain = (String, String);

/// What the filter and score need, worked out once per decision.
pub struct InterPod {
    terms: Option<Arc<PodTerms>>,
    /// Domains where a placed pod's required anti-affinity selects the pod.
    forbidden: HashSet<Domain>,
    /// Domains holding a pod that all the pod's required affinity terms select.
    attracting: HashSet<Domain>,
    /// Whether the pod selects itself with all its required affinity terms.
    selects_itself: bool,
    /// Domains holding a pod that one of the pod's required anti-affinity terms selects.
    repelling: HashSet<Domain>,
    /// Preferred weights by domain.
    scores: HashMap<Domain, i64>,
}

/// The existing-anti-affinity failure, kube-scheduler's words.
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// The affinity failure.
pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// The anti-affinity failure.
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

impl InterPod {
    /// The state for `pod`, or `None` when neither it nor any placed pod has inter-pod terms
    /// (then the plugin has nothing to say and costs nothing).
    pub fn prepare(pod: &Pod, cache: &Cache) -> Option<InterPod> {
        let terms = PodTerms::of(pod).map(Arc::new);
        let others_have_terms = cache.pods_with_terms().next().is_some();
        if terms.is_none() && !others_have_terms {
            return None;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let empty = Labels::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let namespaces = cache.namespaces();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let mut state = InterPod {
            selects_itself: terms.as_ref().is_some_and(|t| {
                t.affinity
                    .iter()
                    .all(|term| term.selects(namespace, labels, namespaces))
            }),
            terms,
            forbidden: HashSet::new(),
            attracting: HashSet::new(),
            repelling: HashSet::new(),
            scores: HashMap::new(),
        };
        let domain = |node: &str, key: &str| -> Option<Domain> {
            let value = cache.node(node)?.label(key)?;
            Some((key.to_owned(), value.to_owned()))
        };
        let add_score = |node: &str, term: &Term, sign: i64, scores: &mut HashMap<Domain, i64>| {
            if let Some(d) = domain(node, &term.topology_key) {
                *scores.entry(d).or_default() += sign * term.weight;
            }
        };

        // What placed pods' own terms say about this pod.
        for placed in cache.pods_with_terms() {
            let Some(theirs) = placed.terms.as_ref() else {
                continue;
            };
            for term in &theirs.anti_affinity {
                if term.selects(namespace, labels, namespaces)
                    && let Some(d) = domain(&placed.node, &term.topology_key)
                {
                    state.forbidden.insert(d);
                }
            }
            for (list, sign) in [
                (&theirs.affinity, 1),
                (&theirs.preferred_affinity, 1),
                (&theirs.preferred_anti_affinity, -1),
            ] {
                for term in list
                    .iter()
                    .filter(|t| t.selects(namespace, labels, namespaces))
                {
                    add_score(&placed.node, term, sign, &mut state.scores);
                }
            }
        }

        // What this pod's terms say about the placed pods.
        if let Some(ours) = state.terms.clone() {
            for (placed_uid, placed) in cache.pods() {
                if placed_uid == uid {
                    continue;
                }
                let (ns, their_labels) = (placed.who.namespace.as_str(), &placed.labels);
                if !ours.affinity.is_empty()
                    && ours
                        .affinity
                        .iter()
                        .all(|t| t.selects(ns, their_labels, namespaces))
                {
                    for term in &ours.affinity {
                        if let Some(d) = domain(&placed.node, &term.topology_key) {
                            state.attracting.insert(d);
                        }
                    }
                }
                for term in ours
                    .anti_affinity
                    .iter()
                    .filter(|t| t.selects(ns, their_labels, namespaces))
                {
                    if let Some(d) = domain(&placed.node, &term.topology_key) {
                        state.repelling.insert(d);
                    }
                }
                for (list, sign) in [
                    (&ours.preferred_affinity, 1),
                    (&ours.preferred_anti_affinity, -1),
                ] {
                    for term in list
                        .iter()
                        .filter(|t| t.selects(ns, their_labels, namespaces))
                    {
                        add_score(&placed.node, term, sign, &mut state.scores);
                    }
                }
            }
        }
        Some(state)
    }

    fn holds(set: &HashSet<Domain>, node: &NodeInfo, key: &str) -> bool {
        node.label(key)
            .is_some_and(|value| set.contains(&(key.to_owned(), value.to_owned())))
    }

    /// Whether the pod may go on `node`; if not, why. The checks run in kube-scheduler's
    /// order, which decides the reason users see: the pod's affinity, its anti-affinity,
    /// then the placed pods' anti-affinity.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), &'static str> {
        if let Some(terms) = &self.terms {
            if !terms.affinity.is_empty() {
                let all_keys = terms
                    .affinity
                    .iter()
                    .all(|t| node.label(&t.topology_key).is_some());
                let found = terms
                    .affinity
                    .iter()
                    .all(|t| Self::holds(&self.attracting, node, &t.topology_key));
                let first_of_its_kind = self.attracting.is_empty() && self.selects_itself;
                if !all_keys || !(found || first_of_its_kind) {
                    return Err(AFFINITY);
                }
            }
            if terms
                .anti_affinity
                .iter()
                .any(|t| Self::holds(&self.repelling, node, &t.topology_key))
            {
                return Err(ANTI_AFFINITY);
            }
        }
        if self
            .forbidden
            .iter()
            .any(|(key, value)| node.label(key) == Some(value.as_str()))
        {
            return Err(EXISTING_ANTI_AFFINITY);
        }
        Ok(())
    }

    /// The node's raw score (to be normalized across the feasible nodes).
    pub fn score(&self, node: &NodeInfo) -> i64 {
        if self.scores.is_empty() {
            return 0;
        }
        let labels = node.node.metadata.labels.as_ref();
        labels
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| self.scores.get(&(k.clone(), v.clone())))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tests::{node, pod};
    use k8s_openapi::api::core::v1::{
        Affinity, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labelled(name: &str, app: &str) -> Pod {
        let mut p = pod("100m");
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.namespace = Some("default".into());
        p.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
        p
    }

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_owned(), app.to_owned())].into()),
                match_expressions: None,
            }),
            topology_key: key.into(),
            ..PodAffinityTerm::default()
        }
    }

    fn cluster() -> Cache {
        let mut cache = Cache::new();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            let mut n = node(name, "4", true);
            n.metadata.labels = Some(
                [
                    ("zone".to_owned(), zone.to_owned()),
                    ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                ]
                .into(),
            );
            cache.set_node(std::sync::Arc::new(n));
        }
        cache
    }

    fn verdicts(pod: &Pod, cache: &Cache) -> Vec<(String, Result<(), &'static str>)> {
        let state = InterPod::prepare(pod, cache).expect("terms");
        cache
            .nodes()
            .map(|n| (n.name().to_owned(), state.filter(n)))
            .collect()
    }

    #[test]
    fn anti_affinity_keeps_replicas_apart_both_ways() {
        let mut cache = cluster();
        let mut web = labelled("web-0", "web");
        if let Some(s) = web.spec.as_mut() {
            s.affinity = Some(Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "web", "zone",
                    )]),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            });
        }
        assert!(InterPod::prepare(&labelled("x", "db"), &cache).is_none());
        cache.assume(&labelled("plain-web", "web"), "a1");
        assert_eq!(
            verdicts(&web, &cache),
            [
                ("a1".to_owned(), Err(ANTI_AFFINITY)),
                ("a2".to_owned(), Err(ANTI_AFFINITY)),
                ("b1".to_owned(), Ok(())),
            ]
        );
        // Once placed, its anti-affinity keeps the pods it selects out of its zone too.
        cache.assume(&web, "b1");
        assert_eq!(
            verdicts(&labelled("intruder", "web"), &cache)[2],
            ("b1".to_owned(), Err(EXISTING_ANTI_AFFINITY))
        );
        assert!(
            verdicts(&labelled("other", "db"), &cache)
                .iter()
                .all(|(_, v)| v.is_ok())
        );
    }

    #[test]
    fn affinity_follows_the_selected_pods_and_lets_the_first_go_anywhere() {
        let mut cache = cluster();
        let mut cachepod = labelled("cache-0", "cache");
        if let Some(s) = cachepod.spec.as_mut() {
            s.affinity = Some(Affinity {
                pod_affinity: Some(PodAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![term(
                        "cache", "zone",
                    )]),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            });
        }
        assert!(
            verdicts(&cachepod, &cache).iter().all(|(_, v)| v.is_ok()),
            "the first of its group"
        );
        cache.assume(&labelled("cache-seed", "cache"), "b1");
        assert_eq!(
            verdicts(&cachepod, &cache),
            [
                ("a1".to_owned(), Err(AFFINITY)),
                ("a2".to_owned(), Err(AFFINITY)),
                ("b1".to_owned(), Ok(())),
            ]
        );
    }

    #[test]
    fn preferred_terms_weigh_domains() {
        let mut cache = cluster();
        cache.assume(&labelled("db-0", "db"), "a1");
        let mut p = labelled("app", "app");
        if let Some(s) = p.spec.as_mut() {
            s.affinity = Some(Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(vec![
                        WeightedPodAffinityTerm {
                            weight: 50,
                            pod_affinity_term: term("db", "zone"),
                        },
                    ]),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            });
        }
        let state = InterPod::prepare(&p, &cache).expect("terms");
        let scores: Vec<i64> = cache.nodes().map(|n| state.score(n)).collect();
        assert_eq!(scores, [50, 50, 0]);
    }
}
