//! etcd's Lease service: grant, revoke, keep-alive streams, time-to-live, listing.

use std::pin::Pin;

use futures::Stream;
use store_proto::etcdserverpb as pb;
use store_raft::{StoreError, StoreNode};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::kv::header;
use crate::status::{invalid, to_status};

/// The Lease service of one member.
pub struct LeaseService {
    node: StoreNode,
}

impl LeaseService {
    /// A lease service over `node`.
    pub fn new(node: StoreNode) -> LeaseService {
        LeaseService { node }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        if req.id < 0 {
            return Err(invalid("ID", format!("{} is negative", req.id)));
        }
        if req.ttl <= 0 {
            return Err(invalid("TTL", format!("{} is not positive", req.ttl)));
        }
        let (id, ttl) = self
            .node
            .lease_grant(req.id, req.ttl)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(header(&self.node, self.node.revision())),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let revision = self
            .node
            .lease_revoke(request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(header(&self.node, revision)),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (out, rx) = mpsc::channel(64);
        let node = self.node.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = requests.message().await {
                let ttl = match node.lease_keep_alive(req.id).await {
                    Ok(ttl) => ttl,
                    // etcd answers a keep-alive for an unknown lease with TTL 0.
                    Err(StoreError::Mvcc(mvcc::Error::LeaseNotFound)) => 0,
                    Err(e) => {
                        let _ = out.send(Err(to_status(e))).await;
                        return;
                    }
                };
                let response = pb::LeaseKeepAliveResponse {
                    header: Some(header(&node, node.revision())),
                    id: req.id,
                    ttl,
                };
                if out.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let response = match self.node.lease_time_to_live(req.id, req.keys).await {
            Ok(ttl) => pb::LeaseTimeToLiveResponse {
                header: Some(header(&self.node, self.node.revision())),
                id: req.id,
                ttl: ttl.remaining,
                granted_ttl: ttl.granted,
                keys: ttl.keys,
            },
            // etcd answers -1 for a lease that does not exist.
            Err(StoreError::Mvcc(mvcc::Error::LeaseNotFound)) => pb::LeaseTimeToLiveResponse {
                header: Some(header(&self.node, self.node.revision())),
                id: req.id,
                ttl: -1,
                ..Default::default()
            },
            Err(e) => return Err(to_status(e)),
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let ids = self.node.leases().await.map_err(to_status)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(header(&self.node, self.node.revision())),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
