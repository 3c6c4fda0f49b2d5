//! etcd's KV service: range, put, delete, txn, compact.

use store_proto::etcdserverpb as pb;
use store_raft::{Op, OpOutcome, OpResponse, StoreNode};
use tonic::{Request, Response, Status};

use crate::convert::{self, Limits};
use crate::status::to_status;

/// The KV service of one member.
pub struct KvService {
    node: StoreNode,
    limits: Limits,
}

impl KvService {
    /// A KV service over `node`.
    pub fn new(node: StoreNode, limits: Limits) -> KvService {
        KvService { node, limits }
    }

    async fn write(&self, op: Op) -> Result<OpOutcome, Status> {
        self.node.propose(op).await.map_err(to_status)
    }
}

/// A response header at `revision`.
pub fn header(node: &StoreNode, revision: i64) -> pb::ResponseHeader {
    let (cluster_id, member_id, raft_term) = node.header();
    pb::ResponseHeader {
        cluster_id,
        member_id,
        revision,
        raft_term,
    }
}

fn unexpected(response: &OpResponse) -> Status {
    Status::internal(format!("unexpected store response {response:?}"))
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let (req, serializable) = convert::range(request.into_inner())?;
        let (response, revision) = self
            .node
            .range(&req, serializable)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RangeResponse {
            header: Some(header(&self.node, revision)),
            ..convert::range_response(response)
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = convert::put(request.into_inner(), &self.limits)?;
        let outcome = self.write(Op::Put(req)).await?;
        match outcome.response {
            OpResponse::Put(r) => Ok(Response::new(pb::PutResponse {
                header: Some(header(&self.node, outcome.revision)),
                ..convert::put_response(r)
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = convert::delete_range(request.into_inner())?;
        let outcome = self.write(Op::DeleteRange(req)).await?;
        match outcome.response {
            OpResponse::DeleteRange(r) => Ok(Response::new(pb::DeleteRangeResponse {
                header: Some(header(&self.node, outcome.revision)),
                ..convert::delete_response(r)
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = convert::txn(request.into_inner(), &self.limits)?;
        let outcome = self.write(Op::Txn(req)).await?;
        match outcome.response {
            OpResponse::Txn(r) => Ok(Response::new(convert::txn_response(
                r,
                &header(&self.node, outcome.revision),
            ))),
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = request.into_inner().revision;
        let outcome = self.write(Op::Compact(revision)).await?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header(&self.node, outcome.revision)),
        }))
    }
}
