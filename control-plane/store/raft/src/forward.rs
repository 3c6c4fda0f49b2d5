//! What a follower asks the leader to do on its behalf.
//!
//! Writes, read indexes, lease keep-alives and membership changes can only be decided by the
//! leader. A member that is not the leader forwards them over the peer protocol instead of
//! failing, so clients may talk to any member.

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::{LogId, Proposal, ProposalResult};

/// A request only the leader can serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// Replicate these ops.
    Propose(Proposal),
    /// Confirm leadership and return the log position a linearizable read must wait for.
    ReadIndex,
    /// Renew a lease; answers its TTL.
    LeaseKeepAlive(i64),
    /// How long a lease has left.
    LeaseRemaining(i64),
    /// Add a member with this peer URL (as a learner, promoted automatically unless `learner`).
    AddMember {
        /// The new member's peer URL.
        peer_url: String,
        /// Keep it a learner until explicitly promoted.
        learner: bool,
    },
    /// Remove a member.
    RemoveMember(u64),
    /// Promote a learner to voter.
    PromoteMember(u64),
    /// Hand leadership to a member.
    TransferLeader(u64),
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// Results of a proposal.
    Proposed(ProposalResult),
    /// The read index.
    ReadIndex(LogId),
    /// Seconds of life left (keep-alive: the renewed TTL).
    Ttl(i64),
    /// A member was added with this ID.
    MemberAdded(u64),
    /// Done.
    Done,
}

/// The leader's answer or its refusal.
pub type ForwardResult = Result<ForwardResponse, StoreError>;
