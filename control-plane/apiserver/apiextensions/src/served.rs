//! Serving definitions: the catalog entries a CustomResourceDefinition stands for (one per
//! served version), kept current by following the stored definitions, and the clean-up that
//! deletes a definition's custom resources before the definition itself goes.
//!
//! One list and one watch of the definitions' keys; every change re-derives that
//! definition's entries. A writer can wait until the catalog reflects its write
//! ([`Definitions::wait_for`]), so `kubectl apply -f crd.yaml` followed at once by a request
//! for the new kind finds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use apiserver_registry::catalog::{PrinterColumn, ScalePaths};
use apiserver_registry::object::{self, Object};
use apiserver_registry::store::{DeleteOptions, ListOptions, WriteOptions};
use apiserver_registry::validation::NameRule;
use apiserver_registry::{ApiError, Registry, Resource};
use apiserver_storage::{ChangeKind, WatchItem};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
};
use parking_lot::Mutex;

use crate::custom::CustomStrategy;
use crate::definition::{self, CLEANUP_FINALIZER};
use crate::{GROUP, PLURAL};

/// How long the watch may be quiet before it reports the store's revision.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// How long a clean-up waits before looking again at custom resources that are still
/// being deleted (their own finalizers).
const CLEANUP_RETRY: Duration = Duration::from_secs(1);

/// Where every definition is stored.
fn prefix() -> String {
    format!("/registry/{GROUP}/{PLURAL}/")
}

/// The catalog entries of a definition's served versions; while it is being deleted they
/// refuse new objects.
pub fn resources(crd: &CustomResourceDefinition) -> Vec<Resource> {
    let terminating = crd.metadata.deletion_timestamp.is_some();
    crd.spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| resource(crd, v, terminating))
        .collect()
}

/// The entry of one version, served or not (the clean-up reaches stored objects with it).
fn resource(
    crd: &CustomResourceDefinition,
    version: &CustomResourceDefinitionVersion,
    terminating: bool,
) -> Resource {
    let spec = &crd.spec;
    let names = &spec.names;
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.clone())
        .unwrap_or_else(|| JSONSchemaProps {
            type_: Some("object".into()),
            x_kubernetes_preserve_unknown_fields: Some(true),
            ..Default::default()
        });
    let strategy = CustomStrategy::new(&spec.group, &version.name, &names.kind, schema);
    let mut resource = Resource::new(
        &spec.group,
        &version.name,
        &names.kind,
        &names.plural,
        spec.scope == "Namespaced",
        Arc::new(strategy),
    )
    .names(NameRule::Subdomain);
    resource.singular = names
        .singular
        .clone()
        .unwrap_or_else(|| names.kind.to_ascii_lowercase());
    resource.short_names = names.short_names.clone().unwrap_or_default();
    resource.categories = names.categories.clone().unwrap_or_default();
    resource.custom = true;
    let subresources = version.subresources.as_ref();
    if subresources.is_some_and(|s| s.status.is_some()) {
        resource = resource.with_status();
    }
    if let Some(scale) = subresources.and_then(|s| s.scale.as_ref()) {
        resource = resource.with_scale();
        let field = |path: &str| path.trim_start_matches('.').to_owned();
        resource.scale_paths = ScalePaths {
            spec_replicas: field(&scale.spec_replicas_path),
            status_replicas: field(&scale.status_replicas_path),
            label_selector: scale.label_selector_path.as_deref().map(field),
        };
    }
    resource.printer_columns = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| PrinterColumn {
            name: c.name.clone(),
            kind: c.type_.clone(),
            format: c.format.clone().unwrap_or_default(),
            description: c.description.clone().unwrap_or_default(),
            priority: i64::from(c.priority.unwrap_or(0)),
            json_path: c.json_path.clone(),
        })
        .collect();
    if terminating {
        resource.verbs.retain(|v| *v != "create");
    }
    resource
}

/// The served definitions, kept in the catalog.
pub struct Definitions {
    /// The store revision the catalog reflects.
    seen: tokio::sync::watch::Sender<i64>,
    /// Definitions whose custom resources are being deleted.
    cleaning: Mutex<BTreeSet<String>>,
}

/// What one definition put in the catalog: (version, plural) under its group.
type Served = BTreeMap<String, Vec<(String, String, String)>>;

impl Definitions {
    /// Serves every stored definition and follows their changes until the returned value is
    /// dropped.
    pub async fn start(registry: Registry) -> Result<Arc<Definitions>, ApiError> {
        let (objects, revision) = registry.read_prefix(&prefix()).await?;
        let definitions = Arc::new(Definitions {
            seen: tokio::sync::watch::channel(revision).0,
            cleaning: Mutex::new(BTreeSet::new()),
        });
        let mut served = Served::new();
        for (key, object) in &objects {
            definitions.serve(&registry, &mut served, key, Some(object));
        }
        tokio::spawn(follow(
            registry,
            Arc::downgrade(&definitions),
            served,
            revision,
        ));
        Ok(definitions)
    }

    /// Waits (at most `timeout`) until the catalog reflects every change up to `revision`.
    /// Returns whether it does.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> bool {
        let mut seen = self.seen.subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Brings the catalog in line with the definition at `key` (`None`: deleted).
    fn serve(
        self: &Arc<Self>,
        registry: &Registry,
        served: &mut Served,
        key: &str,
        object: Option<&Object>,
    ) {
        let catalog = registry.catalog();
        let crd = object.and_then(definition::decode);
        let wanted = crd.as_ref().map(resources).unwrap_or_default();
        let keys: Vec<(String, String, String)> = wanted
            .iter()
            .map(|r| (r.group.clone(), r.version.clone(), r.plural.clone()))
            .collect();
        for old in served.remove(key).unwrap_or_default() {
            if !keys.contains(&old) {
                catalog.remove(&old.0, &old.1, &old.2);
            }
        }
        let mut mine = Vec::new();
        for resource in wanted {
            // A definition may not shadow a built-in resource.
            let existing = catalog.get(&resource.group, &resource.version, &resource.plural);
            if existing.is_some_and(|r| !r.custom) {
                tracing::warn!(
                    group = %resource.group,
                    plural = %resource.plural,
                    "a CustomResourceDefinition names a built-in resource; not serving it"
                );
                continue;
            }
            mine.push((
                resource.group.clone(),
                resource.version.clone(),
                resource.plural.clone(),
            ));
            catalog.insert(resource);
        }
        if !mine.is_empty() {
            served.insert(key.to_owned(), mine);
        }
        if let Some(crd) = crd
            && crd.metadata.deletion_timestamp.is_some()
            && crd
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == CLEANUP_FINALIZER)
        {
            let name = crd.metadata.name.clone().unwrap_or_default();
            if self.cleaning.lock().insert(name.clone()) {
                tokio::spawn(clean_up(registry.clone(), Arc::downgrade(self), crd, name));
            }
        }
    }
}

/// Applies the store's changes to the catalog until the definitions are dropped; relists
/// when the watch ends (a compaction, a store restart).
async fn follow(
    registry: Registry,
    definitions: Weak<Definitions>,
    mut served: Served,
    mut revision: i64,
) {
    loop {
        match watch(&registry, &definitions, &mut served, &mut revision).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("CustomResourceDefinition watch ended, relisting: {e}"),
        }
        loop {
            let Some(owner) = definitions.upgrade() else {
                return;
            };
            match registry.read_prefix(&prefix()).await {
                Ok((objects, at)) => {
                    let gone: Vec<String> = served
                        .keys()
                        .filter(|k| !objects.contains_key(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        owner.serve(&registry, &mut served, &key, None);
                    }
                    for (key, object) in &objects {
                        owner.serve(&registry, &mut served, key, Some(object));
                    }
                    revision = at;
                    owner.seen.send_replace(revision);
                    break;
                }
                Err(e) => {
                    drop(owner);
                    tracing::warn!("listing CustomResourceDefinitions: {}", e.message);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Follows one watch; `Ok` when the definitions are gone.
async fn watch(
    registry: &Registry,
    definitions: &Weak<Definitions>,
    served: &mut Served,
    revision: &mut i64,
) -> Result<(), String> {
    let mut stream = registry
        .backend()
        .watch(&prefix(), *revision)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let item = stream
            .next(PROGRESS_INTERVAL)
            .await
            .map_err(|e| e.to_string())?;
        let Some(owner) = definitions.upgrade() else {
            return Ok(());
        };
        match item {
            WatchItem::Changes(changes) => {
                for change in changes {
                    *revision = change.revision();
                    let key = String::from_utf8_lossy(&change.kv.key).into_owned();
                    match change.kind {
                        ChangeKind::Put => {
                            let object = registry.decode(&change.kv).map_err(|e| e.message)?;
                            owner.serve(registry, served, &key, Some(&object));
                        }
                        ChangeKind::Delete => owner.serve(registry, served, &key, None),
                    }
                }
                owner.seen.send_replace(*revision);
            }
            WatchItem::Progress(at) => {
                *revision = at.max(*revision);
                owner.seen.send_replace(*revision);
            }
        }
    }
}

/// Deletes a definition's custom resources (each as a client's delete would, so their own
/// finalizers are honoured), then drops the clean-up finalizer, which lets the definition go.
async fn clean_up(
    registry: Registry,
    definitions: Weak<Definitions>,
    crd: CustomResourceDefinition,
    name: String,
) {
    let storage = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or(crd.spec.versions.first());
    let Some(storage) = storage else {
        return;
    };
    let instances = resource(&crd, storage, true);
    let uid = crd.metadata.uid.as_deref().unwrap_or("");
    loop {
        if definitions.strong_count() == 0 {
            return;
        }
        match delete_instances(&registry, &instances).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(definition = %name, "deleting custom resources: {}", e.message)
            }
        }
        tokio::time::sleep(CLEANUP_RETRY).await;
    }
    if let Some(definitions_resource) = registry.catalog().get(GROUP, "v1", PLURAL) {
        let removed = registry
            .update_with(
                &definitions_resource,
                None,
                &name,
                None,
                &WriteOptions::default(),
                &|mut current| {
                    // A definition made again under the same name is not the one cleaned up.
                    if object::uid(&current) != uid {
                        return Ok(current);
                    }
                    let mut finalizers = object::finalizers(&current);
                    finalizers.retain(|f| f != CLEANUP_FINALIZER);
                    object::set_finalizers(&mut current, &finalizers);
                    Ok(current)
                },
            )
            .await;
        if let Err(e) = removed
            && e.code != 404
        {
            tracing::warn!(definition = %name, "removing the clean-up finalizer: {}", e.message);
        }
    }
    if let Some(definitions) = definitions.upgrade() {
        definitions.cleaning.lock().remove(&name);
    }
}

/// Deletes every instance; true when none is left.
async fn delete_instances(registry: &Registry, instances: &Resource) -> Result<bool, ApiError> {
    registry
        .delete_collection(
            instances,
            None,
            &ListOptions::default(),
            &DeleteOptions::default(),
        )
        .await?;
    let left = registry
        .list(
            instances,
            None,
            &ListOptions {
                limit: 1,
                ..ListOptions::default()
            },
        )
        .await?;
    Ok(left.items.is_empty())
}
