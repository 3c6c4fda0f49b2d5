//! The CronJob controller: creates a Job from each CronJob's template at the times of its
//! schedule, honouring `concurrencyPolicy` (Allow, Forbid, Replace), `suspend` and
//! `startingDeadlineSeconds`, keeps `status.active` and the last schedule and success
//! times, and deletes finished Jobs beyond the history limits. A missed run (the manager
//! was down) is started late unless its starting deadline passed; of many missed runs only
//! the latest is started. Time arithmetic is in [`schedule`].

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::job::plan::finished;
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The annotation that records which run time a Job was made for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What to do about a CronJob's schedule now.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Nothing is due.
    Wait,
    /// The run at this time is due: start it.
    Start(jiff::Timestamp),
    /// The run at this time is due but may not start (a reason for the log).
    Skip(jiff::Timestamp, &'static str),
}

/// Whether a run is due for `cronjob` at `now`, with `active` of its Jobs still running.
pub fn decide(
    cronjob: &CronJob,
    schedule: &schedule::Schedule,
    active: usize,
    now: jiff::Timestamp,
) -> Decision {
    let Some(spec) = cronjob.spec.as_ref() else {
        return Decision::Wait;
    };
    let created = cronjob.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let last = cronjob
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    let Some(mut earliest) = last.or(created) else {
        return Decision::Wait;
    };
    if let Some(seconds) = spec.starting_deadline_seconds
        && let Ok(window) = now.checked_sub(jiff::SignedDuration::from_secs(seconds))
    {
        earliest = earliest.max(window);
    }
    let (Some(due), missed) = schedule.latest_between(earliest, now) else {
        return Decision::Wait;
    };
    if missed > 100 {
        tracing::warn!(missed, "too many missed start times; starting the latest");
    }
    if let Some(seconds) = spec.starting_deadline_seconds
        && due
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .is_ok_and(|d| d < now)
    {
        return Decision::Skip(due, "missed its starting deadline");
    }
    if spec.concurrency_policy.as_deref() == Some("Forbid") && active > 0 {
        return Decision::Skip(
            due,
            "a previous run is still active (concurrencyPolicy Forbid)",
        );
    }
    Decision::Start(due)
}

/// The Job a CronJob makes for the run at `at`: named after the run's minute, so a second
/// attempt for the same run finds the first.
pub fn job_for(cronjob: &CronJob, at: jiff::Timestamp) -> Job {
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let name = format!(
        "{}-{}",
        cronjob.metadata.name.as_deref().unwrap_or_default(),
        at.as_second().div_euclid(60)
    );
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), at.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: cronjob.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![pods::controller_reference(cronjob)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn started(job: &Job) -> Option<jiff::Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(job.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// The finished Jobs beyond the history limits, oldest first.
pub fn expired_jobs<'a>(cronjob: &CronJob, jobs: &'a [Arc<Job>]) -> Vec<&'a Job> {
    let spec = cronjob.spec.as_ref();
    let keep_succeeded = spec
        .and_then(|s| s.successful_jobs_history_limit)
        .unwrap_or(3);
    let keep_failed = spec.and_then(|s| s.failed_jobs_history_limit).unwrap_or(1);
    let mut expired = Vec::new();
    for (kind, keep) in [("Complete", keep_succeeded), ("Failed", keep_failed)] {
        let mut done: Vec<&Job> = jobs
            .iter()
            .map(Arc::as_ref)
            .filter(|j| finished(j).is_some_and(|c| c.type_ == kind))
            .collect();
        done.sort_by_key(|j| started(j));
        let excess = done
            .len()
            .saturating_sub(usize::try_from(keep.max(0)).unwrap_or(0));
        expired.extend(done.into_iter().take(excess));
    }
    expired
}

/// The CronJob controller's shared state.
pub struct CronJobController {
    client: kube::Client,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

impl CronJobController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        cronjobs: Arc<Informer<CronJob>>,
        jobs: Arc<Informer<Job>>,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let controller = Arc::new(CronJobController {
            events,
            client,
            cronjobs: cronjobs.clone(),
            jobs: jobs.clone(),
            queue: WorkQueue::new(),
        });
        let on_cronjob = controller.clone();
        tokio::spawn(follow(cronjobs.subscribe(), move |change| match change {
            Change::Applied(c) => on_cronjob.queue.add(Key::of(c.as_ref())),
            Change::Deleted(_) => {}
            Change::Relisted => on_cronjob.enqueue_all(),
        }));
        let on_job = controller.clone();
        tokio::spawn(follow(jobs.subscribe(), move |change| match change {
            Change::Applied(job) | Change::Deleted(job) => {
                let owner = pods::controller_of(&job.metadata)
                    .filter(|r| r.kind == "CronJob" && r.api_version == "batch/v1");
                if let (Some(owner), Some(namespace)) = (owner, &job.metadata.namespace) {
                    on_job.queue.add(Key::namespaced(namespace, &owner.name));
                }
            }
            Change::Relisted => on_job.enqueue_all(),
        }));
        cronjobs.synced().await;
        jobs.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run("cronjob", controller.queue.clone(), 3, move |key| {
            worker.clone().reconcile(key)
        })
        .await
    }

    fn enqueue_all(&self) {
        for cronjob in self.cronjobs.store().state() {
            self.queue.add(Key::of(cronjob.as_ref()));
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(cronjob) = self.cronjobs.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        let namespace = key.namespace.clone().unwrap_or_default();
        let uid = cronjob.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Job>> = self.jobs.controlled_by(&namespace, &uid);
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), &namespace);
        let background = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        for job in expired_jobs(&cronjob, &owned) {
            let name = job.metadata.name.as_deref().unwrap_or_default();
            unless_gone(jobs_api.delete(name, &background).await)?;
            self.events.record(
                cronjob.as_ref(),
                events::Kind::Normal,
                "SuccessfulDelete",
                "Delete",
                &format!("Deleted job {name}"),
            );
            tracing::info!(job = %name, "deleted: beyond the history limit");
        }
        let mut active: Vec<&Arc<Job>> = owned
            .iter()
            .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .collect();
        let mut last_schedule = cronjob
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.clone());
        let spec = cronjob.spec.clone().unwrap_or_default();
        let schedule = schedule::Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
            .map_err(|e| Error::Invalid(format!("cronjob {key}: spec.schedule: {e}")));
        let now = jiff::Timestamp::now();
        let mut recheck = None;
        let mut created = None;
        if let Ok(schedule) = &schedule
            && spec.suspend != Some(true)
            && cronjob.metadata.deletion_timestamp.is_none()
        {
            match decide(&cronjob, schedule, active.len(), now) {
                Decision::Wait => {}
                Decision::Skip(at, why) => {
                    tracing::info!(cronjob = %key, %at, why, "run skipped");
                    self.events.record(
                        cronjob.as_ref(),
                        events::Kind::Warning,
                        "MissSchedule",
                        "Skip",
                        &format!("Skipped the run scheduled at {at}: {why}"),
                    );
                    last_schedule = Some(Time(at));
                }
                Decision::Start(at) => {
                    if spec.concurrency_policy.as_deref() == Some("Replace") {
                        for job in active.drain(..) {
                            let name = job.metadata.name.as_deref().unwrap_or_default();
                            unless_gone(jobs_api.delete(name, &background).await)?;
                            tracing::info!(job = %name, "deleted: replaced by a new run");
                        }
                    }
                    let job = job_for(&cronjob, at);
                    match jobs_api.create(&PostParams::default(), &job).await {
                        Ok(job) => {
                            tracing::info!(cronjob = %key, job = ?job.metadata.name, %at, "run started");
                            let name = job.metadata.name.as_deref().unwrap_or_default();
                            self.events.record(
                                cronjob.as_ref(),
                                events::Kind::Normal,
                                "SuccessfulCreate",
                                "Create",
                                &format!("Created job {name}"),
                            );
                            created = Some(job);
                        }
                        // This run's Job exists already: an earlier attempt made it.
                        Err(kube::Error::Api(status)) if status.code == 409 => {}
                        Err(error) => return Err(error.into()),
                    }
                    last_schedule = Some(Time(at));
                }
            }
            recheck = schedule
                .next_after(now)
                .map(|next| next.duration_since(now).unsigned_abs() + Duration::from_millis(100));
        }
        self.update_status(&cronjob, &active, created.as_ref(), &owned, last_schedule)
            .await?;
        schedule?;
        Ok(recheck)
    }

    async fn update_status(
        &self,
        cronjob: &CronJob,
        active: &[&Arc<Job>],
        created: Option<&Job>,
        owned: &[Arc<Job>],
        last_schedule: Option<Time>,
    ) -> Result<(), Error> {
        let reference = |job: &Job| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: job.metadata.name.clone(),
            namespace: job.metadata.namespace.clone(),
            uid: job.metadata.uid.clone(),
            resource_version: job.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let mut references: Vec<ObjectReference> = active.iter().map(|j| reference(j)).collect();
        if let Some(job) = created {
            references.push(reference(job));
        }
        let last_success = owned
            .iter()
            .filter(|j| finished(j).is_some_and(|c| c.type_ == "Complete"))
            .filter_map(|j| j.status.as_ref()?.completion_time.clone())
            .max_by_key(|t| t.0)
            .or_else(|| cronjob.status.as_ref()?.last_successful_time.clone());
        let old = cronjob.status.clone().unwrap_or_default();
        let names = |refs: &[ObjectReference]| -> Vec<Option<String>> {
            refs.iter().map(|r| r.uid.clone()).collect()
        };
        if names(old.active.as_deref().unwrap_or_default()) == names(&references)
            && old.last_schedule_time == last_schedule
            && old.last_successful_time == last_success
        {
            return Ok(());
        }
        let api: Api<CronJob> = Api::namespaced(
            self.client.clone(),
            cronjob.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"status": {
            "active": if references.is_empty() { json!(null) } else { json!(references) },
            "lastScheduleTime": last_schedule,
            "lastSuccessfulTime": last_success,
        }});
        unless_gone(
            api.patch_status(
                cronjob.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn cronjob(policy: &str, deadline: Option<i64>, last: Option<&str>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("backup".into()),
                namespace: Some("default".into()),
                uid: Some("cj-uid".into()),
                creation_timestamp: Some(Time(at("2026-01-01T10:00:30Z"))),
                ..ObjectMeta::default()
            },
            spec: Some(CronJobSpec {
                schedule: "*/5 * * * *".into(),
                concurrency_policy: Some(policy.into()),
                starting_deadline_seconds: deadline,
                ..CronJobSpec::default()
            }),
            status: Some(CronJobStatus {
                last_schedule_time: last.map(|l| Time(at(l))),
                ..CronJobStatus::default()
            }),
        }
    }

    #[test]
    fn runs_are_due_at_schedule_times() {
        let every_five = schedule::Schedule::parse("*/5 * * * *", None).unwrap();
        let c = cronjob("Allow", None, None);
        assert_eq!(
            decide(&c, &every_five, 0, at("2026-01-01T10:04:00Z")),
            Decision::Wait
        );
        assert_eq!(
            decide(&c, &every_five, 5, at("2026-01-01T10:05:10Z")),
            Decision::Start(at("2026-01-01T10:05:00Z"))
        );
        let ran = cronjob("Allow", None, Some("2026-01-01T10:05:00Z"));
        assert_eq!(
            decide(&ran, &every_five, 0, at("2026-01-01T10:09:00Z")),
            Decision::Wait
        );
        let forbid = cronjob("Forbid", None, Some("2026-01-01T10:05:00Z"));
        assert!(matches!(
            decide(&forbid, &every_five, 1, at("2026-01-01T10:10:01Z")),
            Decision::Skip(..)
        ));
        let late = cronjob("Allow", Some(30), Some("2026-01-01T10:05:00Z"));
        assert_eq!(
            decide(&late, &every_five, 0, at("2026-01-01T10:11:00Z")),
            Decision::Wait,
            "the 10:10 run is past its 30 s deadline and outside the window"
        );
        assert_eq!(
            decide(&late, &every_five, 0, at("2026-01-01T10:10:20Z")),
            Decision::Start(at("2026-01-01T10:10:00Z"))
        );
    }

    #[test]
    fn jobs_are_named_for_their_run() {
        let job = job_for(&cronjob("Allow", None, None), at("2026-01-01T10:05:00Z"));
        assert_eq!(job.metadata.name.as_deref(), Some("backup-29454365"));
        assert_eq!(
            job.metadata
                .annotations
                .and_then(|a| a.get(SCHEDULED_TIMESTAMP).cloned()),
            Some("2026-01-01T10:05:00Z".into())
        );
    }
}
