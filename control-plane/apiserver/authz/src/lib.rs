//! Who may do what: the authorizers of Basalt's API server and the admission checks that
//! depend on who is asking.
//!
//! A request is described by [`Attributes`] (verb plus either a resource or a non-resource
//! path) and asked of a [`Chain`] of authorizers, as kube-apiserver's `Node,RBAC` mode does:
//! members of `system:masters` are always allowed; the [`node::NodeAuthorizer`] answers for
//! kubelets (their own Node and Lease, the pods bound to them and what those pods use); then
//! [`rbac::Rbac`] evaluates Roles and Bindings kept current from the store. The first
//! authorizer with an opinion decides; with none the request is denied.
//!
//! **Does not know** how users are authenticated (the server reads certificates and tokens)
//! or HTTP; it is handed a [`User`] and the request's attributes.

pub mod bootstrap;
pub mod escalation;
pub mod node;
pub mod policy;
pub mod rbac;
pub mod rules;

use std::sync::Arc;

use async_trait::async_trait;

pub use apiserver_authn::{AUTHENTICATED, MASTERS, User};

/// The resource a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceAttributes<'a> {
    /// The API group ("" for core).
    pub group: &'a str,
    /// The resource's plural name.
    pub resource: &'a str,
    /// The subresource, if any.
    pub subresource: Option<&'a str>,
    /// The object's name, if the request names one.
    pub name: Option<&'a str>,
    /// The namespace, if the request is in one.
    pub namespace: Option<&'a str>,
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// The verb: `get`, `list`, `create`, … for resources; the lower-case HTTP method for
    /// non-resource paths.
    pub verb: &'a str,
    /// The resource, or `None` for a non-resource path.
    pub resource: Option<ResourceAttributes<'a>>,
    /// The path of a non-resource request.
    pub path: &'a str,
}

impl<'a> Attributes<'a> {
    /// The namespace the request is in, if any.
    pub fn namespace(&self) -> Option<&'a str> {
        self.resource.and_then(|r| r.namespace)
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, with why (which binding granted it).
    Allow(String),
    /// Denied outright, with why; later authorizers are not asked.
    Deny(String),
    /// This authorizer has no opinion; ask the next.
    NoOpinion,
}

/// Decides whether a user may make a request.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// The decision for `request` by `user`.
    async fn authorize(&self, user: &User, request: &Attributes<'_>) -> Decision;
}

/// Members of `system:masters` may do anything, whatever the stored policy says — so a
/// cluster's administrators cannot lock themselves out by editing RBAC.
pub struct PrivilegedGroup;

#[async_trait]
impl Authorizer for PrivilegedGroup {
    async fn authorize(&self, user: &User, _request: &Attributes<'_>) -> Decision {
        if user.in_group(MASTERS) {
            Decision::Allow(format!("member of {MASTERS}"))
        } else {
            Decision::NoOpinion
        }
    }
}

/// Authorizers asked in order; the first with an opinion decides.
#[derive(Clone, Default)]
pub struct Chain(pub Vec<Arc<dyn Authorizer>>);

impl Chain {
    /// The chain's decision: never [`Decision::NoOpinion`].
    pub async fn decide(&self, user: &User, request: &Attributes<'_>) -> Decision {
        for authorizer in &self.0 {
            match authorizer.authorize(user, request).await {
                Decision::NoOpinion => continue,
                decided => return decided,
            }
        }
        Decision::Deny(String::new())
    }
}
