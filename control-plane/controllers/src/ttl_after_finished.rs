//! The TTL-after-finished controller: deletes a finished Job (and, through the garbage
//! collector, its pods) `ttlSecondsAfterFinished` after it completed or failed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};

use crate::informer::{Change, Informer, follow};
use crate::job::plan::finished;
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, unless_gone};

/// When `job` is due for deletion, if it has finished and has a TTL.
pub fn expires_at(job: &Job) -> Option<jiff::Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let condition = finished(job)?;
    let done = job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .or(condition.last_transition_time.as_ref())?
        .0;
    done.checked_add(jiff::SignedDuration::from_secs(i64::from(ttl.max(0))))
        .ok()
}

/// Runs until the process ends.
pub async fn run(client: kube::Client, jobs: Arc<Informer<Job>>) -> Result<(), Error> {
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    let on_job = queue.clone();
    let cache = jobs.clone();
    tokio::spawn(follow(jobs.subscribe(), move |change| match change {
        Change::Applied(job) => {
            if expires_at(&job).is_some() {
                on_job.add(Key::of(job.as_ref()));
            }
        }
        Change::Deleted(_) => {}
        Change::Relisted => {
            for job in cache.store().state() {
                on_job.add(Key::of(job.as_ref()));
            }
        }
    }));
    jobs.synced().await;
    for job in jobs.store().state() {
        queue.add(Key::of(job.as_ref()));
    }
    workers::run("ttl-after-finished", queue, 2, move |key| {
        let client = client.clone();
        let jobs = jobs.clone();
        async move {
            let Some(job) = jobs.store().get(&key.object_ref()) else {
                return Ok(None);
            };
            let Some(expiry) = expires_at(&job) else {
                return Ok(None);
            };
            let now = jiff::Timestamp::now();
            if expiry > now {
                return Ok(Some(expiry.duration_since(now).unsigned_abs()));
            }
            if job.metadata.deletion_timestamp.is_some() {
                return Ok(None);
            }
            let api: Api<Job> =
                Api::namespaced(client, key.namespace.as_deref().unwrap_or_default());
            // The uid and resourceVersion make sure it is the Job seen finished, unchanged.
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: job.metadata.uid.clone(),
                    resource_version: job.metadata.resource_version.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(&key.name, &params).await {
                Ok(_) => {
                    tracing::info!(job = %key, "deleted: finished longer ago than its TTL");
                    Ok(None)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Some(Duration::from_secs(1)))
                }
                Err(error) => unless_gone::<()>(Err(error)).map(|()| None),
            }
        }
    })
    .await
}
