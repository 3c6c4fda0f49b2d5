//! `apiextensions.k8s.io`: CustomResourceDefinitions and the custom resources they define,
//! served by the same generic registry as the built-in types.
//!
//! A definition is stored like any object ([`definition`] checks it and sets its status);
//! [`served::Definitions`] follows the stored definitions and adds or removes catalog entries
//! whose strategy ([`custom`]) prunes, defaults and validates objects against the version's
//! structural schema ([`structural`]). Deleting a definition deletes its objects first.
//! **Does not** convert between versions with webhooks or evaluate CEL validation rules.

pub mod custom;
pub mod definition;
pub mod served;
pub mod structural;

use std::sync::Arc;

use apiserver_registry::{Catalog, Resource};

pub use served::Definitions;

/// The API group.
pub const GROUP: &str = "apiextensions.k8s.io";
/// The definitions' resource.
pub const PLURAL: &str = "customresourcedefinitions";

/// Adds `customresourcedefinitions` to `catalog`.
pub fn register(catalog: &Catalog) {
    let mut resource = Resource::new(
        GROUP,
        "v1",
        "CustomResourceDefinition",
        PLURAL,
        false,
        Arc::new(definition::DefinitionStrategy),
    )
    .short(&["crd", "crds"])
    .with_status();
    resource.categories = vec!["api-extensions".into()];
    catalog.insert(resource);
}
