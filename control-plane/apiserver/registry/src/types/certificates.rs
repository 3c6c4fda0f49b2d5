//! CertificateSigningRequests: the request must be a PEM certificate request whose signature
//! verifies, the signer and usages must be named, the spec is fixed once created, and an
//! approval or denial, once given, stays. Who asked is stamped by the server (it knows the
//! caller); who may approve or sign is its authorizer's business.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use serde_json::Value;
use x509_parser::prelude::FromDer;

use super::{immutable, list};
use crate::error::FieldError;
use crate::object::Object;
use crate::strategy::{Strategy, normalize_as};

/// The key usages and extended key usages a request may ask for (Kubernetes' names).
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

const CONDITIONS: &[&str] = &["Approved", "Denied", "Failed"];
/// The shortest certificate lifetime a request may ask for.
const MIN_EXPIRATION_SECONDS: i64 = 600;

/// CertificateSigningRequests.
pub struct CsrStrategy;

/// Checks that `pem` is one PEM `CERTIFICATE REQUEST` whose signature verifies.
pub fn check_request(pem: &[u8]) -> Result<(), String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|_| "PEM block type must be CERTIFICATE REQUEST".to_owned())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err("PEM block type must be CERTIFICATE REQUEST".into());
    }
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("the certificate request does not parse: {e}"))?;
    request
        .verify_signature()
        .map_err(|_| "the certificate request's signature does not verify".to_owned())
}

fn bytes_field(object: &Object, path: &[&str]) -> Option<Vec<u8>> {
    use base64::Engine;
    let mut value = object.get(path[0])?;
    for key in &path[1..] {
        value = value.get(key)?;
    }
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str()?)
        .ok()
}

fn conditions(object: &Object) -> Vec<(String, String)> {
    object
        .get("status")
        .and_then(|s| s.as_object())
        .map(|status| list(status, "conditions"))
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            (field("type"), field("status"))
        })
        .collect()
}

impl Strategy for CsrStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<CertificateSigningRequest>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<CertificateSigningRequest>())
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let spec = object
            .get("spec")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match bytes_field(object, &["spec", "request"]) {
            None => errors.push(FieldError::required("spec.request", "")),
            Some(pem) => {
                if let Err(why) = check_request(&pem) {
                    errors.push(FieldError::invalid("spec.request", "[]byte{…}", why));
                }
            }
        }
        match spec.get("signerName").and_then(Value::as_str) {
            None | Some("") => errors.push(FieldError::required("spec.signerName", "")),
            Some(name) => {
                let qualified = name
                    .split_once('/')
                    .is_some_and(|(domain, path)| domain.contains('.') && !path.is_empty());
                if !qualified {
                    errors.push(FieldError::invalid(
                        "spec.signerName",
                        name,
                        "must be a fully qualified domain and path of the form 'example.com/signer-name'",
                    ));
                }
            }
        }
        let usages = list(&spec, "usages");
        if usages.is_empty() {
            errors.push(FieldError::required("spec.usages", ""));
        }
        for (i, usage) in usages.iter().enumerate() {
            let usage = usage.as_str().unwrap_or_default();
            if !USAGES.contains(&usage) {
                errors.push(FieldError::not_supported(
                    format!("spec.usages[{i}]"),
                    usage,
                    USAGES,
                ));
            }
        }
        if let Some(seconds) = spec.get("expirationSeconds").and_then(Value::as_i64)
            && seconds < MIN_EXPIRATION_SECONDS
        {
            errors.push(FieldError::invalid(
                "spec.expirationSeconds",
                seconds.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
        let conditions = conditions(object);
        for (i, (kind, _)) in conditions.iter().enumerate() {
            if !CONDITIONS.contains(&kind.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("status.conditions[{i}].type"),
                    kind,
                    CONDITIONS,
                ));
            }
            if conditions[..i].iter().any(|(k, _)| k == kind) {
                errors.push(FieldError::duplicate(
                    format!("status.conditions[{i}].type"),
                    kind,
                ));
            }
        }
        let holds = |kind: &str| conditions.iter().any(|(k, s)| k == kind && s == "True");
        if holds("Approved") && holds("Denied") {
            errors.push(FieldError::invalid(
                "status.conditions",
                "Approved, Denied",
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        if let Some(certificate) =
            bytes_field(object, &["status", "certificate"]).filter(|c| !c.is_empty())
        {
            if !holds("Approved") {
                errors.push(FieldError::forbidden(
                    "status.certificate",
                    "may only be set on an approved request",
                ));
            }
            let pem_ok = x509_parser::pem::Pem::iter_from_buffer(&certificate)
                .all(|block| block.is_ok_and(|b| b.label == "CERTIFICATE"))
                && x509_parser::pem::parse_x509_pem(&certificate).is_ok();
            if !pem_ok {
                errors.push(FieldError::invalid(
                    "status.certificate",
                    "[]byte{…}",
                    "must be one or more PEM CERTIFICATE blocks",
                ));
            }
        }
        errors
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        if new.get("spec") != old.get("spec") {
            errors.push(immutable("spec"));
        }
        let before = conditions(old);
        let after = conditions(new);
        for kind in ["Approved", "Denied"] {
            let given = |list: &[(String, String)]| list.iter().any(|(k, _)| k == kind);
            if given(&before) && !given(&after) {
                errors.push(FieldError::forbidden(
                    "status.conditions",
                    format!("updates may not remove a condition of type {kind:?}"),
                ));
            }
        }
        let certificate = |o: &Object| {
            o.get("status")
                .and_then(|s| s.get("certificate"))
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
        };
        if let Some(issued) = certificate(old)
            && certificate(new).as_ref() != Some(&issued)
        {
            errors.push(FieldError::invalid(
                "status.certificate",
                "[]byte{…}",
                "updates may not modify existing certificate content",
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test");
        params
            .serialize_request(&key)
            .expect("request")
            .pem()
            .expect("pem")
    }

    fn csr(request: &str, extra: Value) -> Object {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(request);
        let mut object = json!({"metadata": {"name": "r"}, "spec": {
            "request": encoded, "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": ["digital signature", "client auth"]}});
        if let (Some(o), Value::Object(more)) = (object.as_object_mut(), extra) {
            for (k, v) in more {
                o.insert(k, v);
            }
        }
        object.as_object().cloned().unwrap_or_default()
    }

    fn messages(errors: Vec<FieldError>) -> Vec<String> {
        errors.iter().map(FieldError::message).collect()
    }

    #[test]
    fn garbage_requests_and_bad_fields_are_refused() {
        let bad = csr(
            "not a request",
            json!({"spec": {"request": "bm90IGEgcmVxdWVzdA==", "signerName": "nodomain",
                    "usages": ["flying"], "expirationSeconds": 60}}),
        );
        assert_eq!(
            messages(CsrStrategy.validate(&bad)),
            [
                "spec.request: Invalid value: \"[]byte{…}\": PEM block type must be CERTIFICATE REQUEST",
                "spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form 'example.com/signer-name'",
                format!(
                    "spec.usages[0]: Unsupported value: \"flying\": supported values: {}",
                    USAGES
                        .iter()
                        .map(|u| format!("\"{u}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .as_str(),
                "spec.expirationSeconds: Invalid value: \"60\": may not specify a duration less than 600 seconds (10 minutes)",
            ]
        );
    }

    #[test]
    fn approvals_stay_and_certificates_need_one() {
        let pending = csr(&request(), json!({}));
        assert!(CsrStrategy.validate(&pending).is_empty());
        let mut both = pending.clone();
        both.insert(
            "status".into(),
            json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}),
        );
        assert!(
            messages(CsrStrategy.validate(&both))
                .iter()
                .any(|m| m.contains("mutually exclusive"))
        );
        let mut approved = pending.clone();
        approved.insert(
            "status".into(),
            json!({"conditions": [{"type": "Approved", "status": "True"}]}),
        );
        let removed = messages(CsrStrategy.validate_update(&pending, &approved));
        assert!(
            removed.iter().any(|m| m == "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""),
            "{removed:?}"
        );
        let mut unapproved_cert = pending.clone();
        unapproved_cert.insert("status".into(), json!({"certificate": "Zm9v"}));
        assert!(
            messages(CsrStrategy.validate(&unapproved_cert))
                .iter()
                .any(|m| m
                    == "status.certificate: Forbidden: may only be set on an approved request")
        );
    }
}
