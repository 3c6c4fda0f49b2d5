//! The multi-version key-value state machine behind Basalt's store.
//!
//! It owns etcd v3 data semantics: a global revision, per-key create/mod revisions and versions,
//! ranges at a revision, transactions, leases as a replicated table, compaction, and the fan-out
//! of change events to watchers. It is deterministic and does no I/O: the replication layer feeds
//! it committed commands in log order and persists its snapshots. It does not know about Raft,
//! gRPC, clocks or lease expiry timers — expiry is decided by the Raft leader and arrives here as
//! an ordinary revoke.

mod error;
mod history;
mod key_range;
mod lease;
pub mod snapshot;
mod store;
mod txn;
mod types;
pub mod watch;

pub use error::Error;
pub use key_range::KeyRange;
pub use lease::LeaseInfo;
pub use store::{Mvcc, WriteOutcome};
pub use txn::validate_txn;
pub use types::*;
