//! What a CertificateSigningRequest asks for, read from its PEM request (whose signature must
//! verify), and the checks Kubernetes' signers make of a kubelet's requests. Pure, so the
//! rules are unit tested without a server.

use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelets' serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The signer of other client certificates for the API server.
pub const API_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The signers this controller manager signs for.
pub const SIGNERS: &[&str] = &[KUBELET_CLIENT, KUBELET_SERVING, API_CLIENT];
/// The prefix of a node's user name.
pub const NODE_PREFIX: &str = "system:node:";
/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";

/// The subject and names a request asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Asked {
    /// The subject's common names.
    pub common_names: Vec<String>,
    /// The subject's organizations (groups, for client certificates).
    pub organizations: Vec<String>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses among them.
    pub ips: Vec<IpAddr>,
    /// Whether it names anything else (email addresses, URIs, …).
    pub other_names: bool,
}

impl Asked {
    /// The single common name, if there is exactly one.
    pub fn common_name(&self) -> Option<&str> {
        match self.common_names.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Reads the request of `csr`: PEM, one CERTIFICATE REQUEST, signature verified.
pub fn read(csr: &CertificateSigningRequest) -> Result<Asked, String> {
    let pem = &csr.spec.request.0;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("the certificate request does not parse: {e}"))?;
    request
        .verify_signature()
        .map_err(|_| "the certificate request's signature does not verify".to_owned())?;
    let subject = &request.certification_request_info.subject;
    let text = |value: Result<&str, _>| value.map(str::to_owned).unwrap_or_default();
    let mut asked = Asked {
        common_names: subject
            .iter_common_name()
            .map(|a| text(a.as_str()))
            .collect(),
        organizations: subject
            .iter_organization()
            .map(|a| text(a.as_str()))
            .collect(),
        ..Asked::default()
    };
    for extension in request.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(names) = extension {
            for name in &names.general_names {
                match name {
                    GeneralName::DNSName(dns) => asked.dns_names.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => match ip(bytes) {
                        Some(address) => asked.ips.push(address),
                        None => asked.other_names = true,
                    },
                    _ => asked.other_names = true,
                }
            }
        }
    }
    Ok(asked)
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn usages(csr: &CertificateSigningRequest) -> Vec<&str> {
    csr.spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// Usages within `allowed` and including `needed`.
fn usages_ok(
    csr: &CertificateSigningRequest,
    allowed: &[&str],
    needed: &str,
) -> Result<(), String> {
    let asked = usages(csr);
    if let Some(extra) = asked.iter().find(|u| !allowed.contains(u)) {
        return Err(format!(
            "usage {extra:?} is not allowed; allowed: {allowed:?}"
        ));
    }
    if !asked.contains(&needed) {
        return Err(format!("usage {needed:?} is required"));
    }
    Ok(())
}

fn node_subject(asked: &Asked) -> Result<&str, String> {
    if asked.organizations != [NODES_GROUP] {
        return Err(format!(
            "subject organization must be exactly [\"{NODES_GROUP}\"]"
        ));
    }
    match asked.common_name() {
        Some(cn) if cn.len() > NODE_PREFIX.len() && cn.starts_with(NODE_PREFIX) => Ok(cn),
        _ => Err(format!(
            "subject common name must begin with {NODE_PREFIX:?}"
        )),
    }
}

/// The node a kubelet client certificate request is for, if it is one as Kubernetes'
/// signer requires: a node's name and group, no subject alternative names, usages for a
/// client.
pub fn kubelet_client(csr: &CertificateSigningRequest, asked: &Asked) -> Result<String, String> {
    let cn = node_subject(asked)?;
    if !asked.dns_names.is_empty() || !asked.ips.is_empty() || asked.other_names {
        return Err("subject alternative names are not allowed".into());
    }
    usages_ok(
        csr,
        &["digital signature", "key encipherment", "client auth"],
        "client auth",
    )?;
    Ok(cn.to_owned())
}

/// The node a kubelet serving certificate request is for, if it is one: a node's name and
/// group, at least one DNS name or IP address (and nothing else), usages for a server.
pub fn kubelet_serving(csr: &CertificateSigningRequest, asked: &Asked) -> Result<String, String> {
    let cn = node_subject(asked)?;
    if asked.other_names {
        return Err(
            "only DNS names and IP addresses are allowed as subject alternative names".into(),
        );
    }
    if asked.dns_names.is_empty() && asked.ips.is_empty() {
        return Err("at least one DNS name or IP address is required".into());
    }
    usages_ok(
        csr,
        &["digital signature", "key encipherment", "server auth"],
        "server auth",
    )?;
    Ok(cn.to_owned())
}

/// Whether a request for `kubernetes.io/kube-apiserver-client` is one that signer issues.
pub fn api_client(csr: &CertificateSigningRequest, asked: &Asked) -> Result<(), String> {
    if asked.common_name().is_none() {
        return Err("exactly one subject common name is required".into());
    }
    usages_ok(
        csr,
        &["digital signature", "key encipherment", "client auth"],
        "client auth",
    )
}

/// What the signer `signer` requires of the request, or why it will not sign it.
pub fn signable(csr: &CertificateSigningRequest, asked: &Asked) -> Result<(), String> {
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT => kubelet_client(csr, asked).map(drop),
        KUBELET_SERVING => kubelet_serving(csr, asked).map(drop),
        API_CLIENT => api_client(csr, asked),
        other => Err(format!(
            "signer {other:?} is not one this controller manager signs for"
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    /// A request for `cn` in `orgs` with `dns` and `ips` names, as `signer` with `usages`.
    pub(crate) fn request(
        cn: &str,
        orgs: &[&str],
        dns: &[&str],
        ips: &[&str],
        signer: &str,
        usages: &[&str],
    ) -> CertificateSigningRequest {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| (*d).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *org);
        }
        for address in ips {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(address.parse().expect("ip")));
        }
        let pem = params
            .serialize_request(&key)
            .expect("request")
            .pem()
            .expect("pem");
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| (*u).to_owned()).collect()),
                ..CertificateSigningRequestSpec::default()
            },
            ..CertificateSigningRequest::default()
        }
    }

    #[test]
    fn kubelet_client_requests_are_recognized() {
        let csr = request(
            "system:node:n1",
            &["system:nodes"],
            &[],
            &[],
            KUBELET_CLIENT,
            &["digital signature", "client auth"],
        );
        let asked = read(&csr).expect("reads");
        assert_eq!(
            kubelet_client(&csr, &asked),
            Ok("system:node:n1".to_owned())
        );
        assert!(signable(&csr, &asked).is_ok());

        let stranger = request(
            "bob",
            &["system:nodes"],
            &[],
            &[],
            KUBELET_CLIENT,
            &["client auth"],
        );
        let asked = read(&stranger).expect("reads");
        assert!(kubelet_client(&stranger, &asked).is_err());

        let named = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &[],
            KUBELET_CLIENT,
            &["client auth"],
        );
        let asked = read(&named).expect("reads");
        assert_eq!(
            kubelet_client(&named, &asked),
            Err("subject alternative names are not allowed".to_owned())
        );
    }

    #[test]
    fn serving_requests_need_names_and_server_usage() {
        let csr = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &["10.0.0.1"],
            KUBELET_SERVING,
            &["digital signature", "server auth"],
        );
        let asked = read(&csr).expect("reads");
        assert_eq!(asked.dns_names, ["n1"]);
        assert_eq!(asked.ips, ["10.0.0.1".parse::<IpAddr>().expect("ip")]);
        assert!(kubelet_serving(&csr, &asked).is_ok());
        let client_usage = request(
            "system:node:n1",
            &["system:nodes"],
            &["n1"],
            &[],
            KUBELET_SERVING,
            &["client auth"],
        );
        let asked = read(&client_usage).expect("reads");
        assert!(kubelet_serving(&client_usage, &asked).is_err());
    }

    #[test]
    fn garbage_is_not_read() {
        let mut csr = request("x", &[], &[], &[], API_CLIENT, &["client auth"]);
        csr.spec.request = ByteString(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_vec(),
        );
        assert!(read(&csr).is_err());
    }
}
