//! The StatefulSet rules, pure: pods with stable names `<set>-<ordinal>`, created in
//! ordinal order and each only once its predecessors are Running and Ready
//! (`OrderedReady`), or all at once (`Parallel`); removed highest ordinal first when
//! scaling down; and rolled to a new template from the highest ordinal down to the
//! `partition`, one pod at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use crate::pods;
use crate::revisions::hash_of;

/// What to do for one StatefulSet.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Ordinals to create, each with whether it gets the update revision (else the current).
    pub create: Vec<(i32, bool)>,
    /// Pods to delete, `(name, uid)`.
    pub delete: Vec<(String, String)>,
    /// The status to report.
    pub status: StatefulSetStatus,
}

/// The ordinal in a pod's name `<set>-<ordinal>`.
pub fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|o: &i32| *o >= 0)
}

fn healthy(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pods::phase(pod) == "Running"
        && pods::is_ready(pod)
}

/// The plan for `set`, whose current template hashes to `update` and whose last complete
/// rollout was `current`, over its `owned` pods.
pub fn plan(
    set: &StatefulSet,
    current: &str,
    update: &str,
    owned: &[Arc<Pod>],
    manage: bool,
    now: jiff::Timestamp,
) -> Plan {
    let name = set.metadata.name.as_deref().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let end = start.saturating_add(replicas);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_ordinal: BTreeMap<i32, &Arc<Pod>> = BTreeMap::new();
    for pod in owned {
        if let Some(ordinal) = ordinal_of(name, pod) {
            by_ordinal.insert(ordinal, pod);
        }
    }
    let mut plan = Plan::default();
    let delete = |plan: &mut Plan, pod: &Pod| {
        plan.delete.push((
            pod.metadata.name.clone().unwrap_or_default(),
            pod.metadata.uid.clone().unwrap_or_default(),
        ));
    };
    let revision_for = |ordinal: i32| on_delete || ordinal >= partition;

    // Pods of the wanted ordinals: create the missing, replace the finished.
    for ordinal in start..end {
        match by_ordinal.get(&ordinal) {
            None => {
                plan.create.push((ordinal, revision_for(ordinal)));
                if !parallel {
                    break;
                }
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                if !parallel {
                    break;
                }
            }
            Some(pod) if matches!(pods::phase(pod), "Failed" | "Succeeded") => {
                delete(&mut plan, pod);
                if !parallel {
                    break;
                }
            }
            Some(pod) if !parallel && !healthy(pod) => break,
            Some(_) => {}
        }
    }
    let all_healthy = (start..end).all(|o| by_ordinal.get(&o).is_some_and(|p| healthy(p)));
    let terminating = by_ordinal
        .values()
        .any(|p| p.metadata.deletion_timestamp.is_some());

    // Pods beyond the wanted ordinals go, highest first.
    let condemned: Vec<&&Arc<Pod>> = by_ordinal
        .iter()
        .rev()
        .filter(|(o, _)| **o < start || **o >= end)
        .map(|(_, p)| p)
        .collect();
    if parallel {
        for pod in condemned
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            delete(&mut plan, pod);
        }
    } else if all_healthy
        && !terminating
        && let Some(pod) = condemned.first()
    {
        delete(&mut plan, pod);
    }

    // A rolling update replaces the highest old pod at or above the partition, once every
    // pod is healthy and none is on its way out.
    if !on_delete && all_healthy && !terminating && plan.delete.is_empty() && plan.create.is_empty()
    {
        let old = (start.max(partition)..end)
            .rev()
            .filter_map(|o| by_ordinal.get(&o))
            .find(|p| hash_of(&p.metadata) != Some(update));
        if let Some(pod) = old {
            delete(&mut plan, pod);
        }
    }
    if !manage {
        plan.create.clear();
        plan.delete.clear();
    }

    let live: Vec<&&Arc<Pod>> = by_ordinal
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let updated = count(&|p| hash_of(&p.metadata) == Some(update));
    let ready = count(&|p| pods::is_ready(p));
    let done = updated == replicas
        && ready == replicas
        && live.len() == usize::try_from(replicas).unwrap_or(0);
    let current = if done { update } else { current };
    plan.status = StatefulSetStatus {
        replicas: i32::try_from(live.len()).unwrap_or(i32::MAX),
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| hash_of(&p.metadata) == Some(current))),
        updated_replicas: Some(updated),
        current_revision: Some(format!("{name}-{current}")),
        update_revision: Some(format!("{name}-{update}")),
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
        RollingUpdateStatefulSetStrategy, StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn set(replicas: i32, parallel: bool, partition: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                pod_management_policy: Some(
                    if parallel { "Parallel" } else { "OrderedReady" }.into(),
                ),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateStatefulSetStrategy {
                        partition: Some(partition),
                        max_unavailable: None,
                    }),
                }),
                ..StatefulSetSpec::default()
            }),
            status: None,
        }
    }

    fn pod(ordinal: i32, hash: &str, ready: bool) -> Arc<Pod> {
        let mut p = crate::pods::tests::pod(
            &format!("db-{ordinal}"),
            "Running",
            Some("n"),
            ready.then_some(0),
        );
        p.metadata.labels =
            Some([(crate::revisions::REVISION_HASH.to_owned(), hash.to_owned())].into());
        Arc::new(p)
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::UNIX_EPOCH
    }

    #[test]
    fn ordered_creation_waits_for_each_pod() {
        assert_eq!(
            plan(&set(3, false, 0), "h1", "h1", &[], true, now()).create,
            [(0, true)]
        );
        let one = [pod(0, "h1", false)];
        assert!(
            plan(&set(3, false, 0), "h1", "h1", &one, true, now())
                .create
                .is_empty()
        );
        let ready = [pod(0, "h1", true)];
        assert_eq!(
            plan(&set(3, false, 0), "h1", "h1", &ready, true, now()).create,
            [(1, true)]
        );
        assert_eq!(
            plan(&set(3, true, 0), "h1", "h1", &[], true, now())
                .create
                .len(),
            3
        );
    }

    #[test]
    fn scaling_down_removes_the_highest_first() {
        let pods = [pod(0, "h1", true), pod(1, "h1", true), pod(2, "h1", true)];
        let p = plan(&set(1, false, 0), "h1", "h1", &pods, true, now());
        assert_eq!(p.delete, [("db-2".to_owned(), "uid-db-2".to_owned())]);
        let mut going = (*pods[2]).clone();
        going.metadata.deletion_timestamp = Some(Time(now()));
        let p = plan(
            &set(1, false, 0),
            "h1",
            "h1",
            &[pods[0].clone(), pods[1].clone(), Arc::new(going)],
            true,
            now(),
        );
        assert!(p.delete.is_empty(), "one at a time");
    }

    #[test]
    fn rolling_updates_go_down_to_the_partition() {
        let pods = [pod(0, "h1", true), pod(1, "h1", true), pod(2, "h1", true)];
        let p = plan(&set(3, false, 1), "h1", "h2", &pods, true, now());
        assert_eq!(p.delete, [("db-2".to_owned(), "uid-db-2".to_owned())]);
        let rolled = [pod(0, "h1", true), pod(1, "h2", true), pod(2, "h2", true)];
        let p = plan(&set(3, false, 1), "h1", "h2", &rolled, true, now());
        assert!(p.delete.is_empty(), "db-0 is below the partition");
        assert_eq!(p.status.updated_replicas, Some(2));
        assert_eq!(p.status.current_revision.as_deref(), Some("db-h1"));
        assert_eq!(
            plan(&set(3, false, 1), "h1", "h2", &rolled[..2], true, now()).create,
            [(2, true)]
        );
        let all = [pod(0, "h2", true), pod(1, "h2", true), pod(2, "h2", true)];
        let p = plan(&set(3, false, 0), "h1", "h2", &all, true, now());
        assert_eq!(p.status.current_revision.as_deref(), Some("db-h2"));
        let p = plan(&set(3, false, 1), "h1", "h2", &[], true, now());
        assert_eq!(
            p.create,
            [(0, false)],
            "below the partition: the current revision"
        );
    }
}
