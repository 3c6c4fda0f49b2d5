//! Watch fan-out: which watcher wants which change, and a bounded mailbox per watcher.
//!
//! A watcher is either *synced* — indexed by key, receiving each change as it is applied — or
//! *lagging* — out of the index, catching up from the store's history with
//! [`crate::Mvcc::events_since`] until it reaches the head and is put back with
//! [`WatchHub::resync`]. New watchers that start in the past begin lagging; a synced watcher
//! whose mailbox overflows becomes lagging instead of blocking the writer or growing without
//! bound. That is how many watchers stay cheap and a slow one never stalls the store.
//!
//! Ordering contract with the caller: [`WatchHub::publish`] is called while the state machine's
//! write side is held, and [`WatchHub::register`] / [`WatchHub::resync`] while its read side is
//! held, so a watcher never sees a revision twice or misses one between history and live events.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::Error;
use crate::key_range::KeyRange;
use crate::types::{Event, EventKind};

/// What a watcher asks for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The keys watched.
    pub range: KeyRange,
    /// First revision wanted; 0 means "changes after now".
    pub start_revision: i64,
    /// Include each key's previous state.
    pub prev_kv: bool,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
}

impl WatchSpec {
    fn wants(&self, event: &Event) -> bool {
        match event.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }

    /// The event as this watcher receives it.
    pub fn shape(&self, event: &Event) -> Option<Event> {
        if !self.wants(event) || !self.range.contains(&event.kv.key) {
            return None;
        }
        let mut event = event.clone();
        if !self.prev_kv {
            event.prev_kv = None;
        }
        Some(event)
    }
}

/// Identifies a watcher within its hub.
pub type WatcherId = u64;

/// What a watcher's consumer finds when it looks.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Changes in revision order.
    pub events: Vec<Event>,
    /// Set when the watcher fell out of sync: after sending `events`, catch up from history
    /// starting at this revision.
    pub catch_up_from: Option<i64>,
}

/// The queue between the hub (producer, under the store lock) and one watcher's consumer task.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<MailboxState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct MailboxState {
    events: VecDeque<Event>,
    catch_up_from: Option<i64>,
}

impl Mailbox {
    fn new(catch_up_from: Option<i64>) -> Mailbox {
        Mailbox {
            state: Mutex::new(MailboxState {
                events: VecDeque::new(),
                catch_up_from,
            }),
            notify: Notify::new(),
        }
    }

    /// Takes everything queued.
    pub fn take(&self) -> Delivery {
        let mut state = self.state.lock();
        Delivery {
            events: state.events.drain(..).collect(),
            catch_up_from: state.catch_up_from,
        }
    }

    /// Whether nothing is queued and the watcher is not behind.
    pub fn is_idle(&self) -> bool {
        let state = self.state.lock();
        state.events.is_empty() && state.catch_up_from.is_none()
    }

    /// Waits until something may have been queued since the last [`Mailbox::take`].
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Queues an event, or marks the watcher lagging if the mailbox is full. Returns `false`
    /// when the watcher must leave the synced index.
    fn push(&self, event: Event, capacity: usize) -> bool {
        let mut state = self.state.lock();
        if state.catch_up_from.is_some() {
            return false;
        }
        if state.events.len() < capacity {
            state.events.push_back(event);
            return true;
        }
        // Never split a revision between the queue and the catch-up: drop its queued part.
        let rev = event.revision();
        while state.events.back().is_some_and(|e| e.revision() == rev) {
            state.events.pop_back();
        }
        state.catch_up_from = Some(rev);
        false
    }
}

struct Watcher {
    spec: WatchSpec,
    mailbox: Arc<Mailbox>,
    /// Events below this revision are not delivered (a watch may start in the future).
    min_revision: i64,
    synced: bool,
}

/// Every watcher of one store, indexed by the keys it watches.
pub struct WatchHub {
    watchers: HashMap<WatcherId, Watcher>,
    exact: HashMap<Bytes, Vec<WatcherId>>,
    ranged: Vec<WatcherId>,
    next_id: WatcherId,
    capacity: usize,
}

impl WatchHub {
    /// A hub whose mailboxes each hold up to `capacity` events before their watcher lags.
    pub fn new(capacity: usize) -> WatchHub {
        WatchHub {
            watchers: HashMap::new(),
            exact: HashMap::new(),
            ranged: Vec::new(),
            next_id: 1,
            capacity: capacity.max(1),
        }
    }

    /// Number of watchers.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether there are no watchers.
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Adds a watcher given the store's current and compacted revisions (read under the same
    /// read lock this call is made under).
    pub fn register(
        &mut self,
        spec: WatchSpec,
        current: i64,
        compacted: i64,
    ) -> Result<(WatcherId, Arc<Mailbox>), Error> {
        let start = spec.start_revision;
        if start > 0 && start < compacted {
            return Err(Error::Compacted {
                compact_revision: compacted,
            });
        }
        let synced = start <= 0 || start > current;
        let mailbox = Arc::new(Mailbox::new((!synced).then_some(start)));
        let id = self.next_id;
        self.next_id += 1;
        let watcher = Watcher {
            spec,
            mailbox: mailbox.clone(),
            min_revision: start.max(current + 1),
            synced,
        };
        if synced {
            self.index(id, &watcher.spec);
        } else {
            mailbox.notify.notify_one();
        }
        self.watchers.insert(id, watcher);
        Ok((id, mailbox))
    }

    /// Puts a lagging watcher back in the index once it has caught up to `next_revision`
    /// (the store's current revision + 1, read under the read lock this call is made under).
    pub fn resync(&mut self, id: WatcherId, next_revision: i64) {
        let Some(watcher) = self.watchers.get_mut(&id) else {
            return;
        };
        watcher.mailbox.state.lock().catch_up_from = None;
        watcher.min_revision = watcher.min_revision.max(next_revision);
        if !watcher.synced {
            watcher.synced = true;
            let spec = watcher.spec.clone();
            self.index(id, &spec);
        }
    }

    /// Moves every synced watcher to catching up from `from` (or its own start, if later). Used
    /// when the state was replaced wholesale by a snapshot: the live stream no longer continues
    /// what they saw, but the snapshot's history lets them catch up (or learn it was compacted).
    pub fn lag_all(&mut self, from: i64) {
        for watcher in self.watchers.values_mut() {
            if watcher.synced {
                watcher.synced = false;
                watcher.mailbox.state.lock().catch_up_from = Some(from.max(watcher.min_revision));
                watcher.mailbox.notify.notify_one();
            }
        }
        self.exact.clear();
        self.ranged.clear();
    }

    /// Removes a watcher.
    pub fn cancel(&mut self, id: WatcherId) {
        if let Some(watcher) = self.watchers.remove(&id)
            && watcher.synced
        {
            self.unindex(id, &watcher.spec.range);
        }
    }

    /// Delivers applied changes (in revision order) to every synced watcher that wants them.
    pub fn publish(&mut self, events: &[Event]) {
        if self.watchers.is_empty() {
            return;
        }
        let mut touched: Vec<WatcherId> = Vec::new();
        let mut fell_behind: Vec<WatcherId> = Vec::new();
        for event in events {
            let exact = self
                .exact
                .get(&event.kv.key)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for id in exact.iter().chain(self.ranged.iter()) {
                let Some(watcher) = self.watchers.get(id) else {
                    continue;
                };
                if !watcher.synced || event.revision() < watcher.min_revision {
                    continue;
                }
                let Some(shaped) = watcher.spec.shape(event) else {
                    continue;
                };
                if watcher.mailbox.push(shaped, self.capacity) {
                    if touched.last() != Some(id) {
                        touched.push(*id);
                    }
                } else {
                    fell_behind.push(*id);
                }
            }
        }
        for id in fell_behind {
            if let Some(watcher) = self.watchers.get_mut(&id)
                && watcher.synced
            {
                watcher.synced = false;
                let range = watcher.spec.range.clone();
                self.unindex(id, &range);
            }
            touched.push(id);
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            if let Some(watcher) = self.watchers.get(&id) {
                watcher.mailbox.notify.notify_one();
            }
        }
    }

    /// The spec a watcher was registered with.
    pub fn spec(&self, id: WatcherId) -> Option<&WatchSpec> {
        self.watchers.get(&id).map(|w| &w.spec)
    }

    fn index(&mut self, id: WatcherId, spec: &WatchSpec) {
        match &spec.range {
            KeyRange::Single(key) => self.exact.entry(key.clone()).or_default().push(id),
            _ => self.ranged.push(id),
        }
    }

    fn unindex(&mut self, id: WatcherId, range: &KeyRange) {
        match range {
            KeyRange::Single(key) => {
                if let Some(ids) = self.exact.get_mut(key) {
                    ids.retain(|w| *w != id);
                    if ids.is_empty() {
                        self.exact.remove(key);
                    }
                }
            }
            _ => self.ranged.retain(|w| *w != id),
        }
    }
}
