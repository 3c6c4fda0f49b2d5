//! Cluster membership: adding members as learners and promoting them once they caught up,
//! removing them, moving leadership, and each member publishing its name and client URLs.
//!
//! A member added without `learner` still joins as a learner first and is promoted
//! automatically when its log has caught up, so adding a server never lowers availability:
//! the quorum only grows once the new voter can vote with an up-to-date log.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use openraft::errors::{ClientWriteError, RaftError};
use rand::Rng;

use crate::config::member_id;
use crate::error::StoreError;
use crate::forward::{ForwardResponse, ForwardResult};
use crate::node::Inner;
use crate::types::*;

/// How far behind the leader's log a learner may be and still count as caught up.
const CAUGHT_UP_SLACK: u64 = 1000;
/// How long an automatic promotion keeps waiting for a learner to catch up.
const PROMOTION_PATIENCE: Duration = Duration::from_secs(600);

/// A member as the member list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member ID.
    pub id: u64,
    /// Published name (empty until the member has started and published it).
    pub name: String,
    /// Peer URL.
    pub peer_urls: Vec<String>,
    /// Published client URLs.
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub is_learner: bool,
}

/// Publishes this member's attributes, and lets the first leader name the cluster.
pub async fn publish(inner: Arc<Inner>) {
    let attrs = MemberAttrs {
        name: inner.config.name.clone(),
        client_urls: inner.config.advertise_client_urls.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let (published, named, is_member) = {
            let state = inner.shared.state.read();
            (
                state.members.get(&inner.id) == Some(&attrs),
                state.cluster_id != 0,
                state.membership.membership().get_node(&inner.id).is_some(),
            )
        };
        if !named && inner.leader().is_some_and(|(leader, _)| leader == inner.id) {
            let id = rand::rng().random::<u64>().max(1);
            let _ = inner.propose(Op::SetClusterId(id)).await;
        }
        if !published && is_member {
            let op = Op::PublishMember {
                id: inner.id,
                attrs: attrs.clone(),
            };
            if let Err(e) = inner.propose(op).await {
                tracing::debug!("publishing member attributes: {e}");
            }
        }
    }
}

fn write_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => StoreError::NotLeader,
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => StoreError::LeaderChanged,
        RaftError::APIError(e) => StoreError::Internal(e.to_string()),
        RaftError::Fatal(_) => StoreError::Stopped,
    }
}

impl Inner {
    fn membership(&self) -> openraft::Membership<u64, PeerNode> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .clone()
    }

    fn is_voter(&self, id: u64) -> bool {
        self.membership().voter_ids().any(|v| v == id)
    }

    /// Whether a learner's log is close enough to the leader's to vote.
    fn caught_up(&self, id: u64) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |log_id| log_id.index);
        matched + CAUGHT_UP_SLACK >= last && matched > 0
    }

    pub async fn add_member_as_leader(
        self: &Arc<Self>,
        peer_url: String,
        learner: bool,
    ) -> ForwardResult {
        if self.leader().is_none_or(|(leader, _)| leader != self.id) {
            return Err(StoreError::NotLeader);
        }
        if self
            .membership()
            .nodes()
            .any(|(_, node)| node.peer_url == peer_url)
        {
            return Err(StoreError::PeerUrlExists);
        }
        let id = member_id(&peer_url, &self.config.cluster_token);
        self.raft
            .add_learner(id, PeerNode { peer_url }, false)
            .await
            .map_err(write_error)?;
        if !learner {
            let inner = self.clone();
            tokio::spawn(async move { inner.promote_when_caught_up(id).await });
        }
        Ok(ForwardResponse::MemberAdded(id))
    }

    async fn promote_when_caught_up(&self, id: u64) {
        let give_up = Instant::now() + PROMOTION_PATIENCE;
        while Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let membership = self.membership();
            if membership.get_node(&id).is_none() || membership.voter_ids().any(|v| v == id) {
                return;
            }
            if self.leader().is_none_or(|(leader, _)| leader != self.id) || !self.caught_up(id) {
                continue;
            }
            match self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
            {
                Ok(_) => {
                    tracing::info!(
                        member = format_args!("{id:x}"),
                        "learner caught up and promoted to voter"
                    );
                    return;
                }
                Err(e) => tracing::debug!("promoting {id:x}: {e}"),
            }
        }
        tracing::warn!(
            member = format_args!("{id:x}"),
            "learner did not catch up; left as a learner"
        );
    }

    pub async fn promote_member_as_leader(&self, id: u64) -> ForwardResult {
        if self.leader().is_none_or(|(leader, _)| leader != self.id) {
            return Err(StoreError::NotLeader);
        }
        if self.membership().get_node(&id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        if self.is_voter(id) {
            return Err(StoreError::NotLearner);
        }
        if !self.caught_up(id) {
            return Err(StoreError::LearnerNotReady);
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(ForwardResponse::Done)
    }

    pub async fn remove_member_as_leader(&self, id: u64) -> ForwardResult {
        if self.leader().is_none_or(|(leader, _)| leader != self.id) {
            return Err(StoreError::NotLeader);
        }
        let membership = self.membership();
        if membership.get_node(&id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        let change = if self.is_voter(id) {
            if membership.voter_ids().count() <= 1 {
                return Err(StoreError::NotEnoughStartedMembers);
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        Ok(ForwardResponse::Done)
    }

    pub async fn transfer_leader_as_leader(&self, to: u64) -> ForwardResult {
        if self.leader().is_none_or(|(leader, _)| leader != self.id) {
            return Err(StoreError::NotLeader);
        }
        if to == self.id {
            return Ok(ForwardResponse::Done);
        }
        if self.membership().get_node(&to).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        if !self.is_voter(to) {
            return Err(StoreError::BadLeaderTransferee);
        }
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|_| StoreError::Stopped)?;
        let deadline = Instant::now() + self.config.request_timeout;
        while Instant::now() < deadline {
            if self.leader().is_some_and(|(leader, _)| leader == to) {
                return Ok(ForwardResponse::Done);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(StoreError::Timeout)
    }

    /// Every member with its published attributes, from the applied membership.
    pub fn members(&self) -> Vec<MemberInfo> {
        let state = self.shared.state.read();
        let membership = state.membership.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| {
                let attrs = state.members.get(id).cloned().unwrap_or_default();
                MemberInfo {
                    id: *id,
                    name: attrs.name,
                    peer_urls: vec![node.peer_url.clone()],
                    client_urls: attrs.client_urls,
                    is_learner: !voters.contains(id),
                }
            })
            .collect()
    }
}
