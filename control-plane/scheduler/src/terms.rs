//! Pod (anti-)affinity terms, compiled once per pod into selectors: which pods a term
//! selects (labels, namespaces) and over which topology key. The rules that use them are in
//! [`crate::interpod`].

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, Selector, SelectorExt};

/// Labels, as objects carry them.
pub type Labels = BTreeMap<String, String>;
/// Each namespace's labels, for terms that pick namespaces by selector.
pub type NamespaceLabels = HashMap<String, Labels>;

/// A label selector; `None` (a null selector) selects nothing.
pub fn compile_selector(selector: Option<&LabelSelector>) -> Option<Selector> {
    selector.and_then(|s| Selector::try_from(s.clone()).ok())
}

/// Which namespaces a term looks in.
#[derive(Clone, Debug)]
pub enum Namespaces {
    /// All of them (an empty `namespaceSelector`).
    All,
    /// The listed ones, and those whose labels the selector matches.
    Listed {
        /// Named namespaces (the term owner's own when the term names none and has no
        /// selector).
        names: Vec<String>,
        /// A selector over namespace labels.
        selector: Option<Selector>,
    },
}

impl Namespaces {
    fn includes(&self, namespace: &str, labels: &NamespaceLabels) -> bool {
        match self {
            Namespaces::All => true,
            Namespaces::Listed { names, selector } => {
                names.iter().any(|n| n == namespace)
                    || selector
                        .as_ref()
                        .is_some_and(|s| labels.get(namespace).is_some_and(|l| s.matches(l)))
            }
        }
    }
}

/// One compiled term.
#[derive(Clone, Debug)]
pub struct Term {
    /// Which pods it selects; `None` selects none.
    pub selector: Option<Selector>,
    /// Where it looks.
    pub namespaces: Namespaces,
    /// The node label that draws the domains.
    pub topology_key: String,
    /// Its weight (1 for required terms).
    pub weight: i64,
}

impl Term {
    /// Compiles `term` as written on a pod in `namespace` with `labels` (its
    /// `matchLabelKeys`/`mismatchLabelKeys` take their values from that pod).
    fn compile(term: &PodAffinityTerm, weight: i64, namespace: &str, labels: &Labels) -> Term {
        let mut selector = compile_selector(term.label_selector.as_ref());
        if let Some(selector) = selector.as_mut() {
            let value = |key: &String| labels.get(key).map(|v| (key.clone(), v.clone()));
            let same = term.match_label_keys.iter().flatten().filter_map(value);
            let different = term.mismatch_label_keys.iter().flatten().filter_map(value);
            selector.extend(same.map(|(k, v)| Expression::Equal(k, v)));
            selector.extend(different.map(|(k, v)| Expression::NotEqual(k, v)));
        }
        let names = term.namespaces.clone().unwrap_or_default();
        let namespaces = match &term.namespace_selector {
            Some(s)
                if s.match_labels.as_ref().is_none_or(|l| l.is_empty())
                    && s.match_expressions.as_ref().is_none_or(|e| e.is_empty()) =>
            {
                Namespaces::All
            }
            Some(s) => Namespaces::Listed {
                names,
                selector: compile_selector(Some(s)),
            },
            None if names.is_empty() => Namespaces::Listed {
                names: vec![namespace.to_owned()],
                selector: None,
            },
            None => Namespaces::Listed {
                names,
                selector: None,
            },
        };
        Term {
            selector,
            namespaces,
            topology_key: term.topology_key.clone(),
            weight,
        }
    }

    /// Whether the term selects a pod in `namespace` with `labels`.
    pub fn selects(&self, namespace: &str, labels: &Labels, namespaces: &NamespaceLabels) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
            && self.namespaces.includes(namespace, namespaces)
    }
}

/// A pod's inter-pod affinity and anti-affinity, compiled.
#[derive(Clone, Debug, Default)]
pub struct PodTerms {
    /// Required affinity: every term must find a selected pod in the node's domain.
    pub affinity: Vec<Term>,
    /// Required anti-affinity: no term may find a selected pod in the node's domain.
    pub anti_affinity: Vec<Term>,
    /// Preferred affinity, weighted.
    pub preferred_affinity: Vec<Term>,
    /// Preferred anti-affinity, weighted.
    pub preferred_anti_affinity: Vec<Term>,
}

impl PodTerms {
    /// The terms of `pod`, or `None` when it has none (most pods).
    pub fn of(pod: &Pod) -> Option<PodTerms> {
        let affinity = pod.spec.as_ref()?.affinity.as_ref()?;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let empty = Labels::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<Term> {
            terms
                .into_iter()
                .flatten()
                .map(|t| Term::compile(t, 1, namespace, labels))
                .collect()
        };
        let preferred = |terms: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<Term> {
            terms
                .into_iter()
                .flatten()
                .map(|t| {
                    Term::compile(&t.pod_affinity_term, i64::from(t.weight), namespace, labels)
                })
                .collect()
        };
        let near = affinity.pod_affinity.as_ref();
        let apart = affinity.pod_anti_affinity.as_ref();
        let terms = PodTerms {
            affinity: required(near.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            anti_affinity: required(apart.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: preferred(near.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: preferred(apart.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
        };
        let any = !(terms.affinity.is_empty()
            && terms.anti_affinity.is_empty()
            && terms.preferred_affinity.is_empty()
            && terms.preferred_anti_affinity.is_empty());
        any.then_some(terms)
    }
}
