//! The namespace controller: empties a namespace being deleted, every resource in it,
//! custom ones included, then removes the `kubernetes` finalizer so the API server lets
//! the namespace go. While content remains, the namespace's conditions say what and why
//! (`kubectl describe namespace`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::verbs;
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::resources::Resources;
use crate::workers::{self, Key};
use crate::{Error, unless_gone};

/// The finalizer the API server puts on every namespace.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// How soon a namespace with content left (pods in their grace period, objects with
/// finalizers) is looked at again.
const RECHECK: Duration = Duration::from_secs(2);

/// The namespace controller's shared state.
pub struct NamespaceController {
    client: kube::Client,
    resources: Arc<Resources>,
    namespaces: Arc<Informer<Namespace>>,
    queue: Arc<WorkQueue<Key>>,
}

impl NamespaceController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        resources: Arc<Resources>,
        namespaces: Arc<Informer<Namespace>>,
        workers: usize,
    ) -> Result<(), Error> {
        let controller = Arc::new(NamespaceController {
            client,
            resources,
            namespaces: namespaces.clone(),
            queue: WorkQueue::new(),
        });
        let on_change = controller.clone();
        tokio::spawn(follow(namespaces.subscribe(), move |change| match change {
            Change::Applied(namespace) if namespace.metadata.deletion_timestamp.is_some() => {
                on_change.queue.add(Key::of(namespace.as_ref()))
            }
            Change::Relisted => on_change.enqueue_deleting(),
            _ => {}
        }));
        namespaces.synced().await;
        controller.enqueue_deleting();
        let worker = controller.clone();
        workers::run("namespace", controller.queue.clone(), workers, move |key| {
            worker.clone().reconcile(key)
        })
        .await
    }

    fn enqueue_deleting(&self) {
        for namespace in self.namespaces.store().state() {
            if namespace.metadata.deletion_timestamp.is_some() {
                self.queue.add(Key::of(namespace.as_ref()));
            }
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(namespace) = self.namespaces.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        let finalizers = namespace
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if namespace.metadata.deletion_timestamp.is_none()
            || !finalizers.iter().any(|f| f == KUBERNETES_FINALIZER)
        {
            return Ok(None);
        }
        let name = key.name.as_str();
        // Custom resources may have been defined since the last look.
        self.resources.refresh().await?;
        let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
        let mut finalizers_left: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures = Vec::new();
        for served in self.resources.preferred() {
            if !served.namespaced
                || !served.supports(verbs::LIST)
                || !served.supports(verbs::DELETE)
            {
                continue;
            }
            let api = served.api(&self.client, Some(name));
            let deleted = if served.supports(verbs::DELETE_COLLECTION) {
                api.delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await
                    .map(|_| ())
            } else {
                self.delete_each(&api).await
            };
            if let Err(error) = deleted {
                failures.push(format!("{}: {error}", served.name()));
                continue;
            }
            match api.list_metadata(&ListParams::default()).await {
                Ok(left) if !left.items.is_empty() => {
                    remaining.insert(served.name(), left.items.len());
                    for item in &left.items {
                        for finalizer in item.metadata.finalizers.iter().flatten() {
                            *finalizers_left.entry(finalizer.clone()).or_default() += 1;
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => failures.push(format!("{}: {error}", served.name())),
            }
        }
        self.report(&namespace, &remaining, &finalizers_left, &failures)
            .await?;
        if !remaining.is_empty() || !failures.is_empty() {
            return Ok(Some(RECHECK));
        }
        let mut finalized = (*namespace).clone();
        if let Some(spec) = finalized.spec.as_mut() {
            spec.finalizers = Some(
                finalizers
                    .into_iter()
                    .filter(|f| f != KUBERNETES_FINALIZER)
                    .collect(),
            );
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &finalized)
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = name, "emptied; finalized");
                Ok(None)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn delete_each(&self, api: &Api<kube::api::DynamicObject>) -> Result<(), kube::Error> {
        for item in api.list_metadata(&ListParams::default()).await?.items {
            let Some(name) = item.metadata.name.as_deref() else {
                continue;
            };
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Sets the deletion conditions kube-controller-manager sets, if they changed.
    async fn report(
        &self,
        namespace: &Namespace,
        remaining: &BTreeMap<String, usize>,
        finalizers: &BTreeMap<String, usize>,
        failures: &[String],
    ) -> Result<(), Error> {
        let condition = |type_: &str,
                         reason_true: &str,
                         (reason_false, message_false): (&str, &str),
                         message: Option<String>| {
            let (status, reason, message) = match message {
                Some(message) => ("True", reason_true, message),
                None => ("False", reason_false, message_false.to_owned()),
            };
            NamespaceCondition {
                type_: type_.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message),
                last_transition_time: None,
            }
        };
        let join = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} has {v} resource instances"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let wanted = vec![
            condition(
                "NamespaceDeletionContentFailure",
                "ContentDeletionFailed",
                (
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization",
                ),
                (!failures.is_empty()).then(|| {
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        failures.len(),
                        failures.join(", ")
                    )
                }),
            ),
            condition(
                "NamespaceContentRemaining",
                "SomeResourcesRemain",
                ("ContentRemoved", "All content successfully removed"),
                (!remaining.is_empty())
                    .then(|| format!("Some resources are remaining: {}", join(remaining))),
            ),
            condition(
                "NamespaceFinalizersRemaining",
                "SomeFinalizersRemain",
                (
                    "ContentHasNoFinalizers",
                    "All content-preserving finalizers finished",
                ),
                (!finalizers.is_empty()).then(|| {
                    format!(
                        "Some content in the namespace has finalizers remaining: {}",
                        join(finalizers)
                    )
                }),
            ),
        ];
        let current = namespace
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let mut conditions: Vec<NamespaceCondition> = current
            .iter()
            .filter(|c| !wanted.iter().any(|w| w.type_ == c.type_))
            .cloned()
            .collect();
        let mut changed = false;
        for mut want in wanted {
            let old = current.iter().find(|c| c.type_ == want.type_);
            match old {
                Some(old)
                    if old.status == want.status
                        && old.reason == want.reason
                        && old.message == want.message =>
                {
                    want.last_transition_time = old.last_transition_time.clone();
                }
                Some(old) if old.status == want.status => {
                    want.last_transition_time = old.last_transition_time.clone();
                    changed = true;
                }
                _ => {
                    want.last_transition_time = Some(Time(jiff::Timestamp::now()));
                    changed = true;
                }
            }
            conditions.push(want);
        }
        if !changed {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = namespace.metadata.name.as_deref().unwrap_or_default();
        unless_gone(
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conditions}})),
            )
            .await,
        )
    }
}
