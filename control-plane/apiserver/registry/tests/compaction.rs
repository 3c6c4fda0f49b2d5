//! The registry over a real single-member store: what clients get once history they ask for
//! has been compacted.

use std::sync::Arc;

use apiserver_registry::store::{ListOptions, WriteOptions};
use apiserver_registry::watch::WatchOptions;
use apiserver_registry::{Object, Registry, builtin};
use apiserver_storage::LocalBackend;
use serde_json::json;
use store_raft::{NodeConfig, StoreNode};

fn object(value: serde_json::Value) -> Object {
    value.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn compacted_history_is_gone_for_continue_tokens_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let node = StoreNode::start(NodeConfig::new(
        "r",
        dir.path().join("data"),
        addr,
        &format!("http://{addr}"),
    ))
    .await
    .unwrap();
    let registry = Registry::new(
        Arc::new(LocalBackend::new(node.clone())),
        Arc::new(builtin::catalog()),
    );
    let catalog = registry.catalog().clone();
    let namespaces = catalog.get("", "v1", "namespaces").unwrap();
    let configmaps = catalog.get("", "v1", "configmaps").unwrap();
    let write = WriteOptions::default();
    registry
        .create(
            &namespaces,
            None,
            object(json!({"metadata": {"name": "default"}})),
            &write,
        )
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        registry
            .create(
                &configmaps,
                Some("default"),
                object(json!({"metadata": {"name": name}})),
                &write,
            )
            .await
            .unwrap();
    }
    let first = registry
        .list(
            &configmaps,
            Some("default"),
            &ListOptions {
                limit: 1,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    let token = first.continue_token.clone().unwrap();
    // Two more writes, so the revision right after the first page is history before `head`.
    for name in ["d", "e"] {
        registry
            .create(
                &configmaps,
                Some("default"),
                object(json!({"metadata": {"name": name}})),
                &write,
            )
            .await
            .unwrap();
    }
    let head = registry.backend().revision().await.unwrap();
    registry.backend().compact(head).await.unwrap();

    let expired = registry
        .list(
            &configmaps,
            Some("default"),
            &ListOptions {
                limit: 1,
                continue_token: Some(token),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(expired.code, 410);

    let options = WatchOptions {
        resource_version: first.revision.to_string(),
        ..WatchOptions::default()
    };
    let mut watch = registry
        .watch(configmaps.clone(), Some("default"), options)
        .await
        .unwrap();
    let event = watch.next().await.unwrap();
    assert_eq!(event.kind, "ERROR");
    assert_eq!(event.object.object()["code"], 410);
    assert!(
        watch.next().await.is_none(),
        "the watch ends after the error"
    );
    node.shutdown().await;
}
