//! Per-namespace defaults every pod relies on: the `default` ServiceAccount, and the
//! `kube-root-ca.crt` ConfigMap holding the cluster CA so pods can verify the API server.
//! Both are recreated if deleted and the ConfigMap is reset if edited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;
use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};

/// The account every namespace gets.
pub const DEFAULT_ACCOUNT: &str = "default";
/// The ConfigMap with the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The controller's shared state.
pub struct NamespaceDefaults {
    client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    accounts: Arc<Informer<ServiceAccount>>,
    configmaps: Arc<Informer<ConfigMap>>,
    root_ca: Option<String>,
    queue: Arc<WorkQueue<Key>>,
}

impl NamespaceDefaults {
    /// Runs until the process ends. Without `root_ca` (PEM) no ConfigMap is kept.
    pub async fn run(
        client: kube::Client,
        namespaces: Arc<Informer<Namespace>>,
        root_ca: Option<String>,
    ) -> Result<(), Error> {
        let by_name = |name: &str| {
            kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"))
        };
        let accounts = Informer::start_with(Api::all(client.clone()), by_name(DEFAULT_ACCOUNT));
        let configmaps = Informer::start_with(Api::all(client.clone()), by_name(ROOT_CA_CONFIGMAP));
        let controller = Arc::new(NamespaceDefaults {
            client,
            namespaces: namespaces.clone(),
            accounts: accounts.clone(),
            configmaps: configmaps.clone(),
            root_ca,
            queue: WorkQueue::new(),
        });
        let queue = controller.queue.clone();
        tokio::spawn(follow(namespaces.subscribe(), {
            let controller = controller.clone();
            move |change| match change {
                Change::Applied(namespace) => queue.add(Key::of(namespace.as_ref())),
                Change::Deleted(_) => {}
                Change::Relisted => controller.enqueue_all(),
            }
        }));
        tokio::spawn(follow(
            accounts.subscribe(),
            requeue_namespace(controller.queue.clone()),
        ));
        tokio::spawn(follow(
            configmaps.subscribe(),
            requeue_namespace(controller.queue.clone()),
        ));
        namespaces.synced().await;
        accounts.synced().await;
        configmaps.synced().await;
        controller.enqueue_all();
        let worker = controller.clone();
        workers::run(
            "namespace-defaults",
            controller.queue.clone(),
            2,
            move |key| worker.clone().reconcile(key),
        )
        .await
    }

    fn enqueue_all(&self) {
        for namespace in self.namespaces.store().state() {
            self.queue.add(Key::of(namespace.as_ref()));
        }
    }

    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(namespace) = self.namespaces.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        let terminating = namespace.metadata.deletion_timestamp.is_some()
            || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        if terminating {
            return Ok(None);
        }
        let name = key.name.as_str();
        let account_key = Key::namespaced(name, DEFAULT_ACCOUNT);
        if self
            .accounts
            .store()
            .get(&account_key.object_ref())
            .is_none()
        {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT_ACCOUNT.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
            created(api.create(&PostParams::default(), &account).await)?;
        }
        let Some(ca) = &self.root_ca else {
            return Ok(None);
        };
        let data: BTreeMap<String, String> = [("ca.crt".to_owned(), ca.clone())].into();
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), name);
        match self
            .configmaps
            .store()
            .get(&Key::namespaced(name, ROOT_CA_CONFIGMAP).object_ref())
        {
            None => {
                let configmap = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIGMAP.into()),
                        annotations: Some(
                            [(
                                "kubernetes.io/description".to_owned(),
                                DESCRIPTION.to_owned(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                created(api.create(&PostParams::default(), &configmap).await)?;
            }
            Some(current) if current.data.as_ref() != Some(&data) => {
                let patch = json!({"data": data, "binaryData": null});
                api.patch(
                    ROOT_CA_CONFIGMAP,
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await?;
            }
            Some(_) => {}
        }
        Ok(None)
    }
}

/// A change to one of a namespace's defaults sends the namespace back to the queue.
fn requeue_namespace<K: kube::Resource>(queue: Arc<WorkQueue<Key>>) -> impl FnMut(Change<K>) {
    move |change| {
        if let Change::Applied(object) | Change::Deleted(object) = change
            && let Some(namespace) = &object.meta().namespace
        {
            queue.add(Key {
                namespace: None,
                name: namespace.clone(),
            });
        }
    }
}

/// A create that lost a race, or hit a namespace that started terminating, is not an error.
fn created<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(kube::Error::Api(status))
            if status.code == 403 && status.message.contains("being terminated") =>
        {
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}
