//! Who is asking: the user a request authenticates as.
//!
//! A verified client certificate names its user directly (CN the name, O the groups). A bearer
//! token is either a bootstrap token (`<id>.<secret>`, checked against its Secret in
//! `kube-system`) or a service-account token: a JWT this server signed, valid while the
//! account — and the pod, secret or node it was bound to — still exists with the same uid.
//! [`Authenticator`] tries them in that order; anything else is unauthenticated.
//!
//! **Does not know** what a user may do; `apiserver-authz` decides that.

pub mod bootstrap;
pub mod serviceaccount;

use std::sync::Arc;

use apiserver_registry::{ApiError, Object, Registry};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use serviceaccount::TokenIssuer;

/// The group whose members are cluster superusers.
pub const MASTERS: &str = "system:masters";
/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl User {
    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The user a client certificate names: CN, and O as groups. `None` if it names none.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
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
    groups.push(AUTHENTICATED.into());
    Some(User { name, groups })
}

/// Authenticates bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    registry: Registry,
    issuer: Arc<TokenIssuer>,
}

impl Authenticator {
    /// An authenticator that checks tokens against objects in `registry`.
    pub fn new(registry: Registry, issuer: Arc<TokenIssuer>) -> Authenticator {
        Authenticator { registry, issuer }
    }

    /// The service-account token issuer.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The user a bearer token authenticates, or why it does not. `audiences` are those the
    /// token must be meant for (the API's own when empty).
    pub async fn authenticate(&self, token: &str, audiences: &[String]) -> Result<User, String> {
        if let Some(parsed) = bootstrap::BootstrapToken::parse(token) {
            let secret = self
                .get(
                    "",
                    "v1",
                    "secrets",
                    Some(bootstrap::NAMESPACE),
                    &parsed.secret_name(),
                )
                .await
                .map_err(|_| "no bootstrap token with that id".to_owned())?;
            return parsed.check(&secret, jiff::Timestamp::now());
        }
        let claims = self.issuer.verify(token, audiences)?;
        let k8s = &claims.kubernetes;
        let account = self
            .get(
                "",
                "v1",
                "serviceaccounts",
                Some(&k8s.namespace),
                &k8s.serviceaccount.name,
            )
            .await
            .map_err(|_| {
                format!(
                    "service account {}/{} has been deleted",
                    k8s.namespace, k8s.serviceaccount.name
                )
            })?;
        same_uid(&account, &k8s.serviceaccount.uid, "service account")?;
        for (resource, bound, namespace) in [
            ("pods", &k8s.pod, Some(k8s.namespace.as_str())),
            ("secrets", &k8s.secret, Some(k8s.namespace.as_str())),
            ("nodes", &k8s.node, None),
        ] {
            if let Some(bound) = bound {
                let object = self
                    .get("", "v1", resource, namespace, &bound.name)
                    .await
                    .map_err(|_| {
                        format!(
                            "the {resource} object the token is bound to, {:?}, no longer exists",
                            bound.name
                        )
                    })?;
                same_uid(&object, &bound.uid, resource)?;
            }
        }
        Ok(serviceaccount::user(
            &k8s.namespace,
            &k8s.serviceaccount.name,
        ))
    }

    async fn get(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Object, ApiError> {
        let resource = self
            .registry
            .catalog()
            .get(group, version, plural)
            .ok_or_else(ApiError::no_route)?;
        self.registry.get(&resource, namespace, name).await
    }
}

fn same_uid(object: &Object, uid: &str, what: &str) -> Result<(), String> {
    let stored = apiserver_registry::object::uid(object);
    if uid.is_empty() || stored == uid {
        Ok(())
    } else {
        Err(format!(
            "the {what} the token names was replaced (uid {stored}, token has {uid})"
        ))
    }
}
