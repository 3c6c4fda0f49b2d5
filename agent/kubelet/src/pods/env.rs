//! A container's environment as the API defines it: `envFrom` sources first, then `env` in
//! order, each value with `$(VAR)` references to earlier variables expanded, values taken
//! from the pod's fields, the container's resources, ConfigMaps and Secrets. Reading the
//! ConfigMaps and Secrets is the caller's ([`Sources`]); this module only assembles.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Where ConfigMap and Secret data come from.
pub trait Sources {
    /// The data of ConfigMap `name` in the pod's namespace (`None`: it does not exist).
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>>;
    /// The data of Secret `name` in the pod's namespace, decoded.
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>>;
}

/// Expands `$(NAME)` with earlier variables; `$$` is a literal `$`; unknown references stay.
pub fn expand(value: &str, known: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match known.iter().rev().find(|(known, _)| known == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef`.
pub fn field(pod: &Pod, path: &str, host_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let from_map = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|ip| ip.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        _ => {
            if let Some(key) = keyed("metadata.labels['") {
                from_map(meta.labels.as_ref(), &key)
            } else if let Some(key) = keyed("metadata.annotations['") {
                from_map(meta.annotations.as_ref(), &key)
            } else {
                return Err(format!("unsupported fieldRef {path:?}"));
            }
        }
    })
}

/// The value of a `resourceFieldRef` on `container`.
pub fn resource(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let (side, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resourceFieldRef {resource:?}"))?;
    let list = container.resources.as_ref().and_then(|r| match side {
        "limits" => r.limits.as_ref(),
        "requests" => r.requests.as_ref(),
        _ => None,
    });
    let quantity = list.and_then(|l| l.get(name));
    let milli = quantity.map(placement::resources::milli).unwrap_or(0);
    let divisor = divisor
        .map(|d| {
            placement::resources::milli(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                d.to_string(),
            ))
        })
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    // Rounded up, and never 0 for something set (the API's rule).
    Ok(((milli + divisor - 1) / divisor).to_string())
}

/// The container's environment, in the order the API defines.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    host_ip: &str,
    sources: &dyn Sources,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(existing, _)| *existing != name);
        env.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, optional) = if let Some(cm) = &from.config_map_ref {
            (
                sources.config_map(&cm.name),
                format!("configmap {:?}", cm.name),
                cm.optional,
            )
        } else if let Some(secret) = &from.secret_ref {
            (
                sources.secret(&secret.name),
                format!("secret {:?}", secret.name),
                secret.optional,
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    set(&mut env, format!("{prefix}{key}"), value);
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("{what} not found")),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            expand(value, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(field_ref) = &from.field_ref {
                field(pod, &field_ref.field_path, host_ip)?
            } else if let Some(resource_ref) = &from.resource_field_ref {
                resource(
                    container,
                    &resource_ref.resource,
                    resource_ref.divisor.as_ref().map(|d| d.0.as_str()),
                )?
            } else if let Some(key_ref) = &from.config_map_key_ref {
                match sources
                    .config_map(&key_ref.name)
                    .and_then(|d| d.get(&key_ref.key).cloned())
                {
                    Some(value) => value,
                    None if key_ref.optional == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in ConfigMap {}/{}",
                            key_ref.key,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            key_ref.name
                        ));
                    }
                }
            } else if let Some(key_ref) = &from.secret_key_ref {
                match sources
                    .secret(&key_ref.name)
                    .and_then(|d| d.get(&key_ref.key).cloned())
                {
                    Some(value) => value,
                    None if key_ref.optional == Some(true) => continue,
                    None => {
                        return Err(format!(
                            "couldn't find key {} in Secret {}/{}",
                            key_ref.key,
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            key_ref.name
                        ));
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fake;
    impl Sources for Fake {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "cm").then(|| BTreeMap::from([("color".to_string(), "blue".to_string())]))
        }
        fn secret(&self, _: &str) -> Option<BTreeMap<String, String>> {
            None
        }
    }

    #[test]
    fn values_references_fields_and_config_maps() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c",
                "resources": {"limits": {"memory": "64Mi"}},
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "A", "value": "a"},
                    {"name": "B", "value": "$(A)-$$(A)-$(NOPE)"},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "color"}}},
                ],
            }]},
        }))
        .expect("pod");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let env = resolve(&pod, container, "10.0.0.1", &Fake).expect("env");
        let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("CM_color"), Some("blue"));
        assert_eq!(get("B"), Some("a-$(A)-$(NOPE)"));
        assert_eq!(get("POD"), Some("p"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("MEM"), Some("64"));
        assert_eq!(get("COLOR"), Some("blue"));
    }

    #[test]
    fn a_missing_secret_key_is_named() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "env": [
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]},
        }))
        .expect("pod");
        let container = &pod.spec.as_ref().expect("spec").containers[0];
        let error = resolve(&pod, container, "", &Fake).expect_err("missing");
        assert_eq!(error, "couldn't find key k in Secret ns/s");
    }
}
