//! One watcher's stream of changes, as the API layer consumes it.
//!
//! It takes what the hub queued in its mailbox and, when the watcher is lagging (it started
//! in the past, overflowed, or the state was replaced by a snapshot), catches up from the
//! store's history in bounded chunks under the read lock, then rejoins the live stream — the
//! resync happens under the same read lock as the last history read, so no revision is missed
//! or repeated.

use std::sync::Arc;

use mvcc::watch::{Mailbox, WatchSpec, WatcherId};
use mvcc::{Error, Event};

use crate::state_machine::Shared;

/// Events per catch-up chunk (a revision is never split, so a chunk may be a little larger).
const CATCH_UP_EVENTS: usize = 1000;
/// Changes scanned per catch-up chunk, bounding the read-lock hold for sparse watches.
const CATCH_UP_SCAN: usize = 20_000;

/// Changes delivered together.
#[derive(Debug, Default)]
pub struct WatchBatch {
    /// The changes, in revision order.
    pub events: Vec<Event>,
}

/// A registered watcher. Dropping it cancels the watch.
pub struct Watcher {
    id: WatcherId,
    spec: WatchSpec,
    mailbox: Arc<Mailbox>,
    shared: Arc<Shared>,
    /// Where catching up continues.
    cursor: i64,
}

impl Watcher {
    /// Registers a watcher on the shared state. Fails with [`Error::Compacted`] if it starts
    /// below the compaction point.
    pub fn register(shared: &Arc<Shared>, spec: WatchSpec) -> Result<Watcher, Error> {
        let state = shared.state.read();
        let (id, mailbox) = state.hub.lock().register(
            spec.clone(),
            state.mvcc.revision(),
            state.mvcc.compact_revision(),
        )?;
        drop(state);
        Ok(Watcher {
            id,
            cursor: spec.start_revision,
            spec,
            mailbox,
            shared: shared.clone(),
        })
    }

    /// The next changes; waits until there are some. An error means the watcher fell behind
    /// the compaction point and is over.
    pub async fn next(&mut self) -> Result<WatchBatch, Error> {
        loop {
            let delivery = self.mailbox.take();
            if let Some(from) = delivery.catch_up_from {
                self.cursor = self.cursor.max(from);
            }
            if !delivery.events.is_empty() {
                return Ok(WatchBatch {
                    events: delivery.events,
                });
            }
            if delivery.catch_up_from.is_some() {
                let events = self.catch_up()?;
                if !events.is_empty() {
                    return Ok(WatchBatch { events });
                }
                continue;
            }
            self.mailbox.changed().await;
        }
    }

    /// One chunk of history; rejoins the live stream when it reaches the head.
    fn catch_up(&mut self) -> Result<Vec<Event>, Error> {
        let state = self.shared.state.read();
        let (events, next) = state.mvcc.events_since(
            &self.spec.range,
            self.cursor,
            CATCH_UP_EVENTS,
            CATCH_UP_SCAN,
        )?;
        self.cursor = next;
        if next > state.mvcc.revision() {
            state.hub.lock().resync(self.id, next);
        }
        drop(state);
        Ok(events
            .iter()
            .filter_map(|event| self.spec.shape(event))
            .collect())
    }

    /// The store revision this watcher is known to be caught up to, if it has nothing
    /// queued and is not lagging — the revision a progress notification may report.
    pub fn progress(&self) -> Option<i64> {
        let state = self.shared.state.read();
        self.mailbox.is_idle().then(|| state.mvcc.revision())
    }

    /// The watcher's spec.
    pub fn spec(&self) -> &WatchSpec {
        &self.spec
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.state.read().hub.lock().cancel(self.id);
    }
}
