//! Errors the state machine returns for requests that its current state refuses.
//!
//! Messages follow etcd's wording where clients match on it (kube-apiserver and etcdctl print
//! them); each is deterministic, so every replica answers a replicated command the same way.

/// Why a request against the state machine failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// The requested revision was removed by compaction.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision the store is compacted to.
        compact_revision: i64,
    },
    /// The requested revision is newer than the store's.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put or txn names a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease ID that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A transaction writes the same key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
}
