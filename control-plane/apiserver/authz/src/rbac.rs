//! The RBAC authorizer: a [`Policy`] kept current by watching the store's RBAC keys.
//!
//! One list and one watch cover all four kinds (they share the key prefix); every change
//! rebuilds the snapshot, which requests read without locks held across awaits. A writer can
//! wait until the snapshot has caught up with its write ([`Rbac::wait_for`]), so a binding
//! created through this server grants at once.
//!
//! It also does the clusterrole-aggregation controller's job: an aggregated ClusterRole's
//! stored rules are rewritten to what its selectors gather, so `kubectl describe` shows them.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use apiserver_registry::store::WriteOptions;
use apiserver_registry::{ApiError, Object, Registry};
use apiserver_storage::{ChangeKind, WatchItem};
use async_trait::async_trait;
use parking_lot::RwLock;
use serde::Deserialize;

use crate::policy::{Objects, Policy, RoleRef};
use crate::rules::Rule;
use crate::{Attributes, Authorizer, Decision, User};

/// Where every RBAC object is stored.
const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// How long the watch may be quiet before it reports progress (the store's revision).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// The RBAC authorizer.
pub struct Rbac {
    policy: RwLock<Arc<Policy>>,
    /// The store revision the policy reflects.
    seen: tokio::sync::watch::Sender<i64>,
}

impl Rbac {
    /// Loads the policy and keeps it current until the returned value is dropped.
    pub async fn start(registry: Registry) -> Result<Arc<Rbac>, ApiError> {
        let (objects, revision) = registry.read_prefix(PREFIX).await?;
        let rbac = Arc::new(Rbac {
            policy: RwLock::new(Arc::new(Policy::build(&Objects::from(&objects)))),
            seen: tokio::sync::watch::channel(revision).0,
        });
        tokio::spawn(follow(registry, Arc::downgrade(&rbac), objects, revision));
        Ok(rbac)
    }

    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().clone()
    }

    /// Waits (at most `timeout`) until the policy reflects every change up to `revision`.
    /// Returns whether it does.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> bool {
        let mut seen = self.seen.subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn publish(&self, objects: &BTreeMap<String, Object>, revision: i64) -> Arc<Policy> {
        let policy = Arc::new(Policy::build(&Objects::from(objects)));
        *self.policy.write() = policy.clone();
        self.seen.send_replace(revision);
        policy
    }
}

#[async_trait]
impl Authorizer for Rbac {
    async fn authorize(&self, user: &User, request: &Attributes<'_>) -> Decision {
        match self.policy().allows(user, request) {
            Some(reason) => Decision::Allow(reason),
            None => Decision::NoOpinion,
        }
    }
}

impl<'a> From<&'a BTreeMap<String, Object>> for Objects<'a> {
    fn from(stored: &'a BTreeMap<String, Object>) -> Objects<'a> {
        let mut objects = Objects::default();
        for (key, object) in stored {
            let kind = key
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('/').next());
            let list = match kind {
                Some("clusterroles") => &mut objects.cluster_roles,
                Some("roles") => &mut objects.roles,
                Some("clusterrolebindings") => &mut objects.cluster_role_bindings,
                Some("rolebindings") => &mut objects.role_bindings,
                _ => continue,
            };
            list.push(object);
        }
        objects
    }
}

/// Applies the store's changes to the policy until the authorizer is dropped; relists when
/// the watch ends (a compaction, a store restart).
async fn follow(
    registry: Registry,
    rbac: Weak<Rbac>,
    mut objects: BTreeMap<String, Object>,
    mut revision: i64,
) {
    if let Some(policy) = rbac.upgrade().map(|r| r.policy()) {
        store_aggregated_rules(&registry, &objects, &policy).await;
    }
    loop {
        match watch(&registry, &rbac, &mut objects, &mut revision).await {
            Ok(()) => return,
            Err(e) => tracing::warn!("RBAC watch ended, relisting: {e}"),
        }
        loop {
            if rbac.strong_count() == 0 {
                return;
            }
            match registry.read_prefix(PREFIX).await {
                Ok((fresh, at)) => {
                    objects = fresh;
                    revision = at;
                    if let Some(rbac) = rbac.upgrade() {
                        let policy = rbac.publish(&objects, revision);
                        store_aggregated_rules(&registry, &objects, &policy).await;
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!("listing RBAC objects: {}", e.message);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Follows one watch; `Ok` when the authorizer is gone.
async fn watch(
    registry: &Registry,
    rbac: &Weak<Rbac>,
    objects: &mut BTreeMap<String, Object>,
    revision: &mut i64,
) -> Result<(), String> {
    let mut stream = registry
        .backend()
        .watch(PREFIX, *revision)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let item = stream
            .next(PROGRESS_INTERVAL)
            .await
            .map_err(|e| e.to_string())?;
        let Some(rbac) = rbac.upgrade() else {
            return Ok(());
        };
        match item {
            WatchItem::Changes(changes) => {
                for change in changes {
                    *revision = change.revision();
                    let key = String::from_utf8_lossy(&change.kv.key).into_owned();
                    match change.kind {
                        ChangeKind::Put => {
                            let object = registry.decode(&change.kv).map_err(|e| e.message)?;
                            objects.insert(key, object);
                        }
                        ChangeKind::Delete => {
                            objects.remove(&key);
                        }
                    }
                }
                let policy = rbac.publish(objects, *revision);
                store_aggregated_rules(registry, objects, &policy).await;
            }
            WatchItem::Progress(at) => {
                *revision = at.max(*revision);
                rbac.seen.send_replace(*revision);
            }
        }
    }
}

/// Rewrites the rules of each aggregated ClusterRole whose stored rules differ from what its
/// selectors gather. The write comes back through the watch, where it then matches.
async fn store_aggregated_rules(
    registry: &Registry,
    objects: &BTreeMap<String, Object>,
    policy: &Policy,
) {
    let prefix = format!("{PREFIX}clusterroles/");
    let Some(resource) = registry
        .catalog()
        .get(crate::escalation::GROUP, "v1", "clusterroles")
    else {
        return;
    };
    for (key, object) in objects.range(prefix.clone()..) {
        let Some(name) = key.strip_prefix(&prefix) else {
            break;
        };
        if object
            .get("aggregationRule")
            .is_none_or(serde_json::Value::is_null)
        {
            continue;
        }
        let role = RoleRef {
            kind: "ClusterRole".into(),
            name: name.to_owned(),
        };
        let Some(gathered) = policy.role_rules(&role, None) else {
            continue;
        };
        let stored: Vec<Rule> = object
            .get("rules")
            .and_then(|r| Vec::<Rule>::deserialize(r).ok())
            .unwrap_or_default();
        if stored[..] == gathered[..] {
            continue;
        }
        let rules = serde_json::to_value(&gathered[..]).unwrap_or_default();
        let written = registry
            .update_with(
                &resource,
                None,
                name,
                None,
                &WriteOptions::default(),
                &|mut current| {
                    current.insert("rules".into(), rules.clone());
                    Ok(current)
                },
            )
            .await;
        match written {
            Ok(_) => tracing::debug!(role = name, "stored the aggregated rules"),
            Err(e) => tracing::warn!(role = name, "storing aggregated rules: {}", e.message),
        }
    }
}
