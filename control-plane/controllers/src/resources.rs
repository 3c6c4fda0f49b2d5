//! The API's resources as discovery describes them, kept for the controllers that act on
//! every resource (the garbage collector, the namespace controller): kind → plural and
//! scope for owner references, and the preferred version of each resource to watch or
//! delete. Custom resources come and go, so a miss refreshes the map (rate limited).

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::discovery::{Discovery, Scope, verbs};
use parking_lot::RwLock;
use tokio::time::Instant;

/// One served resource at one version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// Group, version, kind and plural.
    pub api: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// The verbs it supports.
    pub verbs: Vec<String>,
}

impl Served {
    /// Whether it supports `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// A dynamic client for objects of this resource in `namespace` (ignored when the
    /// resource is cluster-scoped; `None` for all namespaces).
    pub fn api(&self, client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| self.namespaced) {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &self.api),
            None => Api::all_with(client.clone(), &self.api),
        }
    }

    /// `group/plural` (just `plural` for the core group): how logs name it.
    pub fn name(&self) -> String {
        if self.api.group.is_empty() {
            self.api.plural.clone()
        } else {
            format!("{}/{}", self.api.group, self.api.plural)
        }
    }
}

#[derive(Default)]
struct Known {
    /// Every served version, by (apiVersion, kind).
    by_kind: HashMap<(String, String), Served>,
    /// The preferred version of each resource.
    preferred: Vec<Served>,
    refreshed: Option<Instant>,
}

/// Discovery, cached.
pub struct Resources {
    client: kube::Client,
    known: RwLock<Known>,
    refreshing: tokio::sync::Mutex<()>,
}

/// How soon after a refresh a miss may refresh again.
const MIN_REFRESH: Duration = Duration::from_secs(2);

impl Resources {
    /// An empty map; call [`Resources::refresh`] before use.
    pub fn new(client: kube::Client) -> Resources {
        Resources {
            client,
            known: RwLock::new(Known::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads discovery again.
    pub async fn refresh(&self) -> Result<(), kube::Error> {
        let _one_at_a_time = self.refreshing.lock().await;
        let discovery = Discovery::new(self.client.clone()).run_aggregated().await?;
        let mut known = Known {
            refreshed: Some(Instant::now()),
            ..Known::default()
        };
        for group in discovery.groups() {
            for version in group.versions() {
                for (api, caps) in group.versioned_resources(version) {
                    let served = served(api, &caps);
                    known.by_kind.insert(
                        (served.api.api_version.clone(), served.api.kind.clone()),
                        served,
                    );
                }
            }
            for (api, caps) in group.recommended_resources() {
                known.preferred.push(served(api, &caps));
            }
        }
        *self.known.write() = known;
        Ok(())
    }

    /// The resource of `kind` at `api_version`, refreshing discovery once on a miss.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Option<Served> {
        let key = (api_version.to_owned(), kind.to_owned());
        let stale = {
            let known = self.known.read();
            if let Some(served) = known.by_kind.get(&key) {
                return Some(served.clone());
            }
            known.refreshed.is_none_or(|at| at.elapsed() >= MIN_REFRESH)
        };
        if stale && let Err(error) = self.refresh().await {
            tracing::warn!(%error, "discovery failed");
        }
        self.known.read().by_kind.get(&key).cloned()
    }

    /// The preferred version of every resource.
    pub fn preferred(&self) -> Vec<Served> {
        self.known.read().preferred.clone()
    }
}

fn served(api: ApiResource, caps: &kube::discovery::ApiCapabilities) -> Served {
    Served {
        api,
        namespaced: caps.scope == Scope::Namespaced,
        verbs: caps.operations.clone(),
    }
}

/// Whether a controller acting on every resource can list, watch and delete it.
pub fn collectable(served: &Served) -> bool {
    served.supports(verbs::LIST) && served.supports(verbs::WATCH) && served.supports(verbs::DELETE)
}
