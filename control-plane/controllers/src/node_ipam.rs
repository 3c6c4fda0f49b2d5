//! Node IPAM: gives every node a pod CIDR (`spec.podCIDR`, `spec.podCIDRs`) carved out of the
//! cluster CIDR, the lowest free block first, and takes it back when the node goes. The
//! blocks in use are read back from the nodes after a restart, so two nodes never share one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::workers::{self, Key};
use crate::{Error, unless_gone};

/// The blocks of one cluster CIDR, by index.
#[derive(Debug)]
pub struct Allocator {
    cluster: Ipv4Net,
    block_prefix: u8,
    used: BTreeSet<u32>,
}

impl Allocator {
    /// Blocks of `/block_prefix` out of `cluster`.
    pub fn new(cluster: Ipv4Net, block_prefix: u8) -> Result<Allocator, String> {
        if block_prefix < cluster.prefix_len() || block_prefix > 30 {
            return Err(format!(
                "--node-cidr-mask-size {block_prefix} must be between the cluster CIDR's /{} and /30",
                cluster.prefix_len()
            ));
        }
        Ok(Allocator {
            cluster: cluster.trunc(),
            block_prefix,
            used: BTreeSet::new(),
        })
    }

    fn size(&self) -> u32 {
        1 << (self.block_prefix - self.cluster.prefix_len())
    }

    fn block(&self, index: u32) -> Option<Ipv4Net> {
        let step = 1u32 << (32 - self.block_prefix);
        let base = u32::from(self.cluster.network()).checked_add(index.checked_mul(step)?)?;
        Ipv4Net::new(base.into(), self.block_prefix).ok()
    }

    fn index_of(&self, block: Ipv4Net) -> Option<u32> {
        if block.prefix_len() != self.block_prefix || !self.cluster.contains(&block) {
            return None;
        }
        let offset = u32::from(block.network()) - u32::from(self.cluster.network());
        Some(offset >> (32 - self.block_prefix))
    }

    /// Marks `block` taken (read from a node); false if it is not one of ours.
    pub fn occupy(&mut self, block: Ipv4Net) -> bool {
        match self.index_of(block) {
            Some(index) => {
                self.used.insert(index);
                true
            }
            None => false,
        }
    }

    /// Frees `block`.
    pub fn release(&mut self, block: Ipv4Net) {
        if let Some(index) = self.index_of(block) {
            self.used.remove(&index);
        }
    }

    /// Takes the lowest free block.
    pub fn allocate(&mut self) -> Option<Ipv4Net> {
        let index = (0..self.size()).find(|i| !self.used.contains(i))?;
        self.used.insert(index);
        self.block(index)
    }
}

fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()
}

/// Runs until the process ends.
pub async fn run(
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    allocator: Allocator,
) -> Result<(), Error> {
    let allocator = Arc::new(Mutex::new(allocator));
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    nodes.synced().await;
    {
        let mut blocks = allocator.lock();
        for node in nodes.store().state() {
            if let Some(block) = pod_cidr(&node)
                && !blocks.occupy(block)
            {
                tracing::warn!(node = ?node.metadata.name, %block, "pod CIDR outside the cluster CIDR; left alone");
            }
        }
    }
    let (on_node, released) = (queue.clone(), allocator.clone());
    tokio::spawn(follow(nodes.subscribe(), move |change| match change {
        Change::Applied(node) if pod_cidr(&node).is_none() => on_node.add(Key::of(node.as_ref())),
        Change::Applied(_) | Change::Relisted => {}
        Change::Deleted(node) => {
            if let Some(block) = pod_cidr(&node) {
                released.lock().release(block);
            }
        }
    }));
    for node in nodes.store().state() {
        if pod_cidr(&node).is_none() {
            queue.add(Key::of(node.as_ref()));
        }
    }
    // One worker: allocations are decided one at a time.
    workers::run("nodeipam", queue, 1, move |key| {
        let (client, nodes, allocator) = (client.clone(), nodes.clone(), allocator.clone());
        async move {
            let Some(node) = nodes.store().get(&key.object_ref()) else {
                return Ok(None);
            };
            if pod_cidr(&node).is_some() {
                return Ok(None);
            }
            let Some(block) = allocator.lock().allocate() else {
                tracing::error!(node = %key, "no pod CIDR left in the cluster CIDR");
                return Ok(Some(Duration::from_secs(30)));
            };
            let api: Api<Node> = Api::all(client);
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"podCIDR": block.to_string(), "podCIDRs": [block.to_string()]},
            });
            let result = api
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
            if result.is_err() {
                allocator.lock().release(block);
            }
            unless_gone(result)?;
            tracing::info!(node = %key, %block, "pod CIDR allocated");
            Ok(None)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn lowest_free_block_first_and_reuse() {
        let mut blocks = Allocator::new(net("10.244.0.0/16"), 24).unwrap();
        assert!(blocks.occupy(net("10.244.0.0/24")));
        assert!(!blocks.occupy(net("10.99.0.0/24")));
        assert_eq!(blocks.allocate(), Some(net("10.244.1.0/24")));
        assert_eq!(blocks.allocate(), Some(net("10.244.2.0/24")));
        blocks.release(net("10.244.1.0/24"));
        assert_eq!(blocks.allocate(), Some(net("10.244.1.0/24")));
        let mut tiny = Allocator::new(net("10.0.0.0/30"), 30).unwrap();
        assert!(tiny.allocate().is_some());
        assert_eq!(tiny.allocate(), None, "exhausted");
        assert!(Allocator::new(net("10.0.0.0/16"), 8).is_err());
    }
}
