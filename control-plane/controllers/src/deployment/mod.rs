//! The Deployment controller: owns a ReplicaSet per pod template and moves replicas from
//! the old ones to the new one by the Deployment's strategy, keeping revisions for
//! `kubectl rollout history/undo` and the conditions `kubectl rollout status` reads. The
//! rule is in [`rollout`]; this module claims ReplicaSets and makes the API calls.

pub mod rollout;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{Selector, SelectorExt};
use rollout::Action;
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The Deployment controller's shared state.
pub struct DeploymentController {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

impl DeploymentController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        deployments: Arc<Informer<Deployment>>,
        sets: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
        workers: usize,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let controller = Arc::new(DeploymentController {
            events,
            client,
            deployments: deployments.clone(),
            sets: sets.clone(),
            pods: pods.clone(),
            queue: WorkQueue::new(),
        });
        let on_deployment = controller.clone();
        tokio::spawn(follow(
            deployments.subscribe(),
            move |change| match change {
                Change::Applied(d) => on_deployment.queue.add(Key::of(d.as_ref())),
                Change::Deleted(_) => {}
                Change::Relisted => on_deployment.enqueue_all(),
            },
        ));
        let on_set = controller.clone();
        tokio::spawn(follow(sets.subscribe(), move |change| match change {
            Change::Applied(set) | Change::Deleted(set) => on_set.set_changed(&set),
            Change::Relisted => on_set.enqueue_all(),
        }));
        let on_pod = controller.clone();
        tokio::spawn(follow(pods.subscribe(), move |change| {
            // Recreate waits for the old pods to be gone.
            if let Change::Deleted(pod) = change {
                on_pod.pod_deleted(&pod);
            }
        }));
        deployments.synced().await;
        sets.synced().await;
        pods.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run(
            "deployment",
            controller.queue.clone(),
            workers,
            move |key| worker.clone().reconcile(key),
        )
        .await
    }

    fn enqueue_all(&self) {
        for deployment in self.deployments.store().state() {
            self.queue.add(Key::of(deployment.as_ref()));
        }
    }

    fn set_changed(&self, set: &ReplicaSet) {
        let namespace = set.metadata.namespace.clone().unwrap_or_default();
        if let Some(controller) = pods::controller_of(&set.metadata) {
            if controller.kind == "Deployment" && controller.api_version == "apps/v1" {
                self.queue
                    .add(Key::namespaced(&namespace, &controller.name));
            }
            return;
        }
        let empty = Default::default();
        let labels = set.metadata.labels.as_ref().unwrap_or(&empty);
        for deployment in self.deployments.store().state() {
            if deployment.metadata.namespace.as_deref() == Some(namespace.as_str())
                && selects(&deployment, labels)
            {
                self.queue.add(Key::of(deployment.as_ref()));
            }
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        let Some(owner) = pods::controller_of(&pod.metadata) else {
            return;
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let Some(set) = self
            .sets
            .store()
            .get(&Key::namespaced(&namespace, &owner.name).object_ref())
        else {
            return;
        };
        self.set_changed(&set);
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(deployment) = self.deployments.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        let namespace = key.namespace.clone().unwrap_or_default();
        let uid = deployment.metadata.uid.clone().unwrap_or_default();
        let sets_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
        let reference = pods::controller_reference(deployment.as_ref());
        let empty = Default::default();
        let mut owned = Vec::new();
        for set in self.sets.in_namespace(&namespace) {
            let labels = set.metadata.labels.as_ref().unwrap_or(&empty);
            let matches = selects(&deployment, labels);
            let name = set.metadata.name.clone().unwrap_or_default();
            match pods::controller_of(&set.metadata) {
                Some(controller) if controller.uid == uid => {
                    if matches {
                        owned.push((*set).clone());
                    } else {
                        let patch = pods::release_patch(set.metadata.uid.as_ref(), &uid);
                        unless_gone(
                            sets_api
                                .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                                .await,
                        )?;
                    }
                }
                None if matches
                    && deployment.metadata.deletion_timestamp.is_none()
                    && set.metadata.deletion_timestamp.is_none() =>
                {
                    let patch = pods::adopt_patch(set.metadata.uid.as_ref(), &reference);
                    unless_gone(
                        sets_api
                            .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                            .await,
                    )?;
                    tracing::info!(replicaset = %name, "adopted");
                    // Seen again, owned, on its next event.
                    return Ok(None);
                }
                _ => {}
            }
        }
        let template = deployment.spec.as_ref().map(|s| &s.template);
        let old_uids: HashSet<String> = owned
            .iter()
            .filter(|s| {
                template.is_some_and(|t| {
                    !rollout::same_template(s.spec.as_ref().and_then(|s| s.template.as_ref()), t)
                })
            })
            .filter_map(|s| s.metadata.uid.clone())
            .collect();
        let old_pods_running = !old_uids.is_empty()
            && self
                .pods
                .store()
                .find(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && pods::controller_of(&p.metadata)
                            .is_some_and(|c| old_uids.contains(&c.uid))
                        && !matches!(pods::phase(p), "Succeeded" | "Failed")
                })
                .is_some();
        let plan = rollout::plan(
            &deployment,
            owned,
            old_pods_running,
            reference,
            jiff::Timestamp::now(),
        )
        .map_err(|e| Error::Invalid(format!("deployment {key}: {e}")))?;
        for action in &plan.actions {
            self.act(&deployment, &sets_api, action).await?;
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        let current_revision = deployment
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(rollout::REVISION));
        if let Some(revision) = &plan.revision
            && current_revision != Some(revision)
        {
            let patch = json!({"metadata": {"annotations": {rollout::REVISION: revision}}});
            unless_gone(
                api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
        }
        if deployment.status.as_ref() != Some(&plan.status) {
            let patch = json!({"status": plan.status});
            unless_gone(
                api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
        }
        Ok(plan.recheck_after)
    }

    async fn act(
        &self,
        deployment: &Deployment,
        api: &Api<ReplicaSet>,
        action: &Action,
    ) -> Result<(), Error> {
        match action {
            Action::Create(set) => {
                let name = set.metadata.name.clone().unwrap_or_default();
                match api.create(&PostParams::default(), set).await {
                    Ok(_) => {
                        tracing::info!(replicaset = %name, "created");
                        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        if replicas > 0 {
                            self.scaled(deployment, &name, 0, replicas);
                        }
                        Ok(())
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        self.collided(deployment, api, set).await
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Action::Update(set) => {
                let name = set.metadata.name.clone().unwrap_or_default();
                let replicas = set.spec.as_ref().and_then(|s| s.replicas);
                let patch = json!({
                    "metadata": {"resourceVersion": set.metadata.resource_version, "annotations": set.metadata.annotations},
                    "spec": {"replicas": replicas},
                });
                unless_gone(
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await,
                )?;
                tracing::info!(replicaset = %name, replicas, "scaled");
                let before = self
                    .sets
                    .store()
                    .get(&Key::of(set).object_ref())
                    .and_then(|s| s.spec.as_ref()?.replicas);
                if let (Some(before), Some(after)) = (before, replicas)
                    && before != after
                {
                    self.scaled(deployment, &name, before, after);
                }
                Ok(())
            }
            Action::Delete(name, uid) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(name, &params).await {
                    Ok(_) => {
                        tracing::info!(replicaset = %name, "deleted past the revision history limit");
                        Ok(())
                    }
                    Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    fn scaled(&self, deployment: &Deployment, set: &str, from: i32, to: i32) {
        let direction = if to > from { "up" } else { "down" };
        self.events.record(
            deployment,
            events::Kind::Normal,
            "ScalingReplicaSet",
            "Scaling",
            &format!("Scaled {direction} replica set {set} from {from} to {to}"),
        );
    }

    /// The new ReplicaSet's name is taken. If by this Deployment's own ReplicaSet for this
    /// template (a stale cache), fine; otherwise count a collision so the next hash differs.
    async fn collided(
        &self,
        deployment: &Deployment,
        api: &Api<ReplicaSet>,
        set: &ReplicaSet,
    ) -> Result<(), Error> {
        let name = set.metadata.name.clone().unwrap_or_default();
        if let Some(existing) = api.get_opt(&name).await? {
            let ours = pods::controller_of(&existing.metadata).map(|c| &c.uid)
                == deployment.metadata.uid.as_ref();
            let template = set.spec.as_ref().and_then(|s| s.template.as_ref());
            let same = template.is_some_and(|t| {
                rollout::same_template(existing.spec.as_ref().and_then(|s| s.template.as_ref()), t)
            });
            if ours && same {
                return Ok(());
            }
        }
        let collisions = deployment
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0)
            + 1;
        let deployments: Api<Deployment> = Api::namespaced(
            self.client.clone(),
            deployment.metadata.namespace.as_deref().unwrap_or_default(),
        );
        deployments
            .patch_status(
                deployment.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"collisionCount": collisions}})),
            )
            .await?;
        Err(Error::Failed(format!(
            "replicaset name {name} is taken; counted a hash collision"
        )))
    }
}

fn selects(deployment: &Deployment, labels: &std::collections::BTreeMap<String, String>) -> bool {
    deployment
        .spec
        .as_ref()
        .and_then(|s| Selector::try_from(s.selector.clone()).ok())
        .is_some_and(|s| !s.selects_all() && s.matches(labels))
}
