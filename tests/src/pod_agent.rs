//! A stand-in for kubelets in control-plane tests: it watches the pods of a namespace and,
//! after a delay, reports each one Running and Ready with a pod IP through the pods' status
//! subresource, as a kubelet would once its containers started — once per pod, so a test may
//! then mark a pod not ready. No containers run. ([`crate::node_agent`] plays one node's
//! kubelet instead, heartbeats and all.)

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};

/// Marks pods Ready until dropped.
pub struct PodAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The status a kubelet reports once a pod's containers run and pass their probes.
pub fn running_status(ip: &str) -> Value {
    let now = jiff::Timestamp::now().to_string();
    json!({"status": {
        "phase": "Running",
        "startTime": now,
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }})
}

/// The annotation that tells the agents to report a pod's containers exited with this code
/// (Succeeded for 0, Failed otherwise) instead of running.
pub const EXIT_CODE: &str = "agent.basalt.test/exit-code";

/// The status a kubelet reports once a pod with restartPolicy Never or OnFailure has run to
/// its end with `code`.
pub fn finished_status(pod: &Pod, code: i32) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let (phase, reason) = if code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}}})
        })
        .collect();
    json!({"status": {
        "phase": phase,
        "startTime": now,
        "containerStatuses": containers,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ],
    }})
}

/// What the agent reports for `pod` once it "started": finished if the pod asks for an
/// exit code, else Running and Ready at `ip`.
pub fn status_for(pod: &Pod, ip: &str) -> Value {
    let code = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXIT_CODE))
        .and_then(|c| c.parse().ok());
    match code {
        Some(code) => finished_status(pod, code),
        None => running_status(ip),
    }
}

/// Runs `agent` with a client for `kubeconfig` (its current context) on a thread of its own.
pub fn run_in_thread<F, Fut>(kubeconfig: &Path, agent: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce(kube::Client) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("agent runtime");
        runtime.block_on(async move {
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .expect("kubeconfig");
            agent(kube::Client::try_from(config).expect("client")).await;
        });
    })
}

impl PodAgent {
    /// Starts marking the pods of `namespace` Ready `delay` after they appear, as the user
    /// of `kubeconfig` (its current context).
    pub fn start(kubeconfig: &Path, namespace: &str, delay: Duration) -> PodAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let namespace = namespace.to_owned();
        let stopping = stop.clone();
        let thread = run_in_thread(kubeconfig, move |client| async move {
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
            let mut started = std::collections::HashSet::new();
            let mut addresses = 0u32;
            let mut events = std::pin::pin!(
                watcher::watcher(pods.clone(), watcher::Config::default()).default_backoff()
            );
            while !stopping.load(Ordering::Relaxed) {
                let Ok(Some(event)) =
                    tokio::time::timeout(Duration::from_millis(200), events.next()).await
                else {
                    continue;
                };
                let (Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod))) = event else {
                    continue;
                };
                if pod.metadata.deletion_timestamp.is_some()
                    || is_ready(&pod)
                    || matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                {
                    continue;
                }
                if !started.insert(pod.metadata.uid.clone().unwrap_or_default()) {
                    continue;
                }
                addresses += 1;
                let ip = format!("10.244.{}.{}", addresses / 250, addresses % 250 + 1);
                let pods = pods.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    // A pod deleted meanwhile is fine to miss.
                    let _ = pods
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(status_for(&pod, &ip)),
                        )
                        .await;
                });
            }
        });
        PodAgent {
            stop,
            thread: Some(thread),
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
