//! The server side of the peer protocol: Raft messages from other members go to openraft,
//! forwarded requests to this member's leader logic.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use store_proto::peer::raft_peer_server::RaftPeer;
use store_proto::peer::{Frame, SnapshotChunk};
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{decode, encode};
use crate::forward::{ForwardRequest, ForwardResult};
use crate::snapshot_store::{SnapshotFile, SnapshotStore};
use crate::types::*;

/// Serves requests a follower forwards to the leader.
#[tonic::async_trait]
pub trait ForwardHandler: Send + Sync + 'static {
    /// Handles one forwarded request.
    async fn handle(&self, request: ForwardRequest) -> ForwardResult;
}

/// The peer gRPC service of one member.
pub struct PeerService {
    raft: Raft,
    snapshots: Arc<SnapshotStore>,
    forward: Arc<dyn ForwardHandler>,
}

impl PeerService {
    /// A service delivering Raft messages to `raft` and forwarded requests to `forward`.
    pub fn new(
        raft: Raft,
        snapshots: Arc<SnapshotStore>,
        forward: Arc<dyn ForwardHandler>,
    ) -> PeerService {
        PeerService {
            raft,
            snapshots,
            forward,
        }
    }
}

fn raft_error(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref())?;
        let reply = self.raft.append_entries(rpc).await.map_err(raft_error)?;
        Ok(Response::new(encode(&reply)?))
    }

    type StreamAppendStream = FrameStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<FrameStream>, Status> {
        // A malformed frame ends the stream; the leader reconnects and resends from its
        // last acknowledged position.
        let input = request
            .into_inner()
            .take_while(|frame| futures::future::ready(frame.is_ok()))
            .filter_map(|frame| async move {
                frame
                    .ok()
                    .and_then(|f| decode::<AppendEntriesRequest<TypeConfig>>(&f).ok())
            });
        let output = self.raft.stream_append(input).map(|result| match result {
            Ok(result) => encode(&result),
            Err(fatal) => Err(raft_error(fatal)),
        });
        Ok(Response::new(Box::pin(output)))
    }

    async fn vote(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(request.get_ref())?;
        let reply = self.raft.vote(rpc).await.map_err(raft_error)?;
        Ok(Response::new(encode(&reply)?))
    }

    async fn pre_vote(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let rpc: VoteRequest<TypeConfig> = decode(request.get_ref())?;
        let reply = self.raft.pre_vote(rpc).await.map_err(raft_error)?;
        Ok(Response::new(encode(&reply)?))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<Frame>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("snapshot stream is empty"))?;
        let (vote, meta): (Vote, SnapshotMeta) = decode(&Frame {
            payload: first.header,
        })?;
        let path = self.snapshots.temp_path();
        // Read and write: the state machine reads the file back to install it.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Status::internal(format!("snapshot file: {e}")))?;
        let received = async {
            while let Some(chunk) = chunks.message().await? {
                file.write_all(&chunk.data)
                    .map_err(|e| Status::internal(format!("writing the snapshot: {e}")))?;
            }
            file.sync_all()
                .map_err(|e| Status::internal(format!("syncing the snapshot: {e}")))?;
            Ok::<_, Status>(())
        }
        .await;
        if let Err(status) = received {
            let _ = std::fs::remove_file(&path);
            return Err(status);
        }
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotFile { file, path },
        };
        let reply = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_error)?;
        Ok(Response::new(encode(&reply)?))
    }

    async fn transfer_leader(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let rpc: TransferLeaderRequest<TypeConfig> = decode(request.get_ref())?;
        let reply = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(raft_error)?;
        Ok(Response::new(encode(&reply)?))
    }

    async fn forward(&self, request: Request<Frame>) -> Result<Response<Frame>, Status> {
        let forwarded: ForwardRequest = decode(request.get_ref())?;
        let result = self.forward.handle(forwarded).await;
        Ok(Response::new(encode(&result)?))
    }
}
