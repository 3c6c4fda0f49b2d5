//! LimitRanges — their defaults and checks — and what they do to a new pod (the LimitRanger
//! admission step): default limits and requests for containers that leave them out, then the
//! minimum, maximum and limit-to-request ratio of every container and of the pod as a whole.

use k8s_openapi::api::core::v1::LimitRange;
use kube_quantity::ParsedQuantity;
use serde_json::{Map, Value, json};

use super::list;
use crate::error::FieldError;
use crate::object::Object;
use crate::strategy::{Strategy, normalize_as};

const TYPES: &[&str] = &["Container", "Pod", "PersistentVolumeClaim"];
const CONTAINER_LISTS: &[&str] = &["initContainers", "containers"];

/// LimitRanges.
pub struct LimitRangeStrategy;

fn quantity(value: &Value) -> Option<ParsedQuantity> {
    value
        .as_str()
        .and_then(|s| ParsedQuantity::try_from(s).ok())
}

fn map<'a>(item: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    item.get(key).and_then(Value::as_object)
}

/// An item's implied values: `defaultRequest` falls back to `default`, `default` to `max`.
fn default_items(object: &mut Object) {
    let Some(Value::Object(spec)) = object.get_mut("spec") else {
        return;
    };
    let Some(Value::Array(items)) = spec.get_mut("limits") else {
        return;
    };
    for item in items.iter_mut().filter_map(Value::as_object_mut) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        for (from, to) in [("max", "default"), ("default", "defaultRequest")] {
            let Some(source) = item.get(from).and_then(Value::as_object).cloned() else {
                continue;
            };
            let target = item.entry(to).or_insert_with(|| json!({}));
            if let Some(target) = target.as_object_mut() {
                for (resource, value) in source {
                    target.entry(resource).or_insert(value);
                }
            }
        }
    }
}

impl Strategy for LimitRangeStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<LimitRange>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<LimitRange>())
    }

    fn prepare_for_create(&self, object: &mut Object) {
        default_items(object);
    }

    fn prepare_for_update(&self, new: &mut Object, _old: &Object) {
        default_items(new);
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let Some(spec) = object.get("spec").and_then(Value::as_object) else {
            return vec![FieldError::required("spec", "")];
        };
        for (i, item) in list(spec, "limits").iter().enumerate() {
            let at = |field: &str| format!("spec.limits[{i}].{field}");
            let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
            if !TYPES.contains(&ty) {
                errors.push(FieldError::not_supported(at("type"), ty, TYPES));
            }
            if ty == "Pod" {
                for field in ["default", "defaultRequest"] {
                    if item.get(field).is_some() {
                        errors.push(FieldError::forbidden(
                            at(field),
                            "may not be specified when `type` is 'Pod'",
                        ));
                    }
                }
            }
            for field in [
                "max",
                "min",
                "default",
                "defaultRequest",
                "maxLimitRequestRatio",
            ] {
                for (resource, value) in map(item, field).into_iter().flatten() {
                    if quantity(value).is_none() {
                        errors.push(FieldError::invalid(
                            format!("{}[{resource}]", at(field)),
                            value.as_str().unwrap_or("").to_owned(),
                            "must be a valid quantity",
                        ));
                    }
                }
            }
            // min <= defaultRequest <= default <= max, for each resource they share.
            let order = ["min", "defaultRequest", "default", "max"];
            for (low, high) in order.iter().zip(order.iter().skip(1)) {
                for (resource, value) in map(item, low).into_iter().flatten() {
                    let upper = map(item, high).and_then(|m| m.get(resource));
                    if let (Some(l), Some(h)) = (quantity(value), upper.and_then(quantity))
                        && l > h
                    {
                        errors.push(FieldError::invalid(
                            format!("{}[{resource}]", at(high)),
                            h.to_string(),
                            format!("{low} value {l} is greater than {high} value {h}"),
                        ));
                    }
                }
            }
        }
        errors
    }
}

fn resources_mut<'a>(container: &'a mut Object, kind: &str) -> &'a mut Object {
    let resources = crate::object::map_mut(container, "resources");
    crate::object::map_mut(resources, kind)
}

fn amount(container: &Value, kind: &str, resource: &str) -> Option<ParsedQuantity> {
    container
        .get("resources")
        .and_then(|r| r.get(kind))
        .and_then(|m| m.get(resource))
        .and_then(quantity)
}

/// Applies the namespace's LimitRanges to a new pod: fills defaults, then checks the limits.
/// `Err` holds one message per violation, in kube-apiserver's words.
pub fn apply_to_pod(pod: &mut Object, ranges: &[Object]) -> Result<(), Vec<String>> {
    let items: Vec<&Value> = ranges
        .iter()
        .filter_map(|r| r.get("spec").and_then(Value::as_object))
        .flat_map(|spec| list(spec, "limits"))
        .collect();
    let Some(Value::Object(spec)) = pod.get_mut("spec") else {
        return Ok(());
    };
    for key in CONTAINER_LISTS {
        let Some(Value::Array(containers)) = spec.get_mut(*key) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            // A container that sets only a limit requests what it limits (API defaulting,
            // which comes before admission).
            let limits = resources_mut(container, "limits").clone();
            let requests = resources_mut(container, "requests");
            for (resource, value) in limits {
                requests.entry(resource).or_insert(value);
            }
            for item in items
                .iter()
                .filter(|i| i.get("type") == Some(&json!("Container")))
            {
                for (field, kind) in [("default", "limits"), ("defaultRequest", "requests")] {
                    let target = resources_mut(container, kind);
                    for (resource, value) in map(item, field).into_iter().flatten() {
                        target.entry(resource.clone()).or_insert(value.clone());
                    }
                }
            }
            for kind in ["limits", "requests"] {
                if resources_mut(container, kind).is_empty()
                    && let Some(Value::Object(resources)) = container.get_mut("resources")
                {
                    resources.remove(kind);
                }
            }
        }
    }
    let mut problems = Vec::new();
    let containers: Vec<&Value> = CONTAINER_LISTS
        .iter()
        .flat_map(|key| list(spec, key))
        .collect();
    for item in &items {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for container in &containers {
                    check(
                        item,
                        "Container",
                        &|kind, resource| amount(container, kind, resource),
                        &mut problems,
                    );
                }
            }
            Some("Pod") => {
                let total = |kind: &str, resource: &str| {
                    let mut sum: Option<ParsedQuantity> = None;
                    for container in list(spec, "containers") {
                        if let Some(q) = amount(container, kind, resource) {
                            sum = Some(match sum {
                                Some(s) => s + q,
                                None => q,
                            });
                        } else {
                            // A container without a value leaves the pod's total unknown.
                            return None;
                        }
                    }
                    sum
                };
                check(item, "Pod", &total, &mut problems);
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks one LimitRange item against amounts looked up by (limits|requests, resource).
fn check(
    item: &Value,
    scope: &str,
    amount: &dyn Fn(&str, &str) -> Option<ParsedQuantity>,
    problems: &mut Vec<String>,
) {
    for (resource, min) in map(item, "min").into_iter().flatten() {
        let Some(min) = quantity(min) else { continue };
        match amount("requests", resource) {
            Some(request) if request < min => problems.push(format!(
                "minimum {resource} usage per {scope} is {min}, but request is {request}"
            )),
            None => problems.push(format!(
                "minimum {resource} usage per {scope} is {min}.  No request is specified"
            )),
            _ => {}
        }
    }
    for (resource, max) in map(item, "max").into_iter().flatten() {
        let Some(max) = quantity(max) else { continue };
        match amount("limits", resource) {
            Some(limit) if limit > max => problems.push(format!(
                "maximum {resource} usage per {scope} is {max}, but limit is {limit}"
            )),
            None => problems.push(format!(
                "maximum {resource} usage per {scope} is {max}.  No limit is specified"
            )),
            _ => {}
        }
    }
    for (resource, ratio) in map(item, "maxLimitRequestRatio").into_iter().flatten() {
        let Some(ratio) = quantity(ratio).and_then(|q| q.to_bytes_f64()) else {
            continue;
        };
        let limit = amount("limits", resource).and_then(|q| q.to_bytes_f64());
        let request = amount("requests", resource).and_then(|q| q.to_bytes_f64());
        if let (Some(limit), Some(request)) = (limit, request)
            && request > 0.0
            && limit / request > ratio
        {
            problems.push(format!(
                "{resource} max limit to request ratio per {scope} is {ratio}, but provided ratio is {:.6}",
                limit / request
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    fn range(limits: Value) -> Object {
        let mut range = object(json!({"metadata": {"name": "limits"}, "spec": {"limits": limits}}));
        LimitRangeStrategy.prepare_for_create(&mut range);
        range
    }

    fn pod(containers: Value) -> Object {
        object(json!({"metadata": {"name": "p"}, "spec": {"containers": containers}}))
    }

    #[test]
    fn defaults_fill_what_containers_leave_out() {
        let ranges = [range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "250m"}}]))];
        let mut bare = pod(json!([{"name": "a", "image": "x"}]));
        apply_to_pod(&mut bare, &ranges).unwrap();
        let resources = &bare["spec"]["containers"][0]["resources"];
        assert_eq!(
            resources["limits"],
            json!({"cpu": "500m", "memory": "256Mi"})
        );
        // memory's request comes from the range's default limit (defaultRequest defaults to it).
        assert_eq!(
            resources["requests"],
            json!({"cpu": "250m", "memory": "256Mi"})
        );
        let mut limited =
            pod(json!([{"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}}}]));
        apply_to_pod(&mut limited, &ranges).unwrap();
        assert_eq!(
            limited["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        let mut untouched = pod(json!([{"name": "a", "image": "x"}]));
        apply_to_pod(&mut untouched, &[]).unwrap();
        assert!(
            untouched["spec"]["containers"][0]
                .get("resources")
                .is_none_or(|r| r == &json!({}))
        );
    }

    #[test]
    fn bounds_and_ratios_are_enforced() {
        let ranges = [range(json!([
            {"type": "Container", "min": {"cpu": "100m"}, "max": {"cpu": "1", "memory": "1Gi"},
             "maxLimitRequestRatio": {"cpu": "4"}},
            {"type": "Pod", "max": {"memory": "1536Mi"}}]))];
        let mut ok = pod(
            json!([{"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "512Mi"},
                                                           "requests": {"cpu": "200m"}}}]),
        );
        assert_eq!(apply_to_pod(&mut ok, &ranges), Ok(()));
        let mut big = pod(
            json!([{"name": "a", "resources": {"limits": {"cpu": "2", "memory": "512Mi"},
                                                            "requests": {"cpu": "50m"}}}]),
        );
        let problems = apply_to_pod(&mut big, &ranges).unwrap_err();
        assert!(
            problems.contains(&"maximum cpu usage per Container is 1, but limit is 2".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems.contains(
                &"minimum cpu usage per Container is 100m, but request is 50m".to_owned()
            ),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("cpu max limit to request ratio per Container is 4")),
            "{problems:?}"
        );
        let mut two = pod(json!([
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]));
        let problems = apply_to_pod(&mut two, &ranges).unwrap_err();
        assert_eq!(
            problems,
            ["maximum memory usage per Pod is 1536Mi, but limit is 2Gi"]
        );
        // A pod-wide maximum needs every container to have a limit.
        let pod_only = [range(json!([{"type": "Pod", "max": {"memory": "1Gi"}}]))];
        let mut unlimited = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "200m"}}}]));
        let problems = apply_to_pod(&mut unlimited, &pod_only).unwrap_err();
        assert_eq!(
            problems,
            ["maximum memory usage per Pod is 1Gi.  No limit is specified"]
        );
    }

    #[test]
    fn ranges_must_be_ordered_and_well_typed() {
        let bad = range(
            json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}},
                               {"type": "Pod", "default": {"cpu": "1"}},
                               {"type": "Node", "max": {"cpu": "lots"}}]),
        );
        let fields: Vec<String> = LimitRangeStrategy
            .validate(&bad)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert!(
            fields.contains(&"spec.limits[0].defaultRequest[cpu]".to_owned())
                || fields.contains(&"spec.limits[0].max[cpu]".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.limits[1].default".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.limits[2].type".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.limits[2].max[cpu]".to_owned()),
            "{fields:?}"
        );
    }
}
