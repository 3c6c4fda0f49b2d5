//! The store's client-facing operations on [`StoreNode`], shaped for the etcd API layer.

use std::path::PathBuf;

use mvcc::watch::WatchSpec;
use mvcc::{RangeRequest, RangeResponse};
use openraft::async_runtime::WatchReceiver;
use rand::Rng;

use crate::error::StoreError;
use crate::forward::{ForwardRequest, ForwardResponse};
use crate::members::MemberInfo;
use crate::node::StoreNode;
use crate::state_machine::write_snapshot_file;
use crate::types::Op;
use crate::watcher::Watcher;

/// The largest lease TTL etcd accepts, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// What `endpoint status` shows about a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This member.
    pub member_id: u64,
    /// The cluster's ID (0 until the first leader named it).
    pub cluster_id: u64,
    /// The leader this member knows of (0 if none).
    pub leader: u64,
    /// The Raft term.
    pub raft_term: u64,
    /// The last log index.
    pub raft_index: u64,
    /// The last applied log index.
    pub raft_applied_index: u64,
    /// The store revision.
    pub revision: i64,
    /// Bytes the store holds, history included.
    pub db_size: i64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// A lease's remaining time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTtl {
    /// The TTL it was granted.
    pub granted: i64,
    /// Seconds left.
    pub remaining: i64,
    /// Attached keys, if asked for.
    pub keys: Vec<bytes::Bytes>,
}

impl StoreNode {
    /// Reads a range: linearizable unless `serializable`. Returns the response and the store
    /// revision it was read at.
    pub async fn range(
        &self,
        req: &RangeRequest,
        serializable: bool,
    ) -> Result<(RangeResponse, i64), StoreError> {
        if !serializable {
            self.linearize().await?;
        }
        let state = self.inner.shared.state.read();
        let response = state.mvcc.range(req)?;
        Ok((response, state.mvcc.revision()))
    }

    /// The current store revision (as of this member's applied state).
    pub fn revision(&self) -> i64 {
        self.inner.shared.state.read().mvcc.revision()
    }

    /// Starts a watch.
    pub fn watch(&self, spec: WatchSpec) -> Result<Watcher, StoreError> {
        Ok(Watcher::register(&self.inner.shared, spec)?)
    }

    /// Creates a lease; `id` 0 picks a random unused one. Returns the ID and the TTL granted
    /// (raised to the minimum that survives a leader election).
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<(i64, i64), StoreError> {
        if ttl > MAX_LEASE_TTL {
            return Err(StoreError::Mvcc(mvcc::Error::InvalidArgument(
                "etcdserver: too large lease TTL".into(),
            )));
        }
        let ttl = ttl.max(self.min_lease_ttl());
        let id = if id == 0 {
            rand::rng().random_range(1..i64::MAX)
        } else {
            id
        };
        self.propose(Op::LeaseGrant { id, ttl }).await?;
        // Start the lease's clock on the leader now rather than at its next expiry tick.
        self.lease_keep_alive(id).await?;
        Ok((id, ttl))
    }

    /// A lease must outlive an election, or a leader change alone would expire it.
    fn min_lease_ttl(&self) -> i64 {
        let election = self.inner.config.election_timeout * 3;
        i64::try_from(election.as_millis().div_ceil(1000))
            .unwrap_or(1)
            .max(1)
    }

    /// Revokes a lease, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64, StoreError> {
        Ok(self.propose(Op::LeaseRevoke { id }).await?.revision)
    }

    /// Renews a lease on the leader; returns its TTL.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, StoreError> {
        match self
            .inner
            .on_leader(ForwardRequest::LeaseKeepAlive(id))
            .await?
        {
            ForwardResponse::Ttl(ttl) => Ok(ttl),
            other => Err(StoreError::Internal(format!(
                "unexpected keep-alive answer {other:?}"
            ))),
        }
    }

    /// A lease's granted and remaining TTL, and optionally its keys.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTtl, StoreError> {
        let remaining = match self
            .inner
            .on_leader(ForwardRequest::LeaseRemaining(id))
            .await?
        {
            ForwardResponse::Ttl(ttl) => ttl,
            other => {
                return Err(StoreError::Internal(format!(
                    "unexpected lease answer {other:?}"
                )));
            }
        };
        let state = self.inner.shared.state.read();
        let lease = state
            .mvcc
            .lease(id)
            .ok_or(StoreError::Mvcc(mvcc::Error::LeaseNotFound))?;
        Ok(LeaseTtl {
            granted: lease.ttl,
            remaining,
            keys: if keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Every lease ID.
    pub async fn leases(&self) -> Result<Vec<i64>, StoreError> {
        self.linearize().await?;
        let mut ids: Vec<i64> = self
            .inner
            .shared
            .state
            .read()
            .mvcc
            .leases()
            .map(|l| l.id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// A checksum of the key-value state at `revision` (0 = newest), the revision it covers,
    /// and the compaction point; equal on every member that applied the same log.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), StoreError> {
        self.linearize().await?;
        let state = self.inner.shared.state.read();
        let (hash, revision) = state.mvcc.hash_at(revision)?;
        Ok((hash, revision, state.mvcc.compact_revision()))
    }

    /// The member list.
    pub async fn members(&self, linearizable: bool) -> Result<Vec<MemberInfo>, StoreError> {
        if linearizable {
            self.linearize().await?;
        }
        Ok(self.inner.members())
    }

    /// Adds a member by peer URL; returns its ID. It joins as a learner and, unless `learner`,
    /// is promoted once it has caught up.
    pub async fn member_add(&self, peer_url: String, learner: bool) -> Result<u64, StoreError> {
        match self
            .inner
            .on_leader(ForwardRequest::AddMember { peer_url, learner })
            .await?
        {
            ForwardResponse::MemberAdded(id) => Ok(id),
            other => Err(StoreError::Internal(format!(
                "unexpected member answer {other:?}"
            ))),
        }
    }

    /// Removes a member.
    pub async fn member_remove(&self, id: u64) -> Result<(), StoreError> {
        self.inner
            .on_leader(ForwardRequest::RemoveMember(id))
            .await
            .map(drop)
    }

    /// Promotes a caught-up learner to voter.
    pub async fn member_promote(&self, id: u64) -> Result<(), StoreError> {
        self.inner
            .on_leader(ForwardRequest::PromoteMember(id))
            .await
            .map(drop)
    }

    /// Hands leadership to a voter and waits until it leads.
    pub async fn move_leader(&self, to: u64) -> Result<(), StoreError> {
        self.inner
            .on_leader(ForwardRequest::TransferLeader(to))
            .await
            .map(drop)
    }

    /// This member's view of itself and the cluster.
    pub fn status(&self) -> Status {
        let (revision, db_size, cluster_id, applied) = {
            let state = self.inner.shared.state.read();
            (
                state.mvcc.revision(),
                state.mvcc.size_bytes(),
                state.cluster_id,
                state.last_applied.map_or(0, |id| id.index),
            )
        };
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow_watched();
        Status {
            member_id: self.inner.id,
            cluster_id,
            leader: metrics.current_leader.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_applied_index: applied,
            revision,
            db_size: i64::try_from(db_size).unwrap_or(i64::MAX),
            is_learner: !metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.inner.id),
        }
    }

    /// The cluster ID, member ID and Raft term for response headers.
    pub fn header(&self) -> (u64, u64, u64) {
        let cluster_id = self.inner.shared.state.read().cluster_id;
        let term = self.inner.raft.metrics().borrow_watched().current_term;
        (cluster_id, self.inner.id, term)
    }

    /// Writes a point-in-time snapshot of the whole store to a new temporary file in the data
    /// directory and returns its path; the caller streams and deletes it.
    pub async fn export_snapshot(&self) -> Result<PathBuf, StoreError> {
        let shared = self.inner.shared.clone();
        let dir = self.inner.config.data_dir.join("export");
        let path = dir.join(format!("snapshot-{}.db", rand::rng().random::<u64>()));
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_snapshot_file(&shared, &target)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .map_err(|e| StoreError::Internal(format!("writing the snapshot: {e}")))?;
        Ok(path)
    }
}
