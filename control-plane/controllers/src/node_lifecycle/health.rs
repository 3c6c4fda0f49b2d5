//! The node lifecycle rules, pure: when a kubelet last showed it was alive (a new heartbeat
//! in the node's Ready condition or a renewed Lease), when its conditions must turn Unknown,
//! which taints a node's conditions call for, and when a zone has so many dead nodes that
//! evicting from it would do more harm than good.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use placement::taints::{
    DISK_PRESSURE, MEMORY_PRESSURE, NETWORK_UNAVAILABLE, NO_EXECUTE, NO_SCHEDULE, NOT_READY,
    PID_PRESSURE, UNREACHABLE, UNSCHEDULABLE, taint,
};

/// The conditions a kubelet reports and this controller turns Unknown when it goes quiet.
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The last sign of life the controller saw from a node's kubelet, and when it saw it (on
/// its own clock: the kubelet's clock may be off, and only a change counts).
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    heartbeat: Option<Time>,
    renewed: Option<jiff::Timestamp>,
    /// When the controller last saw either change.
    pub seen: jiff::Timestamp,
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// The status of the node's Ready condition: `True`, `False`, `Unknown`, or `None` before
/// its kubelet first reported.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The probe after looking at `node` and its `lease` at `now`: `seen` moves to `now` on the
/// first look and whenever the heartbeat or the lease's renew time changed.
pub fn observe(
    previous: Option<&Probe>,
    node: &Node,
    lease: Option<&Lease>,
    now: jiff::Timestamp,
) -> Probe {
    let heartbeat = condition(node, "Ready").and_then(|c| c.last_heartbeat_time.clone());
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let changed = match previous {
        None => true,
        Some(p) => p.heartbeat != heartbeat || renewed.is_some_and(|r| p.renewed < Some(r)),
    };
    Probe {
        seen: if changed {
            now
        } else {
            previous.map_or(now, |p| p.seen)
        },
        renewed: renewed.max(previous.and_then(|p| p.renewed)),
        heartbeat,
    }
}

/// How long a node may be silent.
#[derive(Clone, Copy, Debug)]
pub struct Grace {
    /// For a node whose kubelet has reported (kube's `--node-monitor-grace-period`).
    pub monitor: Duration,
    /// For a node whose kubelet never reported (`--node-startup-grace-period`).
    pub startup: Duration,
}

/// The node's conditions with the kubelet's ones turned Unknown, if the node has been silent
/// for longer than its grace at `now`; `None` while it is not (or they already are).
pub fn stale_conditions(
    node: &Node,
    probe: &Probe,
    grace: Grace,
    now: jiff::Timestamp,
) -> Option<Vec<NodeCondition>> {
    let never_reported = condition(node, "Ready").is_none();
    let grace = if never_reported {
        grace.startup
    } else {
        grace.monitor
    };
    let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
    if now
        <= probe
            .seen
            .saturating_add(grace)
            .unwrap_or(jiff::Timestamp::MAX)
    {
        return None;
    }
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for kind in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == *kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: (*kind).into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

/// How the nodes of a zone fare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    /// Few nodes are down: evict from them at the normal rate.
    Normal,
    /// More than two nodes, and at least the unhealthy threshold of them, are down: slow
    /// down, or stop in a small cluster.
    PartialDisruption,
    /// Every node is down: more likely the control plane lost the zone than the zone died.
    FullDisruption,
}

/// The state of a zone whose nodes' Ready statuses are `ready`.
pub fn zone_state(ready: impl IntoIterator<Item = bool>, unhealthy_threshold: f64) -> ZoneState {
    let (mut up, mut down) = (0usize, 0usize);
    for ready in ready {
        if ready {
            up += 1;
        } else {
            down += 1;
        }
    }
    if up == 0 && down > 0 {
        ZoneState::FullDisruption
    } else if down > 2 && down as f64 / (up + down) as f64 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Whether a taint is one this controller owns (the others are left alone).
fn managed(taint: &Taint) -> bool {
    let no_schedule = [
        NOT_READY,
        UNREACHABLE,
        UNSCHEDULABLE,
        MEMORY_PRESSURE,
        DISK_PRESSURE,
        PID_PRESSURE,
        NETWORK_UNAVAILABLE,
    ];
    (taint.effect == NO_SCHEDULE && no_schedule.contains(&taint.key.as_str()))
        || (taint.effect == NO_EXECUTE && [NOT_READY, UNREACHABLE].contains(&taint.key.as_str()))
}

/// Whether NoExecute taints may be put on a node now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evicting {
    /// Yes.
    Allowed,
    /// Not yet (the zone's rate limit): keep what is there, add nothing.
    Held,
    /// No: every zone is down, so remove them.
    Stopped,
}

/// The node's taints as its conditions call for: NoSchedule taints for a node that is not
/// Ready, under pressure, without network or cordoned; a NoExecute taint `not-ready` or
/// `unreachable` for a node whose Ready condition is False or Unknown, if `evicting` allows.
/// Other taints are kept as they are; a taint already there keeps its `timeAdded`.
pub fn wanted_taints(node: &Node, evicting: Evicting, now: jiff::Timestamp) -> Vec<Taint> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let is = |kind: &str, status: &str| condition(node, kind).is_some_and(|c| c.status == status);
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    match ready_status(node) {
        Some("False") => wanted.push((NOT_READY, NO_SCHEDULE)),
        Some("Unknown") => wanted.push((UNREACHABLE, NO_SCHEDULE)),
        _ => {}
    }
    for (kind, key) in [
        ("MemoryPressure", MEMORY_PRESSURE),
        ("DiskPressure", DISK_PRESSURE),
        ("PIDPressure", PID_PRESSURE),
        ("NetworkUnavailable", NETWORK_UNAVAILABLE),
    ] {
        if is(kind, "True") {
            wanted.push((key, NO_SCHEDULE));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        wanted.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    let no_execute = match ready_status(node) {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    };
    let has = |key: &str, effect: &str| current.iter().any(|t| t.key == key && t.effect == effect);
    if let Some(key) = no_execute {
        // Swapping not-ready for unreachable (or back) is not a new eviction: no waiting.
        let tainted = has(NOT_READY, NO_EXECUTE) || has(UNREACHABLE, NO_EXECUTE);
        match evicting {
            Evicting::Allowed => wanted.push((key, NO_EXECUTE)),
            Evicting::Held if tainted => wanted.push((key, NO_EXECUTE)),
            Evicting::Held | Evicting::Stopped => {}
        }
    }
    let mut taints: Vec<Taint> = current.iter().filter(|t| !managed(t)).cloned().collect();
    for (key, effect) in wanted {
        match current.iter().find(|t| t.key == key && t.effect == effect) {
            Some(kept) => taints.push(kept.clone()),
            None => taints.push(Taint {
                time_added: Some(Time(now)),
                ..taint(key, effect)
            }),
        }
    }
    taints
}

/// Whether the node's NoExecute taint would be new (so the zone's rate limit applies).
pub fn needs_new_no_execute(node: &Node) -> bool {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    let tainted = taints
        .unwrap_or_default()
        .iter()
        .any(|t| t.effect == NO_EXECUTE && (t.key == NOT_READY || t.key == UNREACHABLE));
    !tainted && matches!(ready_status(node), Some("False" | "Unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn node(ready: Option<&str>, heartbeat: i64) -> Node {
        Node {
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: ready.map(|status| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        last_heartbeat_time: Some(Time(at(heartbeat))),
                        ..NodeCondition::default()
                    }]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn lease(renewed: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(at(renewed))),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    const GRACE: Grace = Grace {
        monitor: Duration::from_secs(40),
        startup: Duration::from_secs(60),
    };

    #[test]
    fn a_renewed_lease_or_a_new_heartbeat_is_a_sign_of_life() {
        let n = node(Some("True"), 1);
        let first = observe(None, &n, Some(&lease(1)), at(100));
        assert_eq!(first.seen, at(100));
        let same = observe(Some(&first), &n, Some(&lease(1)), at(130));
        assert_eq!(same.seen, at(100), "nothing changed");
        let renewed = observe(Some(&same), &n, Some(&lease(20)), at(135));
        assert_eq!(renewed.seen, at(135));
        let beat = observe(
            Some(&renewed),
            &node(Some("True"), 50),
            Some(&lease(20)),
            at(140),
        );
        assert_eq!(beat.seen, at(140));
        let older_lease = observe(
            Some(&beat),
            &node(Some("True"), 50),
            Some(&lease(5)),
            at(150),
        );
        assert_eq!(
            older_lease.seen,
            at(140),
            "a lease going back in time is not news"
        );
    }

    #[test]
    fn silence_beyond_the_grace_turns_conditions_unknown() {
        let n = node(Some("True"), 1);
        let probe = observe(None, &n, None, at(100));
        assert_eq!(stale_conditions(&n, &probe, GRACE, at(140)), None);
        let conditions = stale_conditions(&n, &probe, GRACE, at(141)).unwrap_or_default();
        let ready = conditions.iter().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("Unknown"));
        assert_eq!(
            ready.and_then(|c| c.reason.as_deref()),
            Some("NodeStatusUnknown")
        );
        assert_eq!(
            conditions.len(),
            4,
            "the pressure conditions are added as Unknown"
        );
        let pressure = conditions.iter().find(|c| c.type_ == "DiskPressure");
        assert_eq!(
            pressure.and_then(|c| c.reason.as_deref()),
            Some("NodeStatusNeverUpdated")
        );

        let mut unknown = n.clone();
        if let Some(status) = unknown.status.as_mut() {
            status.conditions = Some(conditions);
        }
        assert_eq!(
            stale_conditions(&unknown, &probe, GRACE, at(200)),
            None,
            "already Unknown"
        );

        let fresh = node(None, 0);
        let probe = observe(None, &fresh, None, at(100));
        assert_eq!(
            stale_conditions(&fresh, &probe, GRACE, at(150)),
            None,
            "startup grace"
        );
        assert!(stale_conditions(&fresh, &probe, GRACE, at(161)).is_some());
    }

    #[test]
    fn zones_in_disruption() {
        assert_eq!(zone_state([true, true, false], 0.55), ZoneState::Normal);
        assert_eq!(zone_state([false, false], 0.55), ZoneState::FullDisruption);
        assert_eq!(
            zone_state([true, false, false, false], 0.55),
            ZoneState::PartialDisruption
        );
        assert_eq!(
            zone_state([true, true, true, false, false, false, true], 0.55),
            ZoneState::Normal
        );
        assert_eq!(zone_state([], 0.55), ZoneState::Normal);
    }

    #[test]
    fn taints_follow_conditions() {
        let keys = |taints: &[Taint]| -> Vec<String> {
            taints
                .iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        };
        let mut n = node(Some("Unknown"), 1);
        let custom = taint("dedicated", NO_SCHEDULE);
        if let Some(spec) = n.spec.as_mut() {
            spec.taints = Some(vec![custom.clone(), taint(NOT_READY, NO_EXECUTE)]);
            spec.unschedulable = Some(true);
        }
        let taints = wanted_taints(&n, Evicting::Held, at(10));
        assert_eq!(
            keys(&taints),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute",
            ],
            "a swap is not held back"
        );
        assert!(
            taints
                .iter()
                .skip(1)
                .all(|t| t.time_added == Some(Time(at(10))))
        );
        assert_eq!(
            keys(&wanted_taints(&n, Evicting::Stopped, at(10))),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule",
            ]
        );
        let healthy = node(Some("True"), 1);
        assert!(wanted_taints(&healthy, Evicting::Allowed, at(10)).is_empty());
        assert!(!needs_new_no_execute(&healthy));
        let silent = node(Some("Unknown"), 1);
        assert!(needs_new_no_execute(&silent));
        assert!(
            wanted_taints(&silent, Evicting::Held, at(10))
                .iter()
                .all(|t| t.effect == NO_SCHEDULE)
        );
        let added = wanted_taints(&silent, Evicting::Allowed, at(10));
        assert_eq!(
            keys(&added),
            [
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        let mut tainted = silent.clone();
        if let Some(spec) = tainted.spec.as_mut() {
            spec.taints = Some(added.clone());
        }
        assert_eq!(
            wanted_taints(&tainted, Evicting::Allowed, at(99)),
            added,
            "timeAdded is kept"
        );
    }
}
