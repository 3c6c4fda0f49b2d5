//! The ReplicaSet rule, pure: from a ReplicaSet and the pods of its namespace, which pods to
//! adopt or release, how many to create, which to delete, and the status to report.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::core::{Selector, SelectorExt};

use crate::pods;

/// At most this many pods are created or deleted in one pass (kube-controller-manager's
/// burst), so one huge ReplicaSet does not starve the others.
pub const BURST: usize = 500;

/// What to do for one ReplicaSet.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Orphans matching the selector, to take over (by name).
    pub adopt: Vec<String>,
    /// Owned pods that no longer match the selector, to let go (by name).
    pub release: Vec<String>,
    /// How many pods to create.
    pub create: usize,
    /// Pods to delete (name and uid), first to go first.
    pub delete: Vec<(String, String)>,
    /// The status the ReplicaSet should show.
    pub status: ReplicaSetStatus,
    /// When availability will change without an event (minReadySeconds passing).
    pub recheck_after: Option<Duration>,
}

/// Plans for `replica_set` given `pods` (its namespace's). `manage` is false while earlier
/// creations and deletions are not yet in the cache, or the ReplicaSet is being deleted:
/// then only the status is computed.
pub fn plan(
    replica_set: &ReplicaSet,
    pods: &[Arc<Pod>],
    manage: bool,
    now: jiff::Timestamp,
) -> Result<Plan, kube::core::ParseExpressionError> {
    let spec = replica_set.spec.clone().unwrap_or_default();
    let selector = Selector::try_from(spec.selector.clone())?;
    let uid = replica_set.metadata.uid.as_deref().unwrap_or_default();
    let deleting = replica_set.metadata.deletion_timestamp.is_some();
    let mut plan = Plan::default();
    let mut owned: Vec<&Pod> = Vec::new();
    let empty = Default::default();
    for pod in pods {
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let matches = !selector.selects_all() && selector.matches(labels);
        let name = pod.metadata.name.clone().unwrap_or_default();
        match pods::controller_of(&pod.metadata) {
            Some(controller) if controller.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if pod.metadata.deletion_timestamp.is_none() {
                    plan.release.push(name);
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && pod.metadata.deletion_timestamp.is_none() {
                    plan.adopt.push(name);
                    owned.push(pod);
                }
            }
        }
    }
    let mut active: Vec<&Pod> = owned.into_iter().filter(|p| pods::is_active(p)).collect();
    let wanted = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    if manage && !deleting {
        if active.len() < wanted {
            plan.create = (wanted - active.len()).min(BURST);
        } else if active.len() > wanted {
            let mut ranked = active.clone();
            ranked.sort_by(|a, b| pods::removal_order(a, b));
            plan.delete = ranked
                .into_iter()
                .take((active.len() - wanted).min(BURST))
                .map(|p| {
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        p.metadata.uid.clone().unwrap_or_default(),
                    )
                })
                .collect();
        }
    }
    active.sort_by_key(|p| p.metadata.name.clone());
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let previous = replica_set.status.clone().unwrap_or_default();
    plan.status = ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| {
            pods::has_labels(p.metadata.labels.as_ref(), template_labels)
        })),
        ready_replicas: Some(count(&pods::is_ready)),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        observed_generation: replica_set.metadata.generation,
        conditions: previous.conditions,
        terminating_replicas: None,
    };
    if min_ready > 0 {
        plan.recheck_after = active
            .iter()
            .filter_map(|p| pods::ready_since(p))
            .map(|since| since + jiff::SignedDuration::from_secs(i64::from(min_ready)))
            .filter(|at| *at > now)
            .min()
            .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
            .map(|d| d + Duration::from_millis(100));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::tests::pod;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, ObjectMeta, OwnerReference,
    };

    fn replica_set(replicas: i32) -> ReplicaSet {
        let labels: std::collections::BTreeMap<String, String> =
            [("app".to_owned(), "web".to_owned())].into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-web".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    match_expressions: None,
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: None,
            }),
            status: None,
        }
    }

    fn labelled(mut pod: Pod, owner: Option<&str>) -> Arc<Pod> {
        pod.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        pod.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                uid: uid.into(),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        });
        Arc::new(pod)
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn creates_what_is_missing_and_reports_status() {
        let pods = vec![labelled(
            pod("a", "Running", Some("n"), Some(10)),
            Some("uid-web"),
        )];
        let plan = plan(&replica_set(3), &pods, true, now()).expect("plan");
        assert_eq!(plan.create, 2);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.status.replicas, 1);
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(1));
        assert_eq!(plan.status.fully_labeled_replicas, Some(1));
        assert_eq!(plan.status.observed_generation, Some(3));
    }

    #[test]
    fn deletes_the_cheapest_extra_pods() {
        let pods = vec![
            labelled(
                pod("ready", "Running", Some("n"), Some(10)),
                Some("uid-web"),
            ),
            labelled(pod("pending", "Pending", None, None), Some("uid-web")),
            labelled(pod("running", "Running", Some("n"), None), Some("uid-web")),
        ];
        let plan = plan(&replica_set(1), &pods, true, now()).expect("plan");
        let names: Vec<_> = plan.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pending", "running"]);
        assert_eq!(plan.create, 0);
    }

    #[test]
    fn waits_while_earlier_work_is_unseen() {
        let plan = plan(&replica_set(3), &[], false, now()).expect("plan");
        assert_eq!(plan.create, 0);
        assert_eq!(plan.status.replicas, 0);
    }

    #[test]
    fn adopts_orphans_releases_strays_and_ignores_others() {
        let mut stray = pod("stray", "Running", None, None);
        stray.metadata.owner_references = Some(vec![OwnerReference {
            uid: "uid-web".into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        let pods = vec![
            labelled(pod("orphan", "Running", None, None), None),
            labelled(pod("theirs", "Running", None, None), Some("uid-other")),
            Arc::new(stray),
        ];
        let plan = plan(&replica_set(1), &pods, true, now()).expect("plan");
        assert_eq!(plan.adopt, ["orphan"]);
        assert_eq!(plan.release, ["stray"]);
        assert_eq!(plan.create, 0, "the adopted pod counts");
    }

    #[test]
    fn finished_pods_are_replaced() {
        let pods = vec![labelled(
            pod("done", "Succeeded", None, None),
            Some("uid-web"),
        )];
        let plan = plan(&replica_set(1), &pods, true, now()).expect("plan");
        assert_eq!(plan.create, 1);
        assert_eq!(plan.status.replicas, 0);
    }

    #[test]
    fn min_ready_seconds_delays_availability_and_asks_for_a_recheck() {
        let mut set = replica_set(1);
        if let Some(spec) = set.spec.as_mut() {
            spec.min_ready_seconds = Some(30);
        }
        let pods = vec![labelled(
            pod("a", "Running", Some("n"), Some(990)),
            Some("uid-web"),
        )];
        let plan = plan(&set, &pods, true, now()).expect("plan");
        assert_eq!(plan.status.available_replicas, Some(0));
        let after = plan.recheck_after.expect("recheck");
        assert!(
            after > Duration::from_secs(19) && after < Duration::from_secs(21),
            "{after:?}"
        );
    }

    #[test]
    fn a_deleting_replica_set_manages_nothing() {
        let mut set = replica_set(3);
        set.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let pods = vec![labelled(pod("orphan", "Running", None, None), None)];
        let plan = plan(&set, &pods, true, now()).expect("plan");
        assert_eq!(plan.create, 0);
        assert!(plan.adopt.is_empty());
    }
}
