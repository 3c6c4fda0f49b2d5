//! The scheduler's view of the cluster: each node with what its pods request, the host
//! ports they hold and the images it has; each placed pod with its labels and inter-pod
//! terms; namespaces' labels; and the nodes pending pods were nominated for by preemption.
//! Pods the scheduler has just placed are *assumed* on their node before the binding is
//! seen, so the next decision counts them; a failed binding forgets them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::images;
use crate::resources::{Resources, pod_nonzero_requests, pod_requests};
use crate::terms::{Labels, NamespaceLabels, PodTerms};

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
    /// The images it holds, by normalized name, with their sizes in bytes.
    pub images: Arc<HashMap<String, i64>>,
}

impl NodeInfo {
    /// The node's info; `images` are reused when they were already worked out for it.
    fn new(node: Arc<Node>, images: Option<Arc<HashMap<String, i64>>>) -> NodeInfo {
        let allocatable = Resources::from_list(
            node.status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        NodeInfo {
            taints: crate::plugins::taints(&node),
            images: images.unwrap_or_else(|| Arc::new(images::on_node(&node))),
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

    /// The value of the node's label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.node
            .metadata
            .labels
            .as_ref()?
            .get(key)
            .map(String::as_str)
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
    /// Its labels, for other pods' affinity terms and spread constraints.
    pub labels: Labels,
    /// Its own inter-pod terms, which later pods must respect too.
    pub terms: Option<Arc<PodTerms>>,
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

/// A pending pod that preemption made room for on a node: the room stays reserved for it
/// against pods of no higher priority until it is bound or gone.
#[derive(Clone, Debug)]
pub struct Nominee {
    /// Its uid.
    pub uid: String,
    /// What it will take.
    pub usage: Usage,
    /// Its priority.
    pub priority: i32,
}

fn image_list(node: &Node) -> Option<&Vec<k8s_openapi::api::core::v1::ContainerImage>> {
    node.status.as_ref()?.images.as_ref()
}

/// Nodes and the pods placed on them.
#[derive(Default)]
pub struct Cache {
    /// Nodes in a stable order (the rotating start of each search indexes it).
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Placed>,
    /// Placed pods that carry inter-pod terms (few, usually).
    with_terms: HashSet<String>,
    /// How many nodes hold each image.
    image_nodes: HashMap<String, usize>,
    namespaces: NamespaceLabels,
    /// Nominees by node, and the node of each nominee by uid.
    nominees: HashMap<String, Vec<Nominee>>,
    nominated: HashMap<String, String>,
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

    fn count_images(&mut self, images: &HashMap<String, i64>, added: bool) {
        for image in images.keys() {
            let count = self.image_nodes.entry(image.clone()).or_default();
            if added {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.image_nodes.remove(image);
                }
            }
        }
    }

    /// A node was added or changed.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.index.get(&name).copied() {
            Some(i) => {
                // Heartbeats change a node's status often and its images rarely: only a new
                // image list is parsed and counted again.
                let old = &self.nodes[i];
                let same_images = image_list(&old.node) == image_list(&node);
                let mut info = NodeInfo::new(node, same_images.then(|| old.images.clone()));
                info.requested = old.requested.clone();
                info.nonzero = old.nonzero;
                info.ports = old.ports.clone();
                info.pod_count = old.pod_count;
                if !same_images {
                    let (before, after) = (old.images.clone(), info.images.clone());
                    self.count_images(&before, false);
                    self.count_images(&after, true);
                }
                self.nodes[i] = info;
            }
            None => {
                let mut info = NodeInfo::new(node, None);
                let images = info.images.clone();
                self.count_images(&images, true);
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
        let removed = self.nodes.swap_remove(i);
        self.count_images(&removed.images, false);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name().to_owned(), i);
        }
    }

    /// A pod bound to a node was seen (added, changed, or confirming an assumption).
    /// Finished pods free what they held. Says whether other pods' inter-pod rules may see
    /// it differently now (it is newly placed, or relabelled).
    pub fn set_pod(&mut self, pod: &Pod) -> bool {
        let Some(uid) = pod.metadata.uid.clone() else {
            return false;
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
            return false;
        }
        self.unnominate(&uid);
        if let Some(placed) = self.pods.get_mut(&uid)
            && placed.node == node
        {
            placed.assumed = false;
            placed.who = Placement::of(pod);
            // Labels may change on a running pod (its spec, and so its terms, may not).
            let labels = pod.metadata.labels.as_ref();
            let relabelled = labels.map_or(!placed.labels.is_empty(), |l| *l != placed.labels);
            if relabelled {
                placed.labels = labels.cloned().unwrap_or_default();
            }
            return relabelled;
        }
        self.remove_pod(&uid);
        self.place(uid, node, pod, false);
        true
    }

    fn place(&mut self, uid: String, node: String, pod: &Pod, assumed: bool) {
        let usage = Usage::of(pod);
        if let Some(info) = self.node_mut(&node) {
            info.add(&usage);
        }
        let terms = PodTerms::of(pod).map(Arc::new);
        if terms.is_some() {
            self.with_terms.insert(uid.clone());
        }
        self.pods.insert(
            uid,
            Placed {
                node,
                usage,
                assumed,
                who: Placement::of(pod),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                terms,
            },
        );
    }

    /// A pod was deleted (or is no longer bound).
    pub fn remove_pod(&mut self, uid: &str) {
        self.unnominate(uid);
        self.with_terms.remove(uid);
        if let Some(placed) = self.pods.remove(uid)
            && let Some(info) = self.node_mut(&placed.node)
        {
            info.remove(&placed.usage);
        }
    }

    /// A pending pod was seen: keeps room on the node preemption nominated for it, if any.
    pub fn nominate(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let node = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        if self.nominated.get(&uid) == node.as_ref() {
            return;
        }
        self.unnominate(&uid);
        if let Some(node) = node {
            let nominee = Nominee {
                uid: uid.clone(),
                usage: Usage::of(pod),
                priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            };
            self.nominees.entry(node.clone()).or_default().push(nominee);
            self.nominated.insert(uid, node);
        }
    }

    /// Drops the pod's nomination (it was bound, or is gone).
    pub fn unnominate(&mut self, uid: &str) {
        let Some(node) = self.nominated.remove(uid) else {
            return;
        };
        if let Some(list) = self.nominees.get_mut(&node) {
            list.retain(|n| n.uid != uid);
            if list.is_empty() {
                self.nominees.remove(&node);
            }
        }
    }

    /// `node` with the room reserved for nominees of at least `priority` (other than `uid`)
    /// taken, or `None` when nothing is reserved there.
    pub fn with_nominees(&self, node: &NodeInfo, uid: &str, priority: i32) -> Option<NodeInfo> {
        let nominees = self.nominees.get(node.name())?;
        let mut reserved = nominees
            .iter()
            .filter(|n| n.uid != uid && n.priority >= priority)
            .peekable();
        reserved.peek()?;
        let mut trial = node.clone();
        for nominee in reserved {
            trial.add(&nominee.usage);
        }
        Some(trial)
    }

    /// A namespace was added or changed.
    pub fn set_namespace(&mut self, name: String, labels: Labels) {
        self.namespaces.insert(name, labels);
    }

    /// A namespace was deleted.
    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// Each namespace's labels.
    pub fn namespaces(&self) -> &NamespaceLabels {
        &self.namespaces
    }

    /// Every placed pod, by uid.
    pub fn pods(&self) -> impl Iterator<Item = (&String, &Placed)> {
        self.pods.iter()
    }

    /// The placed pods that carry inter-pod terms.
    pub fn pods_with_terms(&self) -> impl Iterator<Item = &Placed> {
        self.with_terms.iter().filter_map(|uid| self.pods.get(uid))
    }

    /// How many nodes hold `image` (normalized).
    pub fn nodes_with_image(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Whether any node reports images at all.
    pub fn knows_images(&self) -> bool {
        !self.image_nodes.is_empty()
    }

    /// Counts `pod` on `node` before its binding is seen.
    pub fn assume(&mut self, pod: &Pod, node: &str) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.remove_pod(&uid);
        self.place(uid, node.to_owned(), pod, true);
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
