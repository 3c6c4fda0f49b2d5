//! etcd's Maintenance service: status, alarms, hashes, snapshots, leadership moves.

use std::io::Read;
use std::pin::Pin;

use futures::Stream;
use sha2::{Digest, Sha256};
use store_proto::etcdserverpb as pb;
use store_raft::StoreNode;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::kv::header;
use crate::status::to_status;

/// The etcd API version Basalt's store implements; clients gate features on it (for example
/// kube-apiserver enables watch progress requests from 3.5.13).
pub const API_VERSION: &str = "3.5.17";

/// Snapshot bytes per streamed message.
const SNAPSHOT_CHUNK: usize = 256 << 10;

/// The Maintenance service of one member.
pub struct MaintenanceService {
    node: StoreNode,
}

impl MaintenanceService {
    /// A maintenance service over `node`.
    pub fn new(node: StoreNode) -> MaintenanceService {
        MaintenanceService { node }
    }

    fn no_space(&self) -> bool {
        self.node.out_of_space()
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let req = request.into_inner();
        let mut alarms = Vec::new();
        let listing = req.action == pb::alarm_request::AlarmAction::Get as i32;
        if listing && self.no_space() {
            alarms.push(pb::AlarmMember {
                member_id: self.node.id(),
                alarm: pb::AlarmType::Nospace as i32,
            });
        }
        Ok(Response::new(pb::AlarmResponse {
            header: Some(header(&self.node, self.node.revision())),
            alarms,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.node.status();
        let mut errors = Vec::new();
        if status.leader == 0 {
            errors.push("etcdserver: no leader".to_owned());
        }
        if self.no_space() {
            errors.push("etcdserver: mvcc: database space exceeded".to_owned());
        }
        Ok(Response::new(pb::StatusResponse {
            header: Some(header(&self.node, status.revision)),
            version: API_VERSION.to_owned(),
            db_size: status.db_size,
            leader: status.leader,
            raft_index: status.raft_index,
            raft_term: status.raft_term,
            raft_applied_index: status.raft_applied_index,
            errors,
            db_size_in_use: status.db_size,
            is_learner: status.is_learner,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // The store keeps no free pages to reclaim: compaction already returned the memory.
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(header(&self.node, self.node.revision())),
        }))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision, _) = self.node.hash_kv(0).await.map_err(to_status)?;
        Ok(Response::new(pb::HashResponse {
            header: Some(header(&self.node, revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let (hash, revision, compact_revision) = self
            .node
            .hash_kv(request.into_inner().revision)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(header(&self.node, self.node.revision())),
            hash,
            compact_revision,
            hash_revision: revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a point-in-time snapshot. etcdctl checks that the size is a multiple of 512
    /// plus a 32-byte SHA-256 of the rest (bbolt's page layout), so the file is zero-padded to
    /// a multiple of 512 and the digest appended; Basalt's snapshot format is self-delimiting,
    /// so the padding is ignored on restore.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let path = self.node.export_snapshot().await.map_err(to_status)?;
        let (out, rx) = mpsc::channel(4);
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || {
            let result = stream_snapshot(&path, &node, &out);
            let _ = std::fs::remove_file(&path);
            if let Err(e) = result {
                let _ = out.blocking_send(Err(Status::internal(format!(
                    "streaming the snapshot: {e}"
                ))));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.node
            .move_leader(request.into_inner().target_id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(header(&self.node, self.node.revision())),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: downgrade is not supported",
        ))
    }
}

fn stream_snapshot(
    path: &std::path::Path,
    node: &StoreNode,
    out: &mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let padded = len.div_ceil(512) * 512;
    let total = padded + 32;
    let mut digest = Sha256::new();
    let mut sent = 0u64;
    let send = |blob: Vec<u8>, sent: &mut u64| -> bool {
        *sent += blob.len() as u64;
        let response = pb::SnapshotResponse {
            header: Some(header(node, node.revision())),
            remaining_bytes: total - *sent,
            blob: blob.into(),
            version: API_VERSION.to_owned(),
        };
        out.blocking_send(Ok(response)).is_ok()
    };
    loop {
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK];
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        chunk.truncate(n);
        digest.update(&chunk);
        if !send(chunk, &mut sent) {
            return Ok(());
        }
    }
    let mut tail = vec![0u8; (padded - len) as usize];
    digest.update(&tail);
    tail.extend_from_slice(&digest.finalize());
    send(tail, &mut sent);
    Ok(())
}
