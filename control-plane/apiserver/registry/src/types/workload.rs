//! Workload controllers (Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs):
//! a selector that matches the pod template, replicas ≥ 0, a valid template, defaults.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::default;
use super::pod::{default_pod_spec, validate_pod_spec};
use crate::error::FieldError;
use crate::object::{Object, map_mut};
use crate::selector::LabelSelector;
use crate::strategy::{Strategy, normalize_as};

/// The workload kinds, for their different defaults and rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob.
    CronJob,
}

/// A workload type `T` of kind `kind`.
pub struct WorkloadStrategy<T> {
    kind: Kind,
    _type: PhantomData<fn() -> T>,
}

impl<T> WorkloadStrategy<T> {
    /// The strategy for `kind`.
    pub const fn new(kind: Kind) -> WorkloadStrategy<T> {
        WorkloadStrategy {
            kind,
            _type: PhantomData,
        }
    }

    /// The path of the pod template within the spec.
    fn template_path(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::CronJob => &["jobTemplate", "spec", "template"],
            _ => &["template"],
        }
    }
}

fn get_path<'a>(object: &'a Object, path: &[&str]) -> Option<&'a Object> {
    let mut current = object;
    for part in path {
        current = current.get(*part)?.as_object()?;
    }
    Some(current)
}

fn get_path_mut<'a>(object: &'a mut Object, path: &[&str]) -> Option<&'a mut Object> {
    let mut current = object;
    for part in path {
        current = current.get_mut(*part)?.as_object_mut()?;
    }
    Some(current)
}

impl<T: DeserializeOwned + Serialize + schemars::JsonSchema> Strategy for WorkloadStrategy<T> {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<T>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<T>())
    }

    fn prepare_for_create(&self, object: &mut Object) {
        self.defaults(object);
        if self.kind == Kind::Job {
            generate_job_selector(object);
        }
    }

    fn prepare_for_update(&self, new: &mut Object, _old: &Object) {
        self.defaults(new);
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let Some(spec) = object.get("spec").and_then(Value::as_object) else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errors = Vec::new();
        if let Some(replicas) = spec.get("replicas").and_then(Value::as_i64)
            && replicas < 0
        {
            errors.push(FieldError::invalid(
                "spec.replicas",
                replicas.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        if self.kind == Kind::StatefulSet
            && spec
                .get("volumeClaimTemplates")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty())
        {
            errors.push(FieldError::forbidden(
                "spec.volumeClaimTemplates",
                "persistent volume claims are not supported by this cluster yet (Basalt has no storage provisioner); use ephemeral volumes",
            ));
        }
        if self.kind == Kind::CronJob {
            errors.extend(validate_schedule(spec));
        }
        let template_path = format!("spec.{}", self.template_path().join("."));
        let template = get_path(spec, self.template_path());
        let selector = spec.get("selector").and_then(Value::as_object);
        // Jobs generate their selector unless they pick one; the others must give one that
        // matches the template.
        let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
        if !matches!(self.kind, Kind::CronJob) && (self.kind != Kind::Job || manual) {
            match selector {
                None => errors.push(FieldError::required("spec.selector", "")),
                Some(object) => {
                    errors.extend(super::scheduling::validate_label_selector_value(
                        &Value::Object(object.clone()),
                        "spec.selector",
                    ));
                    let selector = LabelSelector::from_object(object);
                    if selector.is_empty() {
                        errors.push(FieldError::invalid(
                            "spec.selector",
                            "{}",
                            format!(
                                "empty selector is invalid for {}",
                                format!("{:?}", self.kind).to_lowercase()
                            ),
                        ));
                    }
                    let labels = template.cloned().unwrap_or_default();
                    if !selector.matches(&labels) {
                        errors.push(FieldError::invalid(
                            format!("{template_path}.metadata.labels"),
                            template_labels(template),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
        }
        match template
            .and_then(|t| t.get("spec"))
            .and_then(Value::as_object)
        {
            Some(pod_spec) => {
                errors.extend(validate_pod_spec(
                    pod_spec,
                    &format!("{template_path}.spec"),
                ));
                let restart = pod_spec
                    .get("restartPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let allowed: &[&str] = match self.kind {
                    Kind::Job | Kind::CronJob => &["OnFailure", "Never"],
                    _ => &["Always"],
                };
                if !allowed.contains(&restart) {
                    errors.push(FieldError::not_supported(
                        format!("{template_path}.spec.restartPolicy"),
                        restart,
                        allowed,
                    ));
                }
            }
            None => errors.push(FieldError::required(format!("{template_path}.spec"), "")),
        }
        errors
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        let selector = |o: &Object| o.get("spec").and_then(|s| s.get("selector")).cloned();
        if self.kind != Kind::CronJob && selector(new) != selector(old) {
            errors.push(super::immutable("spec.selector"));
        }
        errors
    }
}

fn template_labels(template: Option<&Object>) -> String {
    let labels = template
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    labels
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

impl<T> WorkloadStrategy<T> {
    fn defaults(&self, object: &mut Object) {
        let kind = self.kind;
        let template_path = self.template_path();
        let spec = map_mut(object, "spec");
        if let Some(pod_spec) = get_path_mut(spec, template_path)
            .and_then(|t| t.get_mut("spec"))
            .and_then(Value::as_object_mut)
        {
            if matches!(kind, Kind::Job | Kind::CronJob) {
                // A job's pods must not restart forever; Kubernetes has no default here.
                default_pod_spec_keeping_restart(pod_spec);
            } else {
                default_pod_spec(pod_spec);
            }
        }
        match kind {
            Kind::Deployment => {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
            }
            Kind::ReplicaSet => default(spec, "replicas", json!(1)),
            Kind::StatefulSet => {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                );
                default(
                    spec,
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                );
            }
            Kind::DaemonSet => {
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
            }
            Kind::Job => {
                default(spec, "parallelism", json!(1));
                default(spec, "backoffLimit", json!(6));
                default(spec, "completionMode", json!("NonIndexed"));
                default(spec, "suspend", json!(false));
                default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
                if spec.get("completions").is_none() {
                    spec.insert("completions".into(), json!(1));
                }
            }
            Kind::CronJob => {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
            }
        }
    }
}

/// The label that ties a Job's pods to it by uid.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label that names a pod's Job.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// Unless the Job picks its own (`manualSelector`), it selects its pods by its uid, and its
/// template labels them so (kube's labels, and their legacy short forms).
/// A CronJob's schedule must parse as the controller will parse it (the `croner` crate,
/// IANA zones from `chrono-tz`), so a bad one is refused here rather than ignored later.
fn validate_schedule(spec: &Object) -> Vec<FieldError> {
    use std::str::FromStr;
    let mut errors = Vec::new();
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => errors.push(FieldError::required("spec.schedule", "")),
        Some(schedule) => {
            let trimmed = schedule.trim_start();
            if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
                errors.push(FieldError::invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            } else if let Err(why) = croner::Cron::from_str(schedule) {
                errors.push(FieldError::invalid(
                    "spec.schedule",
                    schedule,
                    format!("unparseable schedule: {why}"),
                ));
            }
        }
    }
    if let Some(zone) = spec.get("timeZone").and_then(Value::as_str)
        && chrono_tz::Tz::from_str(zone).is_err()
    {
        errors.push(FieldError::invalid(
            "spec.timeZone",
            zone,
            format!("unknown time zone {zone}"),
        ));
    }
    errors
}

fn generate_job_selector(job: &mut Object) {
    let meta = job.get("metadata");
    let field = |name| {
        meta.and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (uid, name) = (field("uid"), field("name"));
    let spec = map_mut(job, "spec");
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {JOB_CONTROLLER_UID: uid}}),
    );
    let labels = map_mut(map_mut(map_mut(spec, "template"), "metadata"), "labels");
    for (key, value) in [
        (JOB_CONTROLLER_UID, &uid),
        (JOB_NAME, &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels.insert(key.into(), json!(value));
    }
}

fn default_pod_spec_keeping_restart(spec: &mut Object) {
    let restart = spec.get("restartPolicy").cloned();
    default_pod_spec(spec);
    match restart {
        Some(policy) => spec.insert("restartPolicy".into(), policy),
        None => spec.remove("restartPolicy"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    #[test]
    fn cron_schedules_and_zones_must_parse() {
        let spec = |value: Value| value.as_object().cloned().unwrap_or_default();
        assert!(
            validate_schedule(&spec(
                json!({"schedule": "*/5 * * * *", "timeZone": "Europe/Berlin"})
            ))
            .is_empty()
        );
        assert!(validate_schedule(&spec(json!({"schedule": "@hourly"}))).is_empty());
        let found: Vec<String> = validate_schedule(&spec(
            json!({"schedule": "61 * * * *", "timeZone": "Mars/Olympus"}),
        ))
        .iter()
        .map(FieldError::message)
        .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0]
                .starts_with("spec.schedule: Invalid value: \"61 * * * *\": unparseable schedule")
        );
        assert_eq!(
            found[1],
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
        );
        assert_eq!(
            validate_schedule(&spec(json!({"schedule": "TZ=UTC 0 * * * *"})))[0].message(),
            "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        );
    }

    #[test]
    fn selector_must_match_template() {
        let strategy = WorkloadStrategy::<Deployment>::new(Kind::Deployment);
        let mut good = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
            .as_object().cloned().unwrap_or_default();
        strategy.prepare_for_create(&mut good);
        assert_eq!(good["spec"]["replicas"], 1);
        assert!(
            strategy.validate(&good).is_empty(),
            "{:?}",
            strategy.validate(&good)
        );
        let mut bad = good.clone();
        bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "api"});
        let errors = strategy.validate(&bad);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.template.metadata.labels");
        let mut moved = good.clone();
        moved["spec"]["selector"] = json!({"matchLabels": {"app": "web", "x": "y"}});
        moved["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
        assert_eq!(
            strategy.validate_update(&moved, &good)[0].field,
            "spec.selector"
        );
    }

    #[test]
    fn statefulsets_may_not_claim_volumes_yet() {
        use k8s_openapi::api::apps::v1::StatefulSet;
        let strategy = WorkloadStrategy::<StatefulSet>::new(Kind::StatefulSet);
        let mut set = json!({"metadata": {"name": "db"}, "spec": {
            "selector": {"matchLabels": {"app": "db"}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
            .as_object().cloned().unwrap_or_default();
        strategy.prepare_for_create(&mut set);
        let errors = strategy.validate(&set);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.volumeClaimTemplates");
    }

    #[test]
    fn jobs_select_their_pods_by_uid() {
        use k8s_openapi::api::batch::v1::Job;
        let strategy = WorkloadStrategy::<Job>::new(Kind::Job);
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}})
            .as_object().cloned().unwrap_or_default();
        strategy.prepare_for_create(&mut job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {JOB_CONTROLLER_UID: "u-1"}})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"][JOB_NAME],
            "pi"
        );
        assert_eq!(job["spec"]["completions"], 1);
        assert!(
            strategy.validate(&job).is_empty(),
            "{:?}",
            strategy.validate(&job)
        );
        let mut manual = job.clone();
        manual["spec"]["manualSelector"] = json!(true);
        manual["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
        assert_eq!(
            strategy.validate(&manual)[0].field,
            "spec.template.metadata.labels"
        );
    }
}
