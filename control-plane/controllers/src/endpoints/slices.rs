//! What a Service's EndpointSlices and Endpoints should hold, pure: each selected pod with
//! an IP as an endpoint (ready, serving, terminating from its readiness and deletion), grouped
//! by the ports it resolves (a named targetPort may differ per pod), at most 100 endpoints
//! to a slice; and the changes that turn the existing slices into those.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::pods;

/// Endpoints per slice, as kube-controller-manager's default.
pub const MAX_PER_SLICE: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller, as that label names it.
pub const CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// Endpoints sharing one set of ports.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The ports, resolved.
    pub ports: Vec<EndpointPort>,
    /// The endpoints, by pod name.
    pub endpoints: Vec<(Endpoint, Arc<Pod>)>,
}

/// A change to a Service's slices.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Create this slice (named by generateName).
    Create(EndpointSlice),
    /// Replace this slice (its resourceVersion guards the write).
    Update(EndpointSlice),
    /// Delete the slice of this name.
    Delete(String),
}

fn resolve(port: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP")
                        == port.protocol.as_deref().unwrap_or("TCP")
            })
            .map(|p| p.container_port),
    }
}

/// The endpoints of `service` from `selected` (its namespace's pods its selector picks),
/// grouped by port set.
pub fn groups(service: &Service, selected: &[Arc<Pod>]) -> Vec<Group> {
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut sorted: Vec<&Arc<Pod>> = selected.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty());
        let Some(ip) = ip else { continue };
        if matches!(pods::phase(pod), "Succeeded" | "Failed") {
            continue;
        }
        let ports: Vec<EndpointPort> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|port| {
                Some(EndpointPort {
                    name: Some(port.name.clone().unwrap_or_default()),
                    port: Some(resolve(port, pod)?),
                    protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: port.app_protocol.clone(),
                })
            })
            .collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = publish_not_ready || pods::is_ready(pod);
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(serving && !terminating),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        };
        groups
            .entry(key)
            .or_insert_with(|| Group {
                ports,
                endpoints: Vec::new(),
            })
            .endpoints
            .push((endpoint, pod.clone()));
    }
    groups.into_values().collect()
}

fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY.into(), CONTROLLER.into());
    if service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert("service.kubernetes.io/headless".into(), String::new());
    }
    labels
}

/// The changes that make `existing` (the Service's slices) hold `groups`. A Service with no
/// endpoints keeps one empty slice.
pub fn plan(
    service: &Service,
    groups: &[Group],
    existing: &[EndpointSlice],
    owner: &OwnerReference,
) -> Vec<Change> {
    let mut wanted: Vec<(Vec<EndpointPort>, Vec<Endpoint>)> = Vec::new();
    for group in groups {
        for chunk in group.endpoints.chunks(MAX_PER_SLICE) {
            wanted.push((
                group.ports.clone(),
                chunk.iter().map(|(e, _)| e.clone()).collect(),
            ));
        }
    }
    if wanted.is_empty() {
        wanted.push((Vec::new(), Vec::new()));
    }
    let labels = slice_labels(service);
    let mut unused: Vec<&EndpointSlice> = existing.iter().collect();
    unused.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut changes = Vec::new();
    for (ports, endpoints) in wanted {
        let same_ports = |s: &&EndpointSlice| s.ports.clone().unwrap_or_default() == ports;
        match unused.iter().position(same_ports) {
            Some(i) => {
                let current = unused.remove(i);
                let current_labels = current.metadata.labels.clone().unwrap_or_default();
                let labels_ok = labels.iter().all(|(k, v)| current_labels.get(k) == Some(v));
                if current.endpoints != endpoints || !labels_ok {
                    let mut updated = current.clone();
                    updated.endpoints = endpoints;
                    updated.metadata.labels =
                        Some(current_labels.into_iter().chain(labels.clone()).collect());
                    changes.push(Change::Update(updated));
                }
            }
            None => changes.push(Change::Create(EndpointSlice {
                metadata: ObjectMeta {
                    generate_name: Some(format!(
                        "{}-",
                        service.metadata.name.as_deref().unwrap_or_default()
                    )),
                    namespace: service.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner.clone()]),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(ports),
            })),
        }
    }
    changes.extend(
        unused
            .into_iter()
            .map(|s| Change::Delete(s.metadata.name.clone().unwrap_or_default())),
    );
    changes
}

/// The Service's Endpoints object: ready addresses, not-ready ones apart, terminating pods
/// left out unless the Service publishes not-ready addresses.
pub fn endpoints(service: &Service, groups: &[Group]) -> Endpoints {
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .filter_map(|group| {
            let mut ready = Vec::new();
            let mut not_ready = Vec::new();
            for (endpoint, pod) in &group.endpoints {
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                if conditions.terminating == Some(true) && !publish_not_ready {
                    continue;
                }
                let address = EndpointAddress {
                    ip: endpoint.addresses.first().cloned().unwrap_or_default(),
                    node_name: endpoint.node_name.clone(),
                    target_ref: endpoint.target_ref.clone(),
                    hostname: None,
                };
                if conditions.ready == Some(true)
                    || publish_not_ready
                    || (conditions.serving == Some(true)
                        && pod.metadata.deletion_timestamp.is_none())
                {
                    ready.push(address);
                } else {
                    not_ready.push(address);
                }
            }
            if ready.is_empty() && not_ready.is_empty() {
                return None;
            }
            Some(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    group
                        .ports
                        .iter()
                        .map(|p| CorePort {
                            name: p.name.clone(),
                            port: p.port.unwrap_or_default(),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                        })
                        .collect(),
                ),
            })
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: service.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::tests::pod;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, ServicePort, ServiceSpec};

    fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_owned(), "web".to_owned())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn with_ip(mut p: Pod, ip: &str) -> Arc<Pod> {
        if let Some(status) = p.status.as_mut() {
            status.pod_ip = Some(ip.into());
        }
        Arc::new(p)
    }

    #[test]
    fn endpoints_carry_readiness() {
        let ready = with_ip(pod("a", "Running", Some("n1"), Some(10)), "10.0.0.1");
        let unready = with_ip(pod("b", "Running", Some("n1"), None), "10.0.0.2");
        let no_ip = Arc::new(pod("c", "Pending", None, None));
        let groups = groups(&service(IntOrString::Int(8080)), &[ready, unready, no_ip]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].ports[0].port, Some(8080));
        let conditions: Vec<_> = groups[0]
            .endpoints
            .iter()
            .map(|(e, _)| e.conditions.clone().unwrap_or_default().ready)
            .collect();
        assert_eq!(conditions, [Some(true), Some(false)]);
        let object = endpoints(&service(IntOrString::Int(8080)), &groups);
        let subset = &object.subsets.expect("subsets")[0];
        assert_eq!(subset.addresses.as_ref().map(Vec::len), Some(1));
        assert_eq!(subset.not_ready_addresses.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn named_ports_resolve_per_pod() {
        let mut named = pod("a", "Running", None, Some(1));
        named.spec.get_or_insert_default().containers = vec![Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: 9000,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }];
        let other = pod("b", "Running", None, Some(1));
        let groups = groups(
            &service(IntOrString::String("web".into())),
            &[with_ip(named, "10.0.0.1"), with_ip(other, "10.0.0.2")],
        );
        assert_eq!(
            groups.len(),
            2,
            "a pod without the named port is a group of its own"
        );
        assert!(
            groups
                .iter()
                .any(|g| g.ports.first().and_then(|p| p.port) == Some(9000))
        );
    }

    #[test]
    fn a_hundred_endpoints_to_a_slice_and_slices_reused() {
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                with_ip(
                    pod(&format!("p{i:03}"), "Running", None, Some(1)),
                    &format!("10.0.{}.{}", i / 200, i % 200),
                )
            })
            .collect();
        let svc = service(IntOrString::Int(8080));
        let groups = groups(&svc, &pods);
        let changes = plan(&svc, &groups, &[], &OwnerReference::default());
        let sizes: Vec<usize> = changes
            .iter()
            .map(|c| match c {
                Change::Create(s) => s.endpoints.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let existing: Vec<EndpointSlice> = changes
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Change::Create(mut s) => {
                    s.metadata.name = Some(format!("web-{i}"));
                    Some(s)
                }
                _ => None,
            })
            .collect();
        assert!(
            plan(&svc, &groups, &existing, &OwnerReference::default()).is_empty(),
            "nothing changed"
        );
        let fewer = super::groups(&svc, &pods[..120]);
        let changes = plan(&svc, &fewer, &existing, &OwnerReference::default());
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, Change::Delete(_)))
                .count(),
            1
        );
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, Change::Update(_)))
                .count(),
            1
        );
    }

    #[test]
    fn no_endpoints_keeps_one_empty_slice() {
        let svc = service(IntOrString::Int(8080));
        let changes = plan(&svc, &[], &[], &OwnerReference::default());
        assert!(matches!(changes.as_slice(), [Change::Create(s)] if s.endpoints.is_empty()));
    }
}
