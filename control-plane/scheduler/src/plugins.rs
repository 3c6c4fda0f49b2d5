//! The filters and scores, pure: whether a pod may go on a node (and if not, the reason in
//! the words kube-scheduler uses), and how good a feasible node is.
//!
//! Filters: NodeUnschedulable, NodeName, TaintToleration (a node that is not Ready counts
//! as tainted `node.kubernetes.io/not-ready:NoSchedule`, as the node lifecycle controller
//! would taint it), NodeAffinity (nodeSelector and required affinity), NodePorts,
//! NodeResourcesFit. Scores: LeastAllocated and BalancedAllocation on cpu and memory,
//! preferred node affinity, and fewer untolerated PreferNoSchedule taints.

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use placement::taints::{NO_SCHEDULE, NOT_READY, UNSCHEDULABLE, taint, tolerated};

use crate::cache::{NodeInfo, Usage};

/// The taint a cordoned node is treated as having.
static CORDON: std::sync::LazyLock<Taint> =
    std::sync::LazyLock::new(|| taint(UNSCHEDULABLE, NO_SCHEDULE));

/// A node's taints, with the not-ready taint implied when its Ready condition is not True
/// (the node lifecycle controller adds it too, but not at once).
pub fn taints(node: &Node) -> Vec<Taint> {
    let mut taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if !ready
        && !taints
            .iter()
            .any(|t| t.key == NOT_READY && t.effect == NO_SCHEDULE)
    {
        taints.push(taint(NOT_READY, NO_SCHEDULE));
    }
    taints
}

fn ports_conflict(usage: &Usage, node: &NodeInfo) -> bool {
    usage.ports.iter().any(|(protocol, ip, port)| {
        node.ports.iter().any(|(p, i, n)| {
            p == protocol && n == port && (i == ip || i == "0.0.0.0" || ip == "0.0.0.0")
        })
    })
}

/// Whether `pod` (with `usage`) may go on `node`; if not, the reasons kube-scheduler gives.
pub fn filter(pod: &Pod, usage: &Usage, node: &NodeInfo) -> Result<(), Vec<String>> {
    let spec = pod.spec.as_ref();
    let unschedulable = node
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if unschedulable && !tolerated(pod, &CORDON) {
        return Err(vec!["node(s) were unschedulable".into()]);
    }
    if let Some(wanted) = spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
        && wanted != node.name()
    {
        return Err(vec!["node(s) didn't match the requested node name".into()]);
    }
    for taint in &node.taints {
        if matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute") && !tolerated(pod, taint) {
            return Err(vec![format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            )]);
        }
    }
    if !placement::affinity::required_matches(pod, &node.node) {
        return Err(vec![
            "node(s) didn't match Pod's node affinity/selector".into(),
        ]);
    }
    if ports_conflict(usage, node) {
        return Err(vec![
            "node(s) didn't have free ports for the requested pod ports".into(),
        ]);
    }
    let mut reasons = Vec::new();
    let pods_allowed = node.allocatable.pods / 1000;
    if i64::try_from(node.pod_count).unwrap_or(i64::MAX) + 1 > pods_allowed {
        reasons.push("Too many pods".to_owned());
    }
    for (name, amount) in usage.requests.iter() {
        if name == "pods" || amount <= 0 {
            continue;
        }
        if node.requested.get(name) + amount > node.allocatable.get(name) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

fn fraction(requested: i64, allocatable: i64) -> f64 {
    if allocatable <= 0 {
        return 1.0;
    }
    (requested as f64 / allocatable as f64).min(1.0)
}

/// LeastAllocated and BalancedAllocation on cpu and memory, 0–100 each, summed.
pub fn resource_score(usage: &Usage, node: &NodeInfo) -> i64 {
    let cpu = fraction(
        node.nonzero.0 + usage.nonzero.0,
        node.allocatable.get("cpu"),
    );
    let memory = fraction(
        node.nonzero.1 + usage.nonzero.1,
        node.allocatable.get("memory"),
    );
    let least = ((1.0 - cpu) * 100.0 + (1.0 - memory) * 100.0) / 2.0;
    let balanced = (1.0 - (cpu - memory).abs() / 2.0) * 100.0;
    (least + balanced) as i64
}

/// How many PreferNoSchedule taints of `node` the pod does not tolerate.
pub fn untolerated_soft_taints(pod: &Pod, node: &NodeInfo) -> i64 {
    let count = node
        .taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(pod, t))
        .count();
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::Cache;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, NodeCondition, NodeSelectorRequirement, NodeSelectorTerm,
        NodeSpec, NodeStatus, PodSpec, ResourceRequirements, Toleration,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use placement::affinity::term_matches;
    use placement::taints::tolerates;
    use std::sync::Arc;

    pub(crate) fn node(name: &str, cpu: &str, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("zone".to_owned(), "a".to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(
                    [
                        ("cpu".to_owned(), Quantity(cpu.into())),
                        ("memory".to_owned(), Quantity("4Gi".into())),
                        ("pods".to_owned(), Quantity("110".into())),
                    ]
                    .into(),
                ),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        }
    }

    pub(crate) fn pod(cpu: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                uid: Some(format!("uid-{cpu}-{}", rand::random::<u32>())),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_owned(), Quantity(cpu.into()))].into()),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn info(node: Node) -> NodeInfo {
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node));
        cache.nodes().next().cloned().expect("node")
    }

    #[test]
    fn resources_must_fit() {
        let n = info(node("n1", "1", true));
        let small = pod("500m");
        assert!(filter(&small, &Usage::of(&small), &n).is_ok());
        let big = pod("2");
        assert_eq!(
            filter(&big, &Usage::of(&big), &n),
            Err(vec!["Insufficient cpu".to_owned()])
        );
    }

    #[test]
    fn taints_need_tolerations_and_not_ready_counts_as_one() {
        let mut tainted = node("n1", "4", true);
        if let Some(spec) = tainted.spec.as_mut() {
            spec.taints = Some(vec![Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            }]);
        }
        let mut p = pod("1");
        let n = info(tainted);
        assert_eq!(
            filter(&p, &Usage::of(&p), &n),
            Err(vec![
                "node(s) had untolerated taint {dedicated: db}".to_owned()
            ])
        );
        if let Some(spec) = p.spec.as_mut() {
            spec.tolerations = Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("db".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            }]);
        }
        assert!(filter(&p, &Usage::of(&p), &n).is_ok());
        let not_ready = info(node("n2", "4", false));
        assert_eq!(
            filter(&p, &Usage::of(&p), &not_ready),
            Err(vec![
                "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_owned()
            ])
        );
        let everything = Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        };
        assert!(tolerates(&everything, &taints(&not_ready.node)[0]));
    }

    #[test]
    fn selectors_affinity_and_ports() {
        let n = info(node("n1", "4", true));
        let mut p = pod("1");
        if let Some(spec) = p.spec.as_mut() {
            spec.node_selector = Some([("zone".to_owned(), "b".to_owned())].into());
        }
        assert_eq!(
            filter(&p, &Usage::of(&p), &n),
            Err(vec![
                "node(s) didn't match Pod's node affinity/selector".to_owned()
            ])
        );
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "c".into()]),
            }]),
            match_fields: None,
        };
        assert!(term_matches(&term, &n.node));
        assert!(!term_matches(&NodeSelectorTerm::default(), &n.node));

        let mut with_port = pod("1");
        if let Some(spec) = with_port.spec.as_mut() {
            spec.containers[0].ports = Some(vec![ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..ContainerPort::default()
            }]);
        }
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node("n1", "4", true)));
        cache.assume(&with_port, "n1");
        let busy = cache.nodes().next().cloned().expect("node");
        let mut second = with_port.clone();
        second.metadata.uid = Some("other".into());
        assert_eq!(
            filter(&second, &Usage::of(&second), &busy),
            Err(vec![
                "node(s) didn't have free ports for the requested pod ports".to_owned()
            ])
        );
    }

    #[test]
    fn emptier_nodes_score_higher() {
        let mut cache = Cache::new();
        cache.set_node(Arc::new(node("busy", "4", true)));
        cache.set_node(Arc::new(node("idle", "4", true)));
        cache.assume(&pod("3"), "busy");
        let p = pod("500m");
        let usage = Usage::of(&p);
        let scores: Vec<(String, i64)> = cache
            .nodes()
            .map(|n| (n.name().to_owned(), resource_score(&usage, n)))
            .collect();
        assert!(scores[1].1 > scores[0].1, "{scores:?}");
    }
}
