//! The ReplicaSet controller: keeps `spec.replicas` active pods matching each ReplicaSet's
//! selector, adopting orphans and releasing strays, and reports their readiness in the
//! status. The rule is in [`plan`]; this module does the API calls, creating pods in
//! slow-start batches (1, 2, 4, …) so a failing create is not repeated hundreds of times.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use events::Kind;

use crate::adoption;
use crate::expectations::{Expectations, generate_name};
use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The ReplicaSet controller's shared state.
pub struct ReplicaSetController {
    client: kube::Client,
    sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

impl ReplicaSetController {
    /// Starts the controller with `workers` workers; runs until the process ends.
    pub async fn run(
        client: kube::Client,
        sets: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
        workers: usize,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let controller = Arc::new(ReplicaSetController {
            events,
            client,
            sets: sets.clone(),
            pods: pods.clone(),
            expectations: Expectations::new(),
            queue: WorkQueue::new(),
        });
        let on_set = controller.clone();
        tokio::spawn(follow(sets.subscribe(), move |change| {
            on_set.set_changed(change)
        }));
        let on_pod = controller.clone();
        tokio::spawn(follow(pods.subscribe(), move |change| {
            on_pod.pod_changed(change)
        }));
        sets.synced().await;
        pods.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run(
            "replicaset",
            controller.queue.clone(),
            workers,
            move |key| worker.clone().reconcile(key),
        )
        .await
    }

    fn enqueue_all(&self) {
        for set in self.sets.store().state() {
            self.queue.add(Key::of(set.as_ref()));
        }
    }

    fn set_changed(&self, change: Change<ReplicaSet>) {
        match change {
            Change::Applied(set) => self.queue.add(Key::of(set.as_ref())),
            Change::Deleted(set) => {
                if let Some(uid) = &set.metadata.uid {
                    self.expectations.forget(uid);
                }
            }
            Change::Relisted => self.enqueue_all(),
        }
    }

    fn pod_changed(&self, change: Change<Pod>) {
        let (pod, deleted) = match change {
            Change::Applied(pod) => (pod, false),
            Change::Deleted(pod) => (pod, true),
            Change::Relisted => {
                self.expectations.clear();
                self.enqueue_all();
                return;
            }
        };
        if let Some(set) = self
            .expectations
            .saw(&pod.metadata, deleted, "ReplicaSet", "apps/v1")
        {
            self.queue.add(set);
            return;
        }
        if pods::controller_of(&pod.metadata).is_some() {
            return;
        }
        if deleted {
            return;
        }
        // An orphan: every ReplicaSet that selects it may adopt it.
        for set in adoption::candidates(&self.sets, &pod, |s: &ReplicaSet| {
            s.spec.as_ref().map(|s| &s.selector)
        }) {
            self.queue.add(set);
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(set) = self.sets.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        let namespace = key.namespace.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let in_namespace = self.pods.in_namespace(&namespace);
        let manage = self.expectations.satisfied(&uid);
        let plan = plan::plan(&set, &in_namespace, manage, jiff::Timestamp::now())
            .map_err(|e| Error::Invalid(format!("replicaset {key}: spec.selector: {e}")))?;
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if !plan.adopt.is_empty() && self.can_adopt(&set).await? {
            let reference = pods::controller_reference(set.as_ref());
            for name in &plan.adopt {
                let Some(pod) = self
                    .pods
                    .store()
                    .get(&Key::namespaced(&namespace, name).object_ref())
                else {
                    continue;
                };
                let patch = pods::adopt_patch(pod.metadata.uid.as_ref(), &reference);
                unless_gone(
                    pods_api
                        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                        .await,
                )?;
                tracing::info!(pod = %name, "adopted");
            }
        }
        for name in &plan.release {
            let Some(pod) = self
                .pods
                .store()
                .get(&Key::namespaced(&namespace, name).object_ref())
            else {
                continue;
            };
            let patch = pods::release_patch(pod.metadata.uid.as_ref(), &uid);
            unless_gone(
                pods_api
                    .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await,
            )?;
            tracing::info!(pod = %name, "released");
        }
        let mut failure = None;
        if plan.create > 0 {
            failure = self.create_pods(&set, &pods_api, plan.create).await;
        }
        if !plan.delete.is_empty() {
            let uids: Vec<String> = plan.delete.iter().map(|(_, uid)| uid.clone()).collect();
            self.expectations.expect(&uid, &[], &uids);
            for (name, pod_uid) in &plan.delete {
                match pods::delete_if_same(&pods_api, name, pod_uid).await {
                    Ok(true) => {
                        tracing::info!(pod = %name, "deleted");
                        self.events.record(
                            set.as_ref(),
                            Kind::Normal,
                            "SuccessfulDelete",
                            "Delete",
                            &format!("Deleted pod: {name}"),
                        );
                    }
                    Ok(false) => self.expectations.delete_failed(&uid, pod_uid),
                    Err(error) => {
                        self.expectations.delete_failed(&uid, pod_uid);
                        self.events.record(
                            set.as_ref(),
                            Kind::Warning,
                            "FailedDelete",
                            "Delete",
                            &format!("Error deleting: {error}"),
                        );
                        failure = Some(("FailedDelete", error.to_string()));
                    }
                }
            }
        }
        self.update_status(&set, plan.status, manage.then_some(failure.clone()))
            .await?;
        if let Some((_, message)) = failure {
            return Err(Error::Failed(message));
        }
        Ok(plan.recheck_after)
    }

    /// Whether the ReplicaSet, read afresh, is still the one cached and not being deleted:
    /// adopting for a ReplicaSet on its way out would keep pods alive.
    async fn can_adopt(&self, set: &ReplicaSet) -> Result<bool, Error> {
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            set.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let fresh = api
            .get_opt(set.metadata.name.as_deref().unwrap_or_default())
            .await?;
        Ok(fresh.is_some_and(|f| {
            f.metadata.uid == set.metadata.uid && f.metadata.deletion_timestamp.is_none()
        }))
    }

    /// Creates `count` pods in batches of 1, 2, 4, …, stopping at the first failure;
    /// returns that failure's reason and message.
    async fn create_pods(
        &self,
        set: &ReplicaSet,
        api: &Api<Pod>,
        count: usize,
    ) -> Option<(&'static str, String)> {
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let name = set.metadata.name.clone().unwrap_or_default();
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let prefix = format!("{name}-");
        let template = set
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let names: Vec<String> = (0..count).map(|_| generate_name(&prefix)).collect();
        self.expectations.expect(&uid, &names, &[]);
        let reference = pods::controller_reference(set);
        let mut batch = 1;
        let mut next = 0;
        let mut failure = None;
        while next < names.len() {
            let chunk = &names[next..(next + batch).min(names.len())];
            next += chunk.len();
            let creates = chunk.iter().map(|pod_name| {
                let mut pod =
                    pods::from_template(&template, &namespace, &prefix, reference.clone());
                pod.metadata.name = Some(pod_name.clone());
                async move { (pod_name, api.create(&PostParams::default(), &pod).await) }
            });
            for (pod_name, result) in futures::future::join_all(creates).await {
                if let Some(error) = pods::settle_create(
                    &self.events,
                    &self.expectations,
                    set,
                    &uid,
                    pod_name,
                    result,
                ) {
                    failure = Some(("FailedCreate", error));
                }
            }
            if failure.is_some() {
                for skipped in &names[next..] {
                    self.expectations.create_failed(&uid, skipped);
                }
                break;
            }
            batch *= 2;
        }
        failure
    }

    /// Writes the status if it changed. `failure` is `Some` when this pass managed replicas:
    /// `Some(None)` clears the ReplicaFailure condition, `Some(Some(..))` sets it.
    async fn update_status(
        &self,
        set: &ReplicaSet,
        mut status: ReplicaSetStatus,
        failure: Option<Option<(&'static str, String)>>,
    ) -> Result<(), Error> {
        let mut conditions = status.conditions.take().unwrap_or_default();
        match failure {
            Some(Some((reason, message))) => {
                let known = conditions.iter().any(|c| {
                    c.type_ == "ReplicaFailure"
                        && c.reason.as_deref() == Some(reason)
                        && c.message.as_deref() == Some(message.as_str())
                });
                if !known {
                    conditions.retain(|c| c.type_ != "ReplicaFailure");
                    conditions.push(ReplicaSetCondition {
                        type_: "ReplicaFailure".into(),
                        status: "True".into(),
                        reason: Some(reason.into()),
                        message: Some(message),
                        last_transition_time: Some(Time(jiff::Timestamp::now())),
                    });
                }
            }
            Some(None) => conditions.retain(|c| c.type_ != "ReplicaFailure"),
            None => {}
        }
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        if set.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<ReplicaSet> = Api::namespaced(
            self.client.clone(),
            set.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let mut body = json!({"status": status});
        // Merge patch: a condition list that became empty must be cleared, not left alone.
        if status.conditions.is_none() {
            body["status"]["conditions"] = serde_json::Value::Null;
        }
        unless_gone(
            api.patch_status(
                set.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(body),
            )
            .await,
        )
    }
}
