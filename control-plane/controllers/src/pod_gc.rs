//! The pod garbage collector (kube-controller-manager's podgc): every 20 s it force-deletes
//! pods no kubelet will ever finish — those bound to a node that is gone (once the node has
//! been missing for the quarantine, and confirmed gone by the API), and those being deleted
//! that were never scheduled — and, past `--terminated-pod-gc-threshold` finished pods, the
//! oldest finished ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;

use crate::Error;
use crate::informer::Informer;
use crate::pods::phase;

/// How often the collector looks.
const PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods are collected (a node may be
/// re-registering).
const QUARANTINE: Duration = Duration::from_secs(40);

/// Why a pod is collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Why {
    /// Finished, and there are more finished pods than the threshold.
    Terminated,
    /// Bound to a node that no longer exists.
    Orphaned,
    /// Being deleted, but never scheduled: no kubelet will finish it.
    UnscheduledTerminating,
}

/// The pods to collect, by uid, from `pods`; `missing` are the nodes pods are bound to that
/// have been gone past the quarantine. `threshold` 0 keeps every finished pod.
pub fn plan<'a>(
    pods: &'a [Arc<Pod>],
    missing: &HashSet<String>,
    threshold: usize,
) -> Vec<(&'a Pod, Why)> {
    let mut chosen = Vec::new();
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    };
    let mut finished: Vec<&Pod> = pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| {
            matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if threshold > 0 && finished.len() > threshold {
        finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let excess = finished.len() - threshold;
        chosen.extend(
            finished
                .into_iter()
                .take(excess)
                .map(|p| (p, Why::Terminated)),
        );
    }
    for pod in pods.iter().map(Arc::as_ref) {
        match node(pod) {
            Some(name) if missing.contains(&name) => chosen.push((pod, Why::Orphaned)),
            None if pod.metadata.deletion_timestamp.is_some() => {
                chosen.push((pod, Why::UnscheduledTerminating))
            }
            _ => {}
        }
    }
    chosen.sort_by_key(|(p, _)| p.metadata.uid.clone());
    chosen.dedup_by_key(|(p, _)| p.metadata.uid.clone());
    chosen
}

/// Runs until the process ends.
pub async fn run(
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    threshold: usize,
) -> Result<(), Error> {
    pods.synced().await;
    nodes.synced().await;
    // When each node pods are bound to was first seen missing.
    let mut missing_since: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(PERIOD).await;
        let known: HashSet<String> = nodes
            .store()
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let all = pods.store().state();
        let bound: HashSet<String> = all
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .filter(|n| !n.is_empty() && !known.contains(n))
            .collect();
        missing_since.retain(|name, _| bound.contains(name));
        let node_api: Api<Node> = Api::all(client.clone());
        let mut missing = HashSet::new();
        for name in bound {
            let since = *missing_since
                .entry(name.clone())
                .or_insert_with(tokio::time::Instant::now);
            // The cache may lag: only a node the API does not have either is gone.
            if since.elapsed() >= QUARANTINE && node_api.get_opt(&name).await?.is_none() {
                missing.insert(name);
            }
        }
        for (pod, why) in plan(&all, &missing, threshold) {
            collect(&client, pod, why).await;
        }
    }
}

async fn collect(client: &kube::Client, pod: &Pod, why: Why) {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if why == Why::Orphaned {
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": "PodGC: node no longer exists",
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}});
        let _ = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(condition))
            .await;
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), ?why, "collected"),
        Err(error) => {
            tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "not collected")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn pod(uid: &str, node: Option<&str>, phase: &str, age: i64, deleting: bool) -> Arc<Pod> {
        let now = jiff::Timestamp::now();
        Arc::new(Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                creation_timestamp: Some(Time(now - jiff::SignedDuration::from_secs(age))),
                deletion_timestamp: deleting.then_some(Time(now)),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        })
    }

    #[test]
    fn collects_orphans_unscheduled_terminating_and_the_oldest_finished() {
        let pods = vec![
            pod("old-done", Some("n1"), "Succeeded", 300, false),
            pod("new-done", Some("n1"), "Failed", 10, false),
            pod("running", Some("n1"), "Running", 100, false),
            pod("orphan", Some("gone"), "Running", 100, false),
            pod("stuck", None, "Pending", 100, true),
            pod("waiting", None, "Pending", 100, false),
        ];
        let missing: HashSet<String> = ["gone".to_owned()].into();
        let mut chosen: Vec<(String, Why)> = plan(&pods, &missing, 1)
            .into_iter()
            .map(|(p, why)| (p.metadata.uid.clone().unwrap_or_default(), why))
            .collect();
        chosen.sort();
        assert_eq!(
            chosen,
            [
                ("old-done".to_owned(), Why::Terminated),
                ("orphan".to_owned(), Why::Orphaned),
                ("stuck".to_owned(), Why::UnscheduledTerminating),
            ]
        );
        assert!(
            plan(&pods, &HashSet::new(), 0)
                .iter()
                .all(|(_, w)| *w != Why::Terminated)
        );
    }
}
