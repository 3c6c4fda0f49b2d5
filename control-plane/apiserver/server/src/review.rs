//! Reviews: objects a client creates to get an answer, never stored — whether a user may do
//! something (SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview), what
//! they may do in a namespace (SelfSubjectRulesReview), who they are (SelfSubjectReview) and
//! whom a token authenticates (TokenReview). `kubectl auth can-i` and `kubectl auth whoami`
//! use them.

use apiserver_authz::rules::Rule;
use apiserver_authz::{Attributes, Decision, ResourceAttributes, User};
use apiserver_registry::{ApiError, FieldError, Object, Resource, Subject};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::handler::Call;
use crate::response::{self, Body};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    resource_attributes: Option<ResourceSpec>,
    non_resource_attributes: Option<NonResourceSpec>,
    user: String,
    groups: Vec<String>,
    namespace: String,
    token: String,
    audiences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResourceSpec {
    namespace: String,
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NonResourceSpec {
    path: String,
    verb: String,
}

fn some(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.is_empty())
}

/// Answers a review.
pub async fn handle(resource: &Resource, call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    if call.info.verb != "create" {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {}",
            call.info.verb, resource.plural
        )));
    }
    let mut body = call.object_body()?;
    let subject = Subject {
        group: &resource.group,
        kind: &resource.kind,
        resource: &resource.plural,
        name: "",
    };
    let spec: Spec = match body.get("spec") {
        Some(spec) => Spec::deserialize(spec).map_err(|e| {
            ApiError::invalid(subject, &[FieldError::invalid("spec", "", e.to_string())])
        })?,
        None => Spec::default(),
    };
    let status = match resource.plural.as_str() {
        "selfsubjectreviews" => json!({"userInfo": {
            "username": call.user.name, "groups": call.user.groups}}),
        "tokenreviews" => {
            if spec.token.is_empty() {
                return Err(ApiError::invalid(
                    subject,
                    &[FieldError::required("spec.token", "")],
                ));
            }
            let authenticator = call.access.authenticator();
            match authenticator
                .authenticate(&spec.token, &spec.audiences)
                .await
            {
                Ok(user) => {
                    let audiences = if spec.audiences.is_empty() {
                        authenticator.issuer().audiences().to_vec()
                    } else {
                        spec.audiences.clone()
                    };
                    json!({"authenticated": true, "audiences": audiences,
                           "user": {"username": user.name, "groups": user.groups}})
                }
                Err(why) => json!({"authenticated": false, "error": why}),
            }
        }
        "selfsubjectrulesreviews" => {
            if spec.namespace.is_empty() {
                return Err(ApiError::invalid(
                    subject,
                    &[FieldError::required("spec.namespace", "")],
                ));
            }
            rules_review(call, &spec.namespace)
        }
        "selfsubjectaccessreviews" => access_review(call, call.user, &spec, subject).await?,
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            if spec.user.is_empty() && spec.groups.is_empty() {
                return Err(ApiError::invalid(
                    subject,
                    &[FieldError::required(
                        "spec.user",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            if resource.namespaced {
                let wanted = spec
                    .resource_attributes
                    .as_ref()
                    .map(|r| r.namespace.as_str());
                if wanted != call.info.namespace.as_deref() {
                    return Err(ApiError::invalid(
                        subject,
                        &[FieldError::invalid(
                            "spec.resourceAttributes.namespace",
                            wanted.unwrap_or(""),
                            "must match metadata.namespace",
                        )],
                    ));
                }
            }
            let user = User {
                name: spec.user.clone(),
                groups: spec.groups.clone(),
            };
            access_review(call, &user, &spec, subject).await?
        }
        other => {
            return Err(ApiError::internal(format!(
                "{other} is not a review this server answers"
            )));
        }
    };
    body.insert("apiVersion".into(), json!(resource.api_version()));
    body.insert("kind".into(), json!(resource.kind));
    body.entry("metadata")
        .or_insert_with(|| Value::Object(Object::new()));
    body.insert("status".into(), status);
    Ok(response::json(StatusCode::CREATED, &Value::Object(body)))
}

async fn access_review(
    call: &Call<'_>,
    user: &User,
    spec: &Spec,
    subject: Subject<'_>,
) -> Result<Value, ApiError> {
    let attributes = match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(r), None) => Attributes {
            verb: &r.verb,
            resource: Some(ResourceAttributes {
                group: &r.group,
                resource: &r.resource,
                subresource: some(&r.subresource),
                name: some(&r.name),
                namespace: some(&r.namespace),
            }),
            path: "",
        },
        (None, Some(n)) => Attributes {
            verb: &n.verb,
            resource: None,
            path: &n.path,
        },
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                subject,
                &[FieldError::invalid(
                    "spec.nonResourceAttributes",
                    "",
                    "cannot be specified in combination with resourceAttributes",
                )],
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                subject,
                &[FieldError::invalid(
                    "spec.resourceAttributes",
                    "",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )],
            ));
        }
    };
    Ok(match call.access.decide(user, &attributes).await {
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Deny(reason) if !reason.is_empty() => {
            json!({"allowed": false, "denied": true, "reason": reason})
        }
        _ => json!({"allowed": false}),
    })
}

fn rules_review(call: &Call<'_>, namespace: &str) -> Value {
    let rules = call
        .access
        .rbac()
        .policy()
        .rules_for(call.user, Some(namespace));
    let (urls, resources): (Vec<Rule>, Vec<Rule>) = rules
        .into_iter()
        .partition(|r| !r.non_resource_urls.is_empty());
    let resource_rules: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let mut rule = json!({"verbs": r.verbs, "apiGroups": r.api_groups,
                                  "resources": r.resources});
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            rule
        })
        .collect();
    let url_rules: Vec<Value> = urls
        .into_iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    json!({"resourceRules": resource_rules, "nonResourceRules": url_rules, "incomplete": false})
}
