//! Runs a controller's reconcile function over its work queue: the key of an object in,
//! "done", "look again after" or an error (retried with backoff) out. Each reconcile runs
//! in a span naming the controller and the object.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use tracing::Instrument;

use crate::Error;
use crate::queue::WorkQueue;

/// The namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Its namespace, for namespaced objects.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl Key {
    /// The key of `object`.
    pub fn of<K: Resource>(object: &K) -> Key {
        let meta = object.meta();
        Key {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// A key in `namespace`.
    pub fn namespaced(namespace: &str, name: &str) -> Key {
        Key {
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// The cache's reference for this key.
    pub fn object_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        let reference = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(namespace) => reference.within(namespace),
            None => reference,
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Runs `workers` tasks that reconcile keys from `queue`, for as long as the process lives.
/// `reconcile` returns when to look at the object again, if it must.
pub async fn run<F, Fut>(
    controller: &'static str,
    queue: Arc<WorkQueue<Key>>,
    workers: usize,
    reconcile: F,
) -> Result<(), Error>
where
    F: Fn(Key) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>, Error>> + Send + 'static,
{
    spawn(controller, queue, workers, reconcile);
    std::future::pending::<Result<(), Error>>().await
}

fn spawn<F, Fut>(controller: &'static str, queue: Arc<WorkQueue<Key>>, workers: usize, reconcile: F)
where
    F: Fn(Key) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<Duration>, Error>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tokio::spawn(async move {
            loop {
                let key = queue.next().await;
                let span = tracing::info_span!("reconcile", controller, object = %key);
                let result = reconcile(key.clone()).instrument(span).await;
                tracing::debug!(controller, object = %key, ok = result.is_ok(), "reconciled");
                match result {
                    Ok(again) => {
                        queue.forget(&key);
                        if let Some(after) = again {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Err(error) => {
                        if error.is_conflict() {
                            tracing::debug!(controller, object = %key, %error, "conflict; retrying");
                        } else {
                            tracing::warn!(controller, object = %key, %error, "reconcile failed; retrying");
                        }
                        queue.retry(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
}
