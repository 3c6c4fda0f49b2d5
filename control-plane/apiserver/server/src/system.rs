//! The objects every cluster has, made (or corrected) when a server starts: the system
//! namespaces, and the `kubernetes` Service in `default` with the Endpoints and EndpointSlice
//! that point at this server, as kube-apiserver keeps them.

use std::net::IpAddr;
use std::time::Duration;

use apiserver_registry::store::WriteOptions;
use apiserver_registry::{ApiError, Object, Registry};
use serde_json::{Value, json};

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn object(value: Value) -> Object {
    match value {
        Value::Object(object) => object,
        _ => Object::new(),
    }
}

/// Creates `body` unless an object of that name exists; with `replace`, an existing one
/// whose `field` differs is updated to `body`'s.
async fn ensure(
    registry: &Registry,
    plural: &str,
    group: &str,
    namespace: Option<&str>,
    body: Object,
    replace: Option<&'static [&'static str]>,
) -> Result<(), ApiError> {
    let resource = registry
        .catalog()
        .get(group, "v1", plural)
        .ok_or_else(ApiError::no_route)?;
    let name = apiserver_registry::object::name(&body).to_owned();
    let write = WriteOptions::default();
    match registry.get(&resource, namespace, &name).await {
        Err(e) if e.code == 404 => {
            match registry.create(&resource, namespace, body, &write).await {
                Ok(_) => {
                    tracing::info!(%name, kind = %resource.kind, "created");
                    Ok(())
                }
                Err(e) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
        Ok(current) => {
            let Some(fields) = replace else {
                return Ok(());
            };
            if fields.iter().all(|f| current.get(*f) == body.get(*f)) {
                return Ok(());
            }
            registry
                .update_with(&resource, namespace, &name, None, &write, &|mut stored| {
                    for field in fields {
                        match body.get(*field) {
                            Some(value) => stored.insert((*field).into(), value.clone()),
                            None => stored.remove(*field),
                        };
                    }
                    Ok(stored)
                })
                .await
                .map(|_| ())
        }
    }
}

/// Creates the system namespaces.
pub async fn namespaces(registry: &Registry) -> Result<(), ApiError> {
    for name in SYSTEM_NAMESPACES {
        let body =
            object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
        ensure(registry, "namespaces", "", None, body, None).await?;
    }
    Ok(())
}

/// The PriorityClasses every cluster has, for the pods that keep a cluster or a node up.
pub async fn priority_classes(registry: &Registry) -> Result<(), ApiError> {
    for (name, value, description) in [
        (
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
        (
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
    ] {
        let body = object(json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        }));
        ensure(
            registry,
            "priorityclasses",
            "scheduling.k8s.io",
            None,
            body,
            None,
        )
        .await?;
    }
    Ok(())
}

/// The `kubernetes` Service at `cluster_ip`, and its endpoints: `address:port`, this server.
pub async fn kubernetes_service(
    registry: &Registry,
    cluster_ip: IpAddr,
    address: IpAddr,
    port: u16,
) -> Result<(), ApiError> {
    let service = object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip.to_string(), "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    }));
    ensure(registry, "services", "", Some("default"), service, None).await?;
    let endpoints = object(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    }));
    ensure(
        registry,
        "endpoints",
        "",
        Some("default"),
        endpoints,
        Some(&["subsets"]),
    )
    .await?;
    let slice = object(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }));
    ensure(
        registry,
        "endpointslices",
        "discovery.k8s.io",
        Some("default"),
        slice,
        Some(&["endpoints", "ports", "addressType"]),
    )
    .await
}

/// Repairs Service allocations now and then, until the task is dropped.
pub async fn repair_service_allocations(registry: Registry, every: Duration) {
    let Some(allocator) = registry.service_allocator() else {
        return;
    };
    loop {
        if let Err(e) = allocator.repair(registry.backend().as_ref()).await {
            tracing::warn!("repairing service allocations: {}", e.message);
        }
        tokio::time::sleep(every).await;
    }
}
