//! The client side of the peer protocol: how this member sends Raft messages and forwarded
//! requests to others.
//!
//! One lazily connected HTTP/2 channel per peer URL is shared by every replication stream,
//! heartbeat and forward to that peer. Replication is pipelined over a bidirectional stream so
//! the leader does not wait a round trip per batch of entries.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, OptionalSend};
use parking_lot::Mutex;
use store_proto::peer::raft_peer_client::RaftPeerClient;
use store_proto::peer::{Frame, SnapshotChunk};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Tls;

use crate::codec::{decode, encode};
use crate::forward::{ForwardRequest, ForwardResult};
use crate::snapshot_store::SnapshotFile;
use crate::types::*;

/// Snapshot bytes per message.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Channels to peers, shared by everything in this member that talks to them.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    tls: Option<ClientTlsConfig>,
}

impl Peers {
    /// Peers reached in plain text, or with mutual TLS when `tls` is given.
    pub fn new(tls: Option<&Tls>) -> Peers {
        Peers {
            channels: Arc::default(),
            tls: tls.map(|tls| {
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca))
                    .identity(Identity::from_pem(&tls.cert, &tls.key))
            }),
        }
    }

    /// A client for the peer at `url`, reusing its channel.
    pub fn client(&self, url: &str) -> Result<RaftPeerClient<Channel>, String> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(url) {
            return Ok(client(channel.clone()));
        }
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("invalid peer url {url:?}: {e}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("tls for peer {url}: {e}"))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .connect_lazy();
        channels.insert(url.to_owned(), channel.clone());
        Ok(client(channel))
    }

    /// Sends a request to the leader at `url` and returns its answer.
    pub async fn forward(
        &self,
        url: &str,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResult, ForwardFailure> {
        let unsent = |reason: String| ForwardFailure {
            sent: false,
            reason,
        };
        let mut client = self.client(url).map_err(unsent)?;
        let frame = encode(request).map_err(|s| unsent(s.message().to_owned()))?;
        let reply = tokio::time::timeout(timeout, client.forward(frame))
            .await
            .map_err(|_| ForwardFailure {
                sent: true,
                reason: format!("forward to {url} timed out"),
            })?
            .map_err(|status| ForwardFailure {
                sent: !connection_refused(&status),
                reason: format!("forward to {url}: {}", status.message()),
            })?;
        decode(reply.get_ref()).map_err(|s| ForwardFailure {
            sent: true,
            reason: s.message().to_owned(),
        })
    }
}

/// Why a forward failed, and whether the request may have reached the leader.
#[derive(Debug)]
pub struct ForwardFailure {
    /// False only when the request certainly never left this member.
    pub sent: bool,
    /// What happened.
    pub reason: String,
}

/// Whether a call failed because the connection was refused — the request was never sent,
/// so retrying cannot apply it twice.
fn connection_refused(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = error.source();
    }
    false
}

fn client(channel: Channel) -> RaftPeerClient<Channel> {
    // Limits well above the largest proposal the API admits (a few MiB).
    RaftPeerClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// openraft's factory of connections to peers.
#[derive(Clone)]
pub struct PeerNetwork {
    peers: Peers,
}

impl PeerNetwork {
    /// A factory over shared peer channels.
    pub fn new(peers: Peers) -> PeerNetwork {
        PeerNetwork { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self.peers.client(&node.peer_url),
        }
    }
}

/// A connection to one peer.
pub struct PeerConnection {
    target: u64,
    client: Result<RaftPeerClient<Channel>, String>,
}

type RpcError = RPCError<TypeConfig>;

fn unreachable(message: impl Into<String>) -> Unreachable<TypeConfig> {
    Unreachable::new(&AnyError::error(message.into()))
}

fn network(message: impl Into<String>) -> NetworkError<TypeConfig> {
    NetworkError::new(&AnyError::error(message.into()))
}

/// Transport failures and unavailable peers back off; anything else retries.
fn status_error(target: u64, status: tonic::Status) -> RpcError {
    let message = format!("peer {target:x}: {}", status.message());
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            RPCError::Unreachable(unreachable(message))
        }
        _ => RPCError::Network(network(message)),
    }
}

impl PeerConnection {
    fn client(&self) -> Result<RaftPeerClient<Channel>, RpcError> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    async fn unary<Req, Resp, F, Fut>(
        &self,
        request: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RpcError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, Frame) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Frame>, tonic::Status>>,
    {
        let frame = encode(request).map_err(|s| RPCError::Network(network(s.message())))?;
        let reply = tokio::time::timeout(option.hard_ttl(), call(self.client()?, frame))
            .await
            .map_err(|_| {
                RPCError::Unreachable(unreachable(format!("peer {:x} timed out", self.target)))
            })?
            .map_err(|status| status_error(self.target, status))?;
        decode(reply.get_ref()).map_err(|s| RPCError::Network(network(s.message())))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        self.unary(&rpc, &option, |mut c, f| async move {
            c.append_entries(f).await
        })
        .await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let target = self.target;
        Box::pin(async move {
            let mut client = self.client()?;
            let frames = input.filter_map(|req| async move { encode(&req).ok() });
            let replies = client
                .stream_append(frames)
                .await
                .map_err(|status| status_error(target, status))?
                .into_inner();
            let results = replies.map(move |reply| {
                let frame = reply.map_err(|status| status_error(target, status))?;
                decode::<StreamAppendResult<TypeConfig>>(&frame)
                    .map_err(|s| RPCError::Network(network(s.message())))
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.unary(&rpc, &option, |mut c, f| async move { c.vote(f).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.unary(&rpc, &option, |mut c, f| async move { c.pre_vote(f).await })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let target = self.target;
        let header = encode(&(vote, snapshot.meta.clone()))
            .map_err(|s| StreamingError::Network(network(s.message())))?
            .payload;
        let mut file = snapshot
            .snapshot
            .file
            .try_clone()
            .map_err(|e| StreamingError::Network(network(e.to_string())))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| StreamingError::Network(network(e.to_string())))?;
        // Chunks are read on a blocking thread and fed through a small channel, so a slow
        // follower applies back-pressure instead of the whole file landing in memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        tx.send(SnapshotChunk {
            header,
            data: Default::default(),
        })
        .await
        .map_err(|e| StreamingError::Network(network(e.to_string())))?;
        let reader = tokio::task::spawn_blocking(move || -> io::Result<()> {
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                let chunk = SnapshotChunk {
                    header: Default::default(),
                    data: buf.into(),
                };
                if tx.blocking_send(chunk).is_err() {
                    return Ok(());
                }
            }
        });
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(unreachable(e.to_string())))?;
        let send = async {
            let reply = client
                .install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map_err(|status| match status_error(target, status) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    other => StreamingError::Network(network(other.to_string())),
                })?;
            decode::<SnapshotResponse<TypeConfig>>(reply.get_ref())
                .map_err(|s| StreamingError::Network(network(s.message())))
        };
        let result = tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            timed = tokio::time::timeout(option.hard_ttl(), send) => timed.unwrap_or_else(|_| {
                Err(StreamingError::Unreachable(unreachable(format!("snapshot to peer {target:x} timed out"))))
            }),
        };
        match reader.await {
            Ok(Ok(())) => result,
            Ok(Err(e)) => Err(StreamingError::Network(network(format!(
                "reading the snapshot: {e}"
            )))),
            Err(e) => Err(StreamingError::Network(network(e.to_string()))),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        self.unary(&req, &option, |mut c, f| async move {
            c.transfer_leader(f).await
        })
        .await
    }
}
