//! LimitRanger: a new pod gets its namespace's default limits and requests, and is refused
//! if it breaks a LimitRange's bounds. The rules are the registry's
//! ([`apiserver_registry::types::limits`]); this reads the ranges and words the refusal.

use apiserver_registry::store::ListOptions;
use apiserver_registry::types::limits::apply_to_pod;
use apiserver_registry::{ApiError, Object, Registry};

/// Applies the LimitRanges of `namespace` to a pod about to be created.
pub async fn admit(registry: &Registry, namespace: &str, pod: &mut Object) -> Result<(), ApiError> {
    let Some(ranges) = registry.catalog().get("", "v1", "limitranges") else {
        return Ok(());
    };
    // Like kube-apiserver's LimitRanger, which reads from its informer's cache: any recent
    // state will do, so no round to the leader on every pod create.
    let recent = ListOptions {
        resource_version: "0".into(),
        ..ListOptions::default()
    };
    let page = registry.list(&ranges, Some(namespace), &recent).await?;
    if page.items.is_empty() {
        return Ok(());
    }
    apply_to_pod(pod, &page.items).map_err(|problems| {
        let name = apiserver_registry::object::name(pod);
        ApiError::forbidden(format!(
            "pods \"{name}\" is forbidden: [{}]",
            problems.join(", ")
        ))
    })
}
