//! Who is asking, and whether they may.
//!
//! Authentication reads the verified client certificate (CN is the user, O the groups, as
//! Kubernetes does). Authorization is a seam ([`Authorizer`]); until RBAC lands the policy is
//! the strict one — members of `system:masters` may do everything, everyone else nothing.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::request::RequestInfo;

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

/// The group whose members are cluster superusers.
pub const MASTERS: &str = "system:masters";

impl User {
    /// The user a client certificate names: CN, and O as groups. `None` if it names none.
    pub fn from_certificate(der: &[u8]) -> Option<User> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
        if name.is_empty() {
            return None;
        }
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_owned))
            .collect();
        groups.push("system:authenticated".into());
        Some(User { name, groups })
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Decides whether a user may make a request.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` if allowed, else the reason to put in the 403.
    fn authorize(&self, user: &User, request: &RequestInfo) -> Result<(), String>;
}

/// Only `system:masters` may act.
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize(&self, user: &User, _request: &RequestInfo) -> Result<(), String> {
        if user.in_group(MASTERS) {
            Ok(())
        } else {
            Err("no policy grants it".into())
        }
    }
}

/// The 403 message Kubernetes gives, e.g.
/// `pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(user: &User, request: &RequestInfo) -> String {
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let what = match &request.name {
        Some(name) => format!("{} \"{name}\"", request.resource),
        None => request.resource.clone(),
    };
    let scope = match &request.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        user.name, request.verb, request.group
    )
}
