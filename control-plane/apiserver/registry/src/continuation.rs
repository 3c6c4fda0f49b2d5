//! List continuation tokens: opaque to clients, they carry the revision the first page was
//! read at and the key the next page starts from, so every page shows one consistent state.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Token {
    v: String,
    rv: i64,
    start: String,
}

const VERSION: &str = "meta.k8s.io/v1";

/// Encodes where the next page starts: `start` is relative to the list's key prefix.
pub fn encode(revision: i64, start: &str) -> String {
    let token = Token {
        v: VERSION.into(),
        rv: revision,
        start: start.to_owned(),
    };
    // Serializing a struct of strings and an integer cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Decodes a token into the revision and the start key relative to the prefix.
pub fn decode(token: &str) -> Result<(i64, String), ApiError> {
    let invalid = |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid("not base64"))?;
    let token: Token =
        serde_json::from_slice(&bytes).map_err(|_| invalid("not a continue token"))?;
    if token.v != VERSION {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    if token.rv <= 0 {
        return Err(invalid(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    // The caller prefixes the start key with the list's own prefix, so it cannot reach
    // other keys whatever it holds.
    if token.start.is_empty() {
        return Err(invalid("no start key"));
    }
    Ok((token.rv, token.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let token = encode(42, "default/web\0");
        assert_eq!(decode(&token).unwrap(), (42, "default/web\0".to_owned()));
        assert!(decode("!!!").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{}")).is_err());
        assert!(decode(&encode(0, "a")).is_err());
        assert!(decode(&encode(1, "")).is_err());
    }
}
