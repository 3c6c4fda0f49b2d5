//! Service cluster IPs and node ports over a real single-member store: unique, released with
//! the Service, exhausted cleanly, and repaired after leaks.

use std::sync::Arc;

use apiserver_registry::allocation::ServiceAllocator;
use apiserver_registry::store::{DeleteOptions, WriteOptions};
use apiserver_registry::{Object, Registry, builtin};
use apiserver_storage::LocalBackend;
use bytes::Bytes;
use serde_json::json;
use store_raft::{NodeConfig, StoreNode};

fn object(value: serde_json::Value) -> Object {
    value.as_object().cloned().unwrap_or_default()
}

fn service(name: &str, spec: serde_json::Value) -> Object {
    object(json!({"metadata": {"name": name}, "spec": spec}))
}

type Started = Result<(StoreNode, Registry), Box<dyn std::error::Error>>;

async fn start(dir: &std::path::Path) -> Started {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    let node = StoreNode::start(NodeConfig::new(
        "r",
        dir.join("data"),
        addr,
        &format!("http://{addr}"),
    ))
    .await?;
    // A /29: six usable addresses, .1 to .6.
    let allocator = Arc::new(ServiceAllocator::new("10.0.0.0/29".parse()?, 30000..=30002));
    let registry = Registry::new(
        Arc::new(LocalBackend::new(node.clone())),
        Arc::new(builtin::catalog()),
    )
    .with_service_allocator(allocator);
    let namespaces = registry
        .catalog()
        .get("", "v1", "namespaces")
        .ok_or("no namespaces")?;
    registry
        .create(
            &namespaces,
            None,
            object(json!({"metadata": {"name": "default"}})),
            &WriteOptions::default(),
        )
        .await?;
    Ok((node, registry))
}

#[tokio::test]
async fn addresses_and_ports_are_unique_released_and_exhausted_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (node, registry) = start(dir.path()).await.unwrap();
    let services = registry.catalog().get("", "v1", "services").unwrap();
    let write = WriteOptions::default();
    let port = json!([{"port": 80}]);
    let mut ips = Vec::new();
    for i in 0..6 {
        let created = registry
            .create(
                &services,
                Some("default"),
                service(&format!("s{i}"), json!({"ports": port})),
                &write,
            )
            .await
            .unwrap();
        ips.push(created["spec"]["clusterIP"].as_str().unwrap().to_owned());
    }
    let mut distinct = ips.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "{ips:?}");
    let full = registry
        .create(
            &services,
            Some("default"),
            service("s6", json!({"ports": port})),
            &write,
        )
        .await
        .unwrap_err();
    assert!(
        full.message.contains("range 10.0.0.0/29 is full"),
        "{full:?}"
    );
    // Headless and ExternalName Services need no address.
    registry
        .create(
            &services,
            Some("default"),
            service("headless", json!({"clusterIP": "None", "ports": port})),
            &write,
        )
        .await
        .unwrap();

    // Deleting a Service frees its address for a Service that asks for it.
    registry
        .delete(&services, Some("default"), "s0", &DeleteOptions::default())
        .await
        .unwrap();
    let taken = registry
        .create(
            &services,
            Some("default"),
            service("again", json!({"clusterIP": ips[1], "ports": port})),
            &write,
        )
        .await
        .unwrap_err();
    assert!(
        taken.message.contains("provided IP is already allocated"),
        "{taken:?}"
    );
    registry
        .create(
            &services,
            Some("default"),
            service("again", json!({"clusterIP": ips[0], "ports": port})),
            &write,
        )
        .await
        .unwrap();

    // Node ports: three in the range; a type change back to ClusterIP gives one back.
    for s in ["s1", "s2", "s3"] {
        registry
            .update_with(&services, Some("default"), s, None, &write, &|mut svc| {
                svc["spec"]["type"] = json!("NodePort");
                Ok(svc)
            })
            .await
            .unwrap();
    }
    let no_port = registry
        .update_with(
            &services,
            Some("default"),
            "s4",
            None,
            &write,
            &|mut svc| {
                svc["spec"]["type"] = json!("NodePort");
                Ok(svc)
            },
        )
        .await
        .unwrap_err();
    assert!(
        no_port.message.contains("failed to allocate a nodePort"),
        "{no_port:?}"
    );
    let s4 = registry
        .get(&services, Some("default"), "s4")
        .await
        .unwrap();
    assert_eq!(
        s4["spec"]["type"], "ClusterIP",
        "a failed update changes nothing"
    );
    registry
        .update_with(
            &services,
            Some("default"),
            "s1",
            None,
            &write,
            &|mut svc| {
                svc["spec"]["type"] = json!("ClusterIP");
                // As in Kubernetes, leaving node ports means removing them.
                if let Some(port) = svc["spec"]["ports"][0].as_object_mut() {
                    port.remove("nodePort");
                }
                Ok(svc)
            },
        )
        .await
        .unwrap();
    let s4 = registry
        .update_with(
            &services,
            Some("default"),
            "s4",
            None,
            &write,
            &|mut svc| {
                svc["spec"]["type"] = json!("NodePort");
                Ok(svc)
            },
        )
        .await
        .unwrap();
    let node_port = s4["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=30002).contains(&node_port));
    node.shutdown().await;
}

#[tokio::test]
async fn repair_removes_leaks_and_restores_missing_reservations() {
    let dir = tempfile::tempdir().unwrap();
    let (node, registry) = start(dir.path()).await.unwrap();
    let services = registry.catalog().get("", "v1", "services").unwrap();
    let allocator = registry.service_allocator().unwrap();
    let backend = registry.backend().clone();
    let created = registry
        .create(
            &services,
            Some("default"),
            service("web", json!({"ports": [{"port": 80}]})),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let ip = created["spec"]["clusterIP"].as_str().unwrap().to_owned();
    let leak = "/registry/ranges/serviceips/10.0.0.6";
    if ip.ends_with(".6") {
        // The Service holds .6; leak another address instead.
        backend
            .create(
                "/registry/ranges/serviceips/10.0.0.5",
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
    } else {
        backend
            .create(leak, Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    let held = format!("/registry/ranges/serviceips/{ip}");
    backend.delete(&held, None).await.unwrap();

    allocator.repair(backend.as_ref()).await.unwrap();
    assert!(backend.get(&held).await.unwrap().is_some(), "re-reserved");
    let leaked = if ip.ends_with(".6") {
        "/registry/ranges/serviceips/10.0.0.5"
    } else {
        leak
    };
    assert!(
        backend.get(leaked).await.unwrap().is_some(),
        "a leak survives one repair, in case its Service is being written"
    );
    allocator.repair(backend.as_ref()).await.unwrap();
    assert!(backend.get(leaked).await.unwrap().is_none(), "and not two");
    assert!(backend.get(&held).await.unwrap().is_some());
    node.shutdown().await;
}
