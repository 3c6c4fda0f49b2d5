//! Basalt's kubelet: registers its Node and keeps its Lease, runs the pods bound to it on
//! containerd's native API, each in its own network namespace, and reports their status.
//!
//! - [`node`]: the Node object, its Lease and status.
//! - [`pods`]: the watch on this node's pods and one worker per pod.
//! - [`runtime`]: containerd's API (images, containers, tasks, events).
//! - [`spec`]: a container's OCI runtime spec.
//! - [`logs`]: how containerd's shims are told to run the log writer (`basalt-container-log`).
//! - [`server`]: the kubelet's HTTPS API (port 10250) for the API server.
//! - [`cgroups`]: removal of pods' cgroups.
//!
//! Pod networking is the `podnet` crate.

pub mod cgroups;
pub mod logs;
pub mod node;
pub mod pods;
pub mod runtime;
pub mod server;
pub mod spec;
