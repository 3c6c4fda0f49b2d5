//! API errors as Kubernetes reports them: an HTTP code, a reason, a message and details, sent
//! to clients as a `kind: Status` body so kubectl prints the messages users know.

use apiserver_storage::StorageError;
use serde_json::{Value, json};

/// One invalid field, as listed in a Status's `details.causes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, …
    pub kind: FieldErrorKind,
    /// What is wrong with it.
    pub detail: String,
    /// The offending value, quoted in the message where Kubernetes quotes it.
    pub value: Option<String>,
}

/// The kinds of field errors Kubernetes distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required field is missing.
    Required,
    /// A field's value is not allowed.
    Invalid,
    /// A value outside a fixed set.
    NotSupported,
    /// A value that may not change.
    Forbidden,
    /// A value that appears twice.
    Duplicate,
    /// A value longer than allowed.
    TooLong,
    /// A list with more items than allowed.
    TooMany,
}

impl FieldError {
    /// A required field is missing.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
            value: None,
        }
    }

    /// A field's value is not allowed.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            detail: detail.into(),
            value: Some(value.into()),
        }
    }

    /// A value outside a fixed set.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        allowed: &[&str],
    ) -> FieldError {
        let allowed = allowed
            .iter()
            .map(|v| format!("\"{v}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            detail: format!("supported values: {allowed}"),
            value: Some(value.into()),
        }
    }

    /// A field that may not be set or changed.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
            value: None,
        }
    }

    /// A value that appears twice.
    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            detail: String::new(),
            value: Some(value.into()),
        }
    }

    /// A value longer than `max` allows.
    pub fn too_long(field: impl Into<String>, max: i64) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            detail: format!("may not be more than {max} bytes"),
            value: None,
        }
    }

    /// A list of `count` items where at most `max` are allowed.
    pub fn too_many(field: impl Into<String>, count: usize, max: i64) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooMany,
            detail: format!("must have at most {max} items"),
            value: Some(count.to_string()),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
        }
    }

    /// The message Kubernetes prints for this error, e.g.
    /// `spec.containers[0].image: Required value`.
    pub fn message(&self) -> String {
        let mut message = format!("{}: ", self.field);
        message.push_str(match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
        });
        if let Some(value) = &self.value {
            message.push_str(&format!(": \"{value}\""));
        }
        if !self.detail.is_empty() {
            message.push_str(": ");
            message.push_str(&self.detail);
        }
        message
    }
}

/// A failed API request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// Kubernetes' machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, …).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details` of the Status, if any.
    pub details: Option<Value>,
}

/// The resource and object an error is about, for messages like `pods "web" not found`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The API group ("" for core).
    pub group: &'a str,
    /// The kind, e.g. `Pod`.
    pub kind: &'a str,
    /// The plural resource name, e.g. `pods`.
    pub resource: &'a str,
    /// The object's name.
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.resource})
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403: the user may not do this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 404 for a path that names no resource.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404: the object does not exist.
    pub fn not_found(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", subject.qualified(), subject.name),
            )
        }
    }

    /// 409: the object exists already.
    pub fn already_exists(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!(
                    "{} \"{}\" already exists",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// 409: a server-side apply would change fields other managers own; one cause per field.
    pub fn apply_conflict(message: String, causes: Vec<(String, String)>) -> ApiError {
        let causes = causes
            .into_iter()
            .map(|(message, field)| json!({"type": "FieldManagerConflict", "message": message, "field": field}))
            .collect::<Vec<_>>();
        ApiError {
            details: Some(json!({"causes": causes})),
            ..ApiError::new(409, "Conflict", message)
        }
    }

    /// 409: the object changed since the client read it.
    pub fn conflict(subject: Subject<'_>, why: &str) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {why}",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// 409 for an object modified meanwhile, with the message clients retry on.
    pub fn modified(subject: Subject<'_>) -> ApiError {
        ApiError::conflict(
            subject,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422: validation failed; lists every invalid field.
    pub fn invalid(subject: Subject<'_>, errors: &[FieldError]) -> ApiError {
        let messages = errors.iter().map(FieldError::message).collect::<Vec<_>>();
        let summary = if messages.len() == 1 {
            messages[0].clone()
        } else {
            format!("[{}]", messages.join(", "))
        };
        let causes = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
            .collect::<Vec<_>>();
        let mut details = subject.details();
        details["kind"] = json!(subject.kind);
        details["causes"] = Value::Array(causes);
        ApiError {
            details: Some(details),
            ..ApiError::new(
                422,
                "Invalid",
                format!(
                    "{} \"{}\" is invalid: {summary}",
                    subject.kind, subject.name
                ),
            )
        }
    }

    /// 405: the verb is not supported on this resource.
    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    /// 406: no representation the client accepts.
    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, "NotAcceptable", message)
    }

    /// 410: the requested history is gone.
    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 413: the request body is too large.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    /// 415: a body type the server does not take.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 422: a patch that cannot be applied.
    pub fn invalid_patch(why: &str) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!("the patch cannot be applied: {why}"),
        )
    }

    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// 503: the server cannot serve now; retry.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// 504: the request did not finish in time.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(504, "Timeout", message)
    }

    /// A storage failure that is not about one object.
    pub fn from_storage(error: StorageError) -> ApiError {
        match error {
            StorageError::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "too old resource version: {requested} ({})",
                compacted + 1
            )),
            StorageError::FutureRevision(revision) => ApiError::timeout(format!(
                "Too large resource version: {revision}, current: lower"
            )),
            StorageError::Unavailable(why) => ApiError::unavailable(why),
            StorageError::NoSpace(why) => ApiError::internal(why),
            other => ApiError::internal(other.to_string()),
        }
    }

    /// The `kind: Status` body sent to the client.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: Subject<'static> = Subject {
        group: "",
        kind: "Pod",
        resource: "pods",
        name: "web",
    };

    #[test]
    fn messages_read_as_kubernetes_writes_them() {
        assert_eq!(ApiError::not_found(POD).message, "pods \"web\" not found");
        let deploy = Subject {
            group: "apps",
            kind: "Deployment",
            resource: "deployments",
            name: "api",
        };
        assert_eq!(
            ApiError::already_exists(deploy).message,
            "deployments.apps \"api\" already exists"
        );
        let invalid =
            ApiError::invalid(POD, &[FieldError::required("spec.containers[0].image", "")]);
        assert_eq!(
            invalid.message,
            "Pod \"web\" is invalid: spec.containers[0].image: Required value"
        );
        assert_eq!(
            invalid.status()["details"]["causes"][0]["field"],
            "spec.containers[0].image"
        );
        assert_eq!(invalid.status()["code"], 422);
    }
}
