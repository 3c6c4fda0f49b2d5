//! The API server's storage: objects as values under string keys, versioned by the store's
//! revision.
//!
//! [`Backend`] is the small interface the registry needs — get, list a prefix (paged, at a
//! revision), create, compare-and-swap update and delete, and watch a prefix from a revision —
//! the same operations kube-apiserver's etcd3 storage makes. [`LocalBackend`] serves it from the
//! in-process store member (the fast path on server nodes); [`encryption::Encrypted`] wraps any
//! backend to keep chosen resources encrypted at rest. **Does not know** Kubernetes objects,
//! encodings or resource versions as strings; the registry owns those.

pub mod encryption;
mod error;
mod local;

use async_trait::async_trait;
use bytes::Bytes;

pub use error::StorageError;
pub use local::LocalBackend;

/// A stored value and where it sits in history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: i64,
    /// The revision of the last change.
    pub mod_revision: i64,
}

/// A page of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// Every key starting with this.
    pub prefix: String,
    /// Start at this key (inclusive); empty starts at the prefix.
    pub start: String,
    /// At most this many items; 0 means all.
    pub limit: usize,
    /// Read as of this revision; 0 means the latest (linearizable).
    pub revision: i64,
    /// Read this member's applied state without first confirming it is the cluster's latest
    /// (a serializable read): what `resourceVersion=0` and "not older than" reads allow.
    pub serializable: bool,
}

/// What a list found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The values, in key order.
    pub kvs: Vec<Kv>,
    /// The revision the page was read at.
    pub revision: i64,
    /// Whether keys are left after this page.
    pub more: bool,
    /// How many keys are left after this page (when `more`).
    pub remaining: i64,
}

/// Whether a watched key was written or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// A change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Put or delete.
    pub kind: ChangeKind,
    /// For a put the new value; for a delete the key with the delete's revision.
    pub kv: Kv,
    /// The value before the change, if the key existed.
    pub prev: Option<Kv>,
}

impl Change {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// What a watch delivers next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Changes, in revision order.
    Changes(Vec<Change>),
    /// Nothing is pending: every change up to this revision has been delivered.
    Progress(i64),
}

/// An open watch; dropping it cancels it.
#[async_trait]
pub trait WatchStream: Send {
    /// The next changes, or a progress mark when `idle` passes with none. An error ends the
    /// watch ([`StorageError::Compacted`] when it fell behind compaction).
    async fn next(&mut self, idle: std::time::Duration) -> Result<WatchItem, StorageError>;
}

/// The storage operations the API server makes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The current value of a key (linearizable).
    async fn get(&self, key: &str) -> Result<Option<Kv>, StorageError>;

    /// The value of a key in this member's applied state, which may trail the cluster's
    /// latest (a serializable read: no round to the leader).
    async fn get_serializable(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        self.get(key).await
    }

    /// A page of the keys under a prefix.
    async fn list(&self, request: &ListRequest) -> Result<ListResult, StorageError>;

    /// Stores a new key; [`StorageError::AlreadyExists`] if it exists. Returns its revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<i64, StorageError>;

    /// Replaces a key's value if its last change is still `expected` (its mod revision);
    /// otherwise [`StorageError::Conflict`] with the current value, or
    /// [`StorageError::NotFound`]. Returns the new revision.
    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64, StorageError>;

    /// Deletes a key, if `expected` is given only while its mod revision is still that.
    /// Returns the revision of the delete and the value deleted.
    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, Kv), StorageError>;

    /// Watches the keys under a prefix for changes after revision `after`, with each change's
    /// previous value.
    async fn watch(&self, prefix: &str, after: i64) -> Result<Box<dyn WatchStream>, StorageError>;

    /// The store's current revision (linearizable).
    async fn revision(&self) -> Result<i64, StorageError>;

    /// Discards history before `revision`.
    async fn compact(&self, revision: i64) -> Result<(), StorageError>;
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    Bytes::from_static(&[0])
}
