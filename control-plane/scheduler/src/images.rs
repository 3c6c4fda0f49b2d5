//! ImageLocality: prefer nodes that already hold a pod's images, weighted by image size and
//! by how widely the image is spread (an image on every node says nothing about any one).
//!
//! Image names are compared in their full form (`docker.io/library/nginx:latest`, see
//! [`placement::image`]) because containerd reports them that way while pods usually say
//! `nginx`; kube-scheduler only adds the missing tag.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};

use placement::image::normalize;

use crate::cache::{Cache, NodeInfo};

const MB: i64 = 1024 * 1024;
/// Below this much image data on a node, it scores nothing.
const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container, above this much it scores fully.
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The images `node` reports holding, by normalized name, with their sizes.
pub fn on_node(node: &Node) -> HashMap<String, i64> {
    let mut images = HashMap::new();
    for image in node
        .status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .into_iter()
        .flatten()
    {
        let size = image.size_bytes.unwrap_or(0);
        for name in image.names.iter().flatten() {
            images.insert(normalize(name), size);
        }
    }
    images
}

/// The pod's image names, normalized once per decision.
pub fn of_pod(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter_map(|c| c.image.as_deref())
        .map(normalize)
        .collect()
}

/// The node's score for the pod's `images`, 0–100.
pub fn score(images: &[String], node: &NodeInfo, cache: &Cache) -> i64 {
    if images.is_empty() || node.images.is_empty() {
        return 0;
    }
    let total = cache.node_count().max(1) as f64;
    let sum: i64 = images
        .iter()
        .filter_map(|image| {
            let size = *node.images.get(image)?;
            let spread = cache.nodes_with_image(image) as f64 / total;
            Some((size as f64 * spread) as i64)
        })
        .sum();
    let max = MAX_CONTAINER_THRESHOLD * i64::try_from(images.len()).unwrap_or(1);
    let clamped = sum.clamp(MIN_THRESHOLD, max);
    100 * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tests::{node, pod};
    use k8s_openapi::api::core::v1::ContainerImage;
    use std::sync::Arc;

    #[test]
    fn nodes_holding_big_images_score_higher() {
        let mut cache = Cache::new();
        let mut holder = node("holder", "4", true);
        if let Some(status) = holder.status.as_mut() {
            status.images = Some(vec![ContainerImage {
                names: Some(vec!["docker.io/library/postgres:16".into()]),
                size_bytes: Some(400 * MB),
            }]);
        }
        // A heartbeat with the same images leaves the counts as they were.
        cache.set_node(Arc::new(holder.clone()));
        cache.set_node(Arc::new(holder));
        assert_eq!(cache.nodes_with_image("docker.io/library/postgres:16"), 1);
        cache.set_node(Arc::new(node("empty", "4", true)));
        let mut p = pod("1");
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].image = Some("postgres:16".into());
        }
        let images = of_pod(&p);
        let scores: Vec<(String, i64)> = cache
            .nodes()
            .map(|n| (n.name().to_owned(), score(&images, n, &cache)))
            .collect();
        // 400 MB on one node of two counts as 200 MB: (200 − 23) / (1000 − 23) of 100.
        assert_eq!(scores, [("holder".to_owned(), 18), ("empty".to_owned(), 0)]);
        cache.remove_node("holder");
        assert!(!cache.knows_images());
    }
}
