//! Who is asking, and whether they may.
//!
//! Authentication is [`apiserver_authn`]'s: the verified client certificate, else a bearer
//! token (bootstrap or service account). Authorization asks the chain `system:masters` → Node
//! → RBAC of [`apiserver_authz`]. [`Access`] holds both, with the RBAC cache they read;
//! impersonation is checked here.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
pub use apiserver_authn::user_from_certificate;
use apiserver_authn::{Authenticator, TokenIssuer};
use apiserver_authz::node::NodeAuthorizer;
use apiserver_authz::rbac::Rbac;
pub use apiserver_authz::{AUTHENTICATED, MASTERS, User};
use apiserver_authz::{Attributes, Chain, Decision, PrivilegedGroup};
use apiserver_registry::{ApiError, Registry};

use crate::request::RequestInfo;

/// How long a write to RBAC waits for the policy to reflect it before answering, so a
/// client's next request is judged by it.
const POLICY_SETTLE: Duration = Duration::from_secs(2);

/// The authenticator, the authorizers and the RBAC policy they read.
pub struct Access {
    authenticator: Authenticator,
    chain: Chain,
    rbac: Arc<Rbac>,
}

impl Access {
    /// Creates the default roles that are missing, loads the policy and keeps it current;
    /// service-account tokens are signed and checked by `issuer`.
    pub async fn start(registry: &Registry, issuer: Arc<TokenIssuer>) -> anyhow::Result<Access> {
        apiserver_authz::bootstrap::reconcile(registry)
            .await
            .context("reconciling the default RBAC roles")?;
        let rbac = Rbac::start(registry.clone())
            .await
            .context("loading the RBAC policy")?;
        let chain = Chain(vec![
            Arc::new(PrivilegedGroup),
            Arc::new(NodeAuthorizer::new(registry.clone())),
            rbac.clone(),
        ]);
        Ok(Access {
            authenticator: Authenticator::new(registry.clone(), issuer),
            chain,
            rbac,
        })
    }

    /// The bearer-token authenticator.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The chain's decision.
    pub async fn decide(&self, user: &User, request: &Attributes<'_>) -> Decision {
        self.chain.decide(user, request).await
    }

    /// The RBAC authorizer.
    pub fn rbac(&self) -> &Rbac {
        &self.rbac
    }

    /// The user `user` acts as, if they may impersonate it (the `impersonate` verb on the
    /// user, each group, or the service account it names). Service accounts get their
    /// groups; everyone gets `system:authenticated`.
    pub async fn impersonate(&self, user: &User, mut target: User) -> Result<User, ApiError> {
        let service_account = target
            .name
            .strip_prefix(apiserver_authz::policy::SERVICE_ACCOUNT_PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .map(|(ns, name)| (ns.to_owned(), name.to_owned()));
        let mut checks = vec![match &service_account {
            Some((ns, name)) => ("serviceaccounts", name.clone(), Some(ns.clone())),
            None => ("users", target.name.clone(), None),
        }];
        checks.extend(
            target
                .groups
                .iter()
                .map(|g| ("groups", g.clone(), None::<String>)),
        );
        for (resource, name, namespace) in &checks {
            let attributes = Attributes {
                verb: "impersonate",
                resource: Some(apiserver_authz::ResourceAttributes {
                    group: "",
                    resource,
                    subresource: None,
                    name: Some(name),
                    namespace: namespace.as_deref(),
                }),
                path: "",
            };
            if !matches!(self.decide(user, &attributes).await, Decision::Allow(_)) {
                let scope = namespace
                    .as_ref()
                    .map(|ns| format!(" in the namespace \"{ns}\""))
                    .unwrap_or_default();
                return Err(ApiError::forbidden(format!(
                    "{resource} \"{name}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\"{scope}",
                    user.name
                )));
            }
        }
        if let Some((ns, _)) = &service_account {
            target.groups.push("system:serviceaccounts".into());
            target.groups.push(format!("system:serviceaccounts:{ns}"));
        }
        if !target.in_group(AUTHENTICATED) {
            target.groups.push(AUTHENTICATED.into());
        }
        tracing::debug!(user = %user.name, as_user = %target.name, "impersonating");
        Ok(target)
    }

    /// Waits briefly until the policy reflects a write to RBAC at `revision`.
    pub async fn settle(&self, revision: i64) {
        if !self.rbac.wait_for(revision, POLICY_SETTLE).await {
            tracing::warn!(
                revision,
                "the RBAC policy has not caught up with a write yet"
            );
        }
    }
}

/// The bearer token of an `Authorization: Bearer …` header, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who a request asks to act as (`Impersonate-User`, `Impersonate-Group` headers), if anyone.
pub fn impersonation(headers: &http::HeaderMap) -> Result<Option<User>, ApiError> {
    let text = |value: &http::HeaderValue| {
        value
            .to_str()
            .map(str::to_owned)
            .map_err(|_| ApiError::bad_request("impersonation headers must be ASCII"))
    };
    let name = headers.get("impersonate-user").map(text).transpose()?;
    let groups = headers
        .get_all("impersonate-group")
        .iter()
        .map(text)
        .collect::<Result<Vec<_>, _>>()?;
    let extra = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-") || k == "impersonate-uid");
    match name {
        Some(name) if !name.is_empty() => {
            if extra {
                return Err(ApiError::bad_request(
                    "impersonating a uid or extra fields is not supported",
                ));
            }
            Ok(Some(User { name, groups }))
        }
        _ if !groups.is_empty() || extra => Err(ApiError::bad_request(
            "requested impersonation of groups or extra fields without impersonating a user",
        )),
        _ => Ok(None),
    }
}

/// The 403 message Kubernetes gives, e.g.
/// `pods is forbidden: User "bob" cannot list resource "pods" in API group "" in the namespace "default"`.
pub fn forbidden_message(user: &User, request: &RequestInfo, path: &str) -> String {
    if !request.is_resource {
        return format!(
            "forbidden: User \"{}\" cannot {} path \"{path}\"",
            user.name, request.verb
        );
    }
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let qualified = if request.group.is_empty() {
        request.resource.clone()
    } else {
        format!("{}.{}", request.resource, request.group)
    };
    let what = match &request.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
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
