//! A stand-in for a kubelet in control-plane tests: it registers a Node (Ready, with room
//! for pods), renews the node's Lease in `kube-node-lease` every second, reports the pods
//! bound to it Running and Ready, and finishes the deletion of its pods being deleted (as a
//! kubelet does once their containers stopped). Stopping it is a node losing power: no
//! more heartbeats, and its pods are left as they were. No containers run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::pod_agent::{self, run_in_thread};

/// How often the Lease is renewed (a kubelet renews a quarter of its 40 s duration).
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Each agent's pods get addresses from their own /24.
static NEXT_SUBNET: AtomicU32 = AtomicU32::new(100);

/// A node's kubelet, until stopped or dropped.
pub struct NodeAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn node(name: &str) -> Node {
    let now = jiff::Timestamp::now().to_string();
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
        },
    }))
    .expect("a node")
}

/// Registers the node, or reports it Ready again if it exists (a kubelet coming back).
async fn register(nodes: &Api<Node>, name: &str) {
    let fresh = node(name);
    match nodes.create(&PostParams::default(), &fresh).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = json!({"status": {"conditions": fresh.status.and_then(|s| s.conditions)}});
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .expect("reporting the node Ready");
        }
        Err(error) => panic!("registering node {name}: {error}"),
    }
}

async fn renew(leases: &Api<Lease>, name: &str) {
    let now = jiff::Timestamp::now().to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
    });
    let params = PatchParams::apply("node-agent").force();
    // A renewal that fails is retried a second later, as a kubelet's would be.
    let _ = leases.patch(name, &params, &Patch::Apply(lease)).await;
}

impl NodeAgent {
    /// Registers node `name` as the user of `kubeconfig` and starts playing its kubelet.
    pub fn start(kubeconfig: &Path, name: &str) -> NodeAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let name = name.to_owned();
        let subnet = NEXT_SUBNET.fetch_add(1, Ordering::Relaxed) % 250;
        let thread = run_in_thread(kubeconfig, move |client| async move {
            let nodes: Api<Node> = Api::all(client.clone());
            register(&nodes, &name).await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            let pods: Api<Pod> = Api::all(client.clone());
            let config = watcher::Config::default().fields(&format!("spec.nodeName={name}"));
            let mut events = std::pin::pin!(watcher::watcher(pods, config).default_backoff());
            let mut started = std::collections::HashSet::new();
            let mut renewal = tokio::time::interval(RENEW_EVERY);
            while !stopping.load(Ordering::Relaxed) {
                let event = tokio::select! {
                    _ = renewal.tick() => {
                        renew(&leases, &name).await;
                        continue;
                    }
                    event = events.next() => event,
                };
                let Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) = event else {
                    continue;
                };
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                if pod.metadata.deletion_timestamp.is_some() {
                    let now = DeleteParams::default().grace_period(0);
                    // Gone already is fine.
                    let _ = api.delete(&pod_name, &now).await;
                    continue;
                }
                if !started.insert(pod.metadata.uid.clone().unwrap_or_default()) {
                    continue;
                }
                let ip = format!("10.244.{subnet}.{}", started.len() % 250 + 1);
                let _ = api
                    .patch_status(
                        &pod_name,
                        &PatchParams::default(),
                        &Patch::Merge(pod_agent::status_for(&pod, &ip)),
                    )
                    .await;
            }
        });
        NodeAgent {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops heartbeating and looking after pods, as a node that lost power.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.stop();
    }
}
