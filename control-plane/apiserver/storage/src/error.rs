//! Storage failures, in the terms the registry maps to Kubernetes status codes.

use crate::Kv;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A create found the key present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A compare-and-swap found the key changed since the caller read it.
    #[error("key {key} was modified (now at revision {})", current.mod_revision)]
    Conflict {
        /// The key.
        key: String,
        /// Its current value.
        current: Box<Kv>,
    },
    /// The revision asked for was discarded by compaction.
    #[error("revision {requested} has been compacted (history starts after {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compaction point.
        compacted: i64,
    },
    /// The revision asked for is newer than the store's.
    #[error("revision {0} is newer than the store's")]
    FutureRevision(i64),
    /// The store cannot serve now (no leader, a timeout, shutting down); retrying may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store is out of space.
    #[error("storage is out of space: {0}")]
    NoSpace(String),
    /// Anything else.
    #[error("storage error: {0}")]
    Internal(String),
}
