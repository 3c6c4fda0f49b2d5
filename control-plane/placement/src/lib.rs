//! Which nodes a pod may run on, as pure rules over API types: taints and tolerations
//! ([`taints`]) and node selectors and affinity terms ([`affinity`]). The scheduler filters
//! with them, the DaemonSet controller decides where a daemon belongs with them, and the
//! taint-eviction controller times evictions with them, so all three agree.
//!
//! What pods ask for ([`resources`]) is counted here too, so the scheduler's fit and the
//! quota controller's usage agree, and image names are completed ([`image`]) so the scheduler
//! and the kubelet name images alike. Scoring and ports are the scheduler's own business.

pub mod affinity;
pub mod image;
pub mod resources;
pub mod taints;
