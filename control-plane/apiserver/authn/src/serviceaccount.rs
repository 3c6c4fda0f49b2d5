//! Service-account tokens: ES256-signed JWTs with Kubernetes' claims (`sub`
//! `system:serviceaccount:<ns>:<name>`, and under `kubernetes.io` the namespace, the account
//! and the pod, secret or node the token is bound to, with their uids).
//!
//! Signing and checking the signature, issuer, audience and lifetime happen here; whether the
//! named objects still exist is the [`crate::Authenticator`]'s question.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};

use crate::{AUTHENTICATED, User};

/// The prefix of service-account user names.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// The issuer kube-apiserver uses in-cluster, which clients expect by default.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The shortest lifetime a requested token may have, in seconds.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The lifetime of a token when none is asked for, in seconds.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The longest lifetime a token may have (48 h, kube-apiserver's usual cap), in seconds.
pub const MAX_EXPIRATION_SECONDS: i64 = 48 * 3600;

/// The user a service account authenticates as.
pub fn user(namespace: &str, name: &str) -> User {
    User {
        name: format!("{USER_PREFIX}{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            AUTHENTICATED.into(),
        ],
    }
}

/// An object a token names, by name and uid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

/// The `kubernetes.io` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    /// The account's namespace.
    pub namespace: String,
    /// The account.
    pub serviceaccount: ObjectRef,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The node the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: `system:serviceaccount:<ns>:<name>`.
    pub sub: String,
    /// Audiences.
    pub aud: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// A unique id.
    pub jti: String,
    /// What it is for.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

/// A key the issuer cannot use.
#[derive(Debug, thiserror::Error)]
#[error("service-account signing key: {0}")]
pub struct KeyError(String);

/// Signs and verifies service-account tokens.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    key_id: String,
    issuer: String,
    audiences: Vec<String>,
}

impl TokenIssuer {
    /// An issuer signing with a PKCS#8 P-256 private key (PEM), calling itself `issuer`, whose
    /// tokens are for `audiences` by default (the issuer when empty).
    pub fn from_pem(
        pem: &str,
        issuer: &str,
        audiences: &[String],
    ) -> Result<TokenIssuer, KeyError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| KeyError(e.to_string()))?;
        if !pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(KeyError("the key must be an ECDSA P-256 key".into()));
        }
        let encoding =
            EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| KeyError(e.to_string()))?;
        let decoding = DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &pair.subject_public_key_info());
        let audiences = if audiences.is_empty() {
            vec![issuer.to_owned()]
        } else {
            audiences.to_vec()
        };
        Ok(TokenIssuer {
            encoding,
            decoding,
            key_id: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            issuer: issuer.to_owned(),
            audiences,
        })
    }

    /// The audiences tokens are for when a request names none.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Signs a token for the account `kubernetes.serviceaccount` in `kubernetes.namespace`,
    /// valid from `now` (Unix seconds) for `seconds`.
    pub fn issue(
        &self,
        kubernetes: KubernetesClaims,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> Result<(String, Claims), String> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: format!(
                "{USER_PREFIX}{}:{}",
                kubernetes.namespace, kubernetes.serviceaccount.name
            ),
            aud: if audiences.is_empty() {
                self.audiences.clone()
            } else {
                audiences.to_vec()
            },
            exp: now + seconds,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| format!("signing the token: {e}"))?;
        Ok((token, claims))
    }

    /// The claims of a token this issuer signed that is current and meant for one of
    /// `audiences` (the default audiences when empty).
    pub fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, String> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        let audiences = if audiences.is_empty() {
            &self.audiences
        } else {
            audiences
        };
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 60;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| format!("invalid service-account token: {e}"))?;
        let claims = data.claims;
        let expected = format!(
            "{USER_PREFIX}{}:{}",
            claims.kubernetes.namespace, claims.kubernetes.serviceaccount.name
        );
        if claims.sub != expected {
            return Err("the token's subject does not match its service account".into());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let key = rcgen::KeyPair::generate().unwrap();
        TokenIssuer::from_pem(&key.serialize_pem(), DEFAULT_ISSUER, &[]).unwrap()
    }

    fn account() -> KubernetesClaims {
        KubernetesClaims {
            namespace: "default".into(),
            serviceaccount: ObjectRef {
                name: "robot".into(),
                uid: "u1".into(),
            },
            ..KubernetesClaims::default()
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let issuer = issuer();
        let now = jiff::Timestamp::now().as_second();
        let (token, claims) = issuer.issue(account(), &[], now, 3600).unwrap();
        assert_eq!(claims.sub, "system:serviceaccount:default:robot");
        assert_eq!(issuer.verify(&token, &[]).unwrap(), claims);
        let (old, _) = issuer.issue(account(), &[], now - 7200, 3600).unwrap();
        assert!(issuer.verify(&old, &[]).unwrap_err().contains("Expired"));
        let (future, _) = issuer.issue(account(), &[], now + 3600, 3600).unwrap();
        assert!(issuer.verify(&future, &[]).is_err());
    }

    #[test]
    fn audience_signature_and_key_are_checked() {
        let issuer = issuer();
        let now = jiff::Timestamp::now().as_second();
        let (vault, _) = issuer
            .issue(account(), &["vault".to_owned()], now, 3600)
            .unwrap();
        assert!(issuer.verify(&vault, &[]).is_err(), "not for the API");
        assert!(issuer.verify(&vault, &["vault".to_owned()]).is_ok());
        let (token, _) = issuer.issue(account(), &[], now, 3600).unwrap();
        assert!(other_issuer_rejects(&token));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(issuer.verify(&tampered, &[]).is_err());
        assert!(TokenIssuer::from_pem("not a key", DEFAULT_ISSUER, &[]).is_err());
    }

    fn other_issuer_rejects(token: &str) -> bool {
        issuer().verify(token, &[]).is_err()
    }
}
