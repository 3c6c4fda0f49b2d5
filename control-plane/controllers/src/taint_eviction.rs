//! The taint-eviction controller: deletes the pods that do not tolerate their node's
//! NoExecute taints, at once when a taint is not tolerated and when the shortest matching
//! `tolerationSeconds` runs out otherwise (timed from the taint's `timeAdded`). Each
//! eviction first marks the pod with a `DisruptionTarget` condition so its owner can tell
//! why it went. The timing rule is [`placement::taints::eviction`].
//!
//! Which taints a node carries is the node lifecycle controller's business (and users').

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use parking_lot::Mutex;
use placement::taints::{Eviction, NO_EXECUTE, eviction, tolerations};
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, unless_gone};

/// The controller's shared state.
pub struct TaintEvictionController {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    /// Each node's NoExecute taints, with `timeAdded` filled in from when this controller
    /// first saw the ones that lack it.
    no_execute: Mutex<HashMap<String, Vec<Taint>>>,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl TaintEvictionController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        nodes: Arc<Informer<Node>>,
        pods: Arc<Informer<Pod>>,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let controller = Arc::new(TaintEvictionController {
            events,
            client,
            nodes: nodes.clone(),
            pods: pods.clone(),
            no_execute: Mutex::new(HashMap::new()),
            queue: WorkQueue::new(),
        });
        let on_node = controller.clone();
        tokio::spawn(follow(nodes.subscribe(), move |change| match change {
            Change::Applied(node) => on_node.node_changed(&node, false),
            Change::Deleted(node) => on_node.node_changed(&node, true),
            Change::Relisted => on_node.relisted(),
        }));
        let on_pod = controller.clone();
        tokio::spawn(follow(pods.subscribe(), move |change| match change {
            Change::Applied(pod) => {
                let tainted =
                    node_of(&pod).is_some_and(|n| on_pod.no_execute.lock().contains_key(n));
                if tainted {
                    on_pod.queue.add(Key::of(pod.as_ref()));
                }
            }
            Change::Deleted(_) => {}
            Change::Relisted => on_pod.relisted(),
        }));
        nodes.synced().await;
        pods.synced().await;
        controller.relisted();
        let worker = controller.clone();
        workers::run(
            "taint-eviction-controller",
            controller.queue.clone(),
            4,
            move |key| worker.clone().reconcile(key),
        )
        .await
    }

    fn relisted(&self) {
        for node in self.nodes.store().state() {
            self.node_changed(&node, false);
        }
    }

    /// Records the node's NoExecute taints; if they changed, its pods are looked at again.
    fn node_changed(&self, node: &Node, deleted: bool) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let mut known = self.no_execute.lock();
        let before = known.remove(&name);
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|t| t.effect == NO_EXECUTE && !deleted)
            .map(|t| {
                let mut taint = t.clone();
                if taint.time_added.is_none() {
                    let seen = before
                        .iter()
                        .flatten()
                        .find(|b| b.key == t.key && b.value == t.value)
                        .and_then(|b| b.time_added.clone());
                    taint.time_added = Some(seen.unwrap_or(Time(now)));
                }
                taint
            })
            .collect();
        let changed = before.as_ref() != Some(&taints) && !(before.is_none() && taints.is_empty());
        if !taints.is_empty() {
            known.insert(name.clone(), taints);
        }
        drop(known);
        if changed {
            for pod in self
                .pods
                .store()
                .state_filter(|p| node_of(p) == Some(name.as_str()))
            {
                self.queue.add(Key::of(pod.as_ref()));
            }
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(pod) = self.pods.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(node) = node_of(&pod) else {
            return Ok(None);
        };
        let Some(taints) = self.no_execute.lock().get(node).cloned() else {
            return Ok(None);
        };
        let now = jiff::Timestamp::now();
        match eviction(tolerations(&pod), &taints, now) {
            Eviction::Never => Ok(None),
            Eviction::At(deadline) if deadline > now => {
                Ok(Some(deadline.duration_since(now).unsigned_abs()))
            }
            Eviction::At(_) | Eviction::Now => {
                self.events.record(
                    pod.as_ref(),
                    events::Kind::Normal,
                    "TaintManagerEviction",
                    "Evict",
                    &format!("Marking for deletion Pod {key}"),
                );
                self.evict(&key, pod.metadata.uid.clone(), node).await?;
                Ok(None)
            }
        }
    }

    async fn evict(&self, key: &Key, uid: Option<String>, node: &str) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            key.namespace.as_deref().unwrap_or_default(),
        );
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}});
        unless_gone(
            api.patch_status(
                &key.name,
                &PatchParams::default(),
                &Patch::Strategic(condition),
            )
            .await,
        )?;
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %key, node, "evicted: NoExecute taint not tolerated");
                Ok(())
            }
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}
