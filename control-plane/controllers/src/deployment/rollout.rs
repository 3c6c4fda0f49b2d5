//! The Deployment rule, pure: from a Deployment and the ReplicaSets it owns, the
//! ReplicaSets to create, scale or delete and the status to report — the rolling update
//! (within maxSurge and maxUnavailable), Recreate, proportional scaling while a rollout is
//! under way, revision history and the Available and Progressing conditions.
//!
//! Decisions are applied to the in-memory sets as they are made, so later steps of one pass
//! see earlier ones, as kube-controller-manager's sequence of calls does.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The revision a ReplicaSet (and its Deployment) carries.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet served (a rollback reuses it).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the ReplicaSets of one Deployment apart.
pub const TEMPLATE_HASH: &str = "pod-template-hash";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One change to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet.
    Create(ReplicaSet),
    /// Set this ReplicaSet's replicas and annotations (its resourceVersion guards the write).
    Update(ReplicaSet),
    /// Delete the ReplicaSet (name, uid): past the revision history limit.
    Delete(String, String),
}

/// What to do for one Deployment.
#[derive(Debug, Default)]
pub struct Plan {
    /// The changes, in order.
    pub actions: Vec<Action>,
    /// The revision the Deployment should carry, if it changes.
    pub revision: Option<String>,
    /// The status to report.
    pub status: DeploymentStatus,
    /// When to look again without an event (the progress deadline).
    pub recheck_after: Option<Duration>,
}

/// Why a Deployment cannot be acted on.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A field holds something the rule cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

struct Sets {
    new: Option<usize>,
    all: Vec<ReplicaSet>,
    changed: Vec<bool>,
}

impl Sets {
    fn replicas(&self, i: usize) -> i32 {
        spec_replicas(&self.all[i])
    }
    fn old(&self) -> Vec<usize> {
        let mut old: Vec<usize> = (0..self.all.len())
            .filter(|i| Some(*i) != self.new)
            .collect();
        old.sort_by_key(|i| created(&self.all[*i]));
        old
    }
    fn total(&self) -> i32 {
        (0..self.all.len()).map(|i| self.replicas(i)).sum()
    }
    fn scale(&mut self, i: usize, replicas: i32, desired: i32, max: i32) {
        let set = &mut self.all[i];
        let current = spec_replicas(set);
        let annotations = set.metadata.annotations.get_or_insert_with(BTreeMap::new);
        let desired = desired.to_string();
        let max = max.to_string();
        let before = (
            current,
            annotations.get(DESIRED_REPLICAS).cloned(),
            annotations.get(MAX_REPLICAS).cloned(),
        );
        annotations.insert(DESIRED_REPLICAS.into(), desired.clone());
        annotations.insert(MAX_REPLICAS.into(), max.clone());
        set.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(replicas);
        if before != (replicas, Some(desired), Some(max)) {
            self.changed[i] = true;
        }
    }
}

fn spec_replicas(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn created(set: &ReplicaSet) -> (Option<jiff::Timestamp>, Option<String>) {
    (
        set.metadata.creation_timestamp.as_ref().map(|t| t.0),
        set.metadata.name.clone(),
    )
}

fn status_of(set: &ReplicaSet) -> (i32, i32, i32) {
    let status = set.status.clone().unwrap_or_default();
    (
        status.replicas,
        status.ready_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    )
}

/// A ReplicaSet's revision (0 when unset or unreadable).
pub fn revision(set: &ReplicaSet) -> i64 {
    set.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Whether a ReplicaSet's pod template is the Deployment's, its hash label aside.
pub fn same_template(set_template: Option<&PodTemplateSpec>, template: &PodTemplateSpec) -> bool {
    let Some(set_template) = set_template else {
        return false;
    };
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(TEMPLATE_HASH);
        }
        t
    };
    strip(set_template) == strip(template)
}

/// The hash naming a template's ReplicaSet: FNV-1a over the template's JSON and the
/// collision count, spelled in the alphabet Kubernetes uses for generated names.
pub fn template_hash(template: &PodTemplateSpec, collisions: i32) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&json);
    if collisions > 0 {
        feed(&collisions.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

/// Resolves maxSurge and maxUnavailable against `replicas` as Kubernetes does: a percentage
/// of surge rounds up, of unavailability down; both zero means one may be unavailable.
pub fn surge_and_unavailable(deployment: &Deployment) -> Result<(i32, i32), RolloutError> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    // A missing strategy is RollingUpdate (the API server defaults it so).
    let strategy = spec.strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return Ok((0, 0));
    }
    let rolling = strategy.rolling_update.unwrap_or_default();
    let default = IntOrString::String("25%".into());
    let surge = scaled(
        rolling.max_surge.as_ref().unwrap_or(&default),
        replicas,
        true,
        "spec.strategy.rollingUpdate.maxSurge",
    )?;
    let unavailable = scaled(
        rolling.max_unavailable.as_ref().unwrap_or(&default),
        replicas,
        false,
        "spec.strategy.rollingUpdate.maxUnavailable",
    )?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable.min(replicas)))
}

fn scaled(
    value: &IntOrString,
    total: i32,
    round_up: bool,
    field: &'static str,
) -> Result<i32, RolloutError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| RolloutError::Invalid {
                    field,
                    reason: format!("{text:?} is not an integer or a percentage"),
                })?;
            let product = percent * i64::from(total);
            let value = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// Plans one pass for `deployment` over the ReplicaSets it owns. `old_pods_running` says
/// whether pods of its old ReplicaSets still run (Recreate waits for them).
pub fn plan(
    deployment: &Deployment,
    owned: Vec<ReplicaSet>,
    old_pods_running: bool,
    owner: OwnerReference,
    now: jiff::Timestamp,
) -> Result<Plan, RolloutError> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let (surge, unavailable) = surge_and_unavailable(deployment)?;
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let mut new = None;
    for (i, set) in owned.iter().enumerate() {
        let template = set.spec.as_ref().and_then(|s| s.template.as_ref());
        if same_template(template, &spec.template)
            && new.is_none_or(|n: usize| created(set) < created(&owned[n]))
        {
            new = Some(i);
        }
    }
    let changed = vec![false; owned.len()];
    let mut sets = Sets {
        new,
        all: owned,
        changed,
    };
    let mut plan = Plan::default();
    let paused = spec.paused.unwrap_or(false);
    let max_old_revision = sets
        .old()
        .iter()
        .map(|i| revision(&sets.all[*i]))
        .max()
        .unwrap_or(0);
    let mut created_new = false;

    if deployment.metadata.deletion_timestamp.is_none() {
        let scaling = (0..sets.all.len()).any(|i| {
            sets.replicas(i) > 0
                && sets.all[i]
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DESIRED_REPLICAS))
                    .is_some_and(|d| d != &replicas.to_string())
        });
        if paused || scaling {
            scale(&mut sets, replicas, surge, recreate);
        } else {
            // The new ReplicaSet: found (a rollback reuses an old one under a new revision)
            // or made.
            let next_revision = (max_old_revision + 1).to_string();
            match sets.new {
                Some(i) => {
                    let reused = revision(&sets.all[i]) <= max_old_revision;
                    let annotations = sets.all[i]
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new);
                    let current = annotations.get(REVISION).cloned();
                    if current.as_deref() != Some(next_revision.as_str()) && reused {
                        if let Some(previous) = current {
                            let history = annotations
                                .get(REVISION_HISTORY)
                                .map(|h| format!("{h},{previous}"))
                                .unwrap_or(previous);
                            annotations.insert(REVISION_HISTORY.into(), history);
                        }
                        annotations.insert(REVISION.into(), next_revision.clone());
                        sets.changed[i] = true;
                    }
                }
                None => {
                    let collisions = deployment
                        .status
                        .as_ref()
                        .and_then(|s| s.collision_count)
                        .unwrap_or(0);
                    let set = new_replica_set(
                        deployment,
                        &spec.template,
                        &next_revision,
                        collisions,
                        owner,
                    );
                    sets.all.push(set);
                    sets.changed.push(false);
                    sets.new = Some(sets.all.len() - 1);
                    created_new = true;
                }
            }
            if let Some(i) = sets.new {
                plan.revision = sets.all[i]
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REVISION))
                    .cloned();
            }
            if recreate {
                rollout_recreate(&mut sets, replicas, old_pods_running);
            } else {
                rollout_rolling(&mut sets, replicas, surge, unavailable);
            }
        }
    }

    let status = status(deployment, &sets, replicas, unavailable);
    let complete = is_complete(deployment, &status, replicas);
    if complete && !paused {
        cleanup(&mut plan, &sets, spec.revision_history_limit.unwrap_or(10));
    }
    let new_name = sets
        .new
        .and_then(|i| sets.all[i].metadata.name.clone())
        .unwrap_or_default();
    let (status, recheck) = with_conditions(
        deployment,
        status,
        &new_name,
        created_new,
        complete,
        paused,
        now,
    );
    plan.status = status;
    plan.recheck_after = recheck;
    for (i, set) in sets.all.into_iter().enumerate() {
        if created_new && Some(i) == sets.new {
            plan.actions.insert(0, Action::Create(set));
        } else if sets.changed.get(i).copied().unwrap_or(false) {
            plan.actions.push(Action::Update(set));
        }
    }
    Ok(plan)
}

fn new_replica_set(
    deployment: &Deployment,
    template: &PodTemplateSpec,
    revision: &str,
    collisions: i32,
    owner: OwnerReference,
) -> ReplicaSet {
    let hash = template_hash(template, collisions);
    let name = format!(
        "{}-{hash}",
        deployment.metadata.name.as_deref().unwrap_or_default()
    );
    let spec = deployment.spec.clone().unwrap_or_default();
    let mut template = template.clone();
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH.into(), hash.clone());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_HASH.into(), hash);
    let mut annotations: BTreeMap<String, String> = deployment
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != LAST_APPLIED && !k.starts_with("deployment.kubernetes.io/"))
        .collect();
    annotations.insert(REVISION.into(), revision.into());
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: deployment.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// Rolling update: grow the new ReplicaSet within maxSurge, shrink old ones within
/// maxUnavailable, unhealthy old replicas first.
fn rollout_rolling(sets: &mut Sets, replicas: i32, surge: i32, unavailable: i32) {
    let Some(new) = sets.new else { return };
    let max_total = replicas + surge;
    let current = sets.replicas(new);
    let wanted = if current > replicas {
        replicas
    } else {
        let total = sets.total();
        if total >= max_total {
            current
        } else {
            current + (max_total - total).min(replicas - current)
        }
    };
    sets.scale(new, wanted.max(0), replicas, max_total);

    let old = sets.old();
    if old.iter().map(|i| sets.replicas(*i)).sum::<i32>() == 0 {
        return;
    }
    let min_available = replicas - unavailable;
    let (_, _, new_available) = status_of(&sets.all[new]);
    let new_unavailable = sets.replicas(new) - new_available;
    let max_scaled_down = sets.total() - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    // Unhealthy old replicas go first: removing them costs no availability.
    let mut cleaned = 0;
    for &i in &old {
        if cleaned >= max_scaled_down {
            break;
        }
        let count = sets.replicas(i);
        let (_, _, available) = status_of(&sets.all[i]);
        if count == 0 || count <= available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(count - available);
        sets.scale(i, count - down, replicas, max_total);
        cleaned += down;
    }
    let available: i32 = (0..sets.all.len()).map(|i| status_of(&sets.all[i]).2).sum();
    if available <= min_available {
        return;
    }
    let total_down = available - min_available;
    let mut down_so_far = 0;
    for &i in &old {
        if down_so_far >= total_down {
            break;
        }
        let count = sets.replicas(i);
        if count == 0 {
            continue;
        }
        let down = count.min(total_down - down_so_far);
        sets.scale(i, count - down, replicas, max_total);
        down_so_far += down;
    }
}

/// Recreate: every old replica gone (their pods too) before the new ReplicaSet grows.
fn rollout_recreate(sets: &mut Sets, replicas: i32, old_pods_running: bool) {
    let old = sets.old();
    let active_old: Vec<usize> = old
        .iter()
        .copied()
        .filter(|i| sets.replicas(*i) > 0)
        .collect();
    for &i in &active_old {
        sets.scale(i, 0, replicas, replicas);
    }
    if !active_old.is_empty() || old_pods_running {
        return;
    }
    if let Some(new) = sets.new {
        sets.scale(new, replicas, replicas, replicas);
    }
}

/// The Deployment's replicas changed mid-rollout (or it is paused): resize the active
/// ReplicaSets in proportion, so a rollout neither restarts nor overshoots.
fn scale(sets: &mut Sets, replicas: i32, surge: i32, recreate: bool) {
    let max_total = replicas + surge;
    let active: Vec<usize> = (0..sets.all.len())
        .filter(|i| sets.replicas(*i) > 0)
        .collect();
    let target = match active.as_slice() {
        [] => sets.new.or_else(|| sets.old().last().copied()),
        [only] => Some(*only),
        _ => None,
    };
    if let Some(i) = target {
        sets.scale(i, replicas, replicas, max_total);
        return;
    }
    if let Some(new) = sets.new {
        let (_, _, available) = status_of(&sets.all[new]);
        if sets.replicas(new) == replicas && available == replicas {
            for i in sets.old() {
                sets.scale(i, 0, replicas, max_total);
            }
            return;
        }
    }
    if recreate {
        return;
    }
    let total = sets.total();
    let to_add = max_total - total;
    if to_add == 0 || total == 0 {
        return;
    }
    // Largest first gets the rounding leftover; newest first among equals.
    let mut order = active.clone();
    order.sort_by(|a, b| {
        sets.replicas(*b)
            .cmp(&sets.replicas(*a))
            .then_with(|| created(&sets.all[*b]).cmp(&created(&sets.all[*a])))
    });
    let mut given = 0;
    let mut shares: Vec<(usize, i32)> = Vec::new();
    for &i in &order {
        let share =
            i32::try_from(i64::from(sets.replicas(i)) * i64::from(to_add) / i64::from(total))
                .unwrap_or(0);
        shares.push((i, share));
        given += share;
    }
    if let Some(first) = shares.first_mut() {
        first.1 += to_add - given;
    }
    for (i, share) in shares {
        let count = (sets.replicas(i) + share).max(0);
        sets.scale(i, count, replicas, max_total);
    }
}

fn status(
    deployment: &Deployment,
    sets: &Sets,
    replicas: i32,
    unavailable: i32,
) -> DeploymentStatus {
    let sum = |f: &dyn Fn((i32, i32, i32)) -> i32| -> i32 {
        sets.all
            .iter()
            .filter(|s| s.metadata.uid.is_some())
            .map(|s| f(status_of(s)))
            .sum()
    };
    let available = sum(&|s| s.2);
    let updated = sets.new.map(|i| status_of(&sets.all[i]).0).unwrap_or(0);
    let previous = deployment.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    let minimum = available >= replicas - unavailable;
    set_condition(
        &mut conditions,
        "Available",
        if minimum { "True" } else { "False" },
        if minimum {
            "MinimumReplicasAvailable"
        } else {
            "MinimumReplicasUnavailable"
        },
        if minimum {
            "Deployment has minimum availability."
        } else {
            "Deployment does not have minimum availability."
        },
        None,
    );
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(sum(&|s| s.0)),
        updated_replicas: Some(updated),
        ready_replicas: Some(sum(&|s| s.1)),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        collision_count: previous.collision_count,
        conditions: Some(conditions),
        terminating_replicas: None,
    }
}

fn is_complete(deployment: &Deployment, status: &DeploymentStatus, replicas: i32) -> bool {
    status.updated_replicas == Some(replicas)
        && status.replicas == Some(replicas)
        && status.available_replicas == Some(replicas)
        && status.observed_generation >= deployment.metadata.generation
}

/// Deletes old, empty ReplicaSets beyond the history limit, lowest revisions first.
fn cleanup(plan: &mut Plan, sets: &Sets, limit: i32) {
    let mut cleanable: Vec<&ReplicaSet> = sets
        .old()
        .into_iter()
        .map(|i| &sets.all[i])
        .filter(|s| {
            s.metadata.uid.is_some()
                && s.metadata.deletion_timestamp.is_none()
                && spec_replicas(s) == 0
                && status_of(s).0 == 0
        })
        .collect();
    let excess = cleanable
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    cleanable.sort_by_key(|s| revision(s));
    for set in cleanable.into_iter().take(excess) {
        plan.actions.push(Action::Delete(
            set.metadata.name.clone().unwrap_or_default(),
            set.metadata.uid.clone().unwrap_or_default(),
        ));
    }
}

fn set_condition(
    conditions: &mut Vec<DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Option<jiff::Timestamp>,
) {
    let now = Time(now.unwrap_or_else(jiff::Timestamp::now));
    if let Some(current) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if current.status == status
            && current.reason.as_deref() == Some(reason)
            && current.message.as_deref() == Some(message)
        {
            return;
        }
        if current.status != status {
            current.last_transition_time = Some(now.clone());
        }
        current.status = status.into();
        current.reason = Some(reason.into());
        current.message = Some(message.into());
        current.last_update_time = Some(now);
        return;
    }
    conditions.push(DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(now.clone()),
        last_update_time: Some(now),
    });
}

/// The Progressing condition, and when the progress deadline will pass.
fn with_conditions(
    deployment: &Deployment,
    mut status: DeploymentStatus,
    new_name: &str,
    created_new: bool,
    complete: bool,
    paused: bool,
    now: jiff::Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let mut conditions = status.conditions.take().unwrap_or_default();
    let previous = deployment.status.clone().unwrap_or_default();
    let deadline = deployment
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    let progressing = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let mut recheck = None;
    if paused {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused",
            Some(now),
        );
    } else if progressing
        .as_ref()
        .is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused"))
    {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentResumed",
            "Deployment is resumed",
            Some(now),
        );
    } else if created_new {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            &format!("Created new replica set \"{new_name}\""),
            Some(now),
        );
    } else if complete && !new_name.is_empty() {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            Some(now),
        );
    } else {
        let advanced = status.updated_replicas > previous.updated_replicas
            || status.replicas < previous.replicas
            || status.ready_replicas > previous.ready_replicas
            || status.available_replicas > previous.available_replicas;
        let since = progressing
            .as_ref()
            .and_then(|c| c.last_update_time.as_ref().map(|t| t.0));
        let timed_out = progressing
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            || since
                .is_some_and(|s| s + jiff::SignedDuration::from_secs(i64::from(deadline)) < now);
        if advanced || progressing.is_none() {
            let reason = if progressing.is_none() {
                "FoundNewReplicaSet"
            } else {
                "ReplicaSetUpdated"
            };
            let message = if progressing.is_none() {
                format!("Found new replica set \"{new_name}\"")
            } else {
                format!("ReplicaSet \"{new_name}\" is progressing.")
            };
            conditions.retain(|c| c.type_ != "Progressing");
            conditions.push(DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: progressing
                    .filter(|c| c.status == "True")
                    .and_then(|c| c.last_transition_time)
                    .or(Some(Time(now))),
                last_update_time: Some(Time(now)),
            });
            recheck = Some(
                Duration::from_secs(u64::try_from(deadline).unwrap_or(600))
                    + Duration::from_secs(1),
            );
        } else if timed_out {
            set_condition(
                &mut conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                Some(now),
            );
        } else if let Some(since) = since {
            let at = since + jiff::SignedDuration::from_secs(i64::from(deadline));
            recheck = Duration::try_from(at.duration_since(now))
                .ok()
                .map(|d| d + Duration::from_secs(1));
        }
    }
    status.conditions = Some(conditions);
    (status, recheck)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn deployment(replicas: i32, image: &str) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-web".into()),
                generation: Some(1),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some([("app".to_owned(), "web".to_owned())].into()),
                    match_expressions: None,
                },
                template: template(image),
                ..DeploymentSpec::default()
            }),
            status: None,
        }
    }

    /// A ReplicaSet of `d`'s kind for `image`, created at `age` seconds, with `replicas`
    /// wanted and `available` of them available.
    fn set(image: &str, revision: i64, age: i64, replicas: i32, available: i32) -> ReplicaSet {
        let d = deployment(replicas, image);
        let mut set = new_replica_set(
            &d,
            &template(image),
            &revision.to_string(),
            0,
            OwnerReference::default(),
        );
        set.metadata.uid = Some(format!("uid-{image}"));
        set.metadata.resource_version = Some("1".into());
        set.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_second(age).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        ));
        if let Some(spec) = set.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        set.status = Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..ReplicaSetStatus::default()
        });
        set
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(10_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn run(d: &Deployment, sets: Vec<ReplicaSet>, old_running: bool) -> Plan {
        plan(d, sets, old_running, OwnerReference::default(), now()).expect("plan")
    }

    fn scaled(plan: &Plan) -> Vec<(String, i32)> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Create(s) | Action::Update(s) => (
                    s.metadata.name.clone().unwrap_or_default(),
                    spec_replicas(s),
                ),
                Action::Delete(name, _) => (name.clone(), -1),
            })
            .collect()
    }

    #[test]
    fn a_new_deployment_gets_its_replica_set() {
        let d = deployment(3, "v1");
        let plan = run(&d, vec![], false);
        let [Action::Create(created)] = plan.actions.as_slice() else {
            panic!("one create: {:?}", plan.actions);
        };
        let hash = template_hash(&d.spec.as_ref().expect("spec").template, 0);
        assert_eq!(
            created.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(spec_replicas(created), 3);
        let spec = created.spec.as_ref().expect("spec");
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH)),
            Some(&hash)
        );
        assert_eq!(plan.revision.as_deref(), Some("1"));
        let progressing = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .expect("progressing");
        assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetCreated"));
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_unavailability() {
        // 25% of 3: one extra pod (rounded up), none unavailable (rounded down).
        let d = deployment(3, "v2");
        let plan = run(&d, vec![set("v1", 1, 1, 3, 3)], false);
        let created = scaled(&plan);
        assert_eq!(
            created.len(),
            1,
            "old not scaled down before the new is available: {created:?}"
        );
        assert_eq!(created[0].1, 1, "one surge pod");

        // The new pod is available: one old pod may go, and no more than one may be added.
        let new = set("v2", 2, 2, 1, 1);
        let plan = run(&d, vec![set("v1", 1, 1, 3, 3), new], false);
        let old_name = set("v1", 1, 1, 3, 3).metadata.name.unwrap_or_default();
        let new_name = set("v2", 2, 2, 1, 1).metadata.name.unwrap_or_default();
        let actions = scaled(&plan);
        assert!(actions.contains(&(old_name, 2)), "{actions:?}");
        assert!(
            actions.iter().all(|(n, r)| n != &new_name || *r == 1),
            "{actions:?}"
        );
    }

    #[test]
    fn unhealthy_old_replicas_go_first() {
        let d = deployment(4, "v2");
        // Two of the old pods were never available: one may go though availability is
        // already below the minimum, as removing it costs nothing.
        let plan = run(
            &d,
            vec![set("v1", 1, 1, 4, 2), set("v2", 2, 2, 1, 0)],
            false,
        );
        let old_name = set("v1", 1, 1, 4, 2).metadata.name.unwrap_or_default();
        assert!(
            scaled(&plan).contains(&(old_name, 3)),
            "{:?}",
            scaled(&plan)
        );
    }

    #[test]
    fn recreate_waits_for_old_pods() {
        let mut d = deployment(2, "v2");
        if let Some(spec) = d.spec.as_mut() {
            spec.strategy = Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            });
        }
        let plan = run(&d, vec![set("v1", 1, 1, 2, 2)], false);
        let actions = scaled(&plan);
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0].1, 0, "new created empty");
        assert_eq!(actions[1].1, 0, "old scaled to zero");
        let plan = run(&d, vec![set("v1", 1, 1, 0, 0), set("v2", 2, 2, 0, 0)], true);
        assert!(
            plan.actions.is_empty(),
            "old pods still running: {:?}",
            plan.actions
        );
        let plan = run(
            &d,
            vec![set("v1", 1, 1, 0, 0), set("v2", 2, 2, 0, 0)],
            false,
        );
        assert_eq!(scaled(&plan)[0].1, 2);
    }

    #[test]
    fn scaling_resizes_the_only_active_set() {
        let d = deployment(5, "v1");
        let plan = run(&d, vec![set("v1", 1, 1, 3, 3)], false);
        assert_eq!(scaled(&plan)[0].1, 5);
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        let mut d = deployment(20, "v2");
        if let Some(spec) = d.spec.as_mut() {
            spec.strategy = Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            });
        }
        // Was 10: 6 old, 4 new. Now 20: each grows by its share.
        let mut old = set("v1", 1, 1, 6, 6);
        let mut new = set("v2", 2, 2, 4, 4);
        for s in [&mut old, &mut new] {
            s.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESIRED_REPLICAS.into(), "10".into());
        }
        let plan = run(&d, vec![old, new], false);
        let total: i32 = scaled(&plan).iter().map(|(_, r)| r).sum();
        assert_eq!(total, 20, "{:?}", scaled(&plan));
        assert!(
            scaled(&plan).iter().any(|(_, r)| *r == 12)
                && scaled(&plan).iter().any(|(_, r)| *r == 8)
        );
    }

    #[test]
    fn a_rollback_reuses_the_old_set_under_a_new_revision() {
        let d = deployment(2, "v1");
        let plan = run(
            &d,
            vec![set("v1", 1, 1, 0, 0), set("v2", 2, 2, 2, 2)],
            false,
        );
        assert_eq!(plan.revision.as_deref(), Some("3"));
        let reused = plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Update(s) if s.metadata.uid.as_deref() == Some("uid-v1") => Some(s),
                _ => None,
            })
            .expect("the v1 set updated");
        let annotations = reused.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations.get(REVISION).map(String::as_str), Some("3"));
        assert_eq!(
            annotations.get(REVISION_HISTORY).map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn history_beyond_the_limit_is_deleted_once_complete() {
        let mut d = deployment(1, "v4");
        if let Some(spec) = d.spec.as_mut() {
            spec.revision_history_limit = Some(1);
        }
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            ..DeploymentStatus::default()
        });
        let sets = vec![
            set("v1", 1, 1, 0, 0),
            set("v2", 2, 2, 0, 0),
            set("v3", 3, 3, 0, 0),
            set("v4", 4, 4, 1, 1),
        ];
        let plan = run(&d, sets, false);
        let deleted: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(_, uid) => Some(uid.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["uid-v1", "uid-v2"]);
    }

    #[test]
    fn surge_and_unavailability_round_as_kubernetes_does() {
        let mut d = deployment(10, "v1");
        assert_eq!(surge_and_unavailable(&d).expect("resolved"), (3, 2));
        if let Some(spec) = d.spec.as_mut() {
            spec.strategy = Some(DeploymentStrategy {
                type_: None,
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::String("0%".into())),
                }),
            });
        }
        assert_eq!(surge_and_unavailable(&d).expect("resolved"), (0, 1));
        if let Some(rolling) = d
            .spec
            .as_mut()
            .and_then(|s| s.strategy.as_mut())
            .and_then(|s| s.rolling_update.as_mut())
        {
            rolling.max_surge = Some(IntOrString::String("lots".into()));
        }
        let error = surge_and_unavailable(&d).expect_err("invalid");
        assert!(error.to_string().contains("maxSurge"), "{error}");
    }

    #[test]
    fn a_stalled_rollout_exceeds_its_deadline() {
        let mut d = deployment(2, "v2");
        let long_ago =
            Time(jiff::Timestamp::from_second(100).unwrap_or(jiff::Timestamp::UNIX_EPOCH));
        d.status = Some(DeploymentStatus {
            updated_replicas: Some(1),
            replicas: Some(3),
            available_replicas: Some(2),
            ready_replicas: Some(2),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some("ReplicaSetUpdated".into()),
                message: None,
                last_transition_time: Some(long_ago.clone()),
                last_update_time: Some(long_ago),
            }]),
            ..DeploymentStatus::default()
        });
        let plan = run(
            &d,
            vec![set("v1", 1, 1, 2, 2), set("v2", 2, 2, 1, 0)],
            false,
        );
        let progressing = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .expect("progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
    }
}
