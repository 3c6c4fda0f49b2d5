//! Encryption at rest: values of chosen resources are sealed with AES-GCM before they reach
//! the store and opened when read, configured by kube-apiserver's `EncryptionConfiguration`
//! file (`apiserver.config.k8s.io/v1`), so existing configurations and habits carry over.
//!
//! The first provider listed for a resource seals new writes; every provider listed can open
//! what it recognises, which is how keys are rotated (new key first, old key after) and how a
//! cluster moves to encryption (`identity` after `aesgcm` reads the values written before).
//! A sealed value is `k8s:enc:aesgcm:v1:<key name>:` + a random 12-byte nonce + ciphertext
//! and tag, with the storage key as associated data so a value cannot be moved to another
//! key. [`Encrypted`] applies this around any [`Backend`]; nothing above it sees ciphertext.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use crate::{Backend, Change, Kv, ListRequest, ListResult, StorageError, WatchItem, WatchStream};

const AESGCM_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("encryption configuration: {0}")]
pub struct ConfigError(String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEntry {
    resources: Vec<String>,
    providers: Vec<ProviderEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    aesgcm: Option<Keys>,
    identity: Option<serde_json::Value>,
    aescbc: Option<serde_json::Value>,
    secretbox: Option<serde_json::Value>,
    kms: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    secret: String,
}

enum Provider {
    AesGcm(Vec<(String, LessSafeKey)>),
    Identity,
}

/// Which resources an entry covers: `secrets`, `deployments.apps`, `*.apps`, `*.` (every
/// core resource) or `*.*` (everything).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    group: Option<String>,
    resource: Option<String>,
}

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let (resource, group) = text.split_once('.').unwrap_or((text, ""));
        let group = if group.is_empty() { "core" } else { group };
        match (resource, group) {
            ("", _) => Err(format!("{text:?} names no resource")),
            ("*", "*") => Ok(Selector {
                group: None,
                resource: None,
            }),
            ("*", group) => Ok(Selector {
                group: Some(group.to_owned()),
                resource: None,
            }),
            (_, "*") => Err(format!(
                "{text:?}: a group wildcard needs a resource wildcard"
            )),
            (resource, group) => Ok(Selector {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
            }),
        }
    }

    fn matches(&self, group: &str, resource: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == group)
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

/// A loaded configuration.
pub struct Encryption {
    entries: Vec<(Vec<Selector>, Vec<Provider>)>,
    random: SystemRandom,
}

impl Encryption {
    /// Reads an `EncryptionConfiguration` (YAML or JSON).
    pub fn from_yaml(text: &str) -> Result<Encryption, ConfigError> {
        let file: File = serde_saphyr::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        if file.api_version != "apiserver.config.k8s.io/v1"
            || file.kind != "EncryptionConfiguration"
        {
            return Err(ConfigError(format!(
                "apiVersion/kind: expected apiserver.config.k8s.io/v1 EncryptionConfiguration, got {}/{}",
                file.api_version, file.kind
            )));
        }
        if file.resources.is_empty() {
            return Err(ConfigError("resources: must not be empty".into()));
        }
        let mut entries = Vec::new();
        for (i, entry) in file.resources.into_iter().enumerate() {
            let at = |field: &str| format!("resources[{i}].{field}");
            if entry.resources.is_empty() {
                return Err(ConfigError(format!(
                    "{}: must not be empty",
                    at("resources")
                )));
            }
            let selectors = entry
                .resources
                .iter()
                .map(|r| Selector::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError(format!("{}: {e}", at("resources"))))?;
            if entry.providers.is_empty() {
                return Err(ConfigError(format!(
                    "{}: must not be empty",
                    at("providers")
                )));
            }
            let providers = entry
                .providers
                .into_iter()
                .enumerate()
                .map(|(j, p)| {
                    provider(p).map_err(|e| {
                        ConfigError(format!("{}: {e}", at(&format!("providers[{j}]"))))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            entries.push((selectors, providers));
        }
        Ok(Encryption {
            entries,
            random: SystemRandom::new(),
        })
    }

    /// The providers for the object at `key`, if any entry covers it.
    fn providers(&self, key: &str) -> Option<&[Provider]> {
        let rest = key.strip_prefix("/registry/")?;
        let mut parts = rest.splitn(3, '/');
        let (group, resource) = (parts.next()?, parts.next()?);
        self.entries
            .iter()
            .find(|(selectors, _)| selectors.iter().any(|s| s.matches(group, resource)))
            .map(|(_, providers)| providers.as_slice())
    }

    /// The value to store for `key`.
    pub fn seal(&self, key: &str, value: Bytes) -> Result<Bytes, StorageError> {
        let Some(Provider::AesGcm(keys)) = self.providers(key).and_then(|p| p.first()) else {
            return Ok(value);
        };
        let Some((name, sealing)) = keys.first() else {
            return Ok(value);
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StorageError::Internal("no randomness for a nonce".into()))?;
        let mut sealed =
            Vec::with_capacity(AESGCM_PREFIX.len() + name.len() + 1 + NONCE_LEN + value.len() + 16);
        sealed.extend_from_slice(AESGCM_PREFIX);
        sealed.extend_from_slice(name.as_bytes());
        sealed.push(b':');
        sealed.extend_from_slice(&nonce);
        let body_start = sealed.len();
        sealed.extend_from_slice(&value);
        let mut body = sealed.split_off(body_start);
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| StorageError::Internal(format!("sealing the value of {key}")))?;
        sealed.extend_from_slice(&body);
        Ok(Bytes::from(sealed))
    }

    /// The plain value stored for `key`.
    pub fn open(&self, key: &str, value: Bytes) -> Result<Bytes, StorageError> {
        let Some(providers) = self.providers(key) else {
            return Ok(value);
        };
        let refuse = |why: String| StorageError::Internal(format!("cannot decrypt {key}: {why}"));
        let Some(rest) = value.strip_prefix(AESGCM_PREFIX) else {
            if value.starts_with(ENCRYPTED_PREFIX) {
                return Err(refuse(
                    "it was sealed by a provider this server does not have".into(),
                ));
            }
            return if providers.iter().any(|p| matches!(p, Provider::Identity)) {
                Ok(value)
            } else {
                Err(refuse(
                    "it is not encrypted and the identity provider is not configured".into(),
                ))
            };
        };
        let colon = rest
            .iter()
            .position(|c| *c == b':')
            .ok_or_else(|| refuse("no key name".into()))?;
        let name = String::from_utf8_lossy(&rest[..colon]);
        let key_for = providers
            .iter()
            .filter_map(|p| match p {
                Provider::AesGcm(keys) => Some(keys),
                Provider::Identity => None,
            })
            .flatten()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| k)
            .ok_or_else(|| refuse(format!("no key named {name:?} is configured")))?;
        let sealed = &rest[colon + 1..];
        if sealed.len() < NONCE_LEN {
            return Err(refuse("the value is truncated".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| refuse("bad nonce".into()))?;
        let mut body = body.to_vec();
        let plain = key_for
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut body)
            .map_err(|_| {
                refuse(format!(
                    "key {name:?} does not open it (wrong key or tampered value)"
                ))
            })?;
        Ok(Bytes::copy_from_slice(plain))
    }

    fn open_kv(&self, mut kv: Kv) -> Result<Kv, StorageError> {
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        kv.value = self.open(&key, kv.value)?;
        Ok(kv)
    }
}

fn provider(entry: ProviderEntry) -> Result<Provider, String> {
    let set = [
        entry.aesgcm.is_some(),
        entry.identity.is_some(),
        entry.aescbc.is_some(),
        entry.secretbox.is_some(),
        entry.kms.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err("exactly one provider type must be given".into());
    }
    if entry.identity.is_some() {
        return Ok(Provider::Identity);
    }
    let Some(aesgcm) = entry.aesgcm else {
        return Err("only the aesgcm and identity providers are supported".into());
    };
    if aesgcm.keys.is_empty() {
        return Err("aesgcm.keys: must not be empty".into());
    }
    let mut names = HashSet::new();
    let mut keys = Vec::new();
    for (k, key) in aesgcm.keys.into_iter().enumerate() {
        let at = format!("aesgcm.keys[{k}]");
        if key.name.is_empty() || key.name.contains(':') {
            return Err(format!("{at}.name: must be non-empty and contain no ':'"));
        }
        if !names.insert(key.name.clone()) {
            return Err(format!("{at}.name: {:?} is listed twice", key.name));
        }
        let secret = STANDARD
            .decode(key.secret.trim())
            .map_err(|e| format!("{at}.secret: not base64: {e}"))?;
        let algorithm = match secret.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            n => return Err(format!("{at}.secret: must be 16 or 32 bytes, is {n}")),
        };
        let unbound =
            UnboundKey::new(algorithm, &secret).map_err(|_| format!("{at}.secret: unusable"))?;
        keys.push((key.name, LessSafeKey::new(unbound)));
    }
    Ok(Provider::AesGcm(keys))
}

/// A backend whose values for configured resources are encrypted at rest.
pub struct Encrypted {
    inner: Arc<dyn Backend>,
    encryption: Arc<Encryption>,
}

impl Encrypted {
    /// `inner`, sealing and opening values as `encryption` says.
    pub fn new(inner: Arc<dyn Backend>, encryption: Encryption) -> Encrypted {
        Encrypted {
            inner,
            encryption: Arc::new(encryption),
        }
    }

    fn open_error(&self, error: StorageError) -> StorageError {
        match error {
            StorageError::Conflict { key, current } => match self.encryption.open_kv(*current) {
                Ok(current) => StorageError::Conflict {
                    key,
                    current: Box::new(current),
                },
                Err(e) => e,
            },
            other => other,
        }
    }
}

#[async_trait]
impl Backend for Encrypted {
    async fn get(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        self.inner
            .get(key)
            .await?
            .map(|kv| self.encryption.open_kv(kv))
            .transpose()
    }

    async fn get_serializable(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        self.inner
            .get_serializable(key)
            .await?
            .map(|kv| self.encryption.open_kv(kv))
            .transpose()
    }

    async fn list(&self, request: &ListRequest) -> Result<ListResult, StorageError> {
        let mut result = self.inner.list(request).await?;
        result.kvs = result
            .kvs
            .into_iter()
            .map(|kv| self.encryption.open_kv(kv))
            .collect::<Result<_, _>>()?;
        Ok(result)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64, StorageError> {
        let sealed = self.encryption.seal(key, value)?;
        self.inner.create(key, sealed).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64, StorageError> {
        let sealed = self.encryption.seal(key, value)?;
        self.inner
            .update(key, sealed, expected)
            .await
            .map_err(|e| self.open_error(e))
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, Kv), StorageError> {
        let (revision, kv) = self
            .inner
            .delete(key, expected)
            .await
            .map_err(|e| self.open_error(e))?;
        Ok((revision, self.encryption.open_kv(kv)?))
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Box<dyn WatchStream>, StorageError> {
        let inner = self.inner.watch(prefix, after).await?;
        Ok(Box::new(OpenedWatch {
            inner,
            encryption: self.encryption.clone(),
        }))
    }

    async fn revision(&self) -> Result<i64, StorageError> {
        self.inner.revision().await
    }

    async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.inner.compact(revision).await
    }
}

struct OpenedWatch {
    inner: Box<dyn WatchStream>,
    encryption: Arc<Encryption>,
}

#[async_trait]
impl WatchStream for OpenedWatch {
    async fn next(&mut self, idle: Duration) -> Result<WatchItem, StorageError> {
        match self.inner.next(idle).await? {
            WatchItem::Changes(changes) => {
                let opened = changes
                    .into_iter()
                    .map(|change| {
                        Ok(Change {
                            kind: change.kind,
                            kv: match change.kind {
                                // A delete's value is empty.
                                crate::ChangeKind::Delete => change.kv,
                                crate::ChangeKind::Put => self.encryption.open_kv(change.kv)?,
                            },
                            prev: change
                                .prev
                                .map(|kv| self.encryption.open_kv(kv))
                                .transpose()?,
                        })
                    })
                    .collect::<Result<Vec<_>, StorageError>>()?;
                Ok(WatchItem::Changes(opened))
            }
            progress => Ok(progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes
    const KEY_B: &str = "HxAdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    fn config(providers: &str) -> Encryption {
        let text = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets, \"*.apps\"]\n  providers:\n{providers}"
        );
        Encryption::from_yaml(&text).unwrap()
    }

    fn aesgcm(keys: &[(&str, &str)]) -> String {
        let mut text = "  - aesgcm:\n      keys:\n".to_owned();
        for (name, secret) in keys {
            text.push_str(&format!("      - name: {name}\n        secret: {secret}\n"));
        }
        text
    }

    const SECRET_KEY: &str = "/registry/core/secrets/default/s";

    #[test]
    fn values_are_sealed_bound_to_their_key_and_rotate() {
        let a = config(&aesgcm(&[("a", KEY_A)]));
        let plain = Bytes::from_static(b"{\"data\":{\"k\":\"c2VjcmV0\"}}");
        let sealed = a.seal(SECRET_KEY, plain.clone()).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:a:"));
        assert!(!sealed.windows(8).any(|w| w == b"c2VjcmV0"));
        assert_eq!(a.open(SECRET_KEY, sealed.clone()).unwrap(), plain);
        assert_ne!(
            a.seal(SECRET_KEY, plain.clone()).unwrap(),
            sealed,
            "fresh nonce"
        );
        // Moved to another key, or tampered with, it does not open.
        assert!(
            a.open("/registry/core/secrets/default/t", sealed.clone())
                .is_err()
        );
        let mut tampered = sealed.to_vec();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(a.open(SECRET_KEY, Bytes::from(tampered)).is_err());
        // Other resources pass through; covered groups are sealed.
        let map = "/registry/core/configmaps/default/c";
        assert_eq!(a.seal(map, plain.clone()).unwrap(), plain);
        assert!(
            a.seal("/registry/apps/deployments/ns/d", plain.clone())
                .unwrap()
                .starts_with(AESGCM_PREFIX)
        );
        // Rotation: b seals, a still opens what it sealed; without a it fails clearly.
        let rotated = config(&aesgcm(&[("b", KEY_B), ("a", KEY_A)]));
        assert_eq!(rotated.open(SECRET_KEY, sealed.clone()).unwrap(), plain);
        assert!(
            rotated
                .seal(SECRET_KEY, plain.clone())
                .unwrap()
                .starts_with(b"k8s:enc:aesgcm:v1:b:")
        );
        let only_b = config(&aesgcm(&[("b", KEY_B)]));
        let err = only_b.open(SECRET_KEY, sealed).unwrap_err().to_string();
        assert!(err.contains("no key named \"a\""), "{err}");
    }

    #[test]
    fn plaintext_opens_only_with_the_identity_provider() {
        let plain = Bytes::from_static(b"{}");
        let strict = config(&aesgcm(&[("a", KEY_A)]));
        assert!(strict.open(SECRET_KEY, plain.clone()).is_err());
        let migrating = config(&format!("{}  - identity: {{}}\n", aesgcm(&[("a", KEY_A)])));
        assert_eq!(migrating.open(SECRET_KEY, plain.clone()).unwrap(), plain);
        let off = config("  - identity: {}\n");
        assert_eq!(off.seal(SECRET_KEY, plain.clone()).unwrap(), plain);
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let bad = |providers: &str| match Encryption::from_yaml(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        )) {
            Ok(_) => panic!("accepted {providers}"),
            Err(e) => e.to_string(),
        };
        assert!(
            bad(&aesgcm(&[("a", "c2hvcnQ=")])).contains(
                "resources[0].providers[0]: aesgcm.keys[0].secret: must be 16 or 32 bytes"
            )
        );
        assert!(bad(&aesgcm(&[("a", KEY_A), ("a", KEY_B)])).contains("listed twice"));
        assert!(bad(&aesgcm(&[("a:b", KEY_A)])).contains("name"));
        assert!(bad("  - aescbc: {keys: []}\n").contains("only the aesgcm and identity"));
        assert!(bad("  - {}\n").contains("exactly one provider"));
        assert!(Encryption::from_yaml("kind: Other\napiVersion: v1\nresources: []").is_err());
        assert!(Encryption::from_yaml("not: [valid").is_err());
    }
}
