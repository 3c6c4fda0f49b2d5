//! The Job controller: runs a Job's pods to completion — `parallelism` at a time until
//! `completions` succeed (or, Indexed, one per index) — replaces failed pods after an
//! exponential backoff, and fails the Job past `backoffLimit` or `activeDeadlineSeconds`.
//! The rules, and the finalizer protocol that counts each finished pod exactly once, are in
//! [`plan`]; this module makes the API calls.
//!
//! Orphaned pods that match a Job's selector are not adopted: the selector is the Job's own
//! uid unless `manualSelector` is set.

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use self::plan::{COMPLETION_INDEX, TRACKING_FINALIZER};
use crate::expectations::{Expectations, generate_name};
use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The Job controller's shared state.
pub struct JobController {
    client: kube::Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    expectations: Expectations,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

fn job_of(pod: &Pod) -> Option<&str> {
    pods::controller_of(&pod.metadata)
        .filter(|r| r.kind == "Job" && r.api_version == "batch/v1")
        .map(|r| r.name.as_str())
}

impl JobController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        jobs: Arc<Informer<Job>>,
        pods: Arc<Informer<Pod>>,
        workers: usize,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let controller = Arc::new(JobController {
            events,
            client,
            jobs: jobs.clone(),
            pods: pods.clone(),
            expectations: Expectations::new(),
            queue: WorkQueue::new(),
        });
        let on_job = controller.clone();
        tokio::spawn(follow(jobs.subscribe(), move |change| match change {
            Change::Applied(job) | Change::Deleted(job) => on_job.queue.add(Key::of(job.as_ref())),
            Change::Relisted => on_job.enqueue_all(),
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
            if let Some(job) = on_pod
                .expectations
                .saw(&pod.metadata, deleted, "Job", "batch/v1")
            {
                on_pod.queue.add(job);
            }
        }));
        jobs.synced().await;
        pods.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run("job", controller.queue.clone(), workers, move |key| {
            worker.clone().reconcile(key)
        })
        .await
    }

    fn enqueue_all(&self) {
        for job in self.jobs.store().state() {
            self.queue.add(Key::of(job.as_ref()));
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let namespace = key.namespace.clone().unwrap_or_default();
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let Some(job) = self.jobs.store().get(&key.object_ref()) else {
            // The Job is gone: its pods must not be kept by a finalizer nobody will remove.
            let left = self
                .pods
                .in_namespace(&namespace)
                .into_iter()
                .filter(|p| job_of(p) == Some(key.name.as_str()));
            for pod in left {
                self.release(&pods_api, &pod).await?;
            }
            return Ok(None);
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Pod>> = self.pods.controlled_by(&namespace, &uid);
        let manage = self.expectations.satisfied(&uid);
        let plan = plan::plan(&job, &owned, manage, jiff::Timestamp::now());

        // The status first: a finished pod's uid must be written before its finalizer goes.
        let old = serde_json::to_value(plan::tidy(job.status.clone().unwrap_or_default()))
            .unwrap_or_default();
        let mut new = serde_json::to_value(&plan.status).unwrap_or_default();
        if old != new {
            clear_missing(&old, &mut new);
            let api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
            let patch = json!({
                "metadata": {"resourceVersion": job.metadata.resource_version},
                "status": new,
            });
            unless_gone(
                api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
            let mut ended = job.as_ref().clone();
            ended.status = Some(plan.status.clone());
            if plan::finished(&job).is_none()
                && let Some(end) = plan::finished(&ended)
            {
                let (kind, reason) = match end.type_.as_str() {
                    "Complete" => (events::Kind::Normal, "Completed".to_owned()),
                    _ => (
                        events::Kind::Warning,
                        end.reason.clone().unwrap_or_default(),
                    ),
                };
                let message = match kind {
                    events::Kind::Normal => "Job completed".to_owned(),
                    events::Kind::Warning => end.message.clone().unwrap_or_default(),
                };
                self.events
                    .record(job.as_ref(), kind, &reason, "Finish", &message);
            }
        }
        for name in &plan.release {
            if let Some(pod) = owned
                .iter()
                .find(|p| p.metadata.name.as_ref() == Some(name))
            {
                self.release(&pods_api, pod).await?;
            }
        }
        let mut failure = None;
        if !plan.delete.is_empty() {
            let uids: Vec<String> = plan.delete.iter().map(|(_, uid)| uid.clone()).collect();
            self.expectations.expect(&uid, &[], &uids);
            for (name, pod_uid) in &plan.delete {
                match pods::delete_if_same(&pods_api, name, pod_uid).await {
                    Ok(true) => tracing::info!(pod = %name, "deleted"),
                    Ok(false) => self.expectations.delete_failed(&uid, pod_uid),
                    Err(error) => {
                        self.expectations.delete_failed(&uid, pod_uid);
                        failure = Some(error.to_string());
                    }
                }
            }
        }
        if !plan.create.is_empty()
            && let Some(error) = self.create_pods(&job, &pods_api, &plan.create).await
        {
            failure = Some(error);
        }
        match failure {
            Some(message) => Err(Error::Failed(format!("job {key}: {message}"))),
            None => Ok(plan.recheck_after),
        }
    }

    /// Removes the tracking finalizer from `pod`.
    async fn release(&self, api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
        let Some(finalizers) = pod.metadata.finalizers.as_ref() else {
            return Ok(());
        };
        if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
            return Ok(());
        }
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != TRACKING_FINALIZER)
            .collect();
        // The resourceVersion guards against dropping a finalizer added meanwhile.
        let patch = json!({"metadata": {
            "resourceVersion": pod.metadata.resource_version,
            "finalizers": if kept.is_empty() { json!(null) } else { json!(kept) },
        }});
        unless_gone(
            api.patch(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await,
        )
    }

    /// Creates the pods for `indexes`; returns the first failure.
    async fn create_pods(
        &self,
        job: &Job,
        api: &Api<Pod>,
        indexes: &[Option<i32>],
    ) -> Option<String> {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        let namespace = job.metadata.namespace.clone().unwrap_or_default();
        let template = job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let prefixes: Vec<String> = indexes
            .iter()
            .map(|i| match i {
                Some(index) => format!("{name}-{index}-"),
                None => format!("{name}-"),
            })
            .collect();
        let names: Vec<String> = prefixes.iter().map(|p| generate_name(p)).collect();
        self.expectations.expect(&uid, &names, &[]);
        let reference = pods::controller_reference(job);
        let creates =
            indexes
                .iter()
                .zip(&prefixes)
                .zip(&names)
                .map(|((index, prefix), pod_name)| {
                    let mut pod =
                        pods::from_template(&template, &namespace, prefix, reference.clone());
                    pod.metadata.name = Some(pod_name.clone());
                    pod.metadata
                        .finalizers
                        .get_or_insert_with(Vec::new)
                        .push(TRACKING_FINALIZER.into());
                    if let Some(index) = index {
                        index_pod(&mut pod, &name, *index);
                    }
                    async move { (pod_name, api.create(&PostParams::default(), &pod).await) }
                });
        let mut failure = None;
        for (pod_name, result) in futures::future::join_all(creates).await {
            let settled = pods::settle_create(
                &self.events,
                &self.expectations,
                job,
                &uid,
                pod_name,
                result,
            );
            failure = settled.or(failure);
        }
        failure
    }
}

/// A merge patch leaves alone what it does not name: names what went away as null, in
/// nested objects too.
fn clear_missing(old: &serde_json::Value, new: &mut serde_json::Value) {
    let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) else {
        return;
    };
    for (key, was) in old {
        match new.get_mut(key) {
            Some(now) => clear_missing(was, now),
            None => {
                new.insert(key.clone(), serde_json::Value::Null);
            }
        }
    }
}

/// Gives an Indexed Job's pod its index: annotation and label, a stable hostname, and
/// `JOB_COMPLETION_INDEX` in every container's environment.
fn index_pod(pod: &mut Pod, job: &str, index: i32) {
    let text = index.to_string();
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX.into(), text.clone());
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX.into(), text);
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if spec.hostname.is_none() {
        spec.hostname = Some(format!("{job}-{index}"));
    }
    let env = EnvVar {
        name: "JOB_COMPLETION_INDEX".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..EnvVarSource::default()
        }),
    };
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container.env.get_or_insert_with(Vec::new).push(env.clone());
    }
}
