//! The ResourceQuota controller: keeps each quota's `status.hard` equal to its spec and
//! `status.used` to what its namespace uses of each limited resource — pods and their
//! requests and limits (from the shared pod cache, at once on every pod change), and object
//! counts (`services`, `configmaps`, `count/deployments.apps`, … read from the API when the
//! quota is looked at, and every few seconds). Enforcing quota on writes is the API
//! server's admission, not this.

pub mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::informer::{Change, Informer, follow};
use crate::queue::WorkQueue;
use crate::resources::Resources;
use crate::workers::{self, Key};
use crate::{Error, unless_gone};

/// How often object counts are read again when nothing else brings a quota up.
const RECOUNT: Duration = Duration::from_secs(10);

/// The core resources a quota counts by their plain names.
const CORE_COUNTS: &[&str] = &[
    "configmaps",
    "secrets",
    "services",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// Runs until the process ends.
pub async fn run(
    client: kube::Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<Pod>>,
    resources: Arc<Resources>,
) -> Result<(), Error> {
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    let all_of = {
        let quotas = quotas.clone();
        move |namespace: Option<&str>| -> Vec<Key> {
            let quotas = match namespace {
                Some(namespace) => quotas.in_namespace(namespace),
                None => quotas.store().state(),
            };
            quotas.iter().map(|q| Key::of(q.as_ref())).collect()
        }
    };
    let on_quota = queue.clone();
    let everything = all_of.clone();
    tokio::spawn(follow(quotas.subscribe(), move |change| match change {
        Change::Applied(quota) => on_quota.add(Key::of(quota.as_ref())),
        Change::Deleted(_) => {}
        Change::Relisted => everything(None).into_iter().for_each(|k| on_quota.add(k)),
    }));
    let on_pod = queue.clone();
    let in_namespace = all_of.clone();
    tokio::spawn(follow(pods.subscribe(), move |change| {
        let namespace = match &change {
            Change::Applied(pod) | Change::Deleted(pod) => pod.metadata.namespace.clone(),
            Change::Relisted => None,
        };
        for key in in_namespace(namespace.as_deref()) {
            on_pod.add(key);
        }
    }));
    let recount = queue.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RECOUNT).await;
            all_of(None).into_iter().for_each(|k| recount.add(k));
        }
    });
    quotas.synced().await;
    pods.synced().await;
    workers::run("resourcequota", queue, 2, move |key| {
        let client = client.clone();
        let quotas = quotas.clone();
        let pods = pods.clone();
        let resources = resources.clone();
        async move {
            let Some(quota) = quotas.store().get(&key.object_ref()) else {
                return Ok(None);
            };
            let namespace = key.namespace.clone().unwrap_or_default();
            let hard = quota
                .spec
                .as_ref()
                .and_then(|s| s.hard.clone())
                .unwrap_or_default();
            let now = jiff::Timestamp::now();
            let counted: Vec<Arc<Pod>> = pods
                .in_namespace(&namespace)
                .into_iter()
                .filter(|p| usage::counts(p, now) && usage::in_scope(&quota, p))
                .collect();
            let refs: Vec<&Pod> = counted.iter().map(Arc::as_ref).collect();
            let mut used: BTreeMap<String, Quantity> =
                usage::pod_usage(hard.keys().map(String::as_str), &refs)
                    .into_iter()
                    .map(|(name, milli)| {
                        let amount = usage::quantity(&name, milli);
                        (name, amount)
                    })
                    .collect();
            if !usage::scoped(&quota) {
                for name in hard.keys().filter(|n| !usage::from_pods(n)) {
                    if let Some(count) =
                        count_objects(&client, &resources, &namespace, name).await?
                    {
                        used.insert(name.clone(), Quantity(count.to_string()));
                    }
                }
            }
            let status = quota.status.as_ref();
            if status.and_then(|s| s.hard.as_ref()) == Some(&hard)
                && status.and_then(|s| s.used.as_ref()) == Some(&used)
            {
                return Ok(None);
            }
            let api: Api<ResourceQuota> = Api::namespaced(client, &namespace);
            let patch = json!({"status": {"hard": hard, "used": used}});
            unless_gone(
                api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await,
            )?;
            Ok(None)
        }
    })
    .await
}

/// How many objects of the resource a quota names there are in `namespace`; `None` for a
/// name that is not an object count (or a resource the API does not serve).
async fn count_objects(
    client: &kube::Client,
    resources: &Resources,
    namespace: &str,
    name: &str,
) -> Result<Option<usize>, Error> {
    if let Some(kind) = name.strip_prefix("services.") {
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let list = services.list(&ListParams::default()).await?;
        let wanted = match kind {
            "loadbalancers" => "LoadBalancer",
            "nodeports" => "NodePort",
            _ => return Ok(None),
        };
        let count = list
            .items
            .iter()
            .filter(|s| {
                let kind = s.spec.as_ref().and_then(|s| s.type_.as_deref());
                kind == Some(wanted) || (wanted == "NodePort" && kind == Some("LoadBalancer"))
            })
            .count();
        return Ok(Some(count));
    }
    let (plural, group) = match name.strip_prefix("count/") {
        Some(rest) => rest.split_once('.').unwrap_or((rest, "")),
        None if CORE_COUNTS.contains(&name) => (name, ""),
        None => return Ok(None),
    };
    if resources.preferred().is_empty() {
        resources.refresh().await?;
    }
    let served = resources
        .preferred()
        .into_iter()
        .find(|s| s.api.plural == plural && s.api.group == group && s.namespaced);
    let Some(served) = served else {
        return Ok(None);
    };
    let list = served
        .api(client, Some(namespace))
        .list_metadata(&ListParams::default())
        .await?;
    Ok(Some(list.items.len()))
}
