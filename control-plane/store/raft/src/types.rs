//! The replicated vocabulary: what a Raft log entry carries and what applying it returns.
//!
//! A log entry holds a [`Proposal`]: a batch of [`Op`]s that concurrent clients submitted
//! together. Batching many client requests into one entry is the store's group commit at the
//! Raft level — one append, one fsync and one replication round for the whole batch.

use std::fmt;

use mvcc::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// openraft's type parameters for the store.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResult,
        NodeId = u64,
        Node = PeerNode,
);

/// A member as the Raft membership records it: where its peer endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeerNode {
    /// The member's advertised peer URL, e.g. `http://127.0.0.2:2380`.
    pub peer_url: String,
}

/// A member's self-published attributes, replicated in the state machine (not in the Raft
/// membership, which only needs the peer address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MemberAttrs {
    /// The member's name.
    pub name: String,
    /// Where clients reach it.
    pub client_urls: Vec<String>,
}

/// One replicated operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A transaction.
    Txn(TxnRequest),
    /// Discard history before a revision.
    Compact(i64),
    /// Create a lease.
    LeaseGrant {
        /// The lease ID (chosen by the proposer, so replicas agree).
        id: i64,
        /// Time to live in seconds.
        ttl: i64,
    },
    /// Remove a lease and delete its keys (clients' revokes and the leader's expiries).
    LeaseRevoke {
        /// The lease ID.
        id: i64,
    },
    /// A member publishes its name and client URLs.
    PublishMember {
        /// The member ID.
        id: u64,
        /// What it publishes.
        attrs: MemberAttrs,
    },
    /// The first leader names the cluster.
    SetClusterId(u64),
}

/// What an op returns when applied successfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResponse {
    /// Result of a put.
    Put(PutResponse),
    /// Result of a delete.
    DeleteRange(DeleteRangeResponse),
    /// Result of a transaction.
    Txn(TxnResponse),
    /// Ops without a payload in their answer.
    Done,
}

/// An applied op's response and the store revision right after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpOutcome {
    /// The store revision after the op.
    pub revision: i64,
    /// What it returned.
    pub response: OpResponse,
}

/// The result of one op: applying can fail deterministically (e.g. a lease that does not exist).
pub type OpResult = Result<OpOutcome, mvcc::Error>;

/// A batch of ops in one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Proposal {
    /// Applied in order, each at its own revision.
    pub ops: Vec<Op>,
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proposal of {} ops", self.ops.len())
    }
}

/// One result per op of a [`Proposal`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProposalResult {
    /// The results.
    pub results: Vec<OpResult>,
}

/// The Raft handle of the store.
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
/// A log position.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// The membership as of a log position.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, crate::snapshot_store::SnapshotFile>;
