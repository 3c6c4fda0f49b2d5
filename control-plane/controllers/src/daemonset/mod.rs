//! The DaemonSet controller: runs one pod of each DaemonSet on every node that should have
//! one — pinned to the node by affinity, for the scheduler to bind — replaces failed ones,
//! removes them from nodes that no longer fit, rolls template changes out node by node,
//! and keeps a ControllerRevision per template for `kubectl rollout history/undo`. The
//! rules are in [`plan`]; this module makes the API calls. Orphaned pods its selector picks
//! are adopted ([`crate::adoption`]).

pub mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::adoption;
use crate::deployment::rollout::template_hash;
use crate::expectations::{Expectations, generate_name};
use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::revisions::{self, REVISION_HASH};
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The DaemonSet controller's shared state.
pub struct DaemonSetController {
    client: kube::Client,
    sets: Arc<Informer<DaemonSet>>,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    expectations: Expectations,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

impl DaemonSetController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        nodes: Arc<Informer<Node>>,
        pods: Arc<Informer<Pod>>,
        revisions: Arc<Informer<ControllerRevision>>,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let sets = Informer::<DaemonSet>::start(Api::all(client.clone()));
        let controller = Arc::new(DaemonSetController {
            events,
            client,
            sets: sets.clone(),
            nodes: nodes.clone(),
            pods: pods.clone(),
            revisions: revisions.clone(),
            expectations: Expectations::new(),
            queue: WorkQueue::new(),
        });
        let on_set = controller.clone();
        tokio::spawn(follow(sets.subscribe(), move |change| match change {
            Change::Applied(set) => on_set.queue.add(Key::of(set.as_ref())),
            Change::Deleted(set) => {
                if let Some(uid) = &set.metadata.uid {
                    on_set.expectations.forget(uid);
                }
            }
            Change::Relisted => on_set.enqueue_all(),
        }));
        let on_node = controller.clone();
        tokio::spawn(follow(nodes.subscribe(), move |_| on_node.enqueue_all()));
        let on_pod = controller.clone();
        tokio::spawn(follow(pods.subscribe(), move |change| {
            let (pod, deleted) = match change {
                Change::Applied(pod) => (pod, false),
                Change::Deleted(pod) => (pod, true),
                Change::Relisted => {
                    on_pod.expectations.clear();
                    on_pod.enqueue_all();
                    return;
                }
            };
            if let Some(set) =
                on_pod
                    .expectations
                    .saw(&pod.metadata, deleted, "DaemonSet", "apps/v1")
            {
                on_pod.queue.add(set);
            } else if !deleted {
                for set in adoption::candidates(&on_pod.sets, &pod, |s: &DaemonSet| {
                    s.spec.as_ref().map(|s| &s.selector)
                }) {
                    on_pod.queue.add(set);
                }
            }
        }));
        sets.synced().await;
        nodes.synced().await;
        pods.synced().await;
        revisions.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run("daemonset", controller.queue.clone(), 3, move |key| {
            worker.clone().reconcile(key)
        })
        .await
    }

    fn enqueue_all(&self) {
        for set in self.sets.store().state() {
            self.queue.add(Key::of(set.as_ref()));
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(set) = self.sets.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let namespace = key.namespace.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let spec = set.spec.clone().unwrap_or_default();
        let collisions = set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0);
        let hash = template_hash(&spec.template, collisions);
        let in_namespace = self.pods.in_namespace(&namespace);
        let claim = adoption::claim(&uid, &spec.selector, &in_namespace, |_| true);
        if !claim.is_empty() && adoption::carry_out(&self.client, set.as_ref(), claim).await? {
            // The pods' own changes bring the set back with its members counted.
            return Ok(None);
        }
        let owned: Vec<Arc<Pod>> = self.pods.controlled_by(&namespace, &uid);
        let in_use: HashSet<String> = owned
            .iter()
            .filter_map(|p| revisions::hash_of(&p.metadata).map(str::to_owned))
            .collect();
        let limit = spec.revision_history_limit.unwrap_or(10);
        revisions::keep(
            &self.client,
            &self.revisions,
            set.as_ref(),
            &spec.template,
            &hash,
            &in_use,
            limit,
        )
        .await?;
        let nodes = self.nodes.store().state();
        let manage = self.expectations.satisfied(&uid);
        let now = jiff::Timestamp::now();
        let plan = plan::plan(&set, &hash, &nodes, &owned, manage, now);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut failure = None;
        if !plan.delete.is_empty() {
            let uids: Vec<String> = plan.delete.iter().map(|(_, uid)| uid.clone()).collect();
            self.expectations.expect(&uid, &[], &uids);
            for (name, pod_uid) in &plan.delete {
                match pods::delete_if_same(&api, name, pod_uid).await {
                    Ok(true) => {
                        tracing::info!(pod = %name, "deleted");
                        self.events.record(
                            set.as_ref(),
                            events::Kind::Normal,
                            "SuccessfulDelete",
                            "Delete",
                            &format!("Deleted pod: {name}"),
                        );
                    }
                    Ok(false) => self.expectations.delete_failed(&uid, pod_uid),
                    Err(error) => {
                        self.expectations.delete_failed(&uid, pod_uid);
                        failure = Some(error.to_string());
                    }
                }
            }
        }
        if !plan.create.is_empty()
            && let Some(error) = self.create_pods(&set, &hash, &api, &plan.create).await
        {
            failure = Some(error);
        }
        if set.status.as_ref() != Some(&plan.status) {
            let sets: Api<DaemonSet> = Api::namespaced(self.client.clone(), &namespace);
            let mut body = json!({"status": plan.status});
            if plan.status.number_unavailable.is_none() {
                body["status"]["numberUnavailable"] = serde_json::Value::Null;
            }
            unless_gone(
                sets.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(body))
                    .await,
            )?;
        }
        if let Some(message) = failure {
            return Err(Error::Failed(format!("daemonset {key}: {message}")));
        }
        // Pods ready but not yet ready for minReadySeconds become available by time alone.
        let waiting = plan.status.number_ready > plan.status.number_available.unwrap_or(0);
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        Ok((waiting && min_ready > 0)
            .then(|| Duration::from_secs(u64::from(min_ready.unsigned_abs()))))
    }

    /// Creates a daemon pod for each of `nodes`; returns the first failure.
    async fn create_pods(
        &self,
        set: &DaemonSet,
        hash: &str,
        api: &Api<Pod>,
        nodes: &[String],
    ) -> Option<String> {
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let prefix = format!("{}-", set.metadata.name.as_deref().unwrap_or_default());
        let template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let names: Vec<String> = nodes.iter().map(|_| generate_name(&prefix)).collect();
        self.expectations.expect(&uid, &names, &[]);
        let reference = pods::controller_reference(set);
        let creates = nodes.iter().zip(&names).map(|(node, name)| {
            let mut pod = pods::from_template(&template, &namespace, &prefix, reference.clone());
            pod.metadata.name = Some(name.clone());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(REVISION_HASH.into(), hash.to_owned());
            plan::add_default_tolerations(&mut pod);
            plan::pin_to_node(&mut pod, node);
            async move { (name, node, api.create(&PostParams::default(), &pod).await) }
        });
        let mut failure = None;
        for (name, _node, result) in futures::future::join_all(creates).await {
            let settled =
                pods::settle_create(&self.events, &self.expectations, set, &uid, name, result);
            failure = settled.or(failure);
        }
        failure
    }
}
