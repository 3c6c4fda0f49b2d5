//! The pod status the kubelet reports: phase, conditions, container statuses with their
//! current and last states, addresses and start time, computed from the container instances
//! and what the worker knows about containers that are waiting.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::instances::{self, Instance, State};
use super::probes::ProbeState;

/// Why a container is not running, when the worker knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, …
    pub reason: String,
    /// The details, if any.
    pub message: String,
}

/// What the status is computed from.
pub struct Inputs<'a> {
    /// The pod as the API has it.
    pub pod: &'a Pod,
    /// Every instance of its containers, newest first per name.
    pub instances: &'a [Instance],
    /// Waiting reasons of containers not running, by name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// What the probes of running containers found, by name (absent: no probes).
    pub probes: &'a HashMap<String, ProbeState>,
    /// The pod's IP, once it has one.
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: String,
    /// The phase the worker settled on, when it settled.
    pub phase: &'a str,
}

fn time(at: &jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn terminated(instance: &Instance) -> Option<Value> {
    let State::Exited {
        code,
        started,
        finished,
        message,
        oom_killed,
    } = &instance.state
    else {
        return None;
    };
    let reason = if *oom_killed {
        "OOMKilled"
    } else if *code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut terminated = json!({
        "exitCode": code, "reason": reason, "finishedAt": time(finished),
        "containerID": format!("containerd://{}", instance.id),
    });
    if let Some(started) = started {
        terminated["startedAt"] = json!(time(started));
    }
    if !message.is_empty() {
        terminated["message"] = json!(message);
    }
    Some(json!({"terminated": terminated}))
}

/// One container's status.
fn container_status(container: &Container, inputs: &Inputs, init: bool) -> Value {
    let (latest, previous) = instances::latest(inputs.instances, &container.name);
    let waiting = inputs.waiting.get(&container.name);
    let image = container.image.clone().unwrap_or_default();
    let mut status = json!({
        "name": container.name, "image": image,
        "imageID": latest.map(|i| i.image_id.clone()).unwrap_or_default(),
        "restartCount": latest.map(|i| i.attempt).unwrap_or(0),
        "ready": false, "started": false,
        "lastState": {},
    });
    if let Some(latest) = latest {
        status["containerID"] = json!(format!("containerd://{}", latest.id));
    }
    let running = latest.and_then(|i| match &i.state {
        State::Running { started } => Some(started),
        _ => None,
    });
    status["state"] = match (running, waiting, latest) {
        (Some(started), _, _) => {
            let probed = inputs.probes.get(&container.name);
            let has_started = probed.is_none_or(|p| p.started);
            status["started"] = json!(has_started);
            // Without a readiness probe a running (and started) container is ready.
            let sidecar = container.restart_policy.as_deref() == Some("Always");
            status["ready"] =
                json!((!init || sidecar) && has_started && probed.is_none_or(|p| p.ready));
            json!({"running": {"startedAt": time(started)}})
        }
        (None, Some(waiting), latest) => {
            if let Some(last) = latest.and_then(terminated) {
                status["lastState"] = last;
            }
            let mut waiting_state = json!({"reason": waiting.reason});
            if !waiting.message.is_empty() {
                waiting_state["message"] = json!(waiting.message);
            }
            json!({"waiting": waiting_state})
        }
        (None, None, Some(latest)) => terminated(latest)
            .unwrap_or_else(|| json!({"waiting": {"reason": "ContainerCreating"}})),
        (None, None, None) => {
            json!({"waiting": {"reason": if init { "PodInitializing" } else { "ContainerCreating" }}})
        }
    };
    if running.is_some()
        && let Some(last) = previous.and_then(terminated)
    {
        status["lastState"] = last;
    }
    status
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, previous: &Pod) -> Value {
    let status = if ok { "True" } else { "False" };
    // A condition keeps its transition time while its status holds.
    let since = previous
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| time(&jiff::Timestamp::now()));
    let mut condition =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(reason) = reason.filter(|_| !ok) {
        condition["reason"] = json!(reason);
    }
    condition
}

/// The status to report.
pub fn compute(inputs: &Inputs) -> Value {
    let pod = inputs.pod;
    let Some(spec) = pod.spec.as_ref() else {
        return json!({});
    };
    let init_statuses: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, inputs, true))
        .collect();
    let statuses: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| container_status(c, inputs, false))
        .collect();
    let initialized = spec.init_containers.iter().flatten().all(|c| {
        let (latest, _) = instances::latest(inputs.instances, &c.name);
        latest.is_some_and(|i| {
            matches!(i.state, State::Exited { code: 0, .. })
                || (c.restart_policy.as_deref() == Some("Always") && i.running())
        })
    });
    let all_ready = statuses.iter().all(|s| s["ready"] == json!(true));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            inputs.pod_ip.is_some() || spec.host_network == Some(true),
            None,
            pod,
        ),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            pod,
        ),
        condition(
            "Ready",
            all_ready && inputs.phase == "Running",
            Some("ContainersNotReady"),
            pod,
        ),
        condition(
            "ContainersReady",
            all_ready && inputs.phase == "Running",
            Some("ContainersNotReady"),
            pod,
        ),
    ];
    if let Some(scheduled) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
    {
        conditions.push(serde_json::to_value(scheduled).unwrap_or(Value::Null));
    }
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| time(&jiff::Timestamp::now()));
    let mut status = json!({
        "phase": inputs.phase,
        "conditions": conditions,
        "hostIP": inputs.host_ip,
        "hostIPs": [{"ip": inputs.host_ip}],
        "startTime": start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(spec),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if let Some(ip) = &inputs.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

/// Guaranteed when every container's limits equal its requests for cpu and memory,
/// BestEffort when nothing is set, else Burstable.
pub fn qos_class(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    let containers: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let any_set = containers.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !any_set {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let Some(resources) = &c.resources else {
            return false;
        };
        ["cpu", "memory"].iter().all(|name| {
            let limit = resources.limits.as_ref().and_then(|l| l.get(*name));
            let request = resources
                .requests
                .as_ref()
                .and_then(|r| r.get(*name))
                .or(limit);
            limit.is_some()
                && limit.map(placement::resources::milli)
                    == request.map(placement::resources::milli)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}
