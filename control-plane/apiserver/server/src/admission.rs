//! Admission checks that depend on who writes: NodeRestriction (a kubelet creates only its
//! own Node and Lease and mirror pods bound to it) and RBAC's escalation guard (nobody grants
//! what they do not hold). They judge the object as it would be stored, so a patch is judged
//! on its result.
//!
//! Admission that only looks at the object (defaults, validation, namespace lifecycle) is
//! the registry's.

use std::sync::Arc;

use apiserver_authz::escalation;
use apiserver_authz::policy::Policy;
use apiserver_registry::{ApiError, Object};

use crate::auth::{Access, User};
use crate::request::RequestInfo;

/// The checks for one write.
pub struct Admission<'a> {
    user: &'a User,
    info: &'a RequestInfo,
    /// The RBAC policy, read once per request and only for writes to RBAC objects.
    policy: Option<Arc<Policy>>,
}

impl<'a> Admission<'a> {
    /// The checks for the write `info` by `user`.
    pub fn new(user: &'a User, info: &'a RequestInfo, access: &Access) -> Admission<'a> {
        let policy = (info.group == escalation::GROUP && info.subresource.is_none())
            .then(|| access.rbac().policy());
        Admission { user, info, policy }
    }

    /// Whether `object` may be written.
    pub fn admit(&self, object: &Object) -> Result<(), ApiError> {
        let info = self.info;
        if info.subresource.is_some() {
            return Ok(());
        }
        apiserver_authz::node::admit(self.user, &info.group, &info.resource, &info.verb, object)
            .map_err(ApiError::forbidden)?;
        if let Some(policy) = &self.policy {
            let name = info
                .name
                .as_deref()
                .unwrap_or_else(|| apiserver_registry::object::name(object));
            escalation::check(
                policy,
                self.user,
                &info.resource,
                info.namespace.as_deref(),
                name,
                object,
            )
            .map_err(ApiError::forbidden)?;
        }
        Ok(())
    }
}
