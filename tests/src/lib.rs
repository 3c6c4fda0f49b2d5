//! The harness for Basalt's end-to-end tests and benchmarks.
//!
//! It runs the real binaries (`basalt-store`, Debian's `etcd`) as child processes on loopback
//! addresses of their own, talks to them with real clients (`etcdctl`, the `etcd-client`
//! crate), kills them with SIGKILL when a test asks, and removes every process and directory
//! it made when dropped — also when a test fails. Nothing here mocks a component.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod cluster;
pub mod component;
pub mod control_plane;
pub mod etcdctl;
pub mod kubelet_node;
pub mod lincheck;
pub mod node_agent;
pub mod node_host;
pub mod pki;
pub mod pod_agent;
pub mod process;
pub mod procfs;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions};
pub use process::{MemberProcess, binary};
