//! The garbage collector: deletes objects whose owners are gone, and carries out foreground
//! and orphan deletion (the `foregroundDeletion` and `orphan` finalizers the API server sets
//! for `propagationPolicy`). It watches the metadata of every resource that can be listed,
//! watched and deleted, custom ones included, into the ownership [`graph`], and works the
//! graph's requests with the API.
//!
//! It does not decide whether an object has owners; controllers set owner references.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use graph::{Graph, Identity, Known, Observed, Owner, OwnerState, Propagation, Verdict, Work};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use parking_lot::Mutex;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::queue::WorkQueue;
use crate::resources::{Resources, Served, collectable};
use crate::{Error, unless_gone};

/// The finalizer that holds an owner until its blocking dependents are gone.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer that holds an owner until its dependents are released.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// How often discovery is read again for new or removed resources.
const RESYNC_RESOURCES: Duration = Duration::from_secs(30);
/// How long workers wait for the first listing of every resource before they start.
const INITIAL_SYNC: Duration = Duration::from_secs(30);
/// How long after a definition changes discovery is read again.
const DEFINITIONS_SETTLE: Duration = Duration::from_millis(300);
/// Uids known to be gone, kept so dependents do not each ask the API; bounded.
const ABSENT_CAPACITY: usize = 10_000;

struct Monitor {
    task: JoinHandle<()>,
    synced: Arc<tokio::sync::Notify>,
    is_synced: Arc<std::sync::atomic::AtomicBool>,
}

/// The collector's state, shared by its monitors and workers.
pub struct GarbageCollector {
    client: kube::Client,
    resources: Arc<Resources>,
    graph: Mutex<Graph>,
    queue: Arc<WorkQueue<Work>>,
    absent: Mutex<HashSet<String>>,
    monitors: Mutex<HashMap<String, Monitor>>,
}

impl GarbageCollector {
    /// A collector using `client`, resolving kinds with `resources`.
    pub fn new(client: kube::Client, resources: Arc<Resources>) -> Arc<GarbageCollector> {
        Arc::new(GarbageCollector {
            client,
            resources,
            graph: Mutex::new(Graph::new()),
            queue: WorkQueue::new(),
            absent: Mutex::new(HashSet::new()),
            monitors: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until the process ends: keeps a monitor per resource and `workers` workers.
    pub async fn run(self: Arc<Self>, workers: usize) -> Result<(), Error> {
        self.resources.refresh().await?;
        self.sync_monitors();
        self.wait_for_monitors().await;
        tracing::info!(
            objects = self.graph.lock().len(),
            "garbage collector synced"
        );
        for _ in 0..workers.max(1) {
            let gc = self.clone();
            tokio::spawn(async move { gc.work().await });
        }
        // A new CustomResourceDefinition is a new resource to monitor: look soon, not in 30 s.
        let definitions_changed = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(watch_definitions(
            self.client.clone(),
            definitions_changed.clone(),
        ));
        loop {
            tokio::select! {
                () = tokio::time::sleep(RESYNC_RESOURCES) => {}
                () = definitions_changed.notified() => {
                    // Let a burst of definition changes (create, then Established) settle.
                    tokio::time::sleep(DEFINITIONS_SETTLE).await;
                }
            }
            match self.resources.refresh().await {
                Ok(()) => self.sync_monitors(),
                Err(error) => tracing::warn!(%error, "discovery failed; keeping the monitors"),
            }
        }
    }

    /// Starts a monitor for each collectable resource not monitored, stops those whose
    /// resource is no longer served.
    fn sync_monitors(self: &Arc<Self>) {
        let wanted: HashMap<String, Served> = self
            .resources
            .preferred()
            .into_iter()
            .filter(|s| collectable(s) && !ignored(s))
            .map(|s| (s.name(), s))
            .collect();
        let mut monitors = self.monitors.lock();
        monitors.retain(|name, monitor| {
            let keep = wanted.contains_key(name);
            if !keep {
                tracing::info!(resource = %name, "no longer served; stopped monitoring");
                monitor.task.abort();
            }
            keep
        });
        for (name, served) in wanted {
            if monitors.contains_key(&name) {
                continue;
            }
            let synced = Arc::new(tokio::sync::Notify::new());
            let is_synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let task = tokio::spawn(self.clone().monitor(
                served,
                synced.clone(),
                is_synced.clone(),
            ));
            monitors.insert(
                name,
                Monitor {
                    task,
                    synced,
                    is_synced,
                },
            );
        }
    }

    async fn wait_for_monitors(&self) {
        let waits: Vec<_> = self
            .monitors
            .lock()
            .values()
            .map(|m| (m.synced.clone(), m.is_synced.clone()))
            .collect();
        let all = futures::future::join_all(waits.into_iter().map(|(notify, done)| async move {
            let notified = notify.notified();
            if !done.load(std::sync::atomic::Ordering::Acquire) {
                notified.await;
            }
        }));
        if tokio::time::timeout(INITIAL_SYNC, all).await.is_err() {
            tracing::warn!("not every resource listed in time; collecting anyway");
        }
    }

    /// Feeds one resource's watch into the graph. A relist that misses objects seen
    /// before counts them as deleted.
    async fn monitor(
        self: Arc<Self>,
        served: Served,
        synced: Arc<tokio::sync::Notify>,
        is_synced: Arc<std::sync::atomic::AtomicBool>,
    ) {
        // An Api of PartialObjectMeta asks the server for metadata alone.
        let api: kube::Api<PartialObjectMeta<DynamicObject>> =
            kube::Api::all_with(self.client.clone(), &served.api);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut known: HashSet<String> = HashSet::new();
        let mut relisted: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => relisted.clear(),
                Ok(Event::InitApply(meta)) => {
                    if let Some(uid) = self.observe(&served, &meta) {
                        relisted.insert(uid);
                    }
                }
                Ok(Event::InitDone) => {
                    for uid in known.difference(&relisted) {
                        self.gone(uid);
                    }
                    known = std::mem::take(&mut relisted);
                    is_synced.store(true, std::sync::atomic::Ordering::Release);
                    synced.notify_waiters();
                }
                Ok(Event::Apply(meta)) => {
                    if let Some(uid) = self.observe(&served, &meta) {
                        known.insert(uid);
                    }
                }
                Ok(Event::Delete(meta)) => {
                    if let Some(uid) = meta.metadata.uid.as_deref() {
                        known.remove(uid);
                        self.gone(uid);
                    }
                }
                Err(error) => {
                    tracing::debug!(resource = %served.name(), %error, "watch failed; retrying")
                }
            }
        }
    }

    fn observe(&self, served: &Served, meta: &PartialObjectMeta<DynamicObject>) -> Option<String> {
        let observed = observed(served, meta)?;
        let uid = observed.identity.uid.clone();
        let work = self.graph.lock().observe(observed);
        self.enqueue(work);
        Some(uid)
    }

    fn gone(&self, uid: &str) {
        self.remember_absent(uid);
        let work = self.graph.lock().forget(uid);
        self.enqueue(work);
    }

    fn enqueue(&self, work: Vec<Work>) {
        for item in work {
            self.queue.add(item);
        }
    }

    fn remember_absent(&self, uid: &str) {
        let mut absent = self.absent.lock();
        if absent.len() >= ABSENT_CAPACITY {
            absent.clear();
        }
        absent.insert(uid.to_owned());
    }

    async fn work(self: Arc<Self>) {
        loop {
            let item = self.queue.next().await;
            let result = match &item {
                Work::AttemptToDelete(uid) => self.attempt_to_delete(uid).await,
                Work::Orphan(uid) => self.orphan_dependents(uid).await.map(|()| Attempt::Done),
            };
            match result {
                Ok(Attempt::Done) => self.queue.forget(&item),
                Ok(Attempt::Again) => self.queue.retry(item.clone()),
                Err(error) => {
                    tracing::warn!(?item, %error, "garbage collection failed; will retry");
                    self.queue.retry(item.clone());
                }
            }
            self.queue.done(&item);
        }
    }

    async fn attempt_to_delete(&self, uid: &str) -> Result<Attempt, Error> {
        let Some(view) = self.graph.lock().view(uid) else {
            return Ok(Attempt::Done);
        };
        if !view.observed {
            // A virtual owner: collect its dependents only once the API says it is gone.
            // If it exists but no watch has shown it yet (its resource is new, or it came
            // and went while a watch was re-established), look again later.
            if self.lookup(&view.identity).await?.is_some() {
                return Ok(Attempt::Again);
            }
            self.remember_absent(uid);
            let work = self.graph.lock().forget_virtual(uid);
            self.enqueue(work);
            return Ok(Attempt::Done);
        }
        self.attempt_to_delete_observed(view)
            .await
            .map(|()| Attempt::Done)
    }

    async fn attempt_to_delete_observed(&self, view: graph::View) -> Result<(), Error> {
        let uid = view.identity.uid.as_str();
        if view.deleting_dependents {
            let blocking: Vec<_> = view.dependents.iter().filter(|d| d.blocks).collect();
            if blocking.is_empty() {
                tracing::info!(object = %describe(&view.identity), "dependents gone; finishing foreground deletion");
                return self
                    .remove_finalizer(&view.identity, FOREGROUND_FINALIZER)
                    .await;
            }
            for dependent in blocking.iter().filter(|d| !d.deleting_dependents) {
                self.queue
                    .add(Work::AttemptToDelete(dependent.identity.uid.clone()));
            }
            return Ok(());
        }
        if view.deleting {
            return Ok(());
        }
        let Some(live) = self.lookup(&view.identity).await? else {
            self.gone(uid);
            return Ok(());
        };
        let references = live.metadata.owner_references.clone().unwrap_or_default();
        if references.is_empty() {
            return Ok(());
        }
        let mut owners = Vec::with_capacity(references.len());
        for reference in &references {
            let owner = Identity {
                api_version: reference.api_version.clone(),
                kind: reference.kind.clone(),
                namespace: view.identity.namespace.clone(),
                name: reference.name.clone(),
                uid: reference.uid.clone(),
            };
            owners.push((reference.uid.clone(), self.owner_state(&owner).await?));
        }
        let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
        let has = |f: &str| finalizers.iter().any(|x| x == f);
        let verdict = graph::decide(
            &owners,
            !view.dependents.is_empty(),
            has(ORPHAN_FINALIZER),
            has(FOREGROUND_FINALIZER),
        );
        match verdict {
            Verdict::Keep => Ok(()),
            Verdict::DropOwnerReferences(gone) => {
                tracing::info!(object = %describe(&view.identity), owners = ?gone, "dropping references to owners that are gone");
                self.drop_owner_references(&view.identity, &gone).await
            }
            Verdict::Delete(propagation) => {
                tracing::info!(object = %describe(&view.identity), ?propagation, "owners gone; deleting");
                self.delete(&view.identity, propagation).await
            }
        }
    }

    async fn owner_state(&self, owner: &Identity) -> Result<OwnerState, Error> {
        if self.absent.lock().contains(&owner.uid) {
            return Ok(OwnerState::Dangling);
        }
        let known = self.graph.lock().known(&owner.uid);
        match known {
            Known::Present {
                deleting_dependents: true,
            } => Ok(OwnerState::Waiting),
            Known::Present { .. } => Ok(OwnerState::Solid),
            Known::Unknown => match self.lookup(owner).await? {
                None => {
                    self.remember_absent(&owner.uid);
                    Ok(OwnerState::Dangling)
                }
                Some(live) => {
                    let waiting = live.metadata.deletion_timestamp.is_some()
                        && live
                            .metadata
                            .finalizers
                            .iter()
                            .flatten()
                            .any(|f| f == FOREGROUND_FINALIZER);
                    Ok(if waiting {
                        OwnerState::Waiting
                    } else {
                        OwnerState::Solid
                    })
                }
            },
        }
    }

    /// Releases the dependents of an owner deleted with the orphan policy, then lets the
    /// owner go.
    async fn orphan_dependents(&self, uid: &str) -> Result<(), Error> {
        let Some(view) = self.graph.lock().view(uid) else {
            return Ok(());
        };
        for dependent in &view.dependents {
            self.drop_owner_references(&dependent.identity, &[uid.to_owned()])
                .await?;
        }
        tracing::info!(object = %describe(&view.identity), dependents = view.dependents.len(), "orphaned dependents");
        self.remove_finalizer(&view.identity, ORPHAN_FINALIZER)
            .await
    }

    async fn api(&self, identity: &Identity) -> Result<kube::Api<DynamicObject>, Error> {
        let served = self
            .resources
            .resolve(&identity.api_version, &identity.kind)
            .await
            .ok_or_else(|| Error::UnknownKind {
                api_version: identity.api_version.clone(),
                kind: identity.kind.clone(),
            })?;
        Ok(served.api(&self.client, identity.namespace.as_deref()))
    }

    /// The object's metadata if it exists with the identity's uid.
    async fn lookup(
        &self,
        identity: &Identity,
    ) -> Result<Option<PartialObjectMeta<DynamicObject>>, Error> {
        let api = self.api(identity).await?;
        let live = api.get_metadata_opt(&identity.name).await?;
        Ok(live.filter(|l| l.metadata.uid.as_deref() == Some(identity.uid.as_str())))
    }

    /// Removes the owner references to `owners` from the object, with its resourceVersion
    /// as a precondition (a conflict is retried by the queue).
    async fn drop_owner_references(
        &self,
        object: &Identity,
        owners: &[String],
    ) -> Result<(), Error> {
        let Some(live) = self.lookup(object).await? else {
            return Ok(());
        };
        let references = live.metadata.owner_references.clone().unwrap_or_default();
        let kept: Vec<_> = references
            .iter()
            .filter(|r| !owners.contains(&r.uid))
            .collect();
        if kept.len() == references.len() {
            return Ok(());
        }
        self.rewrite_list(object, &live, "ownerReferences", &kept)
            .await
    }

    async fn remove_finalizer(&self, object: &Identity, finalizer: &str) -> Result<(), Error> {
        let Some(live) = self.lookup(object).await? else {
            return Ok(());
        };
        let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let kept: Vec<_> = finalizers.iter().filter(|f| *f != finalizer).collect();
        self.rewrite_list(object, &live, "finalizers", &kept).await
    }

    /// Sets the metadata list `field` of the object to `kept` (removing it when empty), if
    /// the object is still as `live` shows it.
    async fn rewrite_list<T: serde::Serialize>(
        &self,
        object: &Identity,
        live: &PartialObjectMeta<DynamicObject>,
        field: &str,
        kept: &[T],
    ) -> Result<(), Error> {
        let kept = if kept.is_empty() {
            json!(null)
        } else {
            json!(kept)
        };
        let patch = json!({"metadata": {
            "resourceVersion": live.metadata.resource_version,
            "uid": object.uid,
            field: kept,
        }});
        let api = self.api(object).await?;
        unless_gone(
            api.patch_metadata(&object.name, &PatchParams::default(), &Patch::Merge(patch))
                .await,
        )
    }

    async fn delete(&self, object: &Identity, propagation: Propagation) -> Result<(), Error> {
        let api = self.api(object).await?;
        let params = DeleteParams {
            propagation_policy: Some(match propagation {
                Propagation::Background => kube::api::PropagationPolicy::Background,
                Propagation::Foreground => kube::api::PropagationPolicy::Foreground,
                Propagation::Orphan => kube::api::PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(object.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&object.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or the name now belongs to another object.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// Whether a piece of work is finished or must be looked at again later.
enum Attempt {
    Done,
    Again,
}

/// Notifies `changed` whenever a CustomResourceDefinition is added, changed or removed.
async fn watch_definitions(client: kube::Client, changed: Arc<tokio::sync::Notify>) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<PartialObjectMeta<CustomResourceDefinition>> = kube::Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        if matches!(
            event,
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone)
        ) {
            changed.notify_one();
        }
    }
}

/// Resources the collector leaves alone: events are never owners and churn the most.
fn ignored(served: &Served) -> bool {
    served.api.plural == "events" && matches!(served.api.group.as_str(), "" | "events.k8s.io")
}

fn observed(served: &Served, meta: &PartialObjectMeta<DynamicObject>) -> Option<Observed> {
    let metadata = &meta.metadata;
    let uid = metadata.uid.clone()?;
    let finalizers = metadata.finalizers.as_deref().unwrap_or_default();
    Some(Observed {
        identity: Identity {
            api_version: served.api.api_version.clone(),
            kind: served.api.kind.clone(),
            namespace: metadata.namespace.clone(),
            name: metadata.name.clone().unwrap_or_default(),
            uid,
        },
        owners: metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| Owner {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
                block_owner_deletion: r.block_owner_deletion.unwrap_or(false),
            })
            .collect(),
        deleting: metadata.deletion_timestamp.is_some(),
        orphan_finalizer: finalizers.iter().any(|f| f == ORPHAN_FINALIZER),
        foreground_finalizer: finalizers.iter().any(|f| f == FOREGROUND_FINALIZER),
    })
}

fn describe(identity: &Identity) -> String {
    match &identity.namespace {
        Some(namespace) => format!("{} {namespace}/{}", identity.kind, identity.name),
        None => format!("{} {}", identity.kind, identity.name),
    }
}
