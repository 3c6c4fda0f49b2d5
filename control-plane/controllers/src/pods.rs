//! What the workload controllers ask of a pod: is it active, ready, available; who controls
//! it; which to remove first when scaling down; and the pod a template makes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{Api, DeleteParams, Preconditions};

/// The annotation that ranks pods for removal: lower cost goes first.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// The pod's phase, `Pending` when unset.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// When the pod became Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(|| jiff::Timestamp::UNIX_EPOCH),
    )
}

/// Whether the Ready condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
    }
}

/// The owner reference marked `controller`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner`, blocking its foreground deletion.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    let meta = owner.meta();
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A strategic merge patch that makes `reference` the controller of the object `uid` (the uid
/// guards against a new object of the same name).
pub fn adopt_patch(uid: Option<&String>, reference: &OwnerReference) -> serde_json::Value {
    serde_json::json!({"metadata": {"uid": uid, "ownerReferences": [reference]}})
}

/// A strategic merge patch that removes the object `uid`'s reference to `owner`.
pub fn release_patch(uid: Option<&String>, owner: &str) -> serde_json::Value {
    serde_json::json!({"metadata": {"uid": uid, "ownerReferences": [{"$patch": "delete", "uid": owner}]}})
}

/// The pod `template` makes for its controller: the template's labels, annotations and
/// finalizers, a name generated from `prefix`, and a controller reference.
pub fn from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(prefix.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Deletes pod `name` if it is still the pod `uid` (not a new one of the same name): `true`
/// when deleted, `false` when it was gone or replaced already.
pub async fn delete_if_same(api: &Api<Pod>, name: &str, uid: &str) -> Result<bool, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Whether `labels` contains every label of `wanted`.
pub fn has_labels(
    labels: Option<&BTreeMap<String, String>>,
    wanted: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(wanted) = wanted else { return true };
    wanted
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// The order pods are removed in when a controller scales down, first to go first:
/// unscheduled before scheduled, Pending before Unknown before Running, not ready before
/// ready, lower deletion cost first, recently ready before long ready, more restarts first,
/// newer before older.
pub fn removal_order(a: &Pod, b: &Pod) -> Ordering {
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Settles the outcome of creating pod `name` for `owner` (uid `owner_uid`), as every
/// workload controller reports it: `SuccessfulCreate`, or `FailedCreate` with the
/// expectation withdrawn and the error returned.
pub fn settle_create<K: Resource<DynamicType = ()>>(
    events: &events::Recorder,
    expectations: &crate::expectations::Expectations,
    owner: &K,
    owner_uid: &str,
    name: &str,
    result: Result<Pod, kube::Error>,
) -> Option<String> {
    match result {
        Ok(_) => {
            tracing::info!(pod = %name, "created");
            events.record(
                owner,
                events::Kind::Normal,
                "SuccessfulCreate",
                "Create",
                &format!("Created pod: {name}"),
            );
            None
        }
        Err(error) => {
            expectations.create_failed(owner_uid, name);
            events.record(
                owner,
                events::Kind::Warning,
                "FailedCreate",
                "Create",
                &format!("Error creating: {error}"),
            );
            Some(error.to_string())
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    /// A pod for tests: `phase`, on `node` if given, Ready since `ready` seconds after the epoch.
    pub fn pod(name: &str, phase: &str, node: Option<&str>, ready: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready.map(|at| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(
                            jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                        )),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn removal_order_prefers_pods_that_cost_least() {
        let mut pods = [
            pod("ready-long", "Running", Some("n"), Some(10)),
            pod("ready-recent", "Running", Some("n"), Some(100)),
            pod("running", "Running", Some("n"), None),
            pod("pending-scheduled", "Pending", Some("n"), None),
            pod("unscheduled", "Pending", None, None),
        ];
        pods.sort_by(removal_order);
        let names: Vec<_> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending-scheduled",
                "running",
                "ready-recent",
                "ready-long"
            ]
        );
    }

    #[test]
    fn deletion_cost_ranks_ready_pods() {
        let mut cheap = pod("cheap", "Running", Some("n"), Some(10));
        let mut dear = pod("dear", "Running", Some("n"), Some(100));
        cheap.metadata.annotations = Some([(DELETION_COST.to_owned(), "-5".to_owned())].into());
        dear.metadata.annotations = Some([(DELETION_COST.to_owned(), "5".to_owned())].into());
        assert_eq!(removal_order(&cheap, &dear), Ordering::Less);
    }

    #[test]
    fn availability_counts_min_ready_seconds() {
        let ready = pod("p", "Running", Some("n"), Some(100));
        let at = |s| jiff::Timestamp::from_second(s).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        assert!(is_available(&ready, 0, at(100)));
        assert!(!is_available(&ready, 10, at(105)));
        assert!(is_available(&ready, 10, at(110)));
        assert!(!is_available(
            &pod("q", "Running", Some("n"), None),
            0,
            at(200)
        ));
    }

    #[test]
    fn finished_and_deleting_pods_are_not_active() {
        assert!(is_active(&pod("p", "Running", None, None)));
        assert!(!is_active(&pod("p", "Succeeded", None, None)));
        assert!(!is_active(&pod("p", "Failed", None, None)));
        let mut deleting = pod("p", "Running", None, None);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!is_active(&deleting));
    }
}
