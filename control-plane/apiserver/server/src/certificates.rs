//! What kube-apiserver does for CertificateSigningRequests beyond storing them: a new request
//! records who made it (so approvers can trust `spec.username`), and approving or signing
//! needs permission for the request's signer (`approve` or `sign` on
//! `certificates.k8s.io/signers`, by the signer's name or its `<domain>/*`).

use apiserver_authz::{Attributes, Decision, ResourceAttributes};
use apiserver_registry::catalog::Resource;
use apiserver_registry::{ApiError, Object, Registry};
use serde_json::{Value, json};

use crate::auth::{Access, User};

/// The group and resource of requests.
pub const GROUP: &str = "certificates.k8s.io";
/// The resource of requests.
pub const RESOURCE: &str = "certificatesigningrequests";

/// Sets `spec.username` and `spec.groups` of a new request to its author, whatever it said.
pub fn stamp_requester(user: &User, request: &mut Object) {
    let spec = apiserver_registry::object::map_mut(request, "spec");
    spec.insert("username".into(), json!(user.name));
    spec.insert("groups".into(), json!(user.groups));
    spec.remove("uid");
    spec.remove("extra");
}

async fn may(access: &Access, user: &User, verb: &str, signer: &str) -> bool {
    let wildcard = signer
        .split_once('/')
        .map(|(domain, _)| format!("{domain}/*"));
    for name in std::iter::once(signer.to_owned()).chain(wildcard) {
        let request = Attributes {
            verb,
            resource: Some(ResourceAttributes {
                group: GROUP,
                resource: "signers",
                subresource: None,
                name: Some(&name),
                namespace: None,
            }),
            path: "",
        };
        if matches!(access.decide(user, &request).await, Decision::Allow(_)) {
            return true;
        }
    }
    false
}

/// Refuses a write to a request's `approval` (verb `approve`) or `status` (verb `sign`)
/// unless `user` may do that for the request's signer.
pub async fn authorize_signer(
    registry: &Registry,
    access: &Access,
    user: &User,
    resource: &Resource,
    name: &str,
    subresource: &str,
) -> Result<(), ApiError> {
    let verb = match subresource {
        "approval" => "approve",
        "status" => "sign",
        _ => return Ok(()),
    };
    let stored = registry.get(resource, None, name).await?;
    let signer = stored
        .get("spec")
        .and_then(|s| s.get("signerName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if may(access, user, verb, &signer).await {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "user not permitted to {verb} requests with signerName \"{signer}\""
    )))
}
