//! The CSR approver: approves what a kubelet may be given without a human.
//!
//! A kubelet's client certificate request is approved, as kube-controller-manager's
//! csrapproving does, when its author may `create` `certificatesigningrequests/nodeclient`
//! (a bootstrapping kubelet asking for any node's first certificate) or, renewing its own,
//! `certificatesigningrequests/selfnodeclient` — asked of the API server with a
//! SubjectAccessReview. A kubelet's serving certificate request (which kube-controller-manager
//! leaves to a human) is approved when the node itself asks and every name in it is the
//! node's name or one of the addresses the node reports. Anything else waits for a human;
//! nothing is denied automatically.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;

use super::request::{self, Asked, KUBELET_CLIENT, KUBELET_SERVING, NODE_PREFIX};

/// Why a request is approved automatically, once it passed its check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grounds {
    /// A kubelet's client certificate, if its author may create `certificatesigningrequests/`
    /// this subresource (`nodeclient` or `selfnodeclient`).
    ClientIfAllowed(&'static str),
    /// A node's serving certificate for its own names and addresses.
    OwnServing,
}

impl Grounds {
    /// The approval condition's message.
    pub fn message(&self) -> &'static str {
        match self {
            Grounds::ClientIfAllowed(_) => {
                "Auto approving kubelet client certificate after SubjectAccessReview."
            }
            Grounds::OwnServing => {
                "Auto approving kubelet serving certificate for the node's own names and addresses."
            }
        }
    }
}

/// Whether a request is already decided (approved or denied).
pub fn decided(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| matches!(c.type_.as_str(), "Approved" | "Denied"))
}

/// The grounds to approve `csr` on, if there are any; `node` is the node a serving request
/// names, as stored.
pub fn grounds(
    csr: &CertificateSigningRequest,
    asked: &Asked,
    node: Option<&Node>,
) -> Option<Grounds> {
    let author = csr.spec.username.as_deref().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT => {
            let cn = request::kubelet_client(csr, asked).ok()?;
            Some(Grounds::ClientIfAllowed(if cn == author {
                "selfnodeclient"
            } else {
                "nodeclient"
            }))
        }
        KUBELET_SERVING => {
            let cn = request::kubelet_serving(csr, asked).ok()?;
            let node = node?;
            let name = cn.strip_prefix(NODE_PREFIX)?;
            (author == cn && node.metadata.name.as_deref() == Some(name) && own_names(asked, node))
                .then_some(Grounds::OwnServing)
        }
        _ => None,
    }
}

/// The node a serving request is for, by name.
pub fn serving_node(csr: &CertificateSigningRequest, asked: &Asked) -> Option<String> {
    if csr.spec.signer_name != KUBELET_SERVING {
        return None;
    }
    asked
        .common_name()?
        .strip_prefix(NODE_PREFIX)
        .map(str::to_owned)
}

/// Whether every DNS name is the node's name or a DNS address it reports, and every IP one
/// of its addresses.
fn own_names(asked: &Asked, node: &Node) -> bool {
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let addresses: Vec<(&str, &str)> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    let dns_ok = asked.dns_names.iter().all(|dns| {
        dns == name
            || addresses.iter().any(|(kind, address)| {
                matches!(*kind, "Hostname" | "InternalDNS" | "ExternalDNS") && address == dns
            })
    });
    let ips_ok = asked.ips.iter().all(|ip| {
        addresses.iter().any(|(kind, address)| {
            matches!(*kind, "InternalIP" | "ExternalIP")
                && address.parse::<std::net::IpAddr>().ok() == Some(*ip)
        })
    });
    dns_ok && ips_ok
}

/// The SubjectAccessReview asking whether the request's author may create the request's
/// `subresource`.
pub fn review(csr: &CertificateSigningRequest, subresource: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::request::read;
    use crate::certificates::request::tests::request;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, ip: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn client_requests_are_reviewed_as_first_or_renewal() {
        let mut csr = request(
            "system:node:n1",
            &["system:nodes"],
            &[],
            &[],
            KUBELET_CLIENT,
            &["digital signature", "client auth"],
        );
        let asked = read(&csr).expect("reads");
        csr.spec.username = Some("system:bootstrap:abcdef".into());
        assert_eq!(
            grounds(&csr, &asked, None),
            Some(Grounds::ClientIfAllowed("nodeclient"))
        );
        csr.spec.username = Some("system:node:n1".into());
        assert_eq!(
            grounds(&csr, &asked, None),
            Some(Grounds::ClientIfAllowed("selfnodeclient"))
        );
        let sar = review(&csr, "selfnodeclient");
        assert_eq!(sar.spec.user.as_deref(), Some("system:node:n1"));
    }

    #[test]
    fn serving_requests_need_the_node_to_ask_for_its_own_names() {
        let mut csr = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &["10.0.0.1"],
            KUBELET_SERVING,
            &["digital signature", "server auth"],
        );
        let asked = read(&csr).expect("reads");
        assert_eq!(serving_node(&csr, &asked).as_deref(), Some("n1"));
        csr.spec.username = Some("system:node:n1".into());
        let n1 = node("n1", "10.0.0.1");
        assert_eq!(grounds(&csr, &asked, Some(&n1)), Some(Grounds::OwnServing));
        assert_eq!(grounds(&csr, &asked, None), None, "no such node");
        assert_eq!(
            grounds(&csr, &asked, Some(&node("n1", "10.0.0.2"))),
            None,
            "an address the node does not have"
        );
        csr.spec.username = Some("system:node:n2".into());
        assert_eq!(grounds(&csr, &asked, Some(&n1)), None, "another node asked");
    }
}
