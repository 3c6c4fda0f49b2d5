//! The Job rules, pure: which pods a Job needs created or deleted, how its finished pods are
//! counted exactly once, and when it has succeeded or failed.
//!
//! Counting follows kube's finalizer protocol: each pod carries
//! [`TRACKING_FINALIZER`]; a finished pod's uid is first written into
//! `status.uncountedTerminatedPods`, then its finalizer removed, and only once the
//! finalizer is gone (or the pod is) does the uid move into the `succeeded` / `failed`
//! counters. A pod is therefore never counted twice nor lost, even if it is deleted the
//! moment it finishes or the manager restarts midway.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pods;

/// Keeps a finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) that gives an Indexed Job's pod its index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The first wait before replacing a failed pod; it doubles with each failure.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest wait before replacing a failed pod.
const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// What to do for one Job.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create: their completion indexes (`None` for a NonIndexed Job).
    pub create: Vec<Option<i32>>,
    /// Active pods to delete, `(name, uid)`.
    pub delete: Vec<(String, String)>,
    /// Pods whose finalizer may go: their uid is in the status already written.
    pub release: Vec<String>,
    /// The status to write (before releasing anything).
    pub status: JobStatus,
    /// When to look again (a backoff or the deadline), if nothing else prompts it.
    pub recheck_after: Option<Duration>,
}

fn condition_true<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

fn set_condition(
    status: &mut JobStatus,
    kind: &str,
    state: &str,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == kind) {
        if existing.status != state {
            existing.status = state.into();
            existing.last_transition_time = Some(Time(now));
        }
        existing.reason = Some(reason.into());
        existing.message = Some(message.into());
        existing.last_probe_time = Some(Time(now));
        return;
    }
    conditions.push(JobCondition {
        type_: kind.into(),
        status: state.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// The pod's completion index, if it has a valid one.
pub fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

/// Parses `completedIndexes` ("0-2,5").
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<i32>(), last.parse::<i32>()) {
            set.extend(first..=last.min(first.saturating_add(1_000_000)));
        }
    }
    set
}

/// Writes indexes as `completedIndexes` does: ascending ranges, "0-2,5".
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// Failed, or deleted before it succeeded (a pod that will never report).
fn counts_as_failed(pod: &Pod) -> bool {
    let phase = pods::phase(pod);
    phase == "Failed" || (pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded")
}

/// When a failed pod stopped: its containers' finish times, else its last condition change,
/// else its creation.
fn failed_at(pod: &Pod) -> Option<jiff::Timestamp> {
    let status = pod.status.as_ref();
    let finished = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    finished
        .or_else(|| {
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
                .max()
        })
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How long to wait before replacing a pod after `failures` failures.
pub fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(failures - 1).unwrap_or(u32::MAX).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// The status with empty lists and strings left out, as the API server stores it, so a
/// status compares equal to what was written.
pub fn tidy(mut status: JobStatus) -> JobStatus {
    if let Some(uncounted) = status.uncounted_terminated_pods.as_mut() {
        uncounted.succeeded = uncounted.succeeded.take().filter(|l| !l.is_empty());
        uncounted.failed = uncounted.failed.take().filter(|l| !l.is_empty());
    }
    status.uncounted_terminated_pods = status
        .uncounted_terminated_pods
        .filter(|u| u.succeeded.is_some() || u.failed.is_some());
    status.completed_indexes = status.completed_indexes.filter(|c| !c.is_empty());
    status.conditions = status.conditions.filter(|c| !c.is_empty());
    status
}

/// Whether the Job has finished (Complete or Failed).
pub fn finished(job: &Job) -> Option<&JobCondition> {
    let status = job.status.as_ref()?;
    condition_true(status, "Complete").or_else(|| condition_true(status, "Failed"))
}

/// The plan for `job` whose pods are `pods`; `manage` is false while earlier creates and
/// deletes are not yet in the cache (then nothing is created or deleted for parallelism).
pub fn plan(job: &Job, pods: &[Arc<Pod>], manage: bool, now: jiff::Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let mut status = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
    let completions = spec.completions.filter(|c| *c >= 0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let mut plan = Plan::default();

    // Count finished pods, exactly once.
    let old = status.uncounted_terminated_pods.take().unwrap_or_default();
    let (old_succeeded, old_failed) = (
        old.succeeded.unwrap_or_default(),
        old.failed.unwrap_or_default(),
    );
    let by_uid: HashMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
        .collect();
    let recorded: HashSet<&str> = old_succeeded
        .iter()
        .chain(&old_failed)
        .map(String::as_str)
        .collect();
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or_default());
    let (mut uncounted_succeeded, mut uncounted_failed) = (Vec::new(), Vec::new());
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    for (list, uncounted, counter) in [
        (&old_succeeded, &mut uncounted_succeeded, &mut succeeded),
        (&old_failed, &mut uncounted_failed, &mut failed),
    ] {
        for uid in list {
            match by_uid.get(uid.as_str()) {
                Some(pod) if has_finalizer(pod) => {
                    plan.release
                        .push(pod.metadata.name.clone().unwrap_or_default());
                    uncounted.push(uid.clone());
                }
                _ => *counter += 1,
            }
        }
    }
    for pod in pods {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !has_finalizer(pod) || recorded.contains(uid) {
            continue;
        }
        if pods::phase(pod) == "Succeeded" {
            uncounted_succeeded.push(uid.to_owned());
            if let Some(index) = index_of(pod).filter(|_| indexed) {
                completed.insert(index);
            }
        } else if counts_as_failed(pod) {
            uncounted_failed.push(uid.to_owned());
        }
    }
    if indexed {
        completed.retain(|i| completions.is_none_or(|c| *i < c));
        succeeded = i32::try_from(completed.len()).unwrap_or(i32::MAX);
        status.completed_indexes = Some(format_indexes(&completed));
    }
    let succeeded_total = if indexed {
        succeeded
    } else {
        succeeded + i32::try_from(uncounted_succeeded.len()).unwrap_or(i32::MAX)
    };
    let failed_total = failed + i32::try_from(uncounted_failed.len()).unwrap_or(i32::MAX);
    let unsettled = !uncounted_succeeded.is_empty() || !uncounted_failed.is_empty();
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(uncounted_succeeded),
        failed: Some(uncounted_failed),
    });

    let mut active: Vec<&Arc<Pod>> = pods.iter().filter(|p| pods::is_active(p)).collect();
    status.terminating = Some(
        i32::try_from(
            pods.iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_some()
                        && !matches!(pods::phase(p), "Succeeded" | "Failed")
                })
                .count(),
        )
        .unwrap_or(i32::MAX),
    );
    let delete_all = |plan: &mut Plan, active: &[&Arc<Pod>]| {
        for pod in active {
            plan.delete.push((
                pod.metadata.name.clone().unwrap_or_default(),
                pod.metadata.uid.clone().unwrap_or_default(),
            ));
        }
    };

    if finished(job).is_some() {
        // Only the counting is left.
        status.active = Some(0);
        status.ready = Some(0);
        plan.status = tidy(status);
        return plan;
    }

    // Failure or success decided: stop the rest, then finish once nothing runs.
    let deadline = spec.active_deadline_seconds.and_then(|seconds| {
        let start = status.start_time.as_ref()?.0;
        start
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .ok()
    });
    let failure = if let Some(target) = condition_true(&status, "FailureTarget") {
        Some((
            target.reason.clone().unwrap_or_default(),
            target.message.clone().unwrap_or_default(),
        ))
    } else if failed_total > backoff_limit {
        Some((
            "BackoffLimitExceeded".to_owned(),
            "Job has reached the specified backoff limit".to_owned(),
        ))
    } else if deadline.is_some_and(|d| d <= now) {
        Some((
            "DeadlineExceeded".to_owned(),
            "Job was active longer than specified deadline".to_owned(),
        ))
    } else {
        None
    };
    let success = condition_true(&status, "SuccessCriteriaMet").is_some()
        || match completions {
            Some(c) => succeeded_total >= c,
            None => succeeded_total > 0 && active.is_empty(),
        };
    let ending = match (&failure, success) {
        (Some((reason, message)), _) => {
            Some(("FailureTarget", "Failed", reason.clone(), message.clone()))
        }
        (None, true) => Some((
            "SuccessCriteriaMet",
            "Complete",
            "CompletionsReached".to_owned(),
            "Reached expected number of succeeded pods".to_owned(),
        )),
        (None, false) => None,
    };
    if let Some((target, last, reason, message)) = ending {
        set_condition(&mut status, target, "True", &reason, &message, now);
        delete_all(&mut plan, &active);
        let still_running = pods.iter().any(|p| pods::is_active(p) || has_finalizer(p));
        if !still_running && !unsettled {
            set_condition(&mut status, last, "True", &reason, &message, now);
            if last == "Complete" {
                status.completion_time = Some(Time(now));
            }
        }
        status.active = Some(0);
        status.ready = Some(0);
        plan.status = tidy(status);
        return plan;
    }

    if spec.suspend == Some(true) {
        delete_all(&mut plan, &active);
        set_condition(
            &mut status,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now,
        );
        status.active = Some(0);
        status.ready = Some(0);
        plan.status = tidy(status);
        return plan;
    }
    if status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Suspended" && c.status == "True")
    {
        set_condition(
            &mut status,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
        status.start_time = None;
    }
    if status.start_time.is_none() {
        status.start_time = Some(Time(now));
    }
    if let Some(seconds) = spec.active_deadline_seconds {
        let start = status.start_time.as_ref().map_or(now, |t| t.0);
        let end = start
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(jiff::Timestamp::MAX);
        plan.recheck_after = Some(end.duration_since(now).unsigned_abs());
    }

    if manage {
        if active.len() > parallelism {
            active.sort_by(|a, b| pods::removal_order(a, b));
            let excess = active.len() - parallelism;
            delete_all(&mut plan, &active[..excess]);
            active.drain(..excess);
        }
        let wanted = if indexed {
            let running: HashSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            let pending: Vec<i32> = (0..completions.unwrap_or(0))
                .filter(|i| !completed.contains(i) && !running.contains(i))
                .collect();
            pending
                .into_iter()
                .take(parallelism.saturating_sub(active.len()))
                .map(Some)
                .collect()
        } else {
            let remaining = match completions {
                Some(c) => usize::try_from(c - succeeded_total).unwrap_or(0),
                None if succeeded_total > 0 => 0,
                None => parallelism,
            };
            vec![None; remaining.min(parallelism).saturating_sub(active.len())]
        };
        if !wanted.is_empty() {
            let last_failure = pods
                .iter()
                .filter(|p| counts_as_failed(p))
                .filter_map(|p| failed_at(p))
                .max();
            let wait = backoff(failed_total);
            let ready_at = last_failure.and_then(|t| {
                t.checked_add(jiff::SignedDuration::try_from(wait).ok()?)
                    .ok()
            });
            match ready_at {
                Some(at) if at > now => {
                    let wait = at.duration_since(now).unsigned_abs();
                    plan.recheck_after = Some(plan.recheck_after.map_or(wait, |r| r.min(wait)));
                }
                _ => plan.create = wanted,
            }
        }
    }
    status.active = Some(i32::try_from(active.len()).unwrap_or(i32::MAX));
    status.ready = Some(
        i32::try_from(active.iter().filter(|p| pods::is_ready(p)).count()).unwrap_or(i32::MAX),
    );
    plan.status = tidy(status);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn job(completions: Option<i32>, parallelism: i32, backoff_limit: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                uid: Some("job-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(backoff_limit),
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, phase: &str, tracked: bool) -> Arc<Pod> {
        let mut p = crate::pods::tests::pod(name, phase, Some("n1"), None);
        if tracked {
            p.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
        }
        p.metadata.creation_timestamp = Some(Time(at(0)));
        Arc::new(p)
    }

    fn with_status(mut job: Job, plan: &Plan) -> Job {
        job.status = Some(plan.status.clone());
        job
    }

    #[test]
    fn creates_up_to_parallelism_and_remaining_completions() {
        let j = job(Some(3), 2, 6);
        let p = plan(&j, &[], true, at(100));
        assert_eq!(p.create, vec![None, None]);
        assert_eq!(p.status.start_time, Some(Time(at(100))));
        let p = plan(
            &j,
            &[pod("a", "Running", true), pod("b", "Running", true)],
            false,
            at(100),
        );
        assert!(p.create.is_empty());
        assert_eq!(p.status.active, Some(2));
    }

    #[test]
    fn finished_pods_are_counted_once_through_the_finalizer() {
        let j = job(Some(2), 2, 6);
        let pods = [pod("a", "Succeeded", true), pod("b", "Running", true)];
        // First pass: recorded as uncounted, not released yet.
        let first = plan(&j, &pods, true, at(100));
        assert_eq!(
            first
                .status
                .uncounted_terminated_pods
                .as_ref()
                .and_then(|u| u.succeeded.clone()),
            Some(vec!["uid-a".to_owned()])
        );
        assert_eq!(first.status.succeeded, Some(0));
        assert!(first.release.is_empty());
        assert!(
            first.create.is_empty(),
            "one succeeded, one running: nothing more needed"
        );
        // Second pass: the uid is in the written status, so its finalizer may go.
        let j = with_status(j, &first);
        let second = plan(&j, &pods, true, at(101));
        assert_eq!(second.release, ["a"]);
        assert_eq!(second.status.succeeded, Some(0));
        // Third pass: finalizer gone, so the count moves.
        let released = [pod("a", "Succeeded", false), pod("b", "Running", true)];
        let j = with_status(j, &second);
        let third = plan(&j, &released, true, at(102));
        assert_eq!(third.status.succeeded, Some(1));
        assert_eq!(third.status.uncounted_terminated_pods, None);
        // A pass on a stale view counts it no more.
        let again = plan(&with_status(j, &third), &released, true, at(103));
        assert_eq!(again.status.succeeded, Some(1));
    }

    #[test]
    fn failures_back_off_then_exceed_the_limit() {
        let j = job(Some(1), 1, 1);
        let failed = pod("a", "Failed", true);
        let first = plan(&j, std::slice::from_ref(&failed), true, at(5));
        assert!(
            first.create.is_empty(),
            "10 s backoff after the first failure"
        );
        assert!(first.recheck_after.is_some());
        let later = plan(
            &with_status(j.clone(), &first),
            std::slice::from_ref(&failed),
            true,
            at(20),
        );
        assert_eq!(later.create, vec![None]);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), BACKOFF_MAX);

        let two = [failed, pod("b", "Failed", true)];
        let over = plan(&j, &two, true, at(100));
        let target = over
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget");
        assert_eq!(
            target.and_then(|c| c.reason.as_deref()),
            Some("BackoffLimitExceeded")
        );
        assert!(
            finished(&with_status(j.clone(), &over)).is_none(),
            "pods not yet counted"
        );
        // Once both are counted and released, the Job fails.
        let mut counted = j.clone();
        counted.status = Some(JobStatus {
            failed: Some(2),
            conditions: over.status.conditions.clone(),
            ..JobStatus::default()
        });
        let done = plan(
            &counted,
            &[pod("a", "Failed", false), pod("b", "Failed", false)],
            true,
            at(101),
        );
        let failed_condition = done
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed");
        assert_eq!(failed_condition.map(|c| c.status.as_str()), Some("True"));
    }

    #[test]
    fn success_stops_the_rest_and_completes() {
        let mut j = job(Some(1), 2, 6);
        j.status = Some(JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        });
        let p = plan(&j, &[pod("b", "Running", true)], true, at(50));
        assert_eq!(p.delete, vec![("b".to_owned(), "uid-b".to_owned())]);
        assert!(
            p.status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "SuccessCriteriaMet")
        );
        let done = plan(&with_status(j, &p), &[], true, at(51));
        assert!(
            done.status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        );
        assert_eq!(done.status.completion_time, Some(Time(at(51))));
    }

    #[test]
    fn indexed_jobs_fill_missing_indexes() {
        let mut j = job(Some(4), 2, 6);
        if let Some(spec) = j.spec.as_mut() {
            spec.completion_mode = Some("Indexed".into());
        }
        j.status = Some(JobStatus {
            completed_indexes: Some("0".into()),
            succeeded: Some(1),
            ..JobStatus::default()
        });
        let mut running = (*pod("x", "Running", true)).clone();
        running.metadata.annotations = Some([(COMPLETION_INDEX.to_owned(), "1".to_owned())].into());
        let p = plan(&j, &[Arc::new(running)], true, at(10));
        assert_eq!(p.create, vec![Some(2)]);
        assert_eq!(format_indexes(&parse_indexes("0-2,5,7-8")), "0-2,5,7-8");
        assert_eq!(format_indexes(&[1, 2, 3, 9].into_iter().collect()), "1-3,9");
    }

    #[test]
    fn deadlines_fail_the_job() {
        let mut j = job(Some(1), 1, 6);
        if let Some(spec) = j.spec.as_mut() {
            spec.active_deadline_seconds = Some(30);
        }
        let first = plan(&j, &[], true, at(0));
        assert_eq!(first.recheck_after, Some(Duration::from_secs(30)));
        let j = with_status(j, &first);
        let late = plan(&j, &[pod("a", "Running", true)], true, at(31));
        let target = late
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget");
        assert_eq!(
            target.and_then(|c| c.reason.as_deref()),
            Some("DeadlineExceeded")
        );
        assert_eq!(late.delete.len(), 1);
    }
}
