//! TokenRequest (`serviceaccounts/<name>/token`): a signed token for a service account,
//! optionally bound to a pod, secret or node so it dies with that object. `kubectl create
//! token` and kubelets use it.

use apiserver_authn::serviceaccount::{
    DEFAULT_EXPIRATION_SECONDS, KubernetesClaims, MAX_EXPIRATION_SECONDS, MIN_EXPIRATION_SECONDS,
    ObjectRef,
};
use apiserver_registry::{ApiError, FieldError, Object, Registry, Resource, Subject};
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::handler::Call;
use crate::response::{self, Body};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Spec {
    audiences: Vec<String>,
    expiration_seconds: Option<i64>,
    bound_object_ref: Option<BoundRef>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct BoundRef {
    kind: String,
    api_version: String,
    name: String,
    uid: String,
}

/// Issues a token for the service account `name`.
pub async fn request(
    registry: &Registry,
    accounts: &Resource,
    call: &Call<'_>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let namespace = call.info.namespace.as_deref().unwrap_or("");
    let subject = Subject {
        group: "authentication.k8s.io",
        kind: "TokenRequest",
        resource: "serviceaccounts/token",
        name,
    };
    let mut body = call.object_body()?;
    let spec: Spec = match body.get("spec") {
        Some(spec) => Spec::deserialize(spec).map_err(|e| {
            ApiError::invalid(subject, &[FieldError::invalid("spec", "", e.to_string())])
        })?,
        None => Spec::default(),
    };
    let seconds = spec
        .expiration_seconds
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if seconds < MIN_EXPIRATION_SECONDS {
        return Err(ApiError::invalid(
            subject,
            &[FieldError::invalid(
                "spec.expirationSeconds",
                seconds.to_string(),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let seconds = seconds.min(MAX_EXPIRATION_SECONDS);
    let account = registry.get(accounts, Some(namespace), name).await?;
    let mut claims = KubernetesClaims {
        namespace: namespace.to_owned(),
        serviceaccount: ObjectRef {
            name: name.to_owned(),
            uid: apiserver_registry::object::uid(&account).to_owned(),
        },
        ..KubernetesClaims::default()
    };
    if let Some(bound) = &spec.bound_object_ref {
        let bound_ref = bind(registry, namespace, bound, subject).await?;
        match bound.kind.as_str() {
            "Pod" => claims.pod = Some(bound_ref),
            "Secret" => claims.secret = Some(bound_ref),
            _ => claims.node = Some(bound_ref),
        }
    }
    let issuer = call.access.authenticator().issuer();
    let now = jiff::Timestamp::now();
    let (token, issued) = issuer
        .issue(claims, &spec.audiences, now.as_second(), seconds)
        .map_err(ApiError::internal)?;
    let expires = jiff::Timestamp::from_second(issued.exp)
        .map(apiserver_registry::object::timestamp)
        .unwrap_or_default();
    body.insert("apiVersion".into(), json!("authentication.k8s.io/v1"));
    body.insert("kind".into(), json!("TokenRequest"));
    body.insert(
        "metadata".into(),
        json!({"name": name, "namespace": namespace,
               "creationTimestamp": apiserver_registry::object::timestamp(now)}),
    );
    let spec_out = apiserver_registry::object::map_mut(&mut body, "spec");
    spec_out.insert("audiences".into(), json!(issued.aud));
    spec_out.insert("expirationSeconds".into(), json!(seconds));
    body.insert(
        "status".into(),
        json!({"token": token, "expirationTimestamp": expires}),
    );
    Ok(response::json(StatusCode::CREATED, &Value::Object(body)))
}

/// The object a token is bound to, checked to exist with the uid the request names.
async fn bind(
    registry: &Registry,
    namespace: &str,
    bound: &BoundRef,
    subject: Subject<'_>,
) -> Result<ObjectRef, ApiError> {
    let (plural, scoped) = match bound.kind.as_str() {
        "Pod" => ("pods", true),
        "Secret" => ("secrets", true),
        "Node" => ("nodes", false),
        other => {
            return Err(ApiError::invalid(
                subject,
                &[FieldError::not_supported(
                    "spec.boundObjectRef.kind",
                    other,
                    &["Pod", "Secret", "Node"],
                )],
            ));
        }
    };
    if !bound.api_version.is_empty() && bound.api_version != "v1" {
        return Err(ApiError::invalid(
            subject,
            &[FieldError::not_supported(
                "spec.boundObjectRef.apiVersion",
                &bound.api_version,
                &["v1"],
            )],
        ));
    }
    let resource = registry
        .catalog()
        .get("", "v1", plural)
        .ok_or_else(ApiError::no_route)?;
    let object: Object = registry
        .get(&resource, scoped.then_some(namespace), &bound.name)
        .await?;
    let uid = apiserver_registry::object::uid(&object);
    if !bound.uid.is_empty() && bound.uid != uid {
        return Err(ApiError::conflict(
            subject,
            &format!(
                "the UID in the bound object reference ({}) does not match the UID in record ({uid}); the object might have been deleted and then recreated",
                bound.uid
            ),
        ));
    }
    Ok(ObjectRef {
        name: bound.name.clone(),
        uid: uid.to_owned(),
    })
}
