//! etcd's Cluster service: member list, add (as learner, auto-promoted unless asked not to),
//! remove, promote.

use store_proto::etcdserverpb as pb;
use store_raft::{MemberInfo, StoreNode};
use tonic::{Request, Response, Status};

use crate::kv::header;
use crate::status::{invalid, to_status};

/// The Cluster service of one member.
pub struct ClusterService {
    node: StoreNode,
}

impl ClusterService {
    /// A cluster service over `node`.
    pub fn new(node: StoreNode) -> ClusterService {
        ClusterService { node }
    }

    async fn members(
        &self,
        linearizable: bool,
    ) -> Result<(pb::ResponseHeader, Vec<pb::Member>), Status> {
        let members = self.node.members(linearizable).await.map_err(to_status)?;
        Ok((
            header(&self.node, self.node.revision()),
            members.into_iter().map(member).collect(),
        ))
    }
}

fn member(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

/// A peer URL must be `http(s)://host:port` with nothing else.
fn peer_url(urls: &[String]) -> Result<String, Status> {
    let [url] = urls else {
        return Err(invalid(
            "peerURLs",
            format!("exactly one peer URL is supported, {} given", urls.len()),
        ));
    };
    let parsed = url::Url::parse(url)
        .map_err(|e| invalid("peerURLs", format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host().is_none()
        || parsed.port().is_none()
    {
        return Err(invalid(
            "peerURLs",
            format!("{url:?} must be http(s)://host:port"),
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(invalid("peerURLs", format!("{url:?} must not have a path")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let req = request.into_inner();
        let url = peer_url(&req.peer_ur_ls)?;
        let id = self
            .node
            .member_add(url.clone(), req.is_learner)
            .await
            .map_err(to_status)?;
        let (header, members) = self.members(false).await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(header),
            member: Some(pb::Member {
                id,
                peer_ur_ls: vec![url],
                is_learner: true,
                ..Default::default()
            }),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.node
            .member_remove(request.into_inner().id)
            .await
            .map_err(to_status)?;
        let (header, members) = self.members(false).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "etcdserver: changing a member's peer URL is not supported; remove the member and add it again",
        ))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let (header, members) = self.members(request.into_inner().linearizable).await?;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(header),
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.node
            .member_promote(request.into_inner().id)
            .await
            .map_err(to_status)?;
        let (header, members) = self.members(false).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(header),
            members,
        }))
    }
}
