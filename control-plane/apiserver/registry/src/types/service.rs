//! Services: port and type checks and defaults, and an update keeping the cluster IP and node
//! ports it does not mention. Cluster IPs and node ports are reserved by
//! [`crate::allocation::ServiceAllocator`] when the Service is written, not here.

use k8s_openapi::api::core::v1::Service;
use serde_json::{Value, json};

use super::{default, immutable, list};
use crate::error::FieldError;
use crate::object::Object;
use crate::strategy::{Strategy, normalize_as};
use crate::validation::dns1123_label;

/// Services.
pub struct ServiceStrategy;

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn spec(object: &Object) -> Option<&Object> {
    object.get("spec").and_then(Value::as_object)
}

fn default_spec(object: &mut Object) {
    let Some(Value::Object(spec)) = object.get_mut("spec") else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    if spec.get("type") != Some(&json!("ExternalName")) {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(port, "protocol", json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                default(port, "targetPort", number);
            }
        }
    }
}

/// An update that leaves out the cluster IP or a port's node port keeps the stored one, as
/// clients that replace a Service from a manifest expect.
fn keep_allocations(new: &mut Object, old: &Object) {
    let (Some(old_spec), Some(Value::Object(spec))) = (self::spec(old), new.get_mut("spec")) else {
        return;
    };
    let has_cluster_ip = |s: &Object| s.get("type").and_then(Value::as_str) != Some("ExternalName");
    if !has_cluster_ip(spec) || !has_cluster_ip(old_spec) {
        return;
    }
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(value) = old_spec.get(field) {
                spec.insert(field.into(), value.clone());
            }
        }
    }
    if !crate::allocation::wants_node_ports(spec) {
        return;
    }
    let old_ports = list(old_spec, "ports");
    let Some(Value::Array(ports)) = spec.get_mut("ports") else {
        return;
    };
    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
        if port
            .get("nodePort")
            .and_then(Value::as_i64)
            .is_some_and(|n| n != 0)
        {
            continue;
        }
        let same = old_ports.iter().find(|o| {
            o.get("port") == port.get("port")
                && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    == port
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
        });
        if let Some(node_port) = same.and_then(|o| o.get("nodePort")) {
            port.insert("nodePort".into(), node_port.clone());
        }
    }
}

impl Strategy for ServiceStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<Service>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<Service>())
    }

    fn prepare_for_create(&self, object: &mut Object) {
        default_spec(object);
        object.insert("status".into(), json!({"loadBalancer": {}}));
    }

    fn prepare_for_update(&self, new: &mut Object, old: &Object) {
        default_spec(new);
        keep_allocations(new, old);
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let Some(spec) = spec(object) else {
            return vec![FieldError::required("spec", "")];
        };
        let mut errors = Vec::new();
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if !TYPES.contains(&ty) {
            errors.push(FieldError::not_supported("spec.type", ty, TYPES));
        }
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let ports = list(spec, "ports");
        if ty == "ExternalName" {
            if spec
                .get("externalName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError::required("spec.externalName", ""));
            }
        } else if ports.is_empty() && !headless {
            errors.push(FieldError::required("spec.ports", ""));
        }
        let mut names = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let at = format!("spec.ports[{i}]");
            let name = port.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() && ports.len() > 1 {
                errors.push(FieldError::required(format!("{at}.name"), ""));
            } else if !name.is_empty() {
                errors.extend(dns1123_label(&format!("{at}.name"), name));
                if names.contains(&name) {
                    errors.push(FieldError::duplicate(format!("{at}.name"), name));
                }
                names.push(name);
            }
            let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&number) {
                errors.push(FieldError::invalid(
                    format!("{at}.port"),
                    number.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(protocol) = port.get("protocol").and_then(Value::as_str)
                && !PROTOCOLS.contains(&protocol)
            {
                errors.push(FieldError::not_supported(
                    format!("{at}.protocol"),
                    protocol,
                    PROTOCOLS,
                ));
            }
            if ty == "ClusterIP"
                && port
                    .get("nodePort")
                    .and_then(Value::as_i64)
                    .is_some_and(|p| p != 0)
            {
                errors.push(FieldError::forbidden(
                    format!("{at}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
        errors
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        let ip = |o: &Object| {
            spec(o)
                .and_then(|s| s.get("clusterIP"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        // An update may leave the address out (it is kept), but not change it.
        if let (Some(old_ip), Some(new_ip)) = (ip(old), ip(new))
            && !old_ip.is_empty()
            && new_ip != old_ip
        {
            errors.push(immutable("spec.clusterIPs[0]"));
        }
        errors
    }
}
