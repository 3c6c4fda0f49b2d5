//! ControllerRevisions, for the controllers that keep template history in them (DaemonSet,
//! StatefulSet): one revision per template, numbered so the current one is the newest (a
//! rollback renumbers the old one it returns to), and unused ones deleted beyond the
//! owner's `revisionHistoryLimit`. `kubectl rollout history/undo` read them.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::informer::Informer;
use crate::{Error, pods, unless_gone};

/// The label naming the template revision of a revision and of the pods made from it.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The revisions `owner_uid` controls in `namespace`, oldest first.
pub fn owned(
    revisions: &Informer<ControllerRevision>,
    namespace: &str,
    owner_uid: &str,
) -> Vec<Arc<ControllerRevision>> {
    let mut list = revisions.controlled_by(namespace, owner_uid);
    list.sort_by_key(|r| r.revision);
    list
}

/// The template hash a revision (or pod) is labelled with.
pub fn hash_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(REVISION_HASH).map(String::as_str)
}

/// The pod template a revision holds.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Some(object) = template.as_object_mut() {
        object.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// Makes sure a revision of `template` (hashed `hash`) exists and is the newest, and prunes
/// unused old ones beyond `limit`; `in_use` are the hashes live pods carry.
pub async fn keep<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    revisions: &Informer<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    hash: &str,
    in_use: &HashSet<String>,
    limit: i32,
) -> Result<(), Error> {
    let meta = owner.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let list = owned(
        revisions,
        &namespace,
        meta.uid.as_deref().unwrap_or_default(),
    );
    let newest = list.last().map_or(0, |r| r.revision);
    match list.iter().find(|r| hash_of(&r.metadata) == Some(hash)) {
        Some(current) if current.revision < newest => {
            let name = current.metadata.name.as_deref().unwrap_or_default();
            let patch = json!({"revision": newest + 1});
            unless_gone(
                api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
        }
        Some(_) => {}
        None => {
            let mut data = json!({"spec": {"template": template}});
            data["spec"]["template"]["$patch"] = json!("replace");
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_HASH.into(), hash.into());
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(format!(
                        "{}-{hash}",
                        meta.name.as_deref().unwrap_or_default()
                    )),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![pods::controller_reference(owner)]),
                    ..ObjectMeta::default()
                },
                data: Some(RawExtension(data)),
                revision: newest + 1,
            };
            let name = revision.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &revision).await {
                Ok(_) => {}
                // Made by an earlier pass whose event is not in yet, or left behind by an
                // owner deleted with `--cascade=orphan`: that one is adopted.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    if let Some(existing) = api.get_opt(&name).await?
                        && pods::controller_of(&existing.metadata).is_none()
                        && hash_of(&existing.metadata) == Some(hash)
                    {
                        let reference = pods::controller_reference(owner);
                        let patch = pods::adopt_patch(existing.metadata.uid.as_ref(), &reference);
                        unless_gone(
                            api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                                .await,
                        )?;
                        tracing::info!(revision = %name, "adopted");
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    let unused: Vec<&Arc<ControllerRevision>> = list
        .iter()
        .filter(|r| hash_of(&r.metadata).is_none_or(|h| h != hash && !in_use.contains(h)))
        .collect();
    let excess = unused
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    for old in unused.into_iter().take(excess) {
        let name = old.metadata.name.as_deref().unwrap_or_default();
        unless_gone(api.delete(name, &DeleteParams::default()).await)?;
    }
    Ok(())
}
