//! The scheduler's view of the cluster: each node with what its pods request and the host
//! ports they hold. Pods the scheduler has just placed are *assumed* on their node before the
//! binding is seen, so the next decision counts them; a failed binding forgets them.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{Resources, pod_nonzero_requests, pod_requests};

/// A host port a pod holds: protocol, host IP (`0.0.0.0` for all) and port.
pub type HostPort = (String, String, i32);

/// What one pod takes from its node.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Its requests, counting one pod.
    pub requests: Resources,
    /// Its cpu and memory with defaults for containers that request none.
    pub nonzero: (i64, i64),
    /// Its host ports.
    pub ports: Vec<HostPort>,
}

impl Usage {
    /// The usage of `pod`.
    pub fn of(pod: &Pod) -> Usage {
        let Some(spec) = pod.spec.as_ref() else {
            return Usage::default();
        };
        Usage {
            requests: pod_requests(spec),
            nonzero: pod_nonzero_requests(spec),
            ports: host_ports(pod),
        }
    }
}

/// The host ports `pod`'s containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut ports = Vec::new();
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        for port in container.ports.iter().flatten() {
            if let Some(host_port) = port.host_port.filter(|p| *p > 0) {
                ports.push((
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port.host_ip
                        .clone()
                        .filter(|ip| !ip.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into()),
                    host_port,
                ));
            }
        }
    }
    ports
}

/// One node and what is placed on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// What it offers.
    pub allocatable: Resources,
    /// What its pods request.
    pub requested: Resources,
    /// Its pods' cpu and memory with defaults, for spreading load.
    pub nonzero: (i64, i64),
    /// Host ports in use.
    pub ports: Vec<HostPort>,
    /// How many pods it holds.
    pub pod_count: usize,
    /// Its taints, the not-ready one implied when it is not Ready (worked out once per
    /// change of the node, not per decision).
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        let allocatable = Resources::from_list(
            node.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        NodeInfo {
            taints: crate::plugins::taints(&node),
            node,
            allocatable,
            requested: Resources::default(),
            nonzero: (0, 0),
            ports: Vec::new(),
            pod_count: 0,
        }
    }

    pub(crate) fn add(&mut self, usage: &Usage) {
        self.requested.add(&usage.requests);
        self.nonzero.0 += usage.nonzero.0;
        self.nonzero.1 += usage.nonzero.1;
        self.ports.extend(usage.ports.iter().cloned());
        self.pod_count += 1;
    }

    pub(crate) fn remove(&mut self, usage: &Usage) {
        self.requested.subtract(&usage.requests);
        self.nonzero.0 -= usage.nonzero.0;
        self.nonzero.1 -= usage.nonzero.1;
        for port in &usage.ports {
            if let Some(i) = self.ports.iter().position(|p| p == port) {
                self.ports.swap_remove(i);
            }
        }
        self.pod_count = self.pod_count.saturating_sub(1);
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }
}

/// A pod counted on a node.
pub struct Placed {
    /// The node.
    pub node: String,
    /// What it takes there.
    pub usage: Usage,
    assumed: bool,
    /// Who it is, should it have to make room for a pod of higher priority.
    pub who: Placement,
}

/// What preemption needs to know of a placed pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its priority.
    pub priority: i32,
    /// When it was created.
    pub created: Option<jiff::Timestamp>,
    /// Whether it is being deleted already.
    pub deleting: bool,
}

impl Placement {
    /// The placement facts of `pod`.
    pub fn of(pod: &Pod) -> Placement {
        Placement {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            deleting: pod.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Nodes and the pods placed on them.
#[derive(Default)]
pub struct Cache {
    /// Nodes in a stable order (the rotating start of each search indexes it).
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Placed>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache::default()
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        let i = *self.index.get(name)?;
        self.nodes.get_mut(i)
    }

    /// A node was added or changed.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut info = NodeInfo::new(node);
        match self.index.get(&name).copied() {
            Some(i) => {
                let old = &self.nodes[i];
                info.requested = old.requested.clone();
                info.nonzero = old.nonzero;
                info.ports = old.ports.clone();
                info.pod_count = old.pod_count;
                self.nodes[i] = info;
            }
            None => {
                for placed in self.pods.values().filter(|p| p.node == name) {
                    info.add(&placed.usage);
                }
                self.index.insert(name, self.nodes.len());
                self.nodes.push(info);
            }
        }
    }

    /// A node was deleted.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name().to_owned(), i);
        }
    }

    /// A pod bound to a node was seen (added, changed, or confirming an assumption).
    /// Finished pods free what they held.
    pub fn set_pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if node.is_empty() || finished {
            self.remove_pod(&uid);
            return;
        }
        if let Some(placed) = self.pods.get_mut(&uid)
            && placed.node == node
        {
            placed.assumed = false;
            placed.who = Placement::of(pod);
            return;
        }
        self.remove_pod(&uid);
        self.place(uid, node, Usage::of(pod), false, Placement::of(pod));
    }

    fn place(&mut self, uid: String, node: String, usage: Usage, assumed: bool, who: Placement) {
        if let Some(info) = self.node_mut(&node) {
            info.add(&usage);
        }
        self.pods.insert(
            uid,
            Placed {
                node,
                usage,
                assumed,
                who,
            },
        );
    }

    /// A pod was deleted (or is no longer bound).
    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(placed) = self.pods.remove(uid)
            && let Some(info) = self.node_mut(&placed.node)
        {
            info.remove(&placed.usage);
        }
    }

    /// Counts `pod` on `node` before its binding is seen.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.remove_pod(&uid);
        self.place(
            uid,
            node.to_owned(),
            Usage::of(pod),
            true,
            Placement::of(pod),
        );
    }

    /// Undoes [`Cache::assume`] after a failed binding.
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    /// The nodes, in a stable order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter()
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The pods placed on `node`, by uid.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a String, &'a Placed)> {
        self.pods.iter().filter(move |(_, p)| p.node == node)
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(*self.index.get(name)?)
    }

    /// The node at `index` of the stable order.
    pub fn node_at(&self, index: usize) -> Option<&NodeInfo> {
        self.nodes.get(index)
    }
}
