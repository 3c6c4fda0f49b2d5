//! Errors of the replicated store, as its API layer sees them.
//!
//! Messages use etcd's wording where etcd clients match on it. The type is serializable because
//! a follower receives it from the leader when it forwards a request.

use serde::{Deserialize, Serialize};

/// Why a store request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    /// The state machine refused the request.
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    /// No leader is known, e.g. during an election or without a quorum.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The member asked to act as leader is not the leader (callers retry with the new one).
    #[error("etcdserver: not leader")]
    NotLeader,
    /// Leadership changed while the request was in flight; it may or may not have been applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request did not complete in time; it may or may not have been applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The store's space quota or the disk is full.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// No member with that ID.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member with that peer URL exists.
    #[error("etcdserver: peerURL exists")]
    PeerUrlExists,
    /// Promotion of a member that is not a learner.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// Promotion of a learner that has not caught up with the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Leadership can only move to a voter.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A membership change that would leave the cluster unable to reach quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A request the store cannot serve for a reason of its own (storage failure, bug).
    #[error("etcdserver: {0}")]
    Internal(String),
}
