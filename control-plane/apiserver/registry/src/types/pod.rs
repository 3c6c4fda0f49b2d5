//! Pods: the defaults the kubelet and scheduler rely on, container checks, and the rule that a
//! pod's spec is fixed once created except for a few fields.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{default, list};
use crate::error::FieldError;
use crate::object::{Object, map_mut};
use crate::strategy::{Strategy, normalize_as};
use crate::validation::dns1123_label;

/// Pods.
pub struct PodStrategy;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

/// The defaults of a pod spec (also used for the templates of workloads).
pub fn default_pod_spec(spec: &mut Object) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    if spec.get("serviceAccountName").is_none_or(Value::is_null) {
        let account = spec
            .get("serviceAccount")
            .filter(|v| v.is_string())
            .cloned()
            .unwrap_or(json!("default"));
        spec.insert("serviceAccountName".into(), account);
    }
    for field in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(field) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(container);
            }
        }
    }
}

fn default_container(container: &mut Object) {
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    default(container, "resources", json!({}));
    // A resource with only a limit requests what it limits.
    let limits = container
        .get("resources")
        .and_then(|r| r.get("limits"))
        .and_then(Value::as_object)
        .cloned();
    if let Some(limits) = limits.filter(|l| !l.is_empty()) {
        let requests = map_mut(map_mut(container, "resources"), "requests");
        for (resource, value) in limits {
            requests.entry(resource).or_insert(value);
        }
    }
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let latest =
        image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or("").contains([':', '@']);
    default(
        container,
        "imagePullPolicy",
        json!(if latest { "Always" } else { "IfNotPresent" }),
    );
    if let Some(Value::Array(ports)) = container.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(port, "protocol", json!("TCP"));
        }
    }
}

/// The checks of a pod spec at `path` (also used for the templates of workloads).
pub fn validate_pod_spec(spec: &Object, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let containers = list(spec, "containers");
    if containers.is_empty() {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut names = Vec::new();
    for field in ["initContainers", "containers"] {
        for (i, container) in list(spec, field).iter().enumerate() {
            let at = format!("{path}.{field}[{i}]");
            let Some(container) = container.as_object() else {
                continue;
            };
            match container.get("name").and_then(Value::as_str) {
                None | Some("") => errors.push(FieldError::required(format!("{at}.name"), "")),
                Some(name) => {
                    errors.extend(dns1123_label(&format!("{at}.name"), name));
                    if names.contains(&name) {
                        errors.push(FieldError::duplicate(format!("{at}.name"), name));
                    }
                    names.push(name);
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(|i| i.trim().is_empty())
            {
                errors.push(FieldError::required(format!("{at}.image"), ""));
            }
            if let Some(policy) = container.get("imagePullPolicy").and_then(Value::as_str)
                && !PULL_POLICIES.contains(&policy)
            {
                errors.push(FieldError::not_supported(
                    format!("{at}.imagePullPolicy"),
                    policy,
                    PULL_POLICIES,
                ));
            }
            for (j, port) in list(container, "ports").iter().enumerate() {
                let number = port
                    .get("containerPort")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    errors.push(FieldError::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        number.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if let Some(protocol) = port.get("protocol").and_then(Value::as_str)
                    && !PROTOCOLS.contains(&protocol)
                {
                    errors.push(FieldError::not_supported(
                        format!("{at}.ports[{j}].protocol"),
                        protocol,
                        PROTOCOLS,
                    ));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str)
        && !RESTART_POLICIES.contains(&policy)
    {
        errors.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            RESTART_POLICIES,
        ));
    }
    if let Some(grace) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && grace < 0
    {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    errors.extend(super::scheduling::validate_scheduling(spec, path));
    errors
}

/// The spec with the fields a pod update may change blanked out.
fn fixed_part(spec: &Object) -> Object {
    let mut fixed = spec.clone();
    for field in [
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
    ] {
        fixed.remove(field);
    }
    for field in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = fixed.get_mut(field) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                container.remove("image");
            }
        }
    }
    fixed
}

impl Strategy for PodStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<Pod>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<Pod>())
    }

    fn prepare_for_create(&self, object: &mut Object) {
        if let Some(Value::Object(spec)) = object.get_mut("spec") {
            default_pod_spec(spec);
        }
        object.insert(
            "status".into(),
            json!({"phase": "Pending", "qosClass": qos_class(object)}),
        );
    }

    fn prepare_for_update(&self, new: &mut Object, _old: &Object) {
        if let Some(Value::Object(spec)) = new.get_mut("spec") {
            default_pod_spec(spec);
        }
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        match object.get("spec").and_then(Value::as_object) {
            Some(spec) => validate_pod_spec(spec, "spec"),
            None => vec![FieldError::required("spec", "")],
        }
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        let spec = |o: &Object| {
            o.get("spec")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        if fixed_part(&spec(new)) != fixed_part(&spec(old)) {
            errors.push(FieldError::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,\
                 `spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,\
                 `spec.tolerations` (only additions to existing tolerations),\
                 `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
        errors
    }
}

/// Guaranteed if every container's requests equal its limits for cpu and memory,
/// BestEffort if none sets either, Burstable otherwise.
fn qos_class(pod: &Object) -> &'static str {
    let containers = pod
        .get("spec")
        .and_then(Value::as_object)
        .map(|spec| list(spec, "containers"))
        .unwrap_or(&[]);
    let resources = |c: &Value, kind: &str, name: &str| {
        c.get("resources")
            .and_then(|r| r.get(kind))
            .and_then(|m| m.get(name))
            .cloned()
    };
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for container in containers {
        for name in ["cpu", "memory"] {
            let limit = resources(container, "limits", name);
            let request = resources(container, "requests", name).or_else(|| limit.clone());
            any |= limit.is_some() || request.is_some();
            guaranteed &= limit.is_some() && limit == request;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn defaults_checks_and_immutability() {
        let mut pod = object(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}}));
        PodStrategy.prepare_for_create(&mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        assert!(PodStrategy.validate(&pod).is_empty());

        let bad =
            object(json!({"spec": {"containers": [{"name": "C"}, {"name": "C", "image": "x"}]}}));
        let fields: Vec<_> = PodStrategy
            .validate(&bad)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].name",
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].name"
            ]
        );

        let mut new_image = pod.clone();
        new_image["spec"]["containers"][0]["image"] = json!("busybox:1.36");
        assert!(PodStrategy.validate_update(&new_image, &pod).is_empty());
        let mut new_restart = pod.clone();
        new_restart["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(PodStrategy.validate_update(&new_restart, &pod).len(), 1);
    }
}
