//! A work queue with client-go's guarantees: an item queued twice before it is taken is
//! worked once; an item is never worked by two workers at once (queued again while in work,
//! it is worked again after); failures are retried with exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Shared by the producers and the workers of one controller.
pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
}

struct State<T> {
    order: VecDeque<T>,
    queued: HashSet<T>,
    working: HashSet<T>,
    failures: HashMap<T, u32>,
}

const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_secs(60);

impl<T: Hash + Eq + Clone + Send + 'static> WorkQueue<T> {
    /// An empty queue.
    pub fn new() -> Arc<WorkQueue<T>> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                order: VecDeque::new(),
                queued: HashSet::new(),
                working: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
        })
    }

    /// Queues `item` unless it is queued already.
    pub fn add(&self, item: T) {
        let mut state = self.state.lock();
        if !state.queued.insert(item.clone()) {
            return;
        }
        if !state.working.contains(&item) {
            state.order.push_back(item);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queues `item` after `delay`.
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = queue.upgrade() {
                queue.add(item);
            }
        });
    }

    /// Queues `item` again after a delay that doubles with each failure in a row.
    pub fn retry(self: &Arc<Self>, item: T) {
        let failures = {
            let mut state = self.state.lock();
            let count = state.failures.entry(item.clone()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let delay = FIRST_RETRY
            .saturating_mul(1u32 << failures.min(16).saturating_sub(1))
            .min(LAST_RETRY);
        self.add_after(item, delay);
    }

    /// Ends the failure streak of `item`.
    pub fn forget(&self, item: &T) {
        self.state.lock().failures.remove(item);
    }

    /// Waits for the next item; the caller must call [`WorkQueue::done`] with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                if let Some(item) = state.order.pop_front() {
                    state.queued.remove(&item);
                    state.working.insert(item.clone());
                    if !state.order.is_empty() {
                        self.ready.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Marks `item` worked; if it was queued again meanwhile it becomes ready.
    pub fn done(&self, item: &T) {
        let mut state = self.state.lock();
        state.working.remove(item);
        if state.queued.contains(item) {
            state.order.push_back(item.clone());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Items queued and not yet taken.
    pub fn len(&self) -> usize {
        self.state.lock().order.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_item_queued_twice_is_worked_once() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next().await, "a");
        assert_eq!(queue.next().await, "b");
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn an_item_queued_while_in_work_waits_until_done() {
        let queue = WorkQueue::new();
        queue.add("a");
        let item = queue.next().await;
        queue.add("a");
        assert!(
            queue.is_empty(),
            "not handed to a second worker while in work"
        );
        queue.done(&item);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next().await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off() {
        let queue = WorkQueue::new();
        queue.add("a");
        let item = queue.next().await;
        queue.retry(item);
        queue.done(&item);
        tokio::time::sleep(Duration::from_millis(49)).await;
        assert!(queue.is_empty());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(queue.next().await, "a");
        queue.retry("a");
        queue.done(&"a");
        tokio::time::sleep(Duration::from_millis(99)).await;
        assert!(queue.is_empty(), "second failure waits twice as long");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(queue.len(), 1);
        queue.forget(&"a");
    }
}
