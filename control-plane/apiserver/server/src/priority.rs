//! Priority admission: a new pod's `spec.priority` (and `preemptionPolicy`) come from the
//! PriorityClass it names, or from the class marked `globalDefault`, or are 0; a pod may not
//! set a priority of its own that disagrees, nor name a class that does not exist.

use apiserver_registry::store::ListOptions;
use apiserver_registry::{ApiError, Object, Registry};
use serde_json::{Value, json};

/// Sets the priority of a pod about to be created.
pub async fn admit(registry: &Registry, pod: &mut Object) -> Result<(), ApiError> {
    let name = apiserver_registry::object::name(pod).to_owned();
    let Some(Value::Object(spec)) = pod.get_mut("spec") else {
        return Ok(());
    };
    let Some(classes) = registry
        .catalog()
        .get("scheduling.k8s.io", "v1", "priorityclasses")
    else {
        return Ok(());
    };
    let wanted = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let class = match &wanted {
        Some(class_name) => match registry.get(&classes, None, class_name).await {
            Ok(class) => Some(class),
            Err(e) if e.code == 404 => {
                return Err(ApiError::forbidden(format!(
                    "pods \"{name}\" is forbidden: no PriorityClass with name {class_name} was found"
                )));
            }
            Err(e) => return Err(e),
        },
        None => {
            // Any recent state will do, as kube-apiserver's informer cache would.
            let recent = ListOptions {
                resource_version: "0".into(),
                ..ListOptions::default()
            };
            let page = registry.list(&classes, None, &recent).await?;
            page.items
                .into_iter()
                .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        }
    };
    let value = class
        .as_ref()
        .and_then(|c| c.get("value"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(ApiError::forbidden(format!(
            "pods \"{name}\" is forbidden: the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    spec.insert("priority".into(), json!(value));
    if let Some(class) = &class {
        if wanted.is_none() {
            let class_name = apiserver_registry::object::name(class).to_owned();
            spec.insert("priorityClassName".into(), json!(class_name));
        }
        if let Some(policy) = class.get("preemptionPolicy").filter(|p| p.is_string()) {
            spec.insert("preemptionPolicy".into(), policy.clone());
        }
    }
    Ok(())
}
