//! Replication for Basalt's state store.
//!
//! openraft drives consensus over a durable segment log (`log_store`) and an in-memory MVCC
//! state machine made durable by snapshots (`state_machine`, `snapshot_store`). Members talk
//! over a small gRPC peer protocol (`network`, `peer_service`); a member that is not the
//! leader forwards what only the leader may do (`forward`). On top, [`StoreNode`] batches
//! concurrent writes into single log entries (`proposer`), coalesces read indexes
//! (`coalesce`), keeps lease time on the leader (`leases`), manages membership (`members`)
//! and serves watchers (`watcher`).
//!
//! This crate does not speak the etcd API; the server crate maps etcd's gRPC services onto
//! [`StoreNode`].

mod api;
mod coalesce;
mod codec;
mod config;
mod disk;
mod error;
mod forward;
mod leases;
mod log_store;
mod members;
mod network;
mod node;
mod peer_service;
mod proposer;
mod snapshot_store;
mod state_machine;
mod types;
mod watcher;

pub use api::{LeaseTtl, MAX_LEASE_TTL, Status};
pub use config::{ClusterState, NodeConfig, Tls, member_id};
pub use error::StoreError;
pub use members::MemberInfo;
pub use node::{StartError, StoreNode};
pub use state_machine::{Shared, StoreState};
pub use types::{MemberAttrs, Op, OpOutcome, OpResponse, OpResult, PeerNode};
pub use watcher::{WatchBatch, Watcher};
