//! The CSR signer: issues certificates from the cluster CA for approved requests to the
//! signers it serves (kubelet client and serving, API client). The certificate's subject and
//! names are the request's; its key usages come from `spec.usages`, never from the request's
//! own extensions; it is valid from five minutes ago (clocks drift) for the request's
//! `expirationSeconds` or the signing duration, whichever is shorter.
//!
//! The certificate is built with rcgen, which holds one value per subject attribute: a
//! request with, say, two organizations is refused rather than issued with one.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

use super::request::Asked;

/// How long certificates last by default (kube-controller-manager's
/// `--cluster-signing-duration`).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back a certificate's validity starts.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The cluster CA and how long what it signs lasts.
pub struct Signer {
    ca_pem: String,
    key: KeyPair,
    duration: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with the CA certificate and key (PEM); checks they parse.
    pub fn new(ca_pem: &str, key_pem: &str, duration: Duration) -> Result<Signer, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("the CA key: {e}"))?;
        Issuer::from_ca_cert_pem(ca_pem, &key).map_err(|e| format!("the CA certificate: {e}"))?;
        Ok(Signer {
            ca_pem: ca_pem.to_owned(),
            key,
            duration,
        })
    }

    /// The certificate (PEM) for `csr`, whose request reads as `asked`.
    pub fn sign(&self, csr: &CertificateSigningRequest, asked: &Asked) -> Result<String, String> {
        if asked.common_names.len() > 1 || asked.organizations.len() > 1 {
            return Err(
                "requests with more than one value of a subject attribute are not supported".into(),
            );
        }
        let pem = std::str::from_utf8(&csr.spec.request.0)
            .map_err(|_| "the request is not PEM text".to_owned())?;
        let mut request = CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| format!("the request cannot be signed: {e}"))?;
        let params = &mut request.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = Vec::new();
        params.extended_key_usages = Vec::new();
        for usage in csr.spec.usages.iter().flatten() {
            match usage.as_str() {
                "digital signature" | "signing" => {
                    params.key_usages.push(KeyUsagePurpose::DigitalSignature)
                }
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                other => return Err(format!("usage {other:?} is not signed")),
            }
        }
        let asked_for = csr
            .spec
            .expiration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(self.duration);
        let lifetime = asked_for.min(self.duration);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        // Random and positive (a set top bit would make the DER integer negative).
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.key)
            .map_err(|e| format!("the CA certificate: {e}"))?;
        let certificate = request
            .signed_by(&issuer)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(certificate.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::request::tests::request;
    use crate::certificates::request::{KUBELET_CLIENT, read};
    use x509_parser::prelude::FromDer;

    fn ca() -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test ca");
        let cert = params.self_signed(&key).expect("ca");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn signs_with_the_usages_asked_for_and_a_bounded_lifetime() {
        let (ca_pem, key_pem) = ca();
        let signer = Signer::new(&ca_pem, &key_pem, Duration::from_secs(3600)).expect("signer");
        let mut csr = request(
            "system:node:n1",
            &["system:nodes"],
            &[],
            &[],
            KUBELET_CLIENT,
            &["digital signature", "client auth"],
        );
        csr.spec.expiration_seconds = Some(7200);
        let asked = read(&csr).expect("reads");
        let pem = signer.sign(&csr, &asked).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents)
            .expect("certificate");
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cn, ["system:node:n1"]);
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(
            lifetime,
            3600 + 300,
            "the shorter of asked and allowed, backdated 5 min"
        );
        let eku = cert.extended_key_usage().expect("parses").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);
        assert!(!cert.is_ca());
        let issuer: Vec<_> = cert
            .issuer()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(issuer, ["test ca"]);
    }

    #[test]
    fn refuses_a_key_that_is_not_one() {
        let (ca_pem, _) = ca();
        assert!(Signer::new(&ca_pem, "not a key", DEFAULT_DURATION).is_err());
    }
}
