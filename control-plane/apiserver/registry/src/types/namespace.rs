//! Namespaces: always Active on create, finalized by the namespace controller on delete.

use k8s_openapi::api::core::v1::Namespace;
use serde_json::json;

use crate::object::{Object, map_mut};
use crate::strategy::{Strategy, normalize_as};

/// Namespaces.
pub struct NamespaceStrategy;

/// The finalizer that keeps a terminating namespace until its contents are gone.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

impl Strategy for NamespaceStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<Namespace>(object)
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<Namespace>())
    }

    fn prepare_for_create(&self, object: &mut Object) {
        object.insert("status".into(), json!({"phase": "Active"}));
        map_mut(object, "spec").insert("finalizers".into(), json!([KUBERNETES_FINALIZER]));
        // Clients select namespaces by name through this label.
        let name = crate::object::name(object).to_owned();
        let meta = crate::object::metadata_mut(object);
        map_mut(meta, "labels").insert("kubernetes.io/metadata.name".into(), json!(name));
    }

    fn prepare_for_update(&self, new: &mut Object, old: &Object) {
        // spec.finalizers changes only through the finalize subresource.
        if let Some(spec) = old.get("spec") {
            new.insert("spec".into(), spec.clone());
        }
        let name = crate::object::name(new).to_owned();
        let meta = crate::object::metadata_mut(new);
        map_mut(meta, "labels").insert("kubernetes.io/metadata.name".into(), json!(name));
    }
}
