//! Which nodes a pod may run on, as pure rules over API types: taints and tolerations
//! ([`taints`]) and node selectors and affinity terms ([`affinity`]). The scheduler filters
//! with them, the DaemonSet controller decides where a daemon belongs with them, and the
//! taint-eviction controller times evictions with them, so all three agree.
//!
//! Scoring, resources and ports are the scheduler's own business, not this crate's.

pub mod affinity;
pub mod taints;
