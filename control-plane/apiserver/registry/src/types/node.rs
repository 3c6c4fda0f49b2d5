//! Nodes: a kubelet registers its node with its status (capacity, conditions) in the same
//! request, so unlike most types a node keeps the status it is created with.

use k8s_openapi::api::core::v1::Node;

use crate::object::Object;
use crate::strategy::{Strategy, normalize_as};

/// Nodes.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<Node>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<Node>())
    }

    fn reset_status_on_create(&self) -> bool {
        false
    }
}
