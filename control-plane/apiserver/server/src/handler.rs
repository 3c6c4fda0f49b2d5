//! The REST verbs on resources: decode the request, call the registry, encode the answer
//! (objects, lists, Tables or a watch stream).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apiserver_registry::fields::ApplyOptions;
use apiserver_registry::selector::{FieldSelector, LabelSelector};
use apiserver_registry::store::{DeleteOptions, Deleted, ListOptions, WriteOptions};
use apiserver_registry::watch::{WatchEvent, WatchOptions};
use apiserver_registry::{ApiError, Object, Registry, Resource};
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::admission::Admission;
use crate::auth::{Access, User};
use crate::request::RequestInfo;
use crate::response::{self, Body, Representation};
use crate::table;

/// The longest field manager name, as Kubernetes allows.
const MAX_FIELD_MANAGER: usize = 128;

/// The largest request body accepted, as kube-apiserver's default (3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// How long a write to a CustomResourceDefinition waits for the catalog to serve it.
const DEFINITIONS_SETTLE: Duration = Duration::from_secs(2);

/// A parsed resource request.
pub struct Call<'a> {
    /// Who asks.
    pub user: &'a User,
    /// The client's `User-Agent` (its first word names the field manager by default).
    pub user_agent: &'a str,
    /// The authorizers (for reviews, admission and RBAC writes).
    pub access: &'a Access,
    /// The served CustomResourceDefinitions (a write to one waits until it is served).
    pub definitions: &'a apiextensions::Definitions,
    /// What it asks for.
    pub info: &'a RequestInfo,
    /// The query parameters.
    pub query: &'a HashMap<String, String>,
    /// What representation the client accepts.
    pub representation: Representation,
    /// The body's media type.
    pub content_type: &'a str,
    /// The body.
    pub body: Bytes,
    /// The tolerations new pods get unless they say otherwise.
    pub default_tolerations: &'a crate::tolerations::DefaultTolerations,
    /// How pod logs are fetched from kubelets.
    pub kubelet: Option<&'a crate::kubelet_proxy::KubeletClient>,
}

impl Call<'_> {
    fn param(&self, key: &str) -> &str {
        self.query.get(key).map(String::as_str).unwrap_or("")
    }

    /// A boolean parameter, read as Go's `strconv.ParseBool` reads it (absent is false).
    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.param(key) {
            "" | "0" | "f" | "F" | "false" | "False" | "FALSE" => Ok(false),
            "1" | "t" | "T" | "true" | "True" | "TRUE" => Ok(true),
            other => Err(ApiError::bad_request(format!(
                "{key}: Invalid value: \"{other}\": must be true or false"
            ))),
        }
    }

    fn write_options(&self) -> Result<WriteOptions, ApiError> {
        let strict = match self.param("fieldValidation") {
            "" | "Ignore" | "Warn" => false,
            "Strict" => true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Warn\", \"Strict\""
                )));
            }
        };
        Ok(WriteOptions {
            dry_run: dry_run(self.param("dryRun"))?,
            strict,
            field_manager: Some(self.field_manager()?),
        })
    }

    /// The `fieldManager` parameter, or else the first word of the user agent, as
    /// kube-apiserver names managers of clients that do not say.
    fn field_manager(&self) -> Result<String, ApiError> {
        let given = self.param("fieldManager");
        if given.is_empty() {
            let agent = self.user_agent.split('/').next().unwrap_or("");
            return Ok(agent.chars().take(MAX_FIELD_MANAGER).collect());
        }
        if given.chars().count() > MAX_FIELD_MANAGER {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: may not be more than {MAX_FIELD_MANAGER} characters"
            )));
        }
        if given.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "fieldManager: Invalid value: must contain only printable characters",
            ));
        }
        Ok(given.to_owned())
    }

    fn namespace(&self) -> Option<&str> {
        self.info.namespace.as_deref()
    }

    pub(crate) fn object_body(&self) -> Result<Object, ApiError> {
        decode_body(self.content_type, &self.body)
    }

    fn admission(&self) -> Admission<'_> {
        Admission::new(self.user, self.info, self.access)
    }

    /// After a write to RBAC or to a CustomResourceDefinition, waits until the policy or the
    /// catalog reflects it, so the client's next request is judged by it or finds the new
    /// resource.
    async fn settle(&self, registry: &Registry, written: Option<&Object>) {
        let rbac = self.info.group == apiserver_authz::escalation::GROUP;
        let definitions = self.info.group == apiextensions::GROUP;
        if !rbac && !definitions {
            return;
        }
        let revision = match written {
            Some(object) => apiserver_registry::object::resource_version(object)
                .parse::<i64>()
                .ok(),
            None => registry.backend().revision().await.ok(),
        };
        let Some(revision) = revision else {
            return;
        };
        if rbac {
            self.access.settle(revision).await;
        } else if !self
            .definitions
            .wait_for(revision, DEFINITIONS_SETTLE)
            .await
        {
            tracing::warn!(
                revision,
                "the catalog has not caught up with a definition yet"
            );
        }
    }
}

/// Decodes a request body in JSON or Kubernetes' protobuf encoding.
fn decode_body(content_type: &str, body: &[u8]) -> Result<Object, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" | "*/*" => decode_object(body),
        apiserver_protobuf::MEDIA_TYPE => {
            apiserver_protobuf::decode(body).map_err(|e| ApiError::bad_request(e.to_string()))
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

fn dry_run(value: &str) -> Result<bool, ApiError> {
    match value {
        "" => Ok(false),
        "All" => Ok(true),
        other => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

fn decode_object(body: &[u8]) -> Result<Object, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

fn list_options(call: &Call<'_>, resource: &Resource) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(call.param("labelSelector"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(call.param("fieldSelector"), &resource.field_selectors)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = match call.param("limit") {
        "" => 0,
        text => text
            .parse::<i64>()
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "limit: Invalid value: \"{text}\": must be an integer"
                ))
            })?
            .max(0) as usize,
    };
    let continue_token = Some(call.param("continue").to_owned()).filter(|c| !c.is_empty());
    if continue_token.is_some()
        && !call.param("resourceVersion").is_empty()
        && call.param("resourceVersion") != "0"
    {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token,
        resource_version: call.param("resourceVersion").to_owned(),
        resource_version_match: call.param("resourceVersionMatch").to_owned(),
    })
}

fn ok(status: StatusCode, object: Object, call: &Call<'_>, resource: &Resource) -> Response<Body> {
    if call.representation == Representation::Table {
        let rv = apiserver_registry::object::resource_version(&object).to_owned();
        let table = table::table(resource, &[object], &rv, None, call.param("includeObject"));
        return response::json(status, &table);
    }
    if call.representation == Representation::Metadata {
        return response::json(status, &response::partial_metadata(object));
    }
    response::json(status, &Value::Object(object))
}

/// Serves one resource request.
pub async fn handle(
    registry: &Registry,
    resource: Arc<Resource>,
    call: Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let info = call.info;
    let ns = call.namespace();
    if !resource.stored {
        return crate::review::handle(&resource, &call).await;
    }
    if resource.namespaced && ns.is_none() && !matches!(info.verb.as_str(), "list" | "watch") {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = &info.subresource {
        let allowed = resource
            .subresource(sub)
            .is_some_and(|s| s.verbs.contains(&info.verb.as_str()));
        if !allowed
            || !matches!(
                sub.as_str(),
                "status" | "finalize" | "scale" | "token" | "binding" | "approval" | "log"
            )
        {
            return Err(ApiError::method_not_allowed(format!(
                "{} is not supported on {}/{sub} by this server yet",
                info.verb, resource.plural
            )));
        }
    } else if !resource.allows(&info.verb) {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {}",
            info.verb, resource.plural
        )));
    }
    let name = info.name.as_deref().unwrap_or("");
    let sub = info.subresource.as_deref();
    let csr = resource.group == crate::certificates::GROUP
        && resource.plural == crate::certificates::RESOURCE;
    if csr
        && let Some(sub) = sub
        && matches!(info.verb.as_str(), "update" | "patch")
    {
        crate::certificates::authorize_signer(
            registry,
            call.access,
            call.user,
            &resource,
            name,
            sub,
        )
        .await?;
    }
    match sub {
        Some("scale") => return scale(registry, &resource, &call, name).await,
        Some("token") => return crate::token::request(registry, &resource, &call, name).await,
        Some("log") => {
            return crate::pod_logs::logs(
                call.kubelet,
                registry,
                ns.unwrap_or_default(),
                name,
                call.query,
            )
            .await;
        }
        Some("binding") => {
            let body = call.object_body()?;
            if call.write_options()?.dry_run {
                registry.get(&resource, ns, name).await?;
            } else {
                registry
                    .bind(&resource, ns.unwrap_or_default(), name, &body)
                    .await?;
            }
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success", "code": 201});
            return Ok(crate::response::json(StatusCode::CREATED, &status));
        }
        _ => {}
    }
    match info.verb.as_str() {
        "get" => {
            let object = registry.get(&resource, ns, name).await?;
            Ok(ok(StatusCode::OK, object, &call, &resource))
        }
        "list" => list(registry, &resource, &call).await,
        "watch" => watch(registry, resource.clone(), &call).await,
        "create" => {
            let mut body = call.object_body()?;
            call.admission().admit(&body)?;
            if csr {
                crate::certificates::stamp_requester(call.user, &mut body);
            }
            if resource.group.is_empty() && resource.plural == "pods" {
                crate::limits::admit(registry, ns.unwrap_or(""), &mut body).await?;
                call.default_tolerations.admit(&mut body);
                crate::priority::admit(registry, &mut body).await?;
                let ns = ns.unwrap_or("");
                crate::service_account_admission::admit(registry, ns, &mut body).await?;
            }
            let object = registry
                .create(&resource, ns, body, &call.write_options()?)
                .await?;
            call.settle(registry, Some(&object)).await;
            Ok(ok(StatusCode::CREATED, object, &call, &resource))
        }
        "update" => {
            let body = call.object_body()?;
            call.admission().admit(&body)?;
            let object = registry
                .update(&resource, ns, name, sub, body, &call.write_options()?)
                .await?;
            call.settle(registry, Some(&object)).await;
            Ok(ok(StatusCode::OK, object, &call, &resource))
        }
        "patch" => {
            let patch = crate::patch::Patch::parse(call.content_type, &call.body)?;
            if resource.custom && matches!(patch, crate::patch::Patch::Strategic(_)) {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let options = call.write_options()?;
            let admission = call.admission();
            if let crate::patch::Patch::Apply(mut config) = patch {
                // An applied request records its author as a created one does; applied by
                // anyone else later, it changes the immutable spec and is refused.
                if csr && sub.is_none() {
                    crate::certificates::stamp_requester(call.user, &mut config);
                }
                let apply = ApplyOptions {
                    manager: call.param("fieldManager").to_owned(),
                    force: call.flag("force")?,
                };
                if apply.manager.is_empty() {
                    return Err(ApiError::bad_request(
                        "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                    ));
                }
                let (object, created) = registry
                    .apply(
                        &resource,
                        ns,
                        name,
                        sub,
                        config,
                        &apply,
                        &options,
                        &|object| admission.admit(object),
                    )
                    .await?;
                call.settle(registry, Some(&object)).await;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                return Ok(ok(status, object, &call, &resource));
            }
            if !call.param("force").is_empty() {
                return Err(ApiError::bad_request(
                    "force: Invalid value: may be specified only for apply patches (application/apply-patch+yaml)",
                ));
            }
            let object = registry
                .update_with(&resource, ns, name, sub, &options, &|current| {
                    let patched = patch.apply(&resource, current)?;
                    admission.admit(&patched)?;
                    Ok(patched)
                })
                .await?;
            call.settle(registry, Some(&object)).await;
            Ok(ok(StatusCode::OK, object, &call, &resource))
        }
        "delete" => {
            let options = delete_options(&call)?;
            let (Deleted::Gone(object) | Deleted::Pending(object)) =
                registry.delete(&resource, ns, name, &options).await?;
            call.settle(registry, Some(&object)).await;
            Ok(ok(StatusCode::OK, object, &call, &resource))
        }
        "deletecollection" => {
            let options = delete_options(&call)?;
            let deleted = registry
                .delete_collection(&resource, ns, &list_options(&call, &resource)?, &options)
                .await?;
            call.settle(registry, None).await;
            let list = json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
                              "metadata": {}, "items": deleted});
            Ok(response::json(StatusCode::OK, &list))
        }
        other => Err(ApiError::method_not_allowed(format!(
            "{other} is not supported"
        ))),
    }
}

/// The `scale` subresource: get, update and patch of a workload's replicas.
async fn scale(
    registry: &Registry,
    resource: &Resource,
    call: &Call<'_>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let ns = call.namespace();
    let scale = match call.info.verb.as_str() {
        "get" => registry.get_scale(resource, ns, name).await?,
        "update" => {
            let body = call.object_body()?;
            registry
                .update_scale(resource, ns, name, &call.write_options()?, &|_| {
                    Ok(body.clone())
                })
                .await?
        }
        "patch" => {
            let patch = crate::patch::Patch::parse(call.content_type, &call.body)?;
            registry
                .update_scale(resource, ns, name, &call.write_options()?, &|current| {
                    // A Scale has no lists, so every patch type merges it the same way.
                    patch.apply(resource, current)
                })
                .await?
        }
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} is not supported on {}/scale",
                resource.plural
            )));
        }
    };
    Ok(response::json(StatusCode::OK, &Value::Object(scale)))
}

fn delete_options(call: &Call<'_>) -> Result<DeleteOptions, ApiError> {
    let body = if call.body.iter().all(u8::is_ascii_whitespace) {
        Object::new()
    } else {
        decode_body(call.content_type, &call.body)?
    };
    let grace = match (
        call.param("gracePeriodSeconds"),
        body.get("gracePeriodSeconds"),
    ) {
        ("", Some(v)) => Some(
            v.as_i64()
                .ok_or_else(|| ApiError::bad_request("gracePeriodSeconds must be an integer"))?,
        ),
        ("", None) => None,
        (text, _) => Some(
            text.parse::<i64>()
                .map_err(|_| ApiError::bad_request("gracePeriodSeconds must be an integer"))?,
        ),
    };
    let mut propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if !call.param("propagationPolicy").is_empty() {
        propagation = Some(call.param("propagationPolicy").to_owned());
    }
    if propagation.is_none() {
        match body.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => propagation = Some("Orphan".into()),
            Some(false) => propagation = Some("Background".into()),
            None => {}
        }
    }
    let preconditions = body.get("preconditions");
    let precondition = |key: &str| {
        preconditions
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let body_dry_run = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        propagation_policy: propagation,
        precondition_uid: precondition("uid"),
        precondition_resource_version: precondition("resourceVersion"),
        dry_run: body_dry_run || dry_run(call.param("dryRun"))?,
    })
}

async fn list(
    registry: &Registry,
    resource: &Resource,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let options = list_options(call, resource)?;
    if call.representation == Representation::Object {
        return list_encoded(registry, resource, call, &options).await;
    }
    let page = registry.list(resource, call.namespace(), &options).await?;
    let rv = page.revision.to_string();
    if call.representation == Representation::Table {
        let table = table::table(
            resource,
            &page.items,
            &rv,
            page.continue_token.as_deref(),
            call.param("includeObject"),
        );
        return Ok(response::json(StatusCode::OK, &table));
    }
    let metadata = list_metadata(&page);
    let items: Vec<Value> = page
        .items
        .into_iter()
        .map(response::partial_metadata)
        .collect();
    let list = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                      "metadata": metadata, "items": items});
    Ok(response::json(StatusCode::OK, &list))
}

/// A list of the objects themselves, each encoded as soon as it is read, so a list of
/// thousands never holds them all decoded (nor a second copy to serialize).
async fn list_encoded(
    registry: &Registry,
    resource: &Resource,
    call: &Call<'_>,
    options: &ListOptions,
) -> Result<Response<Body>, ApiError> {
    let mut encode =
        |object: Object| serde_json::to_vec(&object).map_err(|e| ApiError::internal(e.to_string()));
    let page = registry
        .list_with(resource, call.namespace(), options, &mut encode)
        .await?;
    let head = json!({"kind": format!("{}List", resource.kind), "apiVersion": resource.api_version(),
                      "metadata": list_metadata(&page)});
    let mut body = serde_json::to_vec(&head).map_err(|e| ApiError::internal(e.to_string()))?;
    // `head` is an object: reopen it to append the items.
    body.pop();
    let size: usize = page.items.iter().map(|i| i.len() + 1).sum();
    body.reserve(size + 12);
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Ok(response::json_bytes(StatusCode::OK, Bytes::from(body)))
}

/// A list's metadata: its resourceVersion, continue token and remaining count.
fn list_metadata<T>(page: &apiserver_registry::store::ListPage<T>) -> Value {
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining.filter(|r| *r > 0) {
        metadata["remainingItemCount"] = json!(remaining);
    }
    metadata
}

async fn watch(
    registry: &Registry,
    resource: Arc<Resource>,
    call: &Call<'_>,
) -> Result<Response<Body>, ApiError> {
    let list = list_options(call, &resource)?;
    let send_initial_events = match call.param("sendInitialEvents") {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            return Err(ApiError::bad_request(format!(
                "sendInitialEvents: invalid value {other:?}"
            )));
        }
    };
    let timeout = match call.param("timeoutSeconds") {
        "" => Duration::from_secs(30 * 60),
        text => Duration::from_secs(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds: Invalid value: \"{text}\""))
        })?),
    };
    let options = WatchOptions {
        labels: list.labels,
        fields: list.fields,
        resource_version: list.resource_version,
        resource_version_match: list.resource_version_match,
        bookmarks: call.flag("allowWatchBookmarks")?,
        send_initial_events,
        bookmark_interval: Duration::from_secs(60),
    };
    let watch = registry
        .watch(resource.clone(), call.namespace(), options)
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let as_table = call.representation == Representation::Table;
    let as_metadata = call.representation == Representation::Metadata;
    let include = call.param("includeObject").to_owned();
    let events = futures::stream::unfold(watch, move |mut watch| async move {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .ok()??;
        Some((event, watch))
    })
    .map(move |event: WatchEvent| {
        let kind = event.kind;
        let object = if as_table && matches!(kind, "ADDED" | "MODIFIED" | "DELETED") {
            let object = event.object.into_object();
            let rv = apiserver_registry::object::resource_version(&object).to_owned();
            table::table(&resource, &[object], &rv, None, &include)
        } else if as_metadata && kind != "ERROR" {
            response::partial_metadata(event.object.into_object())
        } else {
            // The common case: the object's encoding is shared by every watcher of the change.
            let json = event.object.json();
            let mut line = Vec::with_capacity(json.len() + 32);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(json);
            line.extend_from_slice(b"}\n");
            return Ok(Frame::data(Bytes::from(line)));
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(line)))
    });
    let mut response = Response::new(StreamBody::new(events).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
