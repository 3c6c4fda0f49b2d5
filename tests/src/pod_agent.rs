//! A stand-in for kubelets in control-plane tests: it watches the pods of a namespace and,
//! after a delay, reports each one Running and Ready with a pod IP through the pods' status
//! subresource, as a kubelet would once its containers started — once per pod, so a test may
//! then mark a pod not ready. No containers run.

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
use serde_json::json;

/// Marks pods Ready until dropped.
pub struct PodAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodAgent {
    /// Starts marking the pods of `namespace` Ready `delay` after they appear, as the user
    /// of `kubeconfig` (its current context).
    pub fn start(kubeconfig: &Path, namespace: &str, delay: Duration) -> PodAgent {
        let stop = Arc::new(AtomicBool::new(false));
        let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
        let namespace = namespace.to_owned();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("agent runtime");
            runtime.block_on(async move {
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .expect("kubeconfig");
                let client = kube::Client::try_from(config).expect("client");
                let pods: Api<Pod> = Api::namespaced(client, &namespace);
                let mut started = std::collections::HashSet::new();
                let mut addresses = 0u32;
                let mut events = std::pin::pin!(watcher::watcher(pods.clone(), watcher::Config::default()).default_backoff());
                while !stopping.load(Ordering::Relaxed) {
                    let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await else {
                        continue;
                    };
                    let (Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod))) = event else {
                        continue;
                    };
                    if pod.metadata.deletion_timestamp.is_some() || is_ready(&pod) {
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
                        let now = jiff::Timestamp::now().to_string();
                        let status = json!({"status": {
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
                        }});
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        // A pod deleted meanwhile is fine to miss.
                        let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await;
                    });
                }
            });
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
