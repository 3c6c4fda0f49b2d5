//! Taints and tolerations: the well-known taints the node controllers set, whether a pod
//! tolerates a taint, and how long a pod may stay on a node with NoExecute taints.

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

/// A node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// A node whose Ready condition is Unknown: its kubelet stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// A cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// A node reporting MemoryPressure.
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// A node reporting DiskPressure.
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// A node reporting PIDPressure.
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// A node whose network is not configured.
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The effect that keeps new pods off a node.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// The effect that also evicts running pods.
pub const NO_EXECUTE: &str = "NoExecute";

/// A taint with no value and no time.
pub fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_owned(),
        effect: effect.to_owned(),
        value: None,
        time_added: None,
    }
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let exists = toleration.operator.as_deref() == Some("Exists");
    match toleration.key.as_deref() {
        None | Some("") => exists,
        Some(key) if key != taint.key => false,
        Some(_) if exists => true,
        Some(_) => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// The pod's tolerations.
pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether any of the pod's tolerations tolerates `taint`.
pub fn tolerated(pod: &Pod, taint: &Taint) -> bool {
    tolerations(pod).iter().any(|t| tolerates(t, taint))
}

/// What NoExecute taints mean for a pod already on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// No NoExecute taint, or every one tolerated without a time limit.
    Never,
    /// A taint is not tolerated, or a toleration's time is up.
    Now,
    /// The pod may stay until then.
    At(jiff::Timestamp),
}

/// When a pod with `tolerations` must leave a node with `taints`: each NoExecute taint is
/// timed from when it was added (`seen` for a taint without `timeAdded`), plus the shortest
/// `tolerationSeconds` of the tolerations that match it; the earliest deadline wins.
pub fn eviction(tolerations: &[Toleration], taints: &[Taint], seen: jiff::Timestamp) -> Eviction {
    let mut earliest: Option<jiff::Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        let matching = tolerations.iter().filter(|t| tolerates(t, taint));
        let mut any = false;
        let mut seconds: Option<i64> = None;
        for toleration in matching {
            any = true;
            if let Some(s) = toleration.toleration_seconds {
                seconds = Some(seconds.map_or(s, |known| known.min(s)));
            }
        }
        if !any {
            return Eviction::Now;
        }
        let Some(seconds) = seconds else { continue };
        if seconds <= 0 {
            return Eviction::Now;
        }
        let since = taint.time_added.as_ref().map_or(seen, |t| t.0);
        let deadline = since
            .checked_add(jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(jiff::Timestamp::MAX);
        earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            value: None,
            toleration_seconds: seconds,
        }
    }

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn matching_rules() {
        let db = Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: NO_SCHEDULE.into(),
            time_added: None,
        };
        let equal = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("db".into()),
            ..Toleration::default()
        };
        assert!(tolerates(&equal, &db));
        let other_value = Toleration {
            value: Some("web".into()),
            ..equal.clone()
        };
        assert!(!tolerates(&other_value, &db));
        let wrong_effect = Toleration {
            effect: Some(NO_EXECUTE.into()),
            ..equal
        };
        assert!(!tolerates(&wrong_effect, &db));
        let everything = Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        };
        assert!(tolerates(&everything, &db));
        assert!(!tolerates(&Toleration::default(), &db));
    }

    #[test]
    fn evictions_are_timed_by_the_shortest_toleration() {
        let mut unreachable = taint(UNREACHABLE, NO_EXECUTE);
        unreachable.time_added = Some(Time(at(100)));
        let taints = [unreachable, taint("dedicated", NO_SCHEDULE)];
        assert_eq!(eviction(&[], &taints, at(0)), Eviction::Now);
        assert_eq!(
            eviction(&[toleration(UNREACHABLE, None)], &taints, at(0)),
            Eviction::Never
        );
        assert_eq!(
            eviction(
                &[
                    toleration(UNREACHABLE, Some(300)),
                    toleration(UNREACHABLE, Some(30))
                ],
                &taints,
                at(0)
            ),
            Eviction::At(at(130))
        );
        assert_eq!(
            eviction(&[toleration(UNREACHABLE, Some(0))], &taints, at(0)),
            Eviction::Now
        );
        let untimed = [taint(NOT_READY, NO_EXECUTE)];
        assert_eq!(
            eviction(&[toleration(NOT_READY, Some(5))], &untimed, at(50)),
            Eviction::At(at(55))
        );
        assert_eq!(
            eviction(&[], &[taint("x", NO_SCHEDULE)], at(0)),
            Eviction::Never
        );
    }
}
