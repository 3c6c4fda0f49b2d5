//! Service account tokens for projected volumes: asked of the API server with a
//! TokenRequest bound to the pod (so they die with it), kept per audience and lifetime, and
//! renewed once 80% of their life has passed or a day has, as kube's kubelet does. Writing
//! them into volumes is `files`'.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::files::{self, Tokens};

/// The longest a token is used before it is renewed, whatever its lifetime.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Held {
    token: String,
    fetched: Instant,
    lifetime: Duration,
}

impl Held {
    fn due(&self, now: Instant) -> bool {
        let age = now.duration_since(self.fetched);
        age >= self.lifetime.mul_f64(0.8) || age >= MAX_AGE
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.fetched) >= self.lifetime
    }
}

/// One pod's tokens.
#[derive(Default)]
pub struct TokenCache {
    held: HashMap<(String, i64), Held>,
}

impl TokenCache {
    /// The tokens `pod`'s projected volumes ask for, renewing those that are due. A token
    /// that cannot be renewed is used until it expires.
    pub async fn refresh(&mut self, client: &kube::Client, pod: &Pod) -> Tokens {
        let wanted: Vec<(String, i64)> = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| p.sources.iter().flatten())
            .filter_map(|s| s.service_account_token.as_ref())
            .map(|t| files::token_key(t.audience.as_deref(), t.expiration_seconds))
            .collect();
        self.held.retain(|key, _| wanted.contains(key));
        let mut tokens = Tokens::new();
        for key in wanted {
            let now = Instant::now();
            if self.held.get(&key).is_none_or(|h| h.due(now)) {
                match request(client, pod, &key.0, key.1).await {
                    Ok(held) => {
                        self.held.insert(key.clone(), held);
                    }
                    Err(why) => {
                        tracing::warn!(pod = ?pod.metadata.name, "service account token: {why}");
                        if self.held.get(&key).is_none_or(|h| h.expired(now)) {
                            self.held.remove(&key);
                            tokens.insert(key, Err(why));
                            continue;
                        }
                    }
                }
            }
            if let Some(held) = self.held.get(&key) {
                tokens.insert(key, Ok(held.token.clone()));
            }
        }
        tokens
    }
}

/// A TokenRequest for `pod`'s service account, for `audience` (empty: the API server's),
/// lasting `seconds`, bound to the pod.
async fn request(
    client: &kube::Client,
    pod: &Pod,
    audience: &str,
    seconds: i64,
) -> Result<Held, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    let audiences: Vec<&str> = if audience.is_empty() {
        Vec::new()
    } else {
        vec![audience]
    };
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            },
        },
    });
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let fetched = Instant::now();
    let answer: Value = api
        .create_subresource("token", account, &PostParams::default(), &body)
        .await
        .map_err(|e| {
            format!("requesting a token for service account {namespace}/{account}: {e}")
        })?;
    let status = answer.get("status");
    let token = status
        .and_then(|s| s.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the TokenRequest came back without a token")?
        .to_string();
    // The server may grant another lifetime than asked; its word counts.
    let lifetime = status
        .and_then(|s| s.get("expirationTimestamp"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .and_then(|expires| {
            let left = expires.duration_since(jiff::Timestamp::now());
            Duration::try_from(left).ok()
        })
        .unwrap_or(Duration::from_secs(seconds.max(0).unsigned_abs()));
    Ok(Held {
        token,
        fetched,
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_eighty_percent_or_a_day() {
        let start = Instant::now();
        let held = |lifetime| Held {
            token: String::new(),
            fetched: start,
            lifetime,
        };
        let hour = held(Duration::from_secs(3600));
        assert!(!hour.due(start + Duration::from_secs(2879)));
        assert!(hour.due(start + Duration::from_secs(2880)));
        assert!(!hour.expired(start + Duration::from_secs(3599)));
        let year = held(Duration::from_secs(365 * 24 * 3600));
        assert!(year.due(start + MAX_AGE));
    }
}
