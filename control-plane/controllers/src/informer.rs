//! Shared informers: one watch and one cache per resource type for every controller in the
//! process, and a broadcast of each change (deletions included) to the controllers that
//! subscribe. kube-runtime's shared reflector does not pass deletions on, and a ReplicaSet
//! must hear that its pod was deleted, so the broadcast is ours; the cache is kube-runtime's,
//! with a namespace index of our own so a controller looking at one namespace does not scan
//! the whole cluster.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// One change, as subscribers hear it.
#[derive(Debug)]
pub enum Change<K> {
    /// An object was added or modified.
    Applied(Arc<K>),
    /// An object was deleted (its last state).
    Deleted(Arc<K>),
    /// The cache was listed again from scratch; deletions during the gap were not announced,
    /// so subscribers look at everything again.
    Relisted,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(object) => Change::Applied(object.clone()),
            Change::Deleted(object) => Change::Deleted(object.clone()),
            Change::Relisted => Change::Relisted,
        }
    }
}

/// The cache of one resource type, kept current by a watch.
pub struct Informer<K: Resource + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    /// The cached objects by namespace, then name.
    by_namespace: Arc<RwLock<NamespaceIndex<K>>>,
    changes: broadcast::Sender<Change<K>>,
    /// Whether the first listing is in the cache. (kube-runtime's `wait_until_ready` wakes
    /// only one of several concurrent waiters.)
    listed: tokio::sync::watch::Sender<bool>,
}

type NamespaceIndex<K> = HashMap<String, HashMap<String, Arc<K>>>;

fn index_key<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// How many changes a slow subscriber may fall behind before it must look at everything.
const BACKLOG: usize = 8192;

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching `api`.
    pub fn start(api: Api<K>) -> Arc<Informer<K>> {
        Informer::start_with(api, watcher::Config::default())
    }

    /// Starts watching the objects of `api` that `config`'s selectors pick.
    pub fn start_with(api: Api<K>, config: watcher::Config) -> Arc<Informer<K>> {
        let (store, mut writer) = reflector::store();
        let (changes, _) = broadcast::channel(BACKLOG);
        let listed = tokio::sync::watch::Sender::new(false);
        let by_namespace: Arc<RwLock<NamespaceIndex<K>>> = Arc::default();
        let informer = Arc::new(Informer {
            store: store.clone(),
            by_namespace: by_namespace.clone(),
            changes: changes.clone(),
            listed: listed.clone(),
        });
        // A relisting is indexed aside and swapped in whole when it is complete.
        let mut relisting: Option<NamespaceIndex<K>> = None;
        let kind = K::kind(&());
        tokio::spawn(async move {
            let stream = watcher::watcher(api, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::debug!(%kind, %error, "watch failed; retrying");
                        continue;
                    }
                };
                writer.apply_watcher_event(&event);
                // The cache holds it now; share its copy.
                let cached = |object: K| {
                    store
                        .get(&ObjectRef::from_obj(&object))
                        .unwrap_or_else(|| Arc::new(object))
                };
                let change = match event {
                    Event::Apply(object) => {
                        let object = cached(object);
                        let (namespace, name) = index_key(object.as_ref());
                        by_namespace
                            .write()
                            .entry(namespace)
                            .or_default()
                            .insert(name, object.clone());
                        Change::Applied(object)
                    }
                    Event::Delete(object) => {
                        let (namespace, name) = index_key(&object);
                        let mut index = by_namespace.write();
                        if let Some(names) = index.get_mut(&namespace) {
                            names.remove(&name);
                            if names.is_empty() {
                                index.remove(&namespace);
                            }
                        }
                        Change::Deleted(Arc::new(object))
                    }
                    Event::Init => {
                        relisting = Some(HashMap::new());
                        continue;
                    }
                    Event::InitApply(object) => {
                        let object = cached(object);
                        let (namespace, name) = index_key(object.as_ref());
                        relisting
                            .get_or_insert_with(HashMap::new)
                            .entry(namespace)
                            .or_default()
                            .insert(name, object);
                        continue;
                    }
                    Event::InitDone => {
                        *by_namespace.write() = relisting.take().unwrap_or_default();
                        listed.send_replace(true);
                        Change::Relisted
                    }
                };
                // No subscriber yet is fine: the cache is what matters.
                let _ = changes.send(change);
            }
        });
        informer
    }

    /// The cache.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// The cached objects in `namespace` (`""` for cluster-scoped ones).
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.by_namespace
            .read()
            .get(namespace)
            .map(|names| names.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The cached objects in `namespace` whose controller is the object `owner_uid`.
    pub fn controlled_by(&self, namespace: &str, owner_uid: &str) -> Vec<Arc<K>> {
        let index = self.by_namespace.read();
        index
            .get(namespace)
            .into_iter()
            .flat_map(|names| names.values())
            .filter(|o| crate::pods::controller_of(o.meta()).is_some_and(|r| r.uid == owner_uid))
            .cloned()
            .collect()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }

    /// Waits until the first listing is in the cache.
    pub async fn synced(&self) {
        // The sender lives in the informer, so the wait cannot fail.
        let _ = self.listed.subscribe().wait_for(|listed| *listed).await;
    }
}

/// Feeds a subscription into `on_change` until the informer goes away; a subscriber that
/// fell behind is told [`Change::Relisted`].
pub async fn follow<K>(
    mut changes: broadcast::Receiver<Change<K>>,
    mut on_change: impl FnMut(Change<K>),
) {
    loop {
        match changes.recv().await {
            Ok(change) => on_change(change),
            Err(broadcast::error::RecvError::Lagged(_)) => on_change(Change::Relisted),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
