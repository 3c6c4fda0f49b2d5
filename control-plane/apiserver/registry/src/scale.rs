//! The `scale` subresource: a workload's replicas as an `autoscaling/v1` Scale, read from and
//! written to the workload itself.

use serde_json::{Value, json};

use crate::catalog::Resource;
use crate::error::{ApiError, FieldError, Subject};
use crate::object::{self, Object, value_at};
use crate::store::{Registry, WriteOptions};

/// The Scale view of a workload of `resource`.
pub fn scale_of(resource: &Resource, workload: &Object) -> Object {
    let paths = &resource.scale_paths;
    let meta = object::metadata(workload).cloned().unwrap_or_default();
    let keep = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    let meta: Object = meta
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .collect();
    let selector = match paths
        .label_selector
        .as_deref()
        .and_then(|p| value_at(workload, p))
    {
        Some(Value::Object(s)) => crate::selector::LabelSelector::from_object(s).to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let replicas = |path: &str| {
        value_at(workload, path)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": meta,
        "spec": {"replicas": replicas(&paths.spec_replicas)},
        "status": {
            "replicas": replicas(&paths.status_replicas),
            "selector": selector,
        },
    });
    scale.as_object().cloned().unwrap_or_default()
}

/// Sets the value at a dotted path, making the objects on the way.
fn set_at(object: &mut Object, path: &str, value: Value) {
    let mut fields = path.split('.').peekable();
    let mut map = object;
    while let Some(field) = fields.next() {
        if fields.peek().is_none() {
            map.insert(field.to_owned(), value);
            return;
        }
        map = object::map_mut(map, field);
    }
}

impl Registry {
    /// Reads a workload's scale.
    pub async fn get_scale(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Object, ApiError> {
        let workload = self.get(resource, namespace, name).await?;
        Ok(scale_of(resource, &workload))
    }

    /// Changes a workload's replicas: `mutate` gets the current Scale and returns the one
    /// wanted. A resourceVersion in it must be the workload's current one.
    pub async fn update_scale(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &WriteOptions,
        mutate: &(dyn Fn(Object) -> Result<Object, ApiError> + Send + Sync),
    ) -> Result<Object, ApiError> {
        let subject = Subject {
            group: &resource.group,
            kind: &resource.kind,
            resource: &resource.plural,
            name,
        };
        let workload = self
            .update_with(
                resource,
                namespace,
                name,
                Some("scale"),
                options,
                &|mut current: Object| {
                    let wanted = mutate(scale_of(resource, &current))?;
                    let version = object::resource_version(&wanted);
                    if !version.is_empty() && version != object::resource_version(&current) {
                        return Err(ApiError::modified(subject));
                    }
                    let replicas = match value_at(&wanted, "spec.replicas") {
                        None => 0,
                        Some(v) => v
                            .as_i64()
                            .filter(|r| (0..=i64::from(i32::MAX)).contains(r))
                            .ok_or_else(|| {
                                ApiError::invalid(
                                    Subject {
                                        kind: "Scale",
                                        ..subject
                                    },
                                    &[FieldError::invalid(
                                        "spec.replicas",
                                        v.to_string(),
                                        "must be greater than or equal to 0",
                                    )],
                                )
                            })?,
                    };
                    set_at(
                        &mut current,
                        &resource.scale_paths.spec_replicas,
                        json!(replicas),
                    );
                    Ok(current)
                },
            )
            .await?;
        Ok(scale_of(resource, &workload))
    }
}
