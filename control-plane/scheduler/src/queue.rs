//! The scheduling queue: pending pods by priority (then age), a backoff for pods that just
//! failed, and a pool of unschedulable pods that wait for the cluster to change (a node
//! added or changed, a pod removed) instead of being retried in a hot loop. A pod that
//! failed while such a change happened goes to the backoff at once, so no change is missed.
//! Pods that failed on other pods' placement (inter-pod affinity, topology spread) also wake
//! when a pod is placed or relabelled, which wakes no one else.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long an unschedulable pod waits for a change before it is tried anyway.
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight {
        moves_seen: u64,
        pod_moves_seen: u64,
    },
}

struct Entry {
    pod: Arc<Pod>,
    attempts: u32,
    place: Place,
    order: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// (priority, oldest first, uid); stale items are skipped when popped.
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    next_order: u64,
    moves: u64,
    /// Pods placed or relabelled so far.
    pod_moves: u64,
    /// Unschedulable pods that a pod's placement may help.
    waiting_for_pods: HashSet<String>,
}

/// The queue, shared by the event handlers and the scheduling loop.
#[derive(Default)]
pub struct SchedulingQueue {
    state: Mutex<State>,
    ready: Notify,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    /// A pending pod was added or changed. A change to an unschedulable pod may make it
    /// fit, so it is tried again.
    pub fn add_or_update(&self, pod: Arc<Pod>) {
        let key = uid(&pod);
        let mut state = self.state.lock();
        let order = state.next_order;
        match state.entries.get_mut(&key) {
            Some(entry) => {
                let changed =
                    entry.pod.spec != pod.spec || entry.pod.metadata.labels != pod.metadata.labels;
                entry.pod = pod;
                if changed && matches!(entry.place, Place::Unschedulable(_)) {
                    entry.place = Place::Active;
                    let item = (priority(&entry.pod), Reverse(entry.order), key);
                    state.active.push(item);
                    drop(state);
                    self.ready.notify_one();
                }
            }
            None => {
                state.next_order += 1;
                state
                    .active
                    .push((priority(&pod), Reverse(order), key.clone()));
                state.entries.insert(
                    key,
                    Entry {
                        pod,
                        attempts: 0,
                        place: Place::Active,
                        order,
                    },
                );
                drop(state);
                self.ready.notify_one();
            }
        }
    }

    /// The pod was bound or deleted: it leaves the queue.
    pub fn remove(&self, uid: &str) {
        let mut state = self.state.lock();
        state.entries.remove(uid);
        state.waiting_for_pods.remove(uid);
    }

    /// Waits for the next pod to schedule, with how many attempts it had before.
    pub async fn pop(&self) -> (Arc<Pod>, u32) {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                let (moves, pod_moves) = (state.moves, state.pod_moves);
                while let Some((_, _, key)) = state.active.pop() {
                    if let Some(entry) = state.entries.get_mut(&key)
                        && entry.place == Place::Active
                    {
                        entry.place = Place::InFlight {
                            moves_seen: moves,
                            pod_moves_seen: pod_moves,
                        };
                        return (entry.pod.clone(), entry.attempts);
                    }
                }
            }
            notified.await;
        }
    }

    /// The pod fits nowhere now: it waits for a change to the cluster (and, when
    /// `waits_for_pods`, for a pod to be placed).
    pub fn unschedulable(&self, uid: &str, waits_for_pods: bool) {
        let mut state = self.state.lock();
        let (moves, pod_moves) = (state.moves, state.pod_moves);
        let Some(entry) = state.entries.get_mut(uid) else {
            return;
        };
        entry.attempts += 1;
        // A change while it was tried may help: back off only.
        let helped = match entry.place {
            Place::InFlight {
                moves_seen,
                pod_moves_seen,
            } => moves_seen < moves || (waits_for_pods && pod_moves_seen < pod_moves),
            _ => false,
        };
        if helped {
            entry.place = Place::Backoff(Instant::now() + backoff(entry.attempts));
        } else {
            entry.place = Place::Unschedulable(Instant::now());
            if waits_for_pods {
                state.waiting_for_pods.insert(uid.to_owned());
            }
        }
    }

    /// A pod was placed or relabelled: pods waiting on other pods may fit now.
    pub fn pods_changed(&self) {
        let mut state = self.state.lock();
        state.pod_moves += 1;
        if state.waiting_for_pods.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut state.waiting_for_pods);
        for uid in waiting {
            if let Some(entry) = state.entries.get_mut(&uid)
                && matches!(entry.place, Place::Unschedulable(_))
            {
                entry.place =
                    Place::Backoff(Instant::now() + backoff(entry.attempts).min(FIRST_BACKOFF));
            }
        }
    }

    /// Trying the pod failed for another reason (its binding, say): retry after a backoff.
    pub fn retry(&self, uid: &str) {
        let mut state = self.state.lock();
        let Some(entry) = state.entries.get_mut(uid) else {
            return;
        };
        entry.attempts += 1;
        entry.place = Place::Backoff(Instant::now() + backoff(entry.attempts));
    }

    /// The cluster changed in a way that may let unschedulable pods fit.
    pub fn cluster_changed(&self) {
        let mut state = self.state.lock();
        state.moves += 1;
        for entry in state.entries.values_mut() {
            if matches!(entry.place, Place::Unschedulable(_)) {
                entry.place =
                    Place::Backoff(Instant::now() + backoff(entry.attempts).min(FIRST_BACKOFF));
            }
        }
    }

    /// Moves pods whose backoff ended, and unschedulable pods that waited too long, to the
    /// active queue; call periodically.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut state = self.state.lock();
        let mut ready = Vec::new();
        for (key, entry) in state.entries.iter_mut() {
            let due = match entry.place {
                Place::Backoff(until) => until <= now,
                Place::Unschedulable(since) => since + MAX_UNSCHEDULABLE <= now,
                _ => false,
            };
            if due {
                entry.place = Place::Active;
                ready.push((priority(&entry.pod), Reverse(entry.order), key.clone()));
            }
        }
        let woke = !ready.is_empty();
        state.active.extend(ready);
        drop(state);
        if woke {
            self.ready.notify_one();
        }
    }

    /// Pods waiting in the unschedulable pool.
    pub fn unschedulable_count(&self) -> usize {
        self.state
            .lock()
            .entries
            .values()
            .filter(|e| matches!(e.place, Place::Unschedulable(_)))
            .count()
    }
}

fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(8))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, priority: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                priority: Some(priority),
                ..PodSpec::default()
            }),
            status: None,
        })
    }

    fn name(popped: (Arc<Pod>, u32)) -> String {
        popped.0.metadata.name.clone().unwrap_or_default()
    }

    #[tokio::test]
    async fn higher_priority_then_older_first() {
        let queue = SchedulingQueue::new();
        queue.add_or_update(pod("old", 0));
        queue.add_or_update(pod("new", 0));
        queue.add_or_update(pod("urgent", 100));
        assert_eq!(name(queue.pop().await), "urgent");
        assert_eq!(name(queue.pop().await), "old");
        assert_eq!(name(queue.pop().await), "new");
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_change() {
        let queue = SchedulingQueue::new();
        queue.add_or_update(pod("p", 0));
        let (p, attempts) = queue.pop().await;
        assert_eq!(attempts, 0);
        queue.unschedulable(&uid(&p), false);
        tokio::time::sleep(Duration::from_secs(30)).await;
        queue.flush();
        assert_eq!(queue.unschedulable_count(), 1, "no change, no retry");
        queue.cluster_changed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.flush();
        let (again, attempts) = queue.pop().await;
        assert_eq!((uid(&again), attempts), ("p".to_owned(), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_an_attempt_is_not_missed() {
        let queue = SchedulingQueue::new();
        queue.add_or_update(pod("p", 0));
        let (p, _) = queue.pop().await;
        queue.cluster_changed();
        queue.unschedulable(&uid(&p), false);
        assert_eq!(queue.unschedulable_count(), 0, "went to the backoff");
        tokio::time::sleep(Duration::from_secs(2)).await;
        queue.flush();
        assert_eq!(name(queue.pop().await), "p");
    }

    #[tokio::test(start_paused = true)]
    async fn only_pods_waiting_on_pods_wake_when_one_is_placed() {
        let queue = SchedulingQueue::new();
        queue.add_or_update(pod("affine", 0));
        queue.add_or_update(pod("big", 0));
        let (first, _) = queue.pop().await;
        let (second, _) = queue.pop().await;
        queue.unschedulable(&uid(&first), uid(&first) == "affine");
        queue.unschedulable(&uid(&second), uid(&second) == "affine");
        queue.pods_changed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        queue.flush();
        assert_eq!(name(queue.pop().await), "affine");
        assert_eq!(queue.unschedulable_count(), 1, "the other still waits");
    }

    #[tokio::test]
    async fn removed_pods_are_not_popped() {
        let queue = SchedulingQueue::new();
        queue.add_or_update(pod("gone", 0));
        queue.add_or_update(pod("kept", 0));
        queue.remove("gone");
        assert_eq!(name(queue.pop().await), "kept");
    }
}
