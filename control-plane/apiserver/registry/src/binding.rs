//! `pods/binding`: the scheduler's assignment of a pending pod to a node. A binding sets
//! `spec.nodeName` once — a pod already assigned, or being deleted, is a conflict — and
//! marks the pod `PodScheduled`. It bypasses pod update validation, which forbids changing
//! the node, because it is the one write allowed to.

use serde_json::{Value, json};

use crate::catalog::Resource;
use crate::error::{ApiError, FieldError};
use crate::object::{self, Object};
use crate::store::{Registry, Swap, subject};

impl Registry {
    /// Binds the pod `name` in `namespace` to the node a `Binding` body names.
    pub async fn bind(
        &self,
        pods: &Resource,
        namespace: &str,
        name: &str,
        binding: &Object,
    ) -> Result<(), ApiError> {
        let target = binding.get("target").and_then(Value::as_object);
        let node = target
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = target
            .and_then(|t| t.get("kind"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut errors = Vec::new();
        if node.is_empty() {
            errors.push(FieldError::required("target.name", ""));
        }
        if !kind.is_empty() && kind != "Node" {
            errors.push(FieldError::not_supported("target.kind", kind, &["Node"]));
        }
        let body_name = object::name(binding);
        if !body_name.is_empty() && body_name != name {
            errors.push(FieldError::invalid(
                "metadata.name",
                body_name,
                "must match the pod's name",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(subject(pods, name), &errors));
        }
        let expected_uid = object::uid(binding).to_owned();
        let annotations = binding
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
            .cloned();
        let key = pods.key(Some(namespace), name);
        loop {
            let (kv, mut pod) = self.current(pods, &key, name).await?;
            let conflict = |why: String| Err(ApiError::conflict(subject(pods, name), &why));
            if !expected_uid.is_empty() && expected_uid != object::uid(&pod) {
                return conflict(format!(
                    "Precondition failed: UID in precondition: {expected_uid}, UID in object meta: {}",
                    object::uid(&pod)
                ));
            }
            if object::is_deleting(&pod) {
                return conflict(format!(
                    "pod {name} is being deleted, cannot be assigned to a host"
                ));
            }
            let assigned = pod
                .get("spec")
                .and_then(|s| s.get("nodeName"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !assigned.is_empty() {
                return conflict(format!(
                    "pod {name} is already assigned to node \"{assigned}\""
                ));
            }
            object::map_mut(&mut pod, "spec").insert("nodeName".into(), json!(node));
            if let Some(annotations) = &annotations {
                let meta = object::metadata_mut(&mut pod);
                let target = object::map_mut(meta, "annotations");
                for (k, v) in annotations {
                    target.insert(k.clone(), v.clone());
                }
            }
            let status = object::map_mut(&mut pod, "status");
            let conditions = status.entry("conditions").or_insert_with(|| json!([]));
            if let Some(list) = conditions.as_array_mut() {
                list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                list.push(json!({
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": object::timestamp(jiff::Timestamp::now()),
                }));
            }
            let bytes = Self::encode(&mut pod)?;
            if self
                .swap(pods, name, &key, kv.mod_revision, Swap::Put(bytes))
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
    }
}
