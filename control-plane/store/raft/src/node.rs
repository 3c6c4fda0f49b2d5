//! A store member: opens its storage, runs Raft and the peer server, and routes every request
//! that only the leader may serve to the leader — locally or over the peer protocol.
//!
//! Client requests enter through [`StoreNode`]. Writes go through the proposer, which batches
//! whatever arrived meanwhile into one log entry; reads take a coalesced read index unless they
//! are serializable; watchers read the shared state directly.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{ReadPolicy, SnapshotPolicy};
use parking_lot::Mutex;
use store_proto::peer::raft_peer_server::RaftPeerServer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::coalesce::Coalescer;
use crate::config::{ClusterState, NodeConfig, member_id};
use crate::disk::DiskGuard;
use crate::error::StoreError;
use crate::forward::{ForwardRequest, ForwardResponse, ForwardResult};
use crate::leases::LeaseClock;
use crate::log_store::LogStore;
use crate::network::{PeerNetwork, Peers};
use crate::peer_service::{ForwardHandler, PeerService};
use crate::proposer::{self, Pending};
use crate::snapshot_store::SnapshotStore;
use crate::state_machine::{Shared, StateMachine};
use crate::types::*;

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be opened or recovered.
    #[error("opening the data directory: {0}")]
    Storage(#[from] io::Error),
    /// The Raft configuration is invalid.
    #[error("raft configuration: {0}")]
    Config(String),
    /// Raft could not start.
    #[error("starting raft: {0}")]
    Raft(String),
    /// The peer listener could not be bound.
    #[error("listening for peers on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// A running store member. Cheap to clone.
#[derive(Clone)]
pub struct StoreNode {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: NodeConfig,
    pub id: u64,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub log: LogStore,
    pub peers: Peers,
    pub proposals: mpsc::Sender<Pending>,
    pub reads: Arc<Coalescer<Result<(), StoreError>>>,
    pub leader_reads: Arc<Coalescer<ForwardResult>>,
    pub leases: LeaseClock,
    pub applied: watch::Receiver<u64>,
    pub disk: DiskGuard,
    pub stop: watch::Sender<bool>,
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl StoreNode {
    /// Opens the data directory, starts Raft and the peer server, and bootstraps or joins
    /// the cluster as configured.
    pub async fn start(config: NodeConfig) -> Result<StoreNode, StartError> {
        let id = config.member_id();
        let log = LogStore::open(&config.data_dir.join("log"), &config.data_dir.join("raft"))?;
        let snapshots = Arc::new(SnapshotStore::open(&config.data_dir.join("snap"))?);
        let (shared, applied) = Shared::new(config.watch_mailbox);
        let raft_config = raft_config(&config)?;
        let peers = Peers::new(config.peer_tls.as_ref());
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            PeerNetwork::new(peers.clone()),
            log.clone(),
            StateMachine::new(shared.clone(), snapshots.clone()),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(config.listen_peer)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen_peer,
                source,
            })?;
        let (proposals, proposals_rx) = mpsc::channel(64 * 1024);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            id,
            raft: raft.clone(),
            shared,
            log,
            peers,
            proposals,
            reads: Coalescer::new(),
            leader_reads: Coalescer::new(),
            leases: LeaseClock::default(),
            applied,
            disk: DiskGuard::new(config.data_dir.clone(), config.disk_reserve_bytes),
            stop,
            tasks: Mutex::new(Vec::new()),
            config,
        });

        let service = PeerService::new(
            raft.clone(),
            snapshots,
            Arc::new(LeaderService(inner.clone())),
        );
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &inner.config.peer_tls {
            let tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(&tls.cert, &tls.key))
                .client_ca_root(Certificate::from_pem(&tls.ca));
            builder = builder
                .tls_config(tls)
                .map_err(|e| StartError::Config(format!("peer tls: {e}")))?;
        }
        let server = builder
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .add_service(
                RaftPeerServer::new(service)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            );
        let mut stopped = inner.stop.subscribe();
        // tonic applies TCP_NODELAY only to sockets it accepts itself; without it, small Raft
        // messages wait out the peer's delayed ACK (about 40 ms).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        inner.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(e) = server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!("peer server failed: {e}");
            }
        });

        inner.bootstrap().await?;
        inner.campaign_if_alone().await;
        inner.spawn(proposer::run(inner.clone(), proposals_rx));
        inner.spawn(crate::leases::run(inner.clone()));
        inner.spawn(crate::members::publish(inner.clone()));
        inner.spawn(compact_in_background(inner.clone()));
        Ok(StoreNode { inner })
    }

    /// Stops Raft, the peer server and background tasks.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let _ = self.inner.raft.shutdown().await;
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// This member's ID.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// This member's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// The Raft handle (for metrics and tests).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The shared applied state, for reads that need no coordination.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Replicates one op (batched with concurrent ones) and returns its result.
    pub async fn propose(&self, op: Op) -> Result<OpOutcome, StoreError> {
        self.inner.propose(op).await
    }

    /// Waits until this member has applied everything committed before the call: after it,
    /// a read of local state is linearizable.
    pub async fn linearize(&self) -> Result<(), StoreError> {
        self.inner.linearize().await
    }

    /// Whether writes are being refused for lack of space (quota or disk reserve).
    pub fn out_of_space(&self) -> bool {
        self.inner.out_of_space()
    }

    /// Resolves when Raft has stopped on a fatal error (storage failure); the member can
    /// then serve nothing reliably and should be restarted.
    pub async fn fatal(&self) -> String {
        // Polled, not awaited on every metrics change: the metrics change with every applied
        // entry, and a wake-up per write costs a context switch on the hot path.
        let mut metrics = self.inner.raft.metrics();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.to_string();
            }
            // A closed channel means the Raft core is gone without reporting why.
            if let Some(Err(_)) = metrics.changed().now_or_never() {
                return "raft stopped".to_owned();
            }
        }
    }

    /// The log's counters (for status and benchmarks).
    pub fn log_stats(&self) -> segment_log::Stats {
        self.inner.log.segment_log().stats()
    }
}

fn raft_config(config: &NodeConfig) -> Result<openraft::Config, StartError> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    openraft::Config {
        cluster_name: config.cluster_token.clone(),
        heartbeat_interval: ms(config.heartbeat),
        election_timeout_min: ms(config.election_timeout),
        election_timeout_max: ms(config.election_timeout) * 2,
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_entries),
        max_in_snapshot_log_to_keep: config.catch_up_entries,
        enable_pre_vote: Some(true),
        // A leader replicates entries before its own fsync completes, so after a SIGKILL it can
        // come back missing entries its followers hold. Resuming leadership in the same term
        // would then hand out those log ids again for different entries and the members'
        // states would diverge; a new election gives every new entry a new term instead.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Config(e.to_string()))
}

/// Reclaims compacted history in small steps even when no writes arrive to do it.
async fn compact_in_background(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let pending = inner.shared.state.read().mvcc.compaction_pending();
        if pending {
            inner.shared.state.write().mvcc.compact_step(10_000);
        }
    }
}

impl Inner {
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().push(tokio::spawn(task));
    }

    async fn bootstrap(&self) -> Result<(), StartError> {
        if self.config.cluster_state != ClusterState::New {
            return Ok(());
        }
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let members: BTreeMap<u64, PeerNode> = self
            .config
            .initial_cluster
            .iter()
            .map(|(_, url)| {
                (
                    member_id(url, &self.config.cluster_token),
                    PeerNode {
                        peer_url: url.clone(),
                    },
                )
            })
            .collect();
        if initialized || !members.contains_key(&self.id) {
            return Ok(());
        }
        // Every founding member initializes with the same membership; the vote decides the leader.
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(_)) => Ok(()),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// A lone voter restarting need not wait an election timeout to lead again: nobody else
    /// can have a newer term or log.
    async fn campaign_if_alone(&self) {
        let alone = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow_watched();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            voters == [self.id]
        };
        if alone && let Err(e) = self.raft.trigger().elect(false).await {
            tracing::warn!("could not start an election: {e}");
        }
    }

    pub async fn propose(self: &Arc<Self>, op: Op) -> Result<OpOutcome, StoreError> {
        self.check_space(&op)?;
        let (reply, rx) = oneshot::channel();
        let size = proposer::op_size(&op);
        self.proposals
            .send(Pending { op, size, reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Refuses writes that grow the store past its quota or fill the disk past its reserve
    /// (deletes and revokes still pass, so an operator can free space).
    fn check_space(&self, op: &Op) -> Result<(), StoreError> {
        let grows = matches!(op, Op::Put(_) | Op::Txn(_) | Op::LeaseGrant { .. });
        if !grows {
            return Ok(());
        }
        if self.config.quota_bytes > 0 {
            let size = self.shared.state.read().mvcc.size_bytes() as u64;
            if size >= self.config.quota_bytes {
                return Err(StoreError::NoSpace);
            }
        }
        if !self.disk.admit(proposer::op_size(op) as u64) {
            return Err(StoreError::NoSpace);
        }
        Ok(())
    }

    /// Whether writes would currently be refused for lack of space.
    pub fn out_of_space(&self) -> bool {
        let over_quota = self.config.quota_bytes > 0
            && self.shared.state.read().mvcc.size_bytes() as u64 >= self.config.quota_bytes;
        over_quota || self.disk.is_full()
    }

    pub async fn linearize(self: &Arc<Self>) -> Result<(), StoreError> {
        let inner = self.clone();
        self.reads
            .run(move || {
                let inner = inner.clone();
                async move {
                    match inner.on_leader(ForwardRequest::ReadIndex).await? {
                        ForwardResponse::ReadIndex(log_id) => {
                            inner.wait_applied(log_id.index).await
                        }
                        other => Err(StoreError::Internal(format!(
                            "unexpected read index answer {other:?}"
                        ))),
                    }
                }
            })
            .await
            .unwrap_or(Err(StoreError::Stopped))
    }

    /// Waits until the state machine has applied `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        let mut applied = self.applied.clone();
        tokio::time::timeout(
            self.config.request_timeout,
            applied.wait_for(|a| *a >= index),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(|_| StoreError::Stopped)?;
        Ok(())
    }

    /// The current leader's ID and peer URL, if one is known.
    pub fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let leader = metrics.current_leader?;
        let url = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .peer_url
            .clone();
        Some((leader, url))
    }

    /// Serves `request` on the leader: here if this member leads, else forwarded. Waits out
    /// elections until the request timeout.
    pub async fn on_leader(self: &Arc<Self>, request: ForwardRequest) -> ForwardResult {
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if self.leader().is_some() {
                    StoreError::Timeout
                } else {
                    StoreError::NoLeader
                });
            }
            match self.leader() {
                Some((leader, _)) if leader == self.id => {
                    match self.serve_as_leader(request.clone()).await {
                        Err(StoreError::NotLeader) => {}
                        result => return result,
                    }
                }
                Some((leader, url)) => match self.peers.forward(&url, &request, remaining).await {
                    Ok(Err(StoreError::NotLeader)) => {}
                    Ok(result) => return result,
                    Err(failure) => {
                        tracing::debug!(
                            leader = format_args!("{leader:x}"),
                            "forwarding failed: {}",
                            failure.reason
                        );
                        // A proposal that may have reached the leader must not be sent twice.
                        if failure.sent && matches!(request, ForwardRequest::Propose(_)) {
                            return Err(StoreError::LeaderChanged);
                        }
                    }
                },
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(20).min(remaining)).await;
        }
    }

    /// Serves a request that needs leadership, or answers [`StoreError::NotLeader`] without
    /// doing anything so the caller may retry elsewhere.
    pub async fn serve_as_leader(self: &Arc<Self>, request: ForwardRequest) -> ForwardResult {
        match request {
            ForwardRequest::Propose(proposal) => {
                let written = tokio::time::timeout(
                    self.config.request_timeout,
                    self.raft.client_write(proposal),
                )
                .await
                .map_err(|_| StoreError::Timeout)?;
                match written {
                    Ok(response) => Ok(ForwardResponse::Proposed(response.data)),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                        Err(StoreError::NotLeader)
                    }
                    Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                        Err(StoreError::LeaderChanged)
                    }
                    Err(RaftError::APIError(e)) => Err(StoreError::Internal(e.to_string())),
                    Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
                }
            }
            ForwardRequest::ReadIndex => {
                let raft = self.raft.clone();
                self.leader_reads
                    .run(move || {
                        let raft = raft.clone();
                        async move {
                            match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
                                Ok(linearizer) => Ok(ForwardResponse::ReadIndex(
                                    *linearizer.read_log_id().log_id(),
                                )),
                                Err(RaftError::APIError(_)) => Err(StoreError::NotLeader),
                                Err(RaftError::Fatal(_)) => Err(StoreError::Stopped),
                            }
                        }
                    })
                    .await
                    .unwrap_or(Err(StoreError::Stopped))
            }
            ForwardRequest::LeaseKeepAlive(id) => {
                self.keep_alive_as_leader(id).map(ForwardResponse::Ttl)
            }
            ForwardRequest::LeaseRemaining(id) => {
                self.remaining_as_leader(id).map(ForwardResponse::Ttl)
            }
            ForwardRequest::AddMember { peer_url, learner } => {
                self.add_member_as_leader(peer_url, learner).await
            }
            ForwardRequest::RemoveMember(id) => self.remove_member_as_leader(id).await,
            ForwardRequest::PromoteMember(id) => self.promote_member_as_leader(id).await,
            ForwardRequest::TransferLeader(id) => self.transfer_leader_as_leader(id).await,
        }
    }
}

/// The leader side of forwarded requests.
struct LeaderService(Arc<Inner>);

#[tonic::async_trait]
impl ForwardHandler for LeaderService {
    async fn handle(&self, request: ForwardRequest) -> ForwardResult {
        self.0.serve_as_leader(request).await
    }
}
