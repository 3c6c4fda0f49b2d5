//! The pods bound to this node: a watch on them, one worker per pod (see [`worker`]), wake-ups
//! when containerd reports a container's exit, and — once the kubelet knows every pod it
//! should have — the removal of whatever containerd runs or the node holds for pods that are
//! no longer there (orphans left while the kubelet was down).

mod env;
mod files;
mod hooks;
mod instances;
mod probes;
mod status;
mod tokens;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, mpsc, watch};

pub use files::Dns;

/// The containerd labels that tie a container to its pod, for readers outside the workers.
pub(crate) mod labels {
    pub(crate) use super::instances::{
        ATTEMPT, CONTAINER, LOG_PATH, POD_NAME, POD_NAMESPACE, POD_UID, STARTED,
    };
}

use crate::runtime::{Runtime, TaskEvent};

/// What every pod worker shares.
pub struct Context {
    /// The API client (as this node).
    pub client: kube::Client,
    /// containerd.
    pub runtime: Runtime,
    /// The node's pod networks.
    pub network: podnet::PodNetwork,
    /// The node's name.
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: String,
    /// The kubelet's state directory (pods' files and volumes live under `pods/`).
    pub root_dir: PathBuf,
    /// Where container logs go (`/var/log/pods`).
    pub log_dir: PathBuf,
    /// The cgroup all pods live under.
    pub cgroup_parent: String,
    /// The log writer containerd's shims run for each container.
    pub log_program: PathBuf,
    /// Cluster DNS settings.
    pub dns: Dns,
}

struct Handle {
    pod: watch::Sender<Option<Pod>>,
    wake: Arc<Notify>,
}

/// Runs the pods bound to this node until the process ends.
pub async fn run(ctx: Arc<Context>) -> Result<()> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
    let (exits_tx, mut exits) = mpsc::channel::<TaskEvent>(256);
    tokio::spawn(forward_exits(ctx.runtime.clone(), exits_tx));
    let (done_tx, mut done) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listing: Option<HashSet<String>> = None;

    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(%error, "watching pods failed; retrying");
                        continue;
                    }
                };
                match event {
                    Event::Init => listing = Some(HashSet::new()),
                    Event::InitApply(pod) | Event::Apply(pod) => {
                        let Some(uid) = pod.metadata.uid.clone() else { continue };
                        if let Some(listing) = listing.as_mut() {
                            listing.insert(uid.clone());
                        }
                        upsert(&ctx, &mut workers, &done_tx, uid, Some(pod));
                    }
                    Event::Delete(pod) => {
                        if let Some(uid) = pod.metadata.uid.clone() {
                            upsert(&ctx, &mut workers, &done_tx, uid, None);
                        }
                    }
                    Event::InitDone => {
                        if let Some(present) = listing.take() {
                            for orphan in orphans(&ctx, &workers, &present).await {
                                tracing::info!(pod = %orphan, "removing what is left of a pod no longer bound here");
                                upsert(&ctx, &mut workers, &done_tx, orphan, None);
                            }
                        }
                    }
                }
            }
            Some(event) = exits.recv() => {
                let container = match event {
                    TaskEvent::Exit(id) => id,
                    TaskEvent::Oom(id) => {
                        // Recorded before the exit is reaped, so the exit reads OOMKilled.
                        if let Err(error) = ctx
                            .runtime
                            .set_labels(&id, HashMap::from([(instances::OOM_KILLED.to_string(), "true".to_string())]))
                            .await {
                            tracing::warn!(container = %id, %error, "recording an OOM kill");
                        }
                        id
                    }
                };
                if let Ok(found) = ctx.runtime.containers(&[]).await
                    && let Some(uid) = found
                        .iter()
                        .find(|c| c.id == container)
                        .and_then(|c| c.labels.get(instances::POD_UID))
                    && let Some(worker) = workers.get(uid)
                {
                    worker.wake.notify_one();
                }
            }
            Some(uid) = done.recv() => {
                workers.remove(&uid);
            }
        }
    }
}

/// Hands `pod` to its worker, starting one if there is none.
fn upsert(
    ctx: &Arc<Context>,
    workers: &mut HashMap<String, Handle>,
    done: &mpsc::UnboundedSender<String>,
    uid: String,
    pod: Option<Pod>,
) {
    if let Some(worker) = workers.get(&uid) {
        worker.pod.send_replace(pod);
        return;
    }
    let (pod_tx, pod_rx) = watch::channel(pod);
    let wake = Arc::new(Notify::new());
    let (ctx, done, id) = (Arc::clone(ctx), done.clone(), uid.clone());
    let worker_wake = Arc::clone(&wake);
    tokio::spawn(async move {
        worker::run(ctx, id.clone(), pod_rx, worker_wake).await;
        let _ = done.send(id);
    });
    workers.insert(uid, Handle { pod: pod_tx, wake });
}

/// Pods with containers or a network on this node that the API no longer binds here.
async fn orphans(
    ctx: &Context,
    workers: &HashMap<String, Handle>,
    present: &HashSet<String>,
) -> Vec<String> {
    let mut found: HashSet<String> = HashSet::new();
    match ctx.runtime.containers(&[]).await {
        Ok(containers) => found.extend(
            containers
                .into_iter()
                .filter_map(|c| c.labels.get(instances::POD_UID).cloned()),
        ),
        Err(error) => tracing::warn!(%error, "listing containers for orphans"),
    }
    match ctx.network.pods() {
        Ok(pods) => found.extend(pods),
        Err(error) => tracing::warn!(%error, "listing pod networks for orphans"),
    }
    found.extend(workers.keys().cloned());
    found
        .into_iter()
        .filter(|uid| !present.contains(uid))
        .collect()
}

/// Forwards containerd's task events, resubscribing when the stream breaks.
async fn forward_exits(runtime: Runtime, exits: mpsc::Sender<TaskEvent>) {
    loop {
        match runtime.events().await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(container) = stream.next().await {
                    if exits.send(container).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "subscribing to containerd's exit events"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
