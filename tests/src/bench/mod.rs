//! The store benchmark behind `cargo xtask bench store` (binary `store-bench`).
//!
//! One load generator drives Basalt's store and Debian's etcd in turn, on fresh clusters of the
//! same size, with the same client library (`etcd-client`) and the same durability (both fsync
//! every commit): closed-loop puts and linearizable gets at several concurrencies, and watch
//! delivery latency with many watchers. Besides the client-side figures it reads each server's
//! CPU time, disk writes and peak RSS from /proc, as hints of where the time goes.

// The harness's tests may panic freely; a benchmark reports errors with context instead.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod apiserver;
pub mod load;
pub mod machine;
pub mod measure;
pub mod record;
pub mod report;
pub mod stats;
