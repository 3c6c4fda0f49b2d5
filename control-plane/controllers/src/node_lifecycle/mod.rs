//! The node lifecycle controller: watches for kubelets that stop reporting (no new heartbeat
//! in the node's status and no renewal of its Lease in `kube-node-lease`), turns their
//! conditions Unknown after the grace period, marks their pods not ready, and taints nodes
//! as their conditions call for — NoSchedule for new pods, NoExecute (`not-ready`,
//! `unreachable`) so the taint-eviction controller moves pods off. New NoExecute taints are
//! rate limited per zone and stop when every zone is down (that is the control plane's
//! network failing, not the nodes). The rules are in [`health`].
//!
//! Evicting pods from tainted nodes is [`crate::taint_eviction`]'s job, not this one's.

pub mod health;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::json;

use self::health::{Evicting, Grace, Probe, ZONE_LABEL, ZoneState};
use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, pods, unless_gone};

/// The namespace of the kubelets' heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The controller's settings, by kube-controller-manager's flag names.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How often every node is looked at (`--node-monitor-period`).
    pub monitor_period: Duration,
    /// How long a node may be silent (`--node-monitor-grace-period`,
    /// `--node-startup-grace-period`).
    pub grace: Grace,
    /// Nodes per second that may get a new NoExecute taint, per zone
    /// (`--node-eviction-rate`).
    pub eviction_rate: f64,
    /// The rate in a zone in partial disruption (`--secondary-node-eviction-rate`).
    pub secondary_eviction_rate: f64,
    /// The share of down nodes that puts a zone in partial disruption
    /// (`--unhealthy-zone-threshold`).
    pub unhealthy_zone_threshold: f64,
    /// A zone this size or smaller stops evicting in partial disruption
    /// (`--large-cluster-size-threshold`).
    pub large_cluster_threshold: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            monitor_period: Duration::from_secs(5),
            grace: Grace {
                monitor: Duration::from_secs(40),
                startup: Duration::from_secs(60),
            },
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_threshold: 50,
        }
    }
}

/// One zone's state and its NoExecute rate limit.
struct Zone {
    state: ZoneState,
    size: usize,
    /// When the next node of the zone may get a new NoExecute taint.
    next_taint: Option<jiff::Timestamp>,
}

/// The controller's shared state.
pub struct NodeLifecycleController {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    leases: Arc<Informer<Lease>>,
    pods: Arc<Informer<Pod>>,
    settings: Settings,
    probes: Mutex<HashMap<String, Probe>>,
    zones: Mutex<HashMap<String, Zone>>,
    /// Every zone is fully disrupted: no node gets a NoExecute taint.
    all_down: AtomicBool,
    queue: Arc<WorkQueue<Key>>,
    events: events::Recorder,
}

fn zone_of(node: &Node) -> String {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .cloned()
        .unwrap_or_default()
}

impl NodeLifecycleController {
    /// Runs until the process ends.
    pub async fn run(
        client: kube::Client,
        nodes: Arc<Informer<Node>>,
        pods: Arc<Informer<Pod>>,
        settings: Settings,
        events: events::Recorder,
    ) -> Result<(), Error> {
        let leases = Informer::<Lease>::start(Api::namespaced(client.clone(), LEASE_NAMESPACE));
        let controller = Arc::new(NodeLifecycleController {
            events,
            client,
            nodes: nodes.clone(),
            leases: leases.clone(),
            pods: pods.clone(),
            settings,
            probes: Mutex::new(HashMap::new()),
            zones: Mutex::new(HashMap::new()),
            all_down: AtomicBool::new(false),
            queue: WorkQueue::new(),
        });
        let on_node = controller.clone();
        tokio::spawn(follow(nodes.subscribe(), move |change| match change {
            Change::Applied(node) => on_node.queue.add(Key::of(node.as_ref())),
            // The next monitor pass forgets its probe.
            Change::Deleted(_) | Change::Relisted => {}
        }));
        nodes.synced().await;
        leases.synced().await;
        pods.synced().await;
        let monitor = controller.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(monitor.settings.monitor_period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                monitor.monitor_pass().await;
            }
        });
        let worker = controller.clone();
        workers::run("nodelifecycle", controller.queue.clone(), 2, move |key| {
            worker.clone().reconcile(key)
        })
        .await
    }

    /// Looks at every node: turns the silent ones Unknown, then works out each zone's
    /// state from the result, then queues every node for its taints. (Zone states must see
    /// this pass's Unknowns, or the first nodes of a dead zone would be tainted before the
    /// zone is known to be dead.)
    async fn monitor_pass(&self) {
        let now = jiff::Timestamp::now();
        let mut nodes = self.nodes.store().state();
        let names: std::collections::HashSet<_> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        self.probes.lock().retain(|name, _| names.contains(name));
        for node in &mut nodes {
            match self.check_health(node, now).await {
                Ok(Some(updated)) => *node = Arc::new(updated),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(node = ?node.metadata.name, %error, "updating node health failed; retrying next pass")
                }
            }
        }
        let mut ready_by_zone: HashMap<String, Vec<bool>> = HashMap::new();
        for node in &nodes {
            ready_by_zone
                .entry(zone_of(node))
                .or_default()
                .push(health::ready_status(node) == Some("True"));
        }
        let mut zones = self.zones.lock();
        zones.retain(|name, _| ready_by_zone.contains_key(name));
        for (name, ready) in &ready_by_zone {
            let state = health::zone_state(
                ready.iter().copied(),
                self.settings.unhealthy_zone_threshold,
            );
            let zone = zones.entry(name.clone()).or_insert(Zone {
                state,
                size: 0,
                next_taint: None,
            });
            if zone.state != state {
                tracing::warn!(zone = %name, from = ?zone.state, to = ?state, "zone state changed");
            }
            zone.state = state;
            zone.size = ready.len();
        }
        let all_down =
            !zones.is_empty() && zones.values().all(|z| z.state == ZoneState::FullDisruption);
        if all_down != self.all_down.swap(all_down, Ordering::Relaxed) {
            if all_down {
                tracing::warn!("every node is down; no evictions until some come back");
            } else {
                tracing::info!("nodes are back; evictions resume");
            }
        }
        drop(zones);
        for node in &nodes {
            self.queue.add(Key::of(node.as_ref()));
        }
    }

    /// Notes the node's signs of life; if it has been silent too long, writes its
    /// conditions Unknown and returns the node as written.
    async fn check_health(&self, node: &Node, now: jiff::Timestamp) -> Result<Option<Node>, Error> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let lease = self
            .leases
            .store()
            .get(&Key::namespaced(LEASE_NAMESPACE, &name).object_ref());
        let probe = {
            let mut probes = self.probes.lock();
            let probe = health::observe(probes.get(&name), node, lease.as_deref(), now);
            probes.insert(name.clone(), probe.clone());
            probe
        };
        let Some(conditions) = health::stale_conditions(node, &probe, self.settings.grace, now)
        else {
            return Ok(None);
        };
        let was = health::ready_status(node).map(str::to_owned);
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conditions},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        let written = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        tracing::warn!(node = %name, was = ?was, "kubelet stopped posting node status; conditions now Unknown");
        if was.as_deref() == Some("True") {
            self.events.record(
                &written,
                events::Kind::Normal,
                "NodeNotReady",
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            );
        }
        Ok(Some(written))
    }

    /// Whether `node` may get NoExecute taints now; a new one takes a token of its zone.
    fn evicting(&self, node: &Node, now: jiff::Timestamp) -> (Evicting, Option<Duration>) {
        if self.all_down.load(Ordering::Relaxed) {
            return (Evicting::Stopped, None);
        }
        if !health::needs_new_no_execute(node) {
            return (Evicting::Allowed, None);
        }
        let mut zones = self.zones.lock();
        let Some(zone) = zones.get_mut(&zone_of(node)) else {
            // Not seen by a monitor pass yet: the next pass decides.
            return (Evicting::Held, Some(self.settings.monitor_period));
        };
        let rate = match zone.state {
            ZoneState::Normal | ZoneState::FullDisruption => self.settings.eviction_rate,
            ZoneState::PartialDisruption if zone.size <= self.settings.large_cluster_threshold => {
                0.0
            }
            ZoneState::PartialDisruption => self.settings.secondary_eviction_rate,
        };
        if rate <= 0.0 || !rate.is_finite() {
            return (Evicting::Held, None);
        }
        if let Some(next) = zone.next_taint
            && now < next
        {
            let wait = next.duration_since(now).unsigned_abs();
            return (Evicting::Held, Some(wait));
        }
        let interval = jiff::SignedDuration::from_secs_f64((1.0 / rate).min(86_400.0));
        zone.next_taint = now.checked_add(interval).ok();
        (Evicting::Allowed, None)
    }

    /// Marks the pods of a node that is not Ready not ready, and sets its taints.
    async fn reconcile(self: Arc<Self>, key: Key) -> Result<Option<Duration>, Error> {
        let Some(node) = self.nodes.store().get(&key.object_ref()) else {
            return Ok(None);
        };
        let now = jiff::Timestamp::now();
        if health::ready_status(&node) != Some("True") {
            self.mark_pods_not_ready(&key.name, now).await?;
        }
        let (evicting, recheck) = self.evicting(&node, now);
        let taints = health::wanted_taints(&node, evicting, now);
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        if taints != current {
            let list = if taints.is_empty() {
                json!(null)
            } else {
                json!(taints)
            };
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": list},
            });
            let api: Api<Node> = Api::all(self.client.clone());
            api.patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            let keys: Vec<String> = taints
                .iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect();
            tracing::info!(node = %key.name, taints = ?keys, "taints updated");
        }
        Ok(recheck)
    }

    /// Sets the Ready condition of the pods on `node` False, as their kubelet cannot.
    async fn mark_pods_not_ready(&self, node: &str, now: jiff::Timestamp) -> Result<(), Error> {
        let ready_here = self.pods.store().state_filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node) && pods::is_ready(p)
        });
        for pod in ready_here {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now.to_string()},
            ]}});
            unless_gone(
                api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await,
            )?;
            tracing::info!(pod = %format!("{namespace}/{name}"), node, "marked not ready");
            self.events.record(
                pod.as_ref(),
                events::Kind::Warning,
                "NodeNotReady",
                "NodeNotReady",
                "Node is not ready",
            );
        }
        Ok(())
    }
}
