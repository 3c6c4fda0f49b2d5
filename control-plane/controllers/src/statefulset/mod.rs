//! The StatefulSet controller: keeps `<set>-0` … `<set>-(n-1)` running with stable names
//! and hostnames (under the set's governing Service), by the ordering rules in [`plan`],
//! and rolls template changes out through ControllerRevisions so a partitioned update can
//! keep lower ordinals on the old template. Orphaned pods named as its members and picked by
//! its selector are adopted ([`crate::adoption`]). Volume claim templates are refused by the
//! API server until Basalt has storage.

pub mod plan;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::adoption;
use crate::deployment::rollout::template_hash;
use crate::expectations::Expectations;
use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::revisions::{self, REVISION_HASH};
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The label with a StatefulSet pod's own name (for a Service per pod).
pub const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// The label with a StatefulSet pod's ordinal.
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// The StatefulSet controller's shared state.
pub struct StatefulSetController {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    expectations: Expectations,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

impl StatefulSetController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        pods: Arc<Informer<Pod>>,
        revisions: Arc<Informer<ControllerRevision>>,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let sets = Informer::<StatefulSet>::start(Api::all(client.clone()));
        let controller = Arc::new(StatefulSetController {
            events,
            client,
            sets: sets.clone(),
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
                    .saw(&pod.metadata, deleted, "StatefulSet", "apps/v1")
            {
                on_pod.queue.add(set);
            } else if !deleted {
                for set in adoption::candidates(&on_pod.sets, &pod, |s: &StatefulSet| {
                    s.spec.as_ref().map(|s| &s.selector)
                }) {
                    on_pod.queue.add(set);
                }
            }
        }));
        sets.synced().await;
        pods.synced().await;
        revisions.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run("statefulset", controller.queue.clone(), 3, move |key| {
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
        let update = template_hash(&spec.template, collisions);
        let prefix = format!("{}-", key.name);
        let current = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref())
            .and_then(|r| r.strip_prefix(&prefix))
            .unwrap_or(&update)
            .to_owned();
        let in_namespace = self.pods.in_namespace(&namespace);
        let claim = adoption::claim(&uid, &spec.selector, &in_namespace, |pod| {
            plan::ordinal_of(&key.name, pod).is_some()
        });
        if !claim.is_empty() && adoption::carry_out(&self.client, set.as_ref(), claim).await? {
            // The pods' own changes bring the set back with its members counted.
            return Ok(None);
        }
        let owned: Vec<Arc<Pod>> = self.pods.controlled_by(&namespace, &uid);
        let in_use: HashSet<String> = owned
            .iter()
            .filter_map(|p| revisions::hash_of(&p.metadata).map(str::to_owned))
            .chain(std::iter::once(current.clone()))
            .collect();
        let limit = spec.revision_history_limit.unwrap_or(10);
        revisions::keep(
            &self.client,
            &self.revisions,
            set.as_ref(),
            &spec.template,
            &update,
            &in_use,
            limit,
        )
        .await?;
        let manage = self.expectations.satisfied(&uid);
        let plan = plan::plan(
            &set,
            &current,
            &update,
            &owned,
            manage,
            jiff::Timestamp::now(),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut failure = None;
        for (name, pod_uid) in &plan.delete {
            self.expectations
                .expect(&uid, &[], std::slice::from_ref(pod_uid));
            match pods::delete_if_same(&api, name, pod_uid).await {
                Ok(true) => {
                    tracing::info!(pod = %name, "deleted");
                    self.events.record(
                        set.as_ref(),
                        events::Kind::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        &format!("delete Pod {name} in StatefulSet {} successful", key.name),
                    );
                }
                Ok(false) => self.expectations.delete_failed(&uid, pod_uid),
                Err(error) => {
                    self.expectations.delete_failed(&uid, pod_uid);
                    failure = Some(error.to_string());
                }
            }
        }
        if !plan.create.is_empty() {
            let old = revisions::owned(&self.revisions, &namespace, &uid)
                .iter()
                .find(|r| revisions::hash_of(&r.metadata) == Some(current.as_str()))
                .and_then(|r| revisions::template_of(r));
            for (ordinal, updated) in &plan.create {
                let (template, hash) = match (&old, updated) {
                    (Some(old), false) => (old, current.as_str()),
                    _ => (&spec.template, update.as_str()),
                };
                if let Err(error) = self.create_pod(&set, template, hash, *ordinal, &api).await {
                    failure = Some(error);
                    break;
                }
            }
        }
        if set.status.as_ref() != Some(&plan.status) {
            let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &namespace);
            unless_gone(
                sets.patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": plan.status})),
                )
                .await,
            )?;
        }
        match failure {
            Some(message) => Err(Error::Failed(format!("statefulset {key}: {message}"))),
            None => Ok(None),
        }
    }

    async fn create_pod(
        &self,
        set: &StatefulSet,
        template: &PodTemplateSpec,
        hash: &str,
        ordinal: i32,
        api: &Api<Pod>,
    ) -> Result<(), String> {
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let name = format!("{set_name}-{ordinal}");
        let mut pod =
            pods::from_template(template, &namespace, "", pods::controller_reference(set));
        pod.metadata.generate_name = None;
        pod.metadata.name = Some(name.clone());
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(REVISION_HASH.into(), hash.into());
        labels.insert(POD_NAME.into(), name.clone());
        labels.insert(POD_INDEX.into(), ordinal.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(name.clone());
            spec.subdomain = set
                .spec
                .as_ref()
                .and_then(|s| s.service_name.clone())
                .filter(|s| !s.is_empty());
        }
        self.expectations
            .expect(&uid, std::slice::from_ref(&name), &[]);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::info!(pod = %name, "created");
                self.events.record(
                    set,
                    events::Kind::Normal,
                    "SuccessfulCreate",
                    "Create",
                    &format!("create Pod {name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            Err(error) => {
                self.expectations.create_failed(&uid, &name);
                match error {
                    // Still there from before (terminating): the next pass tries again.
                    kube::Error::Api(status) if status.code == 409 => Ok(()),
                    error => Err(error.to_string()),
                }
            }
        }
    }
}
