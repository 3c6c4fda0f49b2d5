//! Basalt's scheduler, kube-scheduler's role: it watches nodes and pods into its
//! [`cache`], takes pending pods from the [`queue`] one at a time, decides with the pure
//! [`schedule`] (filters and scores in [`plugins`]), counts the pod on its node at once
//! (assumed) and binds it through `pods/binding` in the background. A pod that fits nowhere
//! gets a `FailedScheduling` event and a `PodScheduled=False` condition saying why, and waits
//! for the cluster to change.
//!
//! A pod that fits nowhere may preempt pods of lower priority ([`preemption`]); the node it
//! is nominated for keeps room for it. Leadership (one active scheduler per cluster) is the
//! binary's business.

pub mod cache;
pub mod images;
pub mod interpod;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub use placement::resources;
pub mod schedule;
pub mod spread;
pub mod terms;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use parking_lot::Mutex;
use serde_json::json;

use crate::cache::Cache;
use crate::queue::SchedulingQueue;

/// The name pods ask for in `spec.schedulerName` to be placed by this scheduler.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// How many bindings may be in flight at once.
const BINDINGS_IN_FLIGHT: usize = 64;

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// The scheduler's shared state.
struct Scheduler {
    client: kube::Client,
    name: String,
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    /// The last failure reported per pod, so a retry that fails alike adds no event.
    reported: Mutex<HashMap<String, String>>,
    bindings: Arc<tokio::sync::Semaphore>,
    /// Queues events without waiting, so reporting never slows binding.
    events: events::Recorder,
}

/// Schedules pods that name `scheduler_name` until the process ends.
pub async fn run(client: kube::Client, scheduler_name: &str) -> Result<(), Error> {
    let events = events::Recorder::start(client.clone(), DEFAULT_SCHEDULER);
    let scheduler = Arc::new(Scheduler {
        client: client.clone(),
        name: scheduler_name.to_owned(),
        cache: Mutex::new(Cache::new()),
        queue: SchedulingQueue::new(),
        reported: Mutex::new(HashMap::new()),
        bindings: Arc::new(tokio::sync::Semaphore::new(BINDINGS_IN_FLIGHT)),
        events,
    });
    let (nodes_listed, mut nodes_ready) = tokio::sync::watch::channel(false);
    let (pods_listed, mut pods_ready) = tokio::sync::watch::channel(false);
    let (namespaces_listed, mut namespaces_ready) = tokio::sync::watch::channel(false);
    tokio::spawn(scheduler.clone().watch_nodes(nodes_listed));
    tokio::spawn(scheduler.clone().watch_pods(pods_listed));
    tokio::spawn(scheduler.clone().watch_namespaces(namespaces_listed));
    let _ = nodes_ready.wait_for(|listed| *listed).await;
    let _ = pods_ready.wait_for(|listed| *listed).await;
    let _ = namespaces_ready.wait_for(|listed| *listed).await;
    let flusher = scheduler.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            flusher.queue.flush();
        }
    });
    tracing::info!("scheduling");
    let mut start = 0;
    let mut rng = rand::rng();
    loop {
        let (pod, _) = scheduler.queue.pop().await;
        let decision = {
            let cache = scheduler.cache.lock();
            schedule::schedule(&pod, &cache, &mut start, &mut rng)
        };
        match decision {
            Ok(node) => {
                scheduler.cache.lock().assume(&pod, &node);
                scheduler.queue.pods_changed();
                let permit = scheduler.bindings.clone().acquire_owned().await;
                let binder = scheduler.clone();
                tokio::spawn(async move {
                    binder.bind(&pod, &node).await;
                    drop(permit);
                });
            }
            Err(fit) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let waits_for_pods = fit.reasons.keys().any(|r| {
                    [
                        interpod::AFFINITY,
                        interpod::ANTI_AFFINITY,
                        interpod::EXISTING_ANTI_AFFINITY,
                        spread::SKEW,
                    ]
                    .contains(&r.as_str())
                });
                scheduler.queue.unschedulable(&uid, waits_for_pods);
                let preemption = preemption::may_preempt(&pod)
                    .then(|| preemption::find(&pod, &scheduler.cache.lock()));
                let reporter = scheduler.clone();
                tokio::spawn(async move {
                    let message = match preemption {
                        Some(Ok(candidate)) => {
                            reporter.preempt(&pod, candidate).await;
                            fit.to_string()
                        }
                        Some(Err(why)) => format!("{fit} {why}"),
                        None => {
                            format!("{fit} preemption: not eligible due to preemptionPolicy=Never.")
                        }
                    };
                    reporter.report_unschedulable(&pod, &message).await
                });
            }
        }
    }
}

impl Scheduler {
    fn ours(&self, pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|name| name == self.name)
    }

    async fn watch_nodes(self: Arc<Self>, listed: tokio::sync::watch::Sender<bool>) {
        let name = |node: &Node| node.metadata.name.clone().unwrap_or_default();
        follow(
            Api::all(self.client.clone()),
            listed,
            name,
            |node| {
                self.cache.lock().set_node(Arc::new(node));
                self.queue.cluster_changed();
            },
            |name| self.cache.lock().remove_node(name),
        )
        .await;
    }

    /// Namespaces' labels, for inter-pod terms that pick namespaces by selector.
    async fn watch_namespaces(self: Arc<Self>, listed: tokio::sync::watch::Sender<bool>) {
        let name = |ns: &Namespace| ns.metadata.name.clone().unwrap_or_default();
        follow(
            Api::all(self.client.clone()),
            listed,
            name,
            |ns| {
                let key = name(&ns);
                let labels = ns.metadata.labels.unwrap_or_default();
                self.cache.lock().set_namespace(key, labels);
                self.queue.cluster_changed();
            },
            |name| self.cache.lock().remove_namespace(name),
        )
        .await;
    }

    async fn watch_pods(self: Arc<Self>, listed: tokio::sync::watch::Sender<bool>) {
        let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
        follow(
            Api::all(self.client.clone()),
            listed,
            uid,
            |pod| self.pod_seen(pod),
            |uid| self.pod_gone(uid),
        )
        .await;
    }

    fn pod_seen(&self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let assigned = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned {
            self.queue.remove(&uid);
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            let placed = self.cache.lock().set_pod(&pod);
            if finished {
                self.queue.cluster_changed();
            } else if placed {
                self.queue.pods_changed();
            }
            return;
        }
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if pod.metadata.deletion_timestamp.is_some() || finished || !self.ours(&pod) {
            self.queue.remove(&uid);
            self.cache.lock().unnominate(&uid);
            return;
        }
        self.cache.lock().nominate(&pod);
        self.queue.add_or_update(Arc::new(pod));
    }

    fn pod_gone(&self, uid: &str) {
        self.queue.remove(uid);
        self.reported.lock().remove(uid);
        self.cache.lock().remove_pod(uid);
        self.queue.cluster_changed();
    }

    async fn bind(&self, pod: &Pod, node: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(uid.clone()),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_owned()),
                ..ObjectReference::default()
            },
        };
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), node, "bound");
                self.reported.lock().remove(&uid);
                self.event(
                    pod,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {namespace}/{name} to {node}"),
                );
            }
            Err(error) => {
                self.cache.lock().forget(&uid);
                match &error {
                    // Deleted meanwhile, or already bound (by another scheduler, say).
                    kube::Error::Api(status) if matches!(status.code, 404 | 409) => {
                        self.queue.remove(&uid)
                    }
                    _ => {
                        tracing::warn!(pod = %format!("{namespace}/{name}"), node, %error, "binding failed; will retry");
                        self.queue.retry(&uid);
                    }
                }
            }
        }
    }

    /// Makes room for `pod` on the candidate node: nominates the node in the pod's status,
    /// then evicts the victims (marked with a `DisruptionTarget` condition, and an event
    /// saying for whom). The pod is tried again once they are gone.
    async fn preempt(&self, pod: &Pod, candidate: preemption::Candidate) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = candidate.node;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let nominated = json!({"status": {"nominatedNodeName": node}});
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(nominated))
            .await
        {
            tracing::debug!(%error, "could not nominate a node");
        }
        for victim in candidate.victims {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &victim.who.namespace);
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", self.name),
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]}});
            let _ = api
                .patch_status(
                    &victim.who.name,
                    &PatchParams::default(),
                    &Patch::Strategic(condition),
                )
                .await;
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(victim.uid.clone()),
                    resource_version: None,
                }),
                ..kube::api::DeleteParams::default()
            };
            match api.delete(&victim.who.name, &params).await {
                Ok(_) => {
                    tracing::info!(victim = %format!("{}/{}", victim.who.namespace, victim.who.name), preemptor = %format!("{namespace}/{name}"), %node, "preempted");
                    let victim_pod = Pod {
                        metadata: ObjectMeta {
                            name: Some(victim.who.name.clone()),
                            namespace: Some(victim.who.namespace.clone()),
                            uid: Some(victim.uid.clone()),
                            ..ObjectMeta::default()
                        },
                        ..Pod::default()
                    };
                    self.event(
                        &victim_pod,
                        "Normal",
                        "Preempted",
                        &format!("Preempted by {namespace}/{name} on node {node}"),
                    );
                }
                Err(error) => tracing::debug!(%error, "could not preempt"),
            }
        }
    }

    /// Tells the pod's owner why it waits: `PodScheduled=False` and a `FailedScheduling`
    /// event, once per distinct reason.
    async fn report_unschedulable(&self, pod: &Pod, message: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        {
            let mut reported = self.reported.lock();
            if reported.get(&uid).map(String::as_str) == Some(message) {
                return;
            }
            reported.insert(uid, message.to_owned());
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %format!("{namespace}/{name}"), message, "unschedulable");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let condition = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": jiff::Timestamp::now().to_string(),
        }]}});
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
            .await
        {
            tracing::debug!(%error, "could not set PodScheduled");
        }
        self.event(pod, "Warning", "FailedScheduling", message);
    }

    fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        let (kind, action) = if type_ == "Normal" {
            (events::Kind::Normal, "Binding")
        } else {
            (events::Kind::Warning, "Scheduling")
        };
        self.events.record(pod, kind, reason, action, message);
    }
}

/// Follows a watch of `api`: `applied` for each object added or changed, `gone` with the key
/// of each one deleted — including those a relist no longer shows, whose deletions the
/// watch never delivered — and `listed` set once the first listing is in.
async fn follow<K>(
    api: Api<K>,
    listed: tokio::sync::watch::Sender<bool>,
    key: impl Fn(&K) -> String,
    mut applied: impl FnMut(K),
    mut gone: impl FnMut(&str),
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    let mut known: HashSet<String> = HashSet::new();
    let mut relisted: HashSet<String> = HashSet::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(WatchEvent::Init) => relisted.clear(),
            Ok(WatchEvent::InitApply(object) | WatchEvent::Apply(object)) => {
                let id = key(&object);
                relisted.insert(id.clone());
                known.insert(id);
                applied(object);
            }
            Ok(WatchEvent::InitDone) => {
                for missing in known.difference(&relisted) {
                    gone(missing);
                }
                known = relisted.clone();
                listed.send_replace(true);
            }
            Ok(WatchEvent::Delete(object)) => {
                let id = key(&object);
                known.remove(&id);
                gone(&id);
            }
            Err(error) => tracing::debug!(%error, "watch failed; retrying"),
        }
    }
}
