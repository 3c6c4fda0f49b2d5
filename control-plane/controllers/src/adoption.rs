//! Adoption, as kube's ControllerRefManager does it: a controller takes the orphaned pods its
//! selector picks (so `kubectl delete --cascade=orphan` and a re-create hand the pods back)
//! and lets go of pods it controls but no longer selects. Used by DaemonSets and
//! StatefulSets; ReplicaSets decide theirs in `replicaset::plan`.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use serde::de::DeserializeOwned;

use crate::informer::Informer;
use crate::workers::Key;
use crate::{Error, pods, unless_gone};

/// What a controller should change about the pods of its namespace.
#[derive(Debug, Default)]
pub struct Claim {
    /// Orphans it selects.
    pub adopt: Vec<Arc<Pod>>,
    /// Pods it controls but no longer selects.
    pub release: Vec<Arc<Pod>>,
}

impl Claim {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.adopt.is_empty() && self.release.is_empty()
    }
}

fn selects(selector: &LabelSelector, pod: &Pod) -> bool {
    let empty = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    Selector::try_from(selector.clone()).is_ok_and(|s| !s.selects_all() && s.matches(labels))
}

/// The claim of the owner `owner_uid` with `selector` over `pods` (its namespace's);
/// `member` narrows which orphans it may take (a StatefulSet takes only its own ordinals).
pub fn claim(
    owner_uid: &str,
    selector: &LabelSelector,
    pods: &[Arc<Pod>],
    member: impl Fn(&Pod) -> bool,
) -> Claim {
    let mut claim = Claim::default();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match pods::controller_of(&pod.metadata) {
            Some(controller) if controller.uid == owner_uid => {
                if !selects(selector, pod) {
                    claim.release.push(pod.clone());
                }
            }
            Some(_) => {}
            None => {
                if selects(selector, pod) && member(pod) {
                    claim.adopt.push(pod.clone());
                }
            }
        }
    }
    claim
}

/// Carries out `claim` for `owner`. Orphans are adopted only if the owner, read afresh, is
/// the one cached and not being deleted (adopting for an owner on its way out would keep
/// pods alive). Says whether anything changed.
pub async fn carry_out<K>(client: &kube::Client, owner: &K, claim: Claim) -> Result<bool, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let meta = owner.meta();
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut changed = false;
    if !claim.adopt.is_empty() {
        let owners: Api<K> = Api::namespaced(client.clone(), namespace);
        let fresh = owners
            .get_opt(meta.name.as_deref().unwrap_or_default())
            .await?;
        let current = fresh
            .is_some_and(|f| f.meta().uid == meta.uid && f.meta().deletion_timestamp.is_none());
        if current {
            let reference = pods::controller_reference(owner);
            for pod in &claim.adopt {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let patch = pods::adopt_patch(pod.metadata.uid.as_ref(), &reference);
                unless_gone(
                    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                        .await,
                )?;
                tracing::info!(pod = %name, "adopted");
                changed = true;
            }
        }
    }
    for pod in &claim.release {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let patch = pods::release_patch(pod.metadata.uid.as_ref(), &uid);
        unless_gone(
            api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await,
        )?;
        tracing::info!(pod = %name, "released");
        changed = true;
    }
    Ok(changed)
}

/// The owners in `owners` that may adopt `pod`, an orphan: those of its namespace whose
/// selector picks it.
pub fn candidates<K>(
    owners: &Informer<K>,
    pod: &Pod,
    selector_of: impl Fn(&K) -> Option<&LabelSelector>,
) -> Vec<Key>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    if pods::controller_of(&pod.metadata).is_some() || pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    owners
        .in_namespace(pod.metadata.namespace.as_deref().unwrap_or_default())
        .iter()
        .filter(|o| selector_of(o).is_some_and(|s| selects(s, pod)))
        .map(|o| Key::of(o.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, app: &str, controller: Option<&str>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_owned(), app.to_owned())].into()),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        })
    }

    #[test]
    fn orphans_it_selects_are_adopted_and_strays_released() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_owned(), "db".to_owned())].into()),
            match_expressions: None,
        };
        let pods = [
            pod("db-0", "db", None),
            pod("db-9", "db", None),
            pod("web-0", "web", None),
            pod("db-1", "db", Some("me")),
            pod("relabelled", "web", Some("me")),
            pod("theirs", "db", Some("other")),
        ];
        let claim = claim("me", &selector, &pods, |p| {
            p.metadata.name.as_deref() != Some("db-9")
        });
        let names = |list: &[Arc<Pod>]| -> Vec<String> {
            list.iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect()
        };
        assert_eq!(names(&claim.adopt), ["db-0"]);
        assert_eq!(names(&claim.release), ["relabelled"]);
    }
}
