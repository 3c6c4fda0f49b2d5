//! Bootstrap tokens, for joining nodes: `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`),
//! valid while the Secret `bootstrap-token-<id>` in `kube-system` of type
//! `bootstrap.kubernetes.io/token` holds the same secret, allows authentication and has not
//! expired. The user is `system:bootstrap:<id>` in `system:bootstrappers` (and the extra
//! groups the Secret names).

use apiserver_registry::Object;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::{AUTHENTICATED, User};

/// Where bootstrap token Secrets live.
pub const NAMESPACE: &str = "kube-system";
/// Their Secret type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token's user is in.
pub const GROUP: &str = "system:bootstrappers";

/// A token in bootstrap form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken<'a> {
    /// The public id.
    pub id: &'a str,
    secret: &'a str,
}

fn is_token_part(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

impl<'a> BootstrapToken<'a> {
    /// Reads a bearer token as a bootstrap token, if it has that form.
    pub fn parse(token: &'a str) -> Option<BootstrapToken<'a>> {
        let (id, secret) = token.split_once('.')?;
        (is_token_part(id, 6) && is_token_part(secret, 16)).then_some(BootstrapToken { id, secret })
    }

    /// The name of the Secret that holds it.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The user the token authenticates as, given its Secret, at `now`.
    pub fn check(&self, secret: &Object, now: jiff::Timestamp) -> Result<User, String> {
        let refuse = |why: &str| Err(format!("bootstrap token {}: {why}", self.id));
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            return refuse("its secret has the wrong type");
        }
        if apiserver_registry::object::is_deleting(secret) {
            return refuse("its secret is being deleted");
        }
        let data = |key: &str| -> Option<String> {
            let encoded = secret.get("data")?.get(key)?.as_str()?;
            String::from_utf8(STANDARD.decode(encoded).ok()?).ok()
        };
        if data("token-id").as_deref() != Some(self.id) {
            return refuse("its secret names another id");
        }
        let stored = data("token-secret").unwrap_or_default();
        if !same_secret(stored.as_bytes(), self.secret.as_bytes()) {
            return refuse("wrong secret");
        }
        if data("usage-bootstrap-authentication").as_deref() != Some("true") {
            return refuse("it may not be used for authentication");
        }
        if let Some(expiration) = data("expiration") {
            match expiration.parse::<jiff::Timestamp>() {
                Ok(at) if at > now => {}
                Ok(_) => return refuse("it has expired"),
                Err(_) => return refuse("its expiration is not an RFC 3339 time"),
            }
        }
        let mut groups = vec![GROUP.to_owned()];
        for extra in data("auth-extra-groups")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            // Only bootstrapper subgroups, so a token cannot claim wider groups.
            if !extra.starts_with("system:bootstrappers:") {
                return refuse("its extra groups must start with \"system:bootstrappers:\"");
            }
            groups.push(extra.to_owned());
        }
        groups.push(AUTHENTICATED.into());
        Ok(User {
            name: format!("system:bootstrap:{}", self.id),
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(data: &[(&str, &str)]) -> Object {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(STANDARD.encode(v))))
            .collect();
        json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef"}, "data": data})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn tokens_are_checked_against_their_secret() {
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_some());
        for bad in [
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "a.b.c",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad}");
        }
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let now = jiff::Timestamp::now();
        let good = secret(&[
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("auth-extra-groups", "system:bootstrappers:basalt:nodes"),
            ("expiration", "2999-01-01T00:00:00Z"),
        ]);
        let user = token.check(&good, now).unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert!(user.in_group(GROUP) && user.in_group("system:bootstrappers:basalt:nodes"));
        let wrong = BootstrapToken::parse("abcdef.0123456789abcdee").unwrap();
        assert!(
            wrong
                .check(&good, now)
                .unwrap_err()
                .contains("wrong secret")
        );
        let expired = secret(&[
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("expiration", "2000-01-01T00:00:00Z"),
        ]);
        assert!(token.check(&expired, now).unwrap_err().contains("expired"));
        let unusable = secret(&[("token-id", "abcdef"), ("token-secret", "0123456789abcdef")]);
        assert!(token.check(&unusable, now).is_err());
        let greedy = secret(&[
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
            ("auth-extra-groups", "system:masters"),
        ]);
        assert!(token.check(&greedy, now).is_err());
    }
}
