//! Validation of etcd wire requests and conversion between wire and store types.
//!
//! Every client request passes through here before it reaches the store, so a malformed one
//! is refused with `InvalidArgument` naming the field, and nothing invalid is ever replicated.
//! Where etcd has a well-known message (`key is not provided`, `request is too large`), it is
//! kept so that clients matching on it keep working; our own checks name the field.

use mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};
use store_proto::etcdserverpb as pb;
use store_proto::mvccpb;
use tonic::Status;

use crate::status::{invalid, to_status};

/// Size limits on requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest value (and, roughly, request) accepted.
    pub max_request_bytes: usize,
    /// Most operations in one transaction branch.
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // etcd's defaults: --max-request-bytes 1.5 MiB, --max-txn-ops 128.
        Limits {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
        }
    }
}

fn no_key() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

fn too_large(what: &str, len: usize, limits: &Limits) -> Status {
    Status::invalid_argument(format!(
        "etcdserver: request is too large: {what} is {len} bytes, the limit is {} bytes",
        limits.max_request_bytes
    ))
}

/// A validated range and whether it may be served from local state.
pub fn range(req: pb::RangeRequest) -> Result<(RangeRequest, bool), Status> {
    if req.key.is_empty() {
        return Err(no_key());
    }
    if req.limit < 0 {
        return Err(invalid("limit", format!("{} is negative", req.limit)));
    }
    let sort_order = match pb::range_request::SortOrder::try_from(req.sort_order) {
        Ok(pb::range_request::SortOrder::None) => SortOrder::None,
        Ok(pb::range_request::SortOrder::Ascend) => SortOrder::Ascend,
        Ok(pb::range_request::SortOrder::Descend) => SortOrder::Descend,
        Err(_) => {
            return Err(invalid(
                "sort_order",
                format!("unknown value {}", req.sort_order),
            ));
        }
    };
    let sort_target = match pb::range_request::SortTarget::try_from(req.sort_target) {
        Ok(pb::range_request::SortTarget::Key) => SortTarget::Key,
        Ok(pb::range_request::SortTarget::Version) => SortTarget::Version,
        Ok(pb::range_request::SortTarget::Create) => SortTarget::Create,
        Ok(pb::range_request::SortTarget::Mod) => SortTarget::Mod,
        Ok(pb::range_request::SortTarget::Value) => SortTarget::Value,
        Err(_) => {
            return Err(invalid(
                "sort_target",
                format!("unknown value {}", req.sort_target),
            ));
        }
    };
    Ok((
        RangeRequest {
            key: req.key,
            range_end: req.range_end,
            limit: req.limit,
            revision: req.revision,
            sort_order,
            sort_target,
            keys_only: req.keys_only,
            count_only: req.count_only,
            min_mod_revision: req.min_mod_revision,
            max_mod_revision: req.max_mod_revision,
            min_create_revision: req.min_create_revision,
            max_create_revision: req.max_create_revision,
        },
        req.serializable,
    ))
}

/// A validated put.
pub fn put(req: pb::PutRequest, limits: &Limits) -> Result<PutRequest, Status> {
    if req.key.is_empty() {
        return Err(no_key());
    }
    if req.value.len() > limits.max_request_bytes {
        return Err(too_large("value", req.value.len(), limits));
    }
    if req.key.len() > limits.max_request_bytes {
        return Err(too_large("key", req.key.len(), limits));
    }
    if req.lease < 0 {
        return Err(invalid("lease", format!("{} is negative", req.lease)));
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Status::invalid_argument("etcdserver: value is provided"));
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    Ok(PutRequest {
        key: req.key,
        value: req.value,
        lease: req.lease,
        prev_kv: req.prev_kv,
        ignore_value: req.ignore_value,
        ignore_lease: req.ignore_lease,
    })
}

/// A validated delete.
pub fn delete_range(req: pb::DeleteRangeRequest) -> Result<DeleteRangeRequest, Status> {
    if req.key.is_empty() {
        return Err(no_key());
    }
    Ok(DeleteRangeRequest {
        key: req.key,
        range_end: req.range_end,
        prev_kv: req.prev_kv,
    })
}

/// A validated transaction.
pub fn txn(req: pb::TxnRequest, limits: &Limits) -> Result<TxnRequest, Status> {
    let txn = txn_inner(req, limits)?;
    mvcc::validate_txn(&txn).map_err(|e| to_status(e.into()))?;
    let size = txn_bytes(&txn);
    if size > limits.max_request_bytes {
        return Err(too_large("transaction", size, limits));
    }
    Ok(txn)
}

fn txn_inner(req: pb::TxnRequest, limits: &Limits) -> Result<TxnRequest, Status> {
    if req.success.len() > limits.max_txn_ops || req.failure.len() > limits.max_txn_ops {
        return Err(Status::invalid_argument(
            "etcdserver: too many operations in txn request",
        ));
    }
    let compare = req
        .compare
        .into_iter()
        .enumerate()
        .map(|(i, c)| compare(c, i))
        .collect::<Result<_, _>>()?;
    let ops = |ops: Vec<pb::RequestOp>, branch: &str| -> Result<Vec<RequestOp>, Status> {
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| request_op(op, limits, &format!("{branch}[{i}]")))
            .collect()
    };
    Ok(TxnRequest {
        compare,
        success: ops(req.success, "success")?,
        failure: ops(req.failure, "failure")?,
    })
}

fn txn_bytes(txn: &TxnRequest) -> usize {
    txn.success
        .iter()
        .chain(&txn.failure)
        .map(|op| match op {
            RequestOp::Put(p) => p.key.len() + p.value.len(),
            RequestOp::Txn(t) => txn_bytes(t),
            RequestOp::Range(r) => r.key.len(),
            RequestOp::DeleteRange(d) => d.key.len(),
        })
        .sum::<usize>()
        + txn
            .compare
            .iter()
            .map(|c| {
                c.key.len()
                    + match &c.target {
                        CompareTarget::Value(v) => v.len(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
}

fn request_op(op: pb::RequestOp, limits: &Limits, at: &str) -> Result<RequestOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(RequestOp::Range(range(r)?.0)),
        Some(Request::RequestPut(p)) => Ok(RequestOp::Put(put(p, limits)?)),
        Some(Request::RequestDeleteRange(d)) => Ok(RequestOp::DeleteRange(delete_range(d)?)),
        Some(Request::RequestTxn(t)) => Ok(RequestOp::Txn(txn_inner(t, limits)?)),
        None => Err(invalid(at, "the operation is empty")),
    }
}

fn compare(c: pb::Compare, index: usize) -> Result<Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    if c.key.is_empty() {
        return Err(no_key());
    }
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(invalid(
                &format!("compare[{index}].result"),
                format!("unknown value {}", c.result),
            ));
        }
    };
    let target = T::try_from(c.target).map_err(|_| {
        invalid(
            &format!("compare[{index}].target"),
            format!("unknown value {}", c.target),
        )
    })?;
    let number = |union: Option<U>| match union {
        Some(U::Version(v) | U::CreateRevision(v) | U::ModRevision(v) | U::Lease(v)) => Ok(v),
        None => Ok(0),
        Some(U::Value(_)) => Err(invalid(
            &format!("compare[{index}].target_union"),
            "a value was given for a numeric target",
        )),
    };
    let target = match target {
        T::Version => CompareTarget::Version(number(c.target_union)?),
        T::Create => CompareTarget::Create(number(c.target_union)?),
        T::Mod => CompareTarget::Mod(number(c.target_union)?),
        T::Lease => CompareTarget::Lease(number(c.target_union)?),
        T::Value => match c.target_union {
            Some(U::Value(v)) => CompareTarget::Value(v),
            None => CompareTarget::Value(Default::default()),
            Some(_) => {
                return Err(invalid(
                    &format!("compare[{index}].target_union"),
                    "a number was given for the value target",
                ));
            }
        },
    };
    Ok(Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

/// A key-value on the wire.
pub fn kv(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// An event on the wire.
pub fn event(event: mvcc::Event) -> mvccpb::Event {
    let kind = match event.kind {
        mvcc::EventKind::Put => mvccpb::event::EventType::Put,
        mvcc::EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv(event.kv)),
        prev_kv: event.prev_kv.map(kv),
    }
}

/// A range response on the wire (without its header).
pub fn range_response(r: mvcc::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: None,
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A put response on the wire (without its header).
pub fn put_response(r: mvcc::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: None,
        prev_kv: r.prev_kv.map(kv),
    }
}

/// A delete response on the wire (without its header).
pub fn delete_response(r: mvcc::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: None,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

/// A transaction response on the wire. As in etcd, the nested responses' headers carry only
/// the revision.
pub fn txn_response(r: mvcc::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response;
    let nested = pb::ResponseHeader {
        revision: header.revision,
        ..Default::default()
    };
    let responses = r
        .responses
        .into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                mvcc::ResponseOp::Range(r) => Response::ResponseRange(pb::RangeResponse {
                    header: Some(nested),
                    ..range_response(r)
                }),
                mvcc::ResponseOp::Put(r) => Response::ResponsePut(pb::PutResponse {
                    header: Some(nested),
                    ..put_response(r)
                }),
                mvcc::ResponseOp::DeleteRange(r) => {
                    Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: Some(*header),
                        ..delete_response(r)
                    })
                }
                mvcc::ResponseOp::Txn(r) => Response::ResponseTxn(txn_response(r, &nested)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(*header),
        succeeded: r.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let limits = Limits::default();
        let empty = put(pb::PutRequest::default(), &limits).unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert!(empty.message().contains("key is not provided"));
        let big = put(
            pb::PutRequest {
                key: Bytes::from_static(b"k"),
                value: vec![0u8; limits.max_request_bytes + 1].into(),
                ..Default::default()
            },
            &limits,
        )
        .unwrap_err();
        assert_eq!(big.code(), tonic::Code::InvalidArgument);
        assert!(
            big.message().contains("value is 1572865 bytes"),
            "{}",
            big.message()
        );
        let sort = range(pb::RangeRequest {
            key: Bytes::from_static(b"k"),
            sort_order: 9,
            ..Default::default()
        })
        .unwrap_err();
        assert!(sort.message().contains("sort_order"));
        let empty_op = txn(
            pb::TxnRequest {
                success: vec![pb::RequestOp { request: None }],
                ..Default::default()
            },
            &limits,
        )
        .unwrap_err();
        assert!(
            empty_op.message().contains("success[0]"),
            "{}",
            empty_op.message()
        );
        let dup = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: Bytes::from_static(b"k"),
                ..Default::default()
            })),
        };
        let dup = txn(
            pb::TxnRequest {
                success: vec![dup.clone(), dup],
                ..Default::default()
            },
            &limits,
        )
        .unwrap_err();
        assert!(dup.message().contains("duplicate key"));
    }
}
