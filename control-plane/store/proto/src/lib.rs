//! The wire contracts of Basalt's state store: the etcd v3 client API and the Raft peer protocol.
//!
//! Basalt's store speaks the etcd v3 gRPC API so that stock `etcdctl` and
//! etcd client libraries work against it, and its members talk Raft to each
//! other over a small gRPC service of their own. This crate owns only those
//! wire contracts: the prost message types and the tonic client and server
//! stubs for the `etcdserverpb` services (KV, Watch, Lease, Cluster,
//! Maintenance, Auth), the `mvccpb` and `authpb` types they use, and the
//! `peer` service. It holds no logic: the server and replication crates
//! implement the service traits.
//!
//! The `.proto` sources are in `proto/`. The Rust code generated from them is
//! committed in `src/generated/` so that normal builds need no protobuf
//! tooling; `tests/codegen.rs` checks it is fresh and rewrites it when run
//! with `UPDATE_GENERATED=1`:
//!
//! ```text
//! UPDATE_GENERATED=1 cargo test -p store-proto --test codegen
//! ```
//!
//! Every proto `bytes` field is generated as [`bytes::Bytes`], so values can
//! be sliced out of a shared buffer without copying, and every stub encodes
//! with [`codec::LeanCodec`], whose small buffers keep long-lived streams cheap.
//!
//! The modules mirror the proto packages one to one because the generated
//! code refers across packages by relative path (`super::mvccpb::KeyValue`).

pub mod codec;

/// etcd's `mvccpb` package: stored key-value records and watch events.
#[allow(missing_docs, clippy::all)]
pub mod mvccpb {
    include!("generated/mvccpb.rs");
}

/// etcd's `authpb` package: users, roles and permissions.
#[allow(missing_docs, clippy::all)]
pub mod authpb {
    include!("generated/authpb.rs");
}

/// etcd's `etcdserverpb` package: the client-facing services and messages.
///
/// Servers live in `<service>_server` modules (for example
/// [`kv_server::KvServer`](etcdserverpb::kv_server::KvServer)) and clients in
/// `<service>_client` modules.
#[allow(missing_docs, clippy::all)]
pub mod etcdserverpb {
    include!("generated/etcdserverpb.rs");
}

/// The store's member-to-member protocol: Raft messages and requests forwarded to the leader.
/// Frames carry postcard-encoded types owned by the store-raft crate.
#[allow(missing_docs, clippy::all)]
pub mod peer {
    include!("generated/basalt.store.peer.v1.rs");
}
