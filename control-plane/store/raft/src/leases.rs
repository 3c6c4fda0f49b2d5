//! Lease time: the leader's clock for every lease, keep-alives, and expiry.
//!
//! Which leases exist is replicated state; when each expires is not. Only the leader keeps
//! deadlines, as etcd does: a new leader gives every lease a full TTL from the moment it took
//! over (so no lease expires because of an election), keep-alives reach the leader (forwarded
//! from followers), and an expired lease is revoked through the log like a client's revoke —
//! so every replica deletes the same keys at the same revision.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::StoreError;
use crate::node::Inner;
use crate::types::Op;

/// How often the leader looks for expired leases.
const TICK: Duration = Duration::from_millis(100);
/// Revokes proposed per tick at most, so a mass expiry cannot flood the log.
const MAX_REVOKES_PER_TICK: usize = 500;
/// After proposing a revoke, wait this long before proposing it again if the lease is still
/// there (the first may still be in flight).
const REVOKE_RETRY: Duration = Duration::from_secs(1);

/// The leader's lease deadlines.
#[derive(Default)]
pub struct LeaseClock {
    state: Mutex<ClockState>,
}

#[derive(Default)]
struct ClockState {
    /// The term this clock was started in; a different term means a new leadership.
    term: Option<u64>,
    deadlines: HashMap<i64, Instant>,
}

/// Revokes expired leases while this member leads.
pub async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired = inner.expired_leases();
        for id in expired {
            let inner = inner.clone();
            tokio::spawn(async move {
                match inner.propose(Op::LeaseRevoke { id }).await {
                    Ok(_) | Err(StoreError::Mvcc(mvcc::Error::LeaseNotFound)) => {
                        tracing::debug!(lease = id, "lease expired and revoked");
                    }
                    Err(e) => tracing::warn!(lease = id, "revoking an expired lease failed: {e}"),
                }
            });
        }
    }
}

impl Inner {
    /// This member's leadership term, if it leads.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.current_leader == Some(self.id)).then_some(metrics.current_term)
    }

    /// Leases whose deadline passed, with deadlines started for leases seen for the first time.
    fn expired_leases(&self) -> Vec<i64> {
        let Some(term) = self.leading_term() else {
            let mut clock = self.leases.state.lock();
            clock.term = None;
            clock.deadlines.clear();
            return Vec::new();
        };
        let leases: Vec<(i64, i64)> = self
            .shared
            .state
            .read()
            .mvcc
            .leases()
            .map(|lease| (lease.id, lease.ttl))
            .collect();
        let now = Instant::now();
        let mut clock = self.leases.state.lock();
        if clock.term != Some(term) {
            clock.term = Some(term);
            clock.deadlines.clear();
        }
        let mut expired = Vec::new();
        let mut live = HashMap::with_capacity(leases.len());
        for (id, ttl) in leases {
            let deadline = clock
                .deadlines
                .get(&id)
                .copied()
                .unwrap_or_else(|| now + ttl_duration(ttl));
            if deadline <= now && expired.len() < MAX_REVOKES_PER_TICK {
                expired.push(id);
                live.insert(id, now + REVOKE_RETRY);
            } else {
                live.insert(id, deadline);
            }
        }
        clock.deadlines = live;
        expired
    }

    /// Renews a lease; returns its TTL. Only valid on the leader.
    pub fn keep_alive_as_leader(&self, id: i64) -> Result<i64, StoreError> {
        if self.leading_term().is_none() {
            return Err(StoreError::NotLeader);
        }
        let ttl = self.lease_ttl(id)?;
        self.leases
            .state
            .lock()
            .deadlines
            .insert(id, Instant::now() + ttl_duration(ttl));
        Ok(ttl)
    }

    /// Whole seconds a lease has left (truncated, as etcd reports it). Only valid on the leader.
    pub fn remaining_as_leader(&self, id: i64) -> Result<i64, StoreError> {
        if self.leading_term().is_none() {
            return Err(StoreError::NotLeader);
        }
        let ttl = self.lease_ttl(id)?;
        let deadline = self.leases.state.lock().deadlines.get(&id).copied();
        Ok(match deadline {
            None => ttl,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                i64::try_from(left.as_secs()).unwrap_or(ttl)
            }
        })
    }

    fn lease_ttl(&self, id: i64) -> Result<i64, StoreError> {
        self.shared
            .state
            .read()
            .mvcc
            .lease(id)
            .map(|lease| lease.ttl)
            .ok_or(StoreError::Mvcc(mvcc::Error::LeaseNotFound))
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}
