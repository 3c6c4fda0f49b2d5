//! How store errors reach etcd clients: gRPC codes and etcd's messages.
//!
//! The codes follow etcd's (`rpctypes`), because clients decide on them: retry on
//! `Unavailable`, give up on `InvalidArgument`, treat `OutOfRange` as compaction.

use store_raft::StoreError;
use tonic::{Code, Status};

/// The gRPC status for a store error.
pub fn to_status(error: StoreError) -> Status {
    let code = match &error {
        StoreError::Mvcc(e) => match e {
            mvcc::Error::Compacted { .. } | mvcc::Error::FutureRevision => Code::OutOfRange,
            mvcc::Error::LeaseNotFound => Code::NotFound,
            mvcc::Error::LeaseExists => Code::FailedPrecondition,
            mvcc::Error::KeyNotFound
            | mvcc::Error::DuplicateKey
            | mvcc::Error::InvalidArgument(_) => Code::InvalidArgument,
        },
        StoreError::NoLeader
        | StoreError::NotLeader
        | StoreError::LeaderChanged
        | StoreError::Timeout => Code::Unavailable,
        StoreError::Stopped => Code::Unavailable,
        StoreError::NoSpace => Code::ResourceExhausted,
        StoreError::MemberNotFound => Code::NotFound,
        StoreError::PeerUrlExists | StoreError::NotLearner | StoreError::LearnerNotReady => {
            Code::FailedPrecondition
        }
        StoreError::NotEnoughStartedMembers | StoreError::BadLeaderTransferee => {
            Code::FailedPrecondition
        }
        StoreError::Internal(_) => Code::Internal,
    };
    Status::new(code, error.to_string())
}

/// A request field that failed validation.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("etcdserver: {field}: {reason}"))
}
