//! An event recorder for the control plane's components, as client-go's: `record` never
//! waits — the event is queued and written in the background, and dropped when the queue is
//! full (events are advice, not state) — and an event repeating one already written (same
//! object, type, reason and message) within ten minutes bumps that event's `count` and
//! `lastTimestamp` instead of adding another, so a retry loop cannot flood the store.
//!
//! What to say and when is the components' business, not this crate's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

/// Events queued for writing before new ones are dropped.
const QUEUED: usize = 1000;
/// Events written at once.
const WRITERS: usize = 4;
/// How long a written event absorbs its repeats.
const FOLD_WINDOW: Duration = Duration::from_secs(600);
/// How many written events are remembered for folding.
const REMEMBERED: usize = 4096;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Something went as it should.
    Normal,
    /// Something a user may need to look at.
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

/// Who an event is about and what it says: the fold key.
type Fold = (String, String, &'static str, String, String);

struct Written {
    name: String,
    namespace: String,
    count: i32,
    at: Instant,
}

/// Records events for one component.
#[derive(Clone)]
pub struct Recorder {
    component: Arc<str>,
    queue: tokio::sync::mpsc::Sender<(Fold, Event)>,
}

impl Recorder {
    /// A recorder for `component` (`default-scheduler`, `replicaset-controller`, …) whose
    /// events `client` writes; starts its writer on the current runtime.
    pub fn start(client: kube::Client, component: &str) -> Recorder {
        let (queue, queued) = tokio::sync::mpsc::channel(QUEUED);
        tokio::spawn(write(client, queued));
        Recorder {
            component: component.into(),
            queue,
        }
    }

    /// The same writer, speaking as `component`.
    pub fn as_component(&self, component: &str) -> Recorder {
        Recorder {
            component: component.into(),
            queue: self.queue.clone(),
        }
    }

    /// Records that `action` on `object` happened, for `reason`, as `message`.
    pub fn record<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        kind: Kind,
        reason: &str,
        action: &str,
        message: &str,
    ) {
        let meta = object.meta();
        let namespace = meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: Some(name),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                ..ObjectReference::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(kind.as_str().into()),
            source: Some(EventSource {
                component: Some(self.component.to_string()),
                host: None,
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            action: Some(action.into()),
            reporting_component: Some(self.component.to_string()),
            reporting_instance: Some(self.component.to_string()),
            ..Event::default()
        };
        let fold = (
            meta.uid.clone().unwrap_or_default(),
            self.component.to_string(),
            kind.as_str(),
            reason.to_owned(),
            message.to_owned(),
        );
        if self.queue.try_send((fold, event)).is_err() {
            tracing::debug!(reason, "event queue full; dropped an event");
        }
    }
}

/// Writes queued events, a few at a time, folding repeats.
async fn write(client: kube::Client, queued: tokio::sync::mpsc::Receiver<(Fold, Event)>) {
    let written: Arc<Mutex<HashMap<Fold, Written>>> = Arc::default();
    let stream = futures::stream::unfold(queued, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    stream
        .for_each_concurrent(WRITERS, |(fold, event)| {
            let (client, written) = (client.clone(), written.clone());
            async move {
                let repeat = {
                    let mut known = written.lock();
                    match known.get_mut(&fold) {
                        Some(w) if w.at.elapsed() < FOLD_WINDOW => {
                            w.count += 1;
                            w.at = Instant::now();
                            Some((w.name.clone(), w.namespace.clone(), w.count))
                        }
                        _ => None,
                    }
                };
                if let Some((name, namespace, count)) = repeat {
                    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
                    let now = jiff::Timestamp::now();
                    let patch = json!({"count": count, "lastTimestamp": Time(now), "eventTime": MicroTime(now)});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => return,
                        // Gone (events expire): write it afresh below.
                        Err(error) => tracing::debug!(%error, "could not fold an event"),
                    }
                }
                let namespace = event.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(client, &namespace);
                match api.create(&PostParams::default(), &event).await {
                    Ok(created) => {
                        let mut known = written.lock();
                        if known.len() >= REMEMBERED {
                            known.retain(|_, w| w.at.elapsed() < FOLD_WINDOW);
                            if known.len() >= REMEMBERED {
                                known.clear();
                            }
                        }
                        known.insert(
                            fold,
                            Written {
                                name: created.metadata.name.unwrap_or_default(),
                                namespace,
                                count: 1,
                                at: Instant::now(),
                            },
                        );
                    }
                    Err(error) => tracing::debug!(%error, "could not record an event"),
                }
            }
        })
        .await;
}
