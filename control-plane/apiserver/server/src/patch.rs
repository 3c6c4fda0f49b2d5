//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes' strategic
//! merge patch, applied to the current object inside the registry's read-modify-write, so a
//! concurrent change is never lost. Server-side apply bodies (YAML or JSON) are decoded here
//! and handed to the registry's [`apiserver_registry::Registry::apply`].

use apiserver_registry::{ApiError, Object, Resource};
use serde_json::Value;

/// A decoded patch.
pub enum Patch {
    /// `application/merge-patch+json`.
    Merge(Value),
    /// `application/json-patch+json`.
    Json(json_patch::Patch),
    /// `application/strategic-merge-patch+json`.
    Strategic(Value),
    /// `application/apply-patch+yaml`: a server-side apply configuration (YAML or JSON).
    Apply(Object),
}

impl Patch {
    /// Decodes a body of the given media type.
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Patch, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/merge-patch+json" => {
                let value: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                })?;
                if !value.is_object() {
                    return Err(ApiError::bad_request("a merge patch must be a JSON object"));
                }
                Ok(Patch::Merge(value))
            }
            "application/json-patch+json" => serde_json::from_slice(body)
                .map(Patch::Json)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}"))),
            "application/strategic-merge-patch+json" => {
                let value: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                })?;
                if !value.is_object() {
                    return Err(ApiError::bad_request(
                        "a strategic merge patch must be a JSON object",
                    ));
                }
                Ok(Patch::Strategic(value))
            }
            "application/apply-patch+yaml" => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| ApiError::bad_request("the apply configuration is not UTF-8"))?;
                match serde_saphyr::from_str::<Value>(text) {
                    Ok(Value::Object(config)) => Ok(Patch::Apply(config)),
                    Ok(_) => Err(ApiError::bad_request(
                        "an apply configuration must be a YAML or JSON object",
                    )),
                    Err(e) => Err(ApiError::bad_request(format!(
                        "the apply configuration is not valid YAML: {e}"
                    ))),
                }
            }
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, \
                 application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }

    /// The object after the patch. A resourceVersion the patch sets must be the current one.
    pub fn apply(&self, resource: &Resource, current: Object) -> Result<Object, ApiError> {
        let current_version = apiserver_registry::object::resource_version(&current).to_owned();
        let mut value = Value::Object(current);
        match self {
            Patch::Merge(patch) => json_patch::merge(&mut value, patch),
            Patch::Json(patch) => json_patch::patch(&mut value, patch)
                .map_err(|e| ApiError::invalid_patch(&e.to_string()))?,
            Patch::Strategic(patch) => {
                value = apiserver_registry::strategic::apply(resource, value, patch)
                    .map_err(|e| ApiError::invalid_patch(&e))?;
            }
            Patch::Apply(_) => {
                return Err(ApiError::unsupported_media_type(
                    "server-side apply is not supported on the scale subresource; use a merge patch",
                ));
            }
        }
        let Value::Object(patched) = value else {
            return Err(ApiError::invalid_patch(
                "the patched object is not a JSON object",
            ));
        };
        let version = apiserver_registry::object::resource_version(&patched);
        if !version.is_empty() && version != current_version {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
                details: None,
            });
        }
        Ok(patched)
    }
}
