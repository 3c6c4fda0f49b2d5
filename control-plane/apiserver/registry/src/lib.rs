//! Kubernetes resources over the store: the catalog of what is served, object metadata
//! semantics, validation, selectors, and the generic storage every resource shares.
//!
//! This follows kube-apiserver's shape: one generic [`store::Registry`] serves every resource,
//! and a small [`strategy::Strategy`] per type adds what is its own (defaults, checks, which
//! fields a write may touch). **Does not know** HTTP, authentication or content negotiation;
//! the server crate owns those.

pub mod allocation;
pub mod binding;
pub mod builtin;
pub mod catalog;
pub mod error;
pub mod extensions;
pub mod fields;
pub mod jsonpath;
pub mod object;
pub mod selector;
pub mod shared;
pub mod strategy;
pub mod types;
pub mod validation;

pub use catalog::{Catalog, Resource};
pub use error::{ApiError, FieldError, Subject};
pub use object::Object;
pub mod continuation;
pub mod scale;
pub mod store;
pub mod strategic;
pub mod watch;

pub use store::Registry;
