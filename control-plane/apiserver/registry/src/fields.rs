//! The registry's side of field management: which [`Write`] a request is (its manager, API
//! version and scope), recording ordinary writes in managedFields, and server-side apply
//! ([`Registry::apply`]), which creates the object when it does not exist.

use apiserver_fieldmanager::{Error, Scope, Write};
use serde_json::Value;

use crate::catalog::Resource;
use crate::error::{ApiError, FieldError};
use crate::object::{self, Object};
use crate::store::{Registry, WriteOptions};
use crate::strategic::Types;

fn scope(resource: &Resource, subresource: Option<&str>) -> Scope {
    match subresource {
        Some("status") => Scope::Status,
        Some("scale") => Scope::Scale,
        _ => Scope::Main {
            has_status: resource.has_status(),
        },
    }
}

fn to_api_error(resource: &Resource, name: &str, error: Error) -> ApiError {
    let message = error.to_string();
    match error {
        Error::Conflicts(conflicts) => {
            let causes = conflicts
                .into_iter()
                .map(|c| (format!("conflict with {}", c.manager), c.field))
                .collect();
            ApiError::apply_conflict(message, causes)
        }
        Error::Invalid { field, reason } => ApiError::invalid(
            crate::store::subject(resource, name),
            &[FieldError::invalid(field, "", reason)],
        ),
    }
}

/// Runs `f` with the [`Write`] of `manager` on `resource`.
fn with_write<T>(
    resource: &Resource,
    subresource: Option<&str>,
    manager: &str,
    f: impl FnOnce(&Write<'_>) -> T,
) -> T {
    let types = Types::of(resource);
    let api_version = resource.api_version();
    let now = object::now();
    f(&Write {
        schema: types.schema(),
        api_version: &api_version,
        scope: scope(resource, subresource),
        manager,
        now: &now,
    })
}

/// Records in `new`'s managedFields that `manager` turned `old` into `new`.
pub(crate) fn track_update(
    resource: &Resource,
    subresource: Option<&str>,
    manager: &str,
    old: &Object,
    new: &mut Object,
) -> Result<(), ApiError> {
    with_write(resource, subresource, manager, |write| {
        apiserver_fieldmanager::update(write, old, new)
    })
    .map_err(|e| to_api_error(resource, object::name(old), e))
}

/// How an apply request asks.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The applier (`fieldManager`, required).
    pub manager: String,
    /// Take over fields other managers own instead of failing (`force=true`).
    pub force: bool,
}

impl Registry {
    /// Server-side apply of `config` to the object `name`, creating it if it does not exist.
    /// `admit` sees the object that would be stored. Returns it and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        config: Object,
        apply: &ApplyOptions,
        options: &WriteOptions,
        admit: &(dyn Fn(&Object) -> Result<(), ApiError> + Send + Sync),
    ) -> Result<(Object, bool), ApiError> {
        if config
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            || config
                .get("kind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        let (config, _) = self.decode_body(resource, config, options.strict)?;
        let config_name = object::name(&config);
        if config_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({config_name}) does not match the name on the URL ({name})"
            )));
        }
        let applied = |live: &Object| {
            with_write(resource, subresource, &apply.manager, |write| {
                apiserver_fieldmanager::apply(write, live, &config, apply.force)
            })
            .map_err(|e| to_api_error(resource, name, e))
        };
        // An apply that finds nothing creates; one that loses a create race updates.
        for _ in 0..2 {
            let updated = self
                .read_modify_write(
                    resource,
                    namespace,
                    name,
                    subresource,
                    options,
                    &|live| {
                        let object = applied(&live)?;
                        admit(&object)?;
                        Ok(object)
                    },
                    true,
                    crate::store::Tracking::Applied,
                )
                .await;
            match updated {
                Err(e) if e.code == 404 && subresource.is_none() => {}
                other => return other.map(|object| (object, false)),
            }
            let object = applied(&Object::new())?;
            admit(&object)?;
            match self
                .create_tracked(
                    resource,
                    namespace,
                    object,
                    options,
                    crate::store::Tracking::Applied,
                )
                .await
            {
                Err(e) if e.code == 409 && e.reason == "AlreadyExists" => continue,
                other => return other.map(|object| (object, true)),
            }
        }
        Err(ApiError::modified(crate::store::subject(resource, name)))
    }
}
