//! The `kube` crate as a client of basalt-apiserver, as Rust controllers use it: typed `Api`s,
//! patches, conflicts and errors, discovery, and the runtime's watcher.

use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;

/// A client for a context of the control plane's kubeconfig.
async fn connect(plane: &ControlPlane, context: &str) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig())?;
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some([("app".to_owned(), "kube-test".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), value.to_owned())].into()),
        ..ConfigMap::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_apis_patches_and_errors() {
    let plane = ControlPlane::start();
    let client = connect(&plane, "admin").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = maps
        .create(&PostParams::default(), &config_map("one", "1"))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    maps.create(&PostParams::default(), &config_map("two", "2"))
        .await
        .unwrap();
    let listed = maps
        .list(&ListParams::default().labels("app=kube-test"))
        .await
        .unwrap();
    let mut names: Vec<String> = listed
        .items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["one", "two"]);
    let paged = maps.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    assert!(paged.metadata.continue_.is_some());
    // Metadata-only reads, as metadata informers make them.
    let metadata = maps
        .list_metadata(&ListParams::default().labels("app=kube-test"))
        .await
        .unwrap();
    assert_eq!(metadata.items.len(), 2);
    assert!(metadata.items.iter().all(|m| m.metadata.uid.is_some()));
    let one = maps.get_metadata("one").await.unwrap();
    assert_eq!(one.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        one.types.map(|t| t.kind).as_deref(),
        Some("PartialObjectMetadata")
    );

    // A replace with the resourceVersion it read succeeds once; the stale one then conflicts.
    let mut current = maps.get("one").await.unwrap();
    current.data = Some([("key".to_owned(), "changed".to_owned())].into());
    let replaced = maps
        .replace("one", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.uid.as_deref(), Some(uid.as_str()));
    match maps.replace("one", &PostParams::default(), &current).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale replace must conflict: {other:?}"),
    }

    let patched = maps
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"extra": "yes"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched
            .data
            .unwrap_or_default()
            .get("extra")
            .map(String::as_str),
        Some("yes")
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1"},
                                                      {"name": "side", "image": "busybox"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // A strategic patch merges containers by name: one image changes, the other stays.
    let patched = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2"}]}}}})),
        )
        .await
        .unwrap();
    let containers = patched.spec.unwrap().template.spec.unwrap().containers;
    let images: Vec<(String, Option<String>)> =
        containers.into_iter().map(|c| (c.name, c.image)).collect();
    assert_eq!(
        images,
        [
            ("web".to_owned(), Some("nginx:2".to_owned())),
            ("side".to_owned(), Some("busybox".to_owned()))
        ]
    );
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));

    match maps.get("missing").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected 404: {other:?}"),
    }
    let bob: Api<ConfigMap> = Api::namespaced(connect(&plane, "bob").await.unwrap(), "default");
    match bob.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403: {other:?}"),
    }

    maps.delete("one", &DeleteParams::default()).await.unwrap();
    assert!(maps.get_opt("one").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_and_the_watcher_see_the_cluster() {
    let plane = ControlPlane::start();
    let client = connect(&plane, "admin").await.unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_owned()).collect();
    for group in ["", "apps", "batch", "rbac.authorization.k8s.io"] {
        assert!(groups.iter().any(|g| g == group), "{group:?} in {groups:?}");
    }

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    maps.create(&PostParams::default(), &config_map("before", "0"))
        .await
        .unwrap();
    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut events = watcher(maps.clone(), config.labels("app=kube-test")).boxed();
        // The initial list arrives first, then live changes.
        let mut initial = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
                Ok(Ok(Some(watcher::Event::InitApply(map)))) => initial.push(map.metadata.name),
                Ok(Ok(Some(watcher::Event::InitDone))) => break,
                Ok(Ok(Some(watcher::Event::Init))) => {}
                other => panic!("while listing: {other:?}"),
            }
        }
        assert!(initial.contains(&Some("before".to_owned())), "{initial:?}");
        let name = format!("live-{}", initial.len());
        maps.create(&PostParams::default(), &config_map(&name, "1"))
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(map)) = event
                    && map.metadata.name.as_deref() == Some(name.as_str())
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "the watcher saw {name} created");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_apply_owns_fields_and_conflicts_between_managers() {
    let plane = ControlPlane::start();
    let client = connect(&plane, "admin").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let config = |mode: &str| {
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "settings"}, "data": {"mode": mode}}))
    };
    let managers = |map: &ConfigMap| -> Vec<String> {
        map.metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}/{}",
                    e.manager.as_deref().unwrap_or(""),
                    e.operation.as_deref().unwrap_or("")
                )
            })
            .collect()
    };

    // Apply creates the object and records its manager.
    let created = maps
        .patch(
            "settings",
            &PatchParams::apply("rust-controller"),
            &config("fast"),
        )
        .await
        .unwrap();
    assert_eq!(
        created
            .data
            .as_ref()
            .and_then(|d| d.get("mode"))
            .map(String::as_str),
        Some("fast")
    );
    assert_eq!(managers(&created), ["rust-controller/Apply"]);

    // A second applier wanting another value conflicts, and is told with whom and where.
    match maps
        .patch("settings", &PatchParams::apply("other"), &config("slow"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (409, "Conflict"),
                "{status:?}"
            );
            assert!(
                status
                    .message
                    .contains("conflict with \"rust-controller\": .data.mode"),
                "{status:?}"
            );
        }
        other => panic!("expected a conflict: {other:?}"),
    }
    // Forced, it takes the field; the first manager owned nothing else and is gone.
    let forced = maps
        .patch(
            "settings",
            &PatchParams::apply("other").force(),
            &config("slow"),
        )
        .await
        .unwrap();
    assert_eq!(
        forced
            .data
            .as_ref()
            .and_then(|d| d.get("mode"))
            .map(String::as_str),
        Some("slow")
    );
    assert_eq!(managers(&forced), ["other/Apply"]);

    // The body may be YAML, and an apply must name its manager.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  extra: yes-please\n";
    let request = |query: &str| {
        http::Request::patch(format!(
            "/api/v1/namespaces/default/configmaps/settings{query}"
        ))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(yaml.as_bytes().to_vec())
        .unwrap()
    };
    let text = client
        .request_text(request("?fieldManager=yaml-user"))
        .await
        .unwrap();
    assert!(
        text.contains("yes-please") && text.contains("\"mode\":\"slow\""),
        "{text}"
    );
    match client.request_text(request("")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400, "{status:?}");
            assert!(status.message.contains("fieldManager"), "{status:?}");
        }
        other => panic!("expected 400: {other:?}"),
    }
    match client
        .request_text(request("?fieldManager=yaml-user&force=maybe"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400, "{status:?}");
            assert!(
                status.message.contains("force: Invalid value: \"maybe\""),
                "{status:?}"
            );
        }
        other => panic!("expected 400: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_resources_through_dynamic_apis_and_the_watcher() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

    let plane = ControlPlane::start();
    let client = connect(&plane, "admin").await.unwrap();
    let definitions: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definition: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.org"},
        "spec": {"group": "example.org", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "default": 3},
                        "colour": {"type": "string"}}}}}}}]},
    }))
    .unwrap();
    let created = definitions
        .create(&PostParams::default(), &definition)
        .await
        .unwrap();
    let established = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);

    // The new kind is served at once: discovery finds it and a dynamic Api uses it.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let gvk = GroupVersionKind::gvk("example.org", "v1alpha1", "Widget");
    let (resource, _) = discovery.resolve_gvk(&gvk).expect("widgets discovered");
    assert_eq!(resource.plural, "widgets");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.org/v1alpha1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"colour": "red"}}))
    .unwrap();
    let created = widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 3, "the schema's default");
    assert_eq!(created.metadata.generation, Some(1));

    // The watcher sees an apply of another manager's field.
    let mut events = watcher(widgets.clone(), watcher::Config::default()).boxed();
    let patch = json!({"apiVersion": "example.org/v1alpha1", "kind": "Widget",
                       "metadata": {"name": "w1"}, "spec": {"colour": "blue"}});
    let conflict = widgets
        .patch("w1", &PatchParams::apply("painter"), &Patch::Apply(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, kube::Error::Api(ref e) if e.code == 409),
        "{conflict}"
    );
    widgets
        .patch(
            "w1",
            &PatchParams::apply("painter").force(),
            &Patch::Apply(&patch),
        )
        .await
        .unwrap();
    let seen_blue = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.try_next().await.unwrap() {
            let blue = match &event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    o.data["spec"]["colour"] == "blue"
                }
                _ => false,
            };
            if blue {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen_blue.ok(), Some(true));
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].metadata.generation,
        Some(2),
        "a spec change"
    );
}
