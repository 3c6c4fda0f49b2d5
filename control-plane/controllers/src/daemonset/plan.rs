//! The DaemonSet rules, pure: which nodes should run a daemon pod (the node selector and
//! affinity, and the taints the pod does not tolerate), which pods to create and delete on
//! each node, how a rolling update replaces old pods within `maxUnavailable` / `maxSurge`,
//! and the status `kubectl rollout status` reads.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use placement::taints::{
    DISK_PRESSURE, MEMORY_PRESSURE, NETWORK_UNAVAILABLE, NO_EXECUTE, NO_SCHEDULE, NOT_READY,
    PID_PRESSURE, UNREACHABLE, UNSCHEDULABLE, tolerated,
};

use crate::pods;

pub use crate::revisions::REVISION_HASH;

/// What to do for one DaemonSet.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a daemon pod for.
    pub create: Vec<String>,
    /// Pods to delete, `(name, uid)`.
    pub delete: Vec<(String, String)>,
    /// The status to report.
    pub status: DaemonSetStatus,
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        value: None,
        toleration_seconds: None,
    }
}

/// The tolerations every daemon pod gets: a daemon belongs on its node even when the node
/// is unready, unreachable, under pressure or cordoned (and without a network, if it
/// brings its own).
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut list = vec![
        toleration(NOT_READY, NO_EXECUTE),
        toleration(UNREACHABLE, NO_EXECUTE),
        toleration(DISK_PRESSURE, NO_SCHEDULE),
        toleration(MEMORY_PRESSURE, NO_SCHEDULE),
        toleration(PID_PRESSURE, NO_SCHEDULE),
        toleration(UNSCHEDULABLE, NO_SCHEDULE),
    ];
    if host_network {
        list.push(toleration(NETWORK_UNAVAILABLE, NO_SCHEDULE));
    }
    list
}

/// Adds the default tolerations the pod does not have yet.
pub fn add_default_tolerations(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let host_network = spec.host_network.unwrap_or(false);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for wanted in default_tolerations(host_network) {
        if !tolerations.contains(&wanted) {
            tolerations.push(wanted);
        }
    }
}

/// Pins the pod to `node` by required node affinity on its name (the scheduler binds it).
pub fn pin_to_node(pod: &mut Pod, node: &str) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_owned()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod is for: where it runs, or where its affinity pins it.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(node);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first())
        .map(String::as_str)
}

/// The pod the DaemonSet would run, to test nodes against.
fn sample_pod(template: &PodTemplateSpec) -> Pod {
    let mut pod = Pod {
        metadata: template.metadata.clone().unwrap_or_default(),
        spec: template.spec.clone(),
        status: None,
    };
    add_default_tolerations(&mut pod);
    pod
}

/// Whether a daemon pod should be started on `node`, and whether one there may stay (a
/// NoSchedule taint added later does not evict it; a NoExecute one does).
pub fn should_run(pod: &Pod, node: &Node) -> (bool, bool) {
    if !placement::affinity::required_matches(pod, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|t| t.effect == effect && !tolerated(pod, t))
    };
    let may_stay = !untolerated(NO_EXECUTE);
    (may_stay && !untolerated(NO_SCHEDULE), may_stay)
}

fn scaled(value: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(text)) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = (percent * i64::from(total) + 99) / 100;
            i32::try_from(scaled.max(0)).unwrap_or(i32::MAX)
        }
    }
}

/// The plan for `set`, whose current template hashes to `hash`, over `nodes` and its `pods`.
/// `manage` is false while earlier creates and deletes are not yet in the cache.
pub fn plan(
    set: &DaemonSet,
    hash: &str,
    nodes: &[Arc<Node>],
    owned: &[Arc<Pod>],
    manage: bool,
    now: jiff::Timestamp,
) -> Plan {
    let spec = set.spec.clone().unwrap_or_default();
    let sample = sample_pod(&spec.template);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: HashMap<&str, Vec<&Arc<Pod>>> = HashMap::new();
    let mut plan = Plan::default();
    let delete = |plan: &mut Plan, pod: &Pod| {
        plan.delete.push((
            pod.metadata.name.clone().unwrap_or_default(),
            pod.metadata.uid.clone().unwrap_or_default(),
        ));
    };
    for pod in owned {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match target_node(pod) {
            Some(node) => by_node.entry(node).or_default().push(pod),
            None => delete(&mut plan, pod),
        }
    }
    let current = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH))
            .map(String::as_str)
            == Some(hash)
    };
    let available = |p: &Pod| pods::is_available(p, min_ready, now) && pods::phase(p) == "Running";
    let (mut desired, mut scheduled, mut misscheduled, mut ready, mut available_count, mut updated) =
        (0, 0, 0, 0, 0, 0);
    // Per node that should run a daemon: the old pod and whether a new one is available.
    let mut rolling: Vec<(&str, Option<&Arc<Pod>>, bool, bool)> = Vec::new();
    let names: std::collections::HashSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for (node_name, list) in &by_node {
        if !names.contains(node_name) {
            // The node is gone; so must its daemon be.
            for pod in list {
                delete(&mut plan, pod);
            }
        }
    }
    let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for node in sorted {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (run, stay) = should_run(&sample, node);
        let mut here: Vec<&Arc<Pod>> = by_node.get(name).cloned().unwrap_or_default();
        here.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if !run {
            if !here.is_empty() {
                misscheduled += 1;
            }
            if !stay {
                for pod in &here {
                    delete(&mut plan, pod);
                }
            }
            continue;
        }
        desired += 1;
        // A failed daemon is replaced.
        let (failed, mut alive): (Vec<&Arc<Pod>>, Vec<&Arc<Pod>>) =
            here.into_iter().partition(|p| pods::phase(p) == "Failed");
        for pod in failed {
            delete(&mut plan, pod);
        }
        if alive.is_empty() {
            plan.create.push(name.to_owned());
            continue;
        }
        scheduled += 1;
        // One old and one new pod may share a node during a surge; more are extras.
        let newest_current = alive.iter().rposition(|p| current(p));
        let oldest_old = alive.iter().position(|p| !current(p));
        let keep: Vec<usize> = [oldest_old, newest_current].into_iter().flatten().collect();
        let mut index = 0;
        alive.retain(|pod| {
            let kept = keep.contains(&index);
            index += 1;
            if !kept {
                delete(&mut plan, pod);
            }
            kept
        });
        let new = alive.iter().find(|p| current(p)).copied();
        let old = alive.iter().find(|p| !current(p)).copied();
        if new.is_some() {
            updated += 1;
        }
        let shown = new.or(old);
        if shown.is_some_and(|p| pods::is_ready(p)) {
            ready += 1;
        }
        let any_available = alive.iter().any(|p| available(p));
        if any_available {
            available_count += 1;
        }
        rolling.push((name, old, new.is_some_and(|p| available(p)), any_available));
    }

    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if manage && strategy.type_.as_deref() != Some("OnDelete") {
        let rolling_update = strategy.rolling_update.unwrap_or_default();
        let surge = scaled(rolling_update.max_surge.as_ref(), desired, 0);
        let mut unavailable_budget = scaled(rolling_update.max_unavailable.as_ref(), desired, 1);
        if surge == 0 && unavailable_budget == 0 {
            unavailable_budget = 1;
        }
        let unavailable_now = rolling.iter().filter(|r| !r.3).count();
        let mut budget = unavailable_budget - i32::try_from(unavailable_now).unwrap_or(i32::MAX);
        let mut surge_budget = surge;
        for (node, old, new_available, any_available) in &rolling {
            let Some(old) = old else { continue };
            if surge > 0 {
                if *new_available {
                    delete(&mut plan, old);
                } else if !plan.create.iter().any(|n| n == node)
                    && !rolling.iter().any(|r| r.0 == *node && r.2)
                    && surge_budget > 0
                    && !by_node
                        .get(node)
                        .is_some_and(|l| l.iter().any(|p| current(p)))
                {
                    surge_budget -= 1;
                    plan.create.push((*node).to_owned());
                }
            } else if !any_available {
                // Already down: replacing it costs nothing.
                delete(&mut plan, old);
            } else if budget > 0 {
                budget -= 1;
                delete(&mut plan, old);
            }
        }
    }
    if !manage {
        plan.create.clear();
        plan.delete.clear();
    }
    plan.status = DaemonSetStatus {
        current_number_scheduled: scheduled,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(available_count),
        number_unavailable: Some(desired - available_count).filter(|n| *n > 0),
        updated_number_scheduled: Some(updated),
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        conditions: None,
    };
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, taints: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: (*key).into(),
                            effect: (*effect).into(),
                            value: None,
                            time_added: None,
                        })
                        .collect(),
                ),
                ..NodeSpec::default()
            }),
            status: None,
        })
    }

    fn set(max_unavailable: i32) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec::default()),
                },
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDaemonSet {
                        max_unavailable: Some(IntOrString::Int(max_unavailable)),
                        max_surge: None,
                    }),
                }),
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn daemon(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut pod = crate::pods::tests::pod(name, "Running", Some(node), ready.then_some(0));
        pod.metadata.labels = Some([(REVISION_HASH.to_owned(), hash.to_owned())].into());
        Arc::new(pod)
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn one_pod_per_node_that_fits() {
        let nodes = [
            node("a", &[]),
            node("b", &[("dedicated", NO_SCHEDULE)]),
            node(
                "c",
                &[(UNSCHEDULABLE, NO_SCHEDULE), (NOT_READY, NO_EXECUTE)],
            ),
        ];
        let p = plan(&set(1), "h1", &nodes, &[], true, at(10));
        assert_eq!(
            p.create,
            ["a", "c"],
            "cordoned and unready nodes still run daemons"
        );
        assert_eq!(p.status.desired_number_scheduled, 2);

        let evicting = [
            node("a", &[("evict", NO_EXECUTE)]),
            node("b", &[("late", NO_SCHEDULE)]),
        ];
        let pods = [
            daemon("p-a", "a", "h1", true),
            daemon("p-b", "b", "h1", true),
        ];
        let p = plan(&set(1), "h1", &evicting, &pods, true, at(10));
        assert_eq!(
            p.delete,
            [("p-a".to_owned(), "uid-p-a".to_owned())],
            "NoExecute evicts, NoSchedule does not"
        );
        assert_eq!(p.status.number_misscheduled, 2);
        assert!(p.create.is_empty());
    }

    #[test]
    fn rolling_updates_keep_within_max_unavailable() {
        let nodes = [node("a", &[]), node("b", &[]), node("c", &[])];
        let old = [
            daemon("p-a", "a", "h1", true),
            daemon("p-b", "b", "h1", true),
            daemon("p-c", "c", "h1", true),
        ];
        let p = plan(&set(1), "h2", &nodes, &old, true, at(10));
        assert_eq!(p.delete.len(), 1, "one at a time");
        assert_eq!(p.status.updated_number_scheduled, Some(0));
        // Node a's replacement is not ready yet: no further deletions.
        let mid = [
            daemon("n-a", "a", "h2", false),
            daemon("p-b", "b", "h1", true),
            daemon("p-c", "c", "h1", true),
        ];
        let p = plan(&set(1), "h2", &nodes, &mid, true, at(10));
        assert!(p.delete.is_empty());
        assert_eq!(p.status.updated_number_scheduled, Some(1));
        assert_eq!(p.status.number_unavailable, Some(1));
        let p = plan(&set(2), "h2", &nodes, &old, true, at(10));
        assert_eq!(p.delete.len(), 2);
    }

    #[test]
    fn pinned_pods_know_their_node() {
        let mut pod = Pod {
            spec: Some(PodSpec::default()),
            ..Pod::default()
        };
        pin_to_node(&mut pod, "n7");
        assert_eq!(target_node(&pod), Some("n7"));
        add_default_tolerations(&mut pod);
        add_default_tolerations(&mut pod);
        assert_eq!(
            pod.spec.and_then(|s| s.tolerations).map(|t| t.len()),
            Some(6)
        );
    }
}
