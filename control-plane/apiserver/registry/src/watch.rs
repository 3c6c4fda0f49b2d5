//! Watches as Kubernetes clients see them: ADDED / MODIFIED / DELETED events with selectors
//! applied to both the old and new state, BOOKMARKs, the initial state for watches that start
//! without a resourceVersion (or ask for `sendInitialEvents`), and a 410 ERROR event when the
//! requested history has been compacted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use apiserver_storage::{Change, ChangeKind, Kv, StorageError, WatchItem, WatchStream};
use serde_json::json;

use crate::catalog::Resource;
use crate::error::ApiError;
use crate::object::{Object, set_resource_version};
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::SharedObject;
use crate::store::{ListOptions, Registry, parse_resource_version};

/// How a watch is opened.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Only objects whose labels match.
    pub labels: LabelSelector,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
    /// `resourceVersion` as given ("" when absent).
    pub resource_version: String,
    /// `resourceVersionMatch` as given.
    pub resource_version_match: String,
    /// Send bookmarks (`allowWatchBookmarks`).
    pub bookmarks: bool,
    /// `sendInitialEvents`, if given.
    pub send_initial_events: Option<bool>,
    /// How long the server goes without an event before it sends a bookmark.
    pub bookmark_interval: Duration,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: &'static str,
    /// The object (a Status for ERROR), shared with the other watchers of the same change.
    pub object: Arc<SharedObject>,
}

impl WatchEvent {
    fn new(kind: &'static str, object: Object) -> WatchEvent {
        WatchEvent {
            kind,
            object: SharedObject::new(object),
        }
    }
}

/// An open watch.
pub struct Watch {
    registry: Registry,
    resource: Arc<Resource>,
    options: WatchOptions,
    /// The store's watch; `None` once the watch is over (only queued events remain).
    stream: Option<Box<dyn WatchStream>>,
    queued: VecDeque<WatchEvent>,
}

/// The annotation on the bookmark that ends a watch's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

impl Registry {
    /// Opens a watch on a resource (in one namespace, or all).
    pub async fn watch(
        &self,
        resource: Arc<Resource>,
        namespace: Option<&str>,
        options: WatchOptions,
    ) -> Result<Watch, ApiError> {
        let version = parse_resource_version(&options.resource_version)?;
        let initial = match options.send_initial_events {
            Some(true) => {
                if options.resource_version_match != "NotOlderThan" {
                    return Err(ApiError::invalid(
                        crate::error::Subject {
                            group: "",
                            kind: "ListOptions",
                            resource: "",
                            name: "",
                        },
                        &[crate::FieldError::forbidden(
                            "resourceVersionMatch",
                            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                        )],
                    ));
                }
                true
            }
            Some(false) => false,
            // Without a resourceVersion (or with "0") a watch starts with the current state.
            None => matches!(version, None | Some(0)),
        };
        let mut queued = VecDeque::new();
        let start = if initial {
            let page = self
                .list(
                    &resource,
                    namespace,
                    &ListOptions {
                        labels: options.labels.clone(),
                        fields: options.fields.clone(),
                        ..ListOptions::default()
                    },
                )
                .await?;
            for object in page.items {
                queued.push_back(WatchEvent::new("ADDED", object));
            }
            if options.send_initial_events == Some(true) {
                let mut bookmark = bookmark(&resource, page.revision);
                crate::object::metadata_mut(&mut bookmark)
                    .insert("annotations".into(), json!({INITIAL_EVENTS_END: "true"}));
                queued.push_back(WatchEvent::new("BOOKMARK", bookmark));
            }
            page.revision
        } else {
            match version {
                Some(v) if v > 0 => v,
                _ => self
                    .backend()
                    .revision()
                    .await
                    .map_err(ApiError::from_storage)?,
            }
        };
        let prefix = resource.namespace_prefix(namespace);
        let stream = match self.backend().watch(&prefix, start).await {
            Ok(stream) => Some(stream),
            Err(StorageError::Compacted { .. }) => {
                // Kubernetes reports this inside the stream, so clients relist.
                queued.clear();
                queued.push_back(expired(start));
                None
            }
            Err(e) => return Err(ApiError::from_storage(e)),
        };
        Ok(Watch {
            registry: self.clone(),
            resource,
            options,
            stream,
            queued,
        })
    }
}

fn bookmark(resource: &Resource, revision: i64) -> Object {
    let mut object =
        json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": {}})
            .as_object()
            .cloned()
            .unwrap_or_default();
    set_resource_version(&mut object, revision);
    object
}

fn expired(revision: i64) -> WatchEvent {
    let status = ApiError::gone(format!("too old resource version: {revision}")).status();
    WatchEvent::new("ERROR", status.as_object().cloned().unwrap_or_default())
}

impl Watch {
    /// The next event; `None` when the watch is over.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            let stream = self.stream.as_mut()?;
            let interval = if self.options.bookmark_interval.is_zero() {
                Duration::from_secs(60)
            } else {
                self.options.bookmark_interval
            };
            match stream.next(interval).await {
                Ok(WatchItem::Changes(changes)) => {
                    for change in changes {
                        match self.event(change) {
                            Ok(Some(event)) => self.queued.push_back(event),
                            Ok(None) => {}
                            Err(e) => {
                                self.queued.push_back(error_event(&e));
                                self.stream = None;
                                break;
                            }
                        }
                    }
                }
                Ok(WatchItem::Progress(revision)) => {
                    if self.options.bookmarks {
                        self.queued.push_back(WatchEvent::new(
                            "BOOKMARK",
                            bookmark(&self.resource, revision),
                        ));
                    }
                }
                Err(StorageError::Compacted { requested, .. }) => {
                    self.queued.push_back(expired(requested));
                    self.stream = None;
                }
                Err(e) => {
                    self.queued
                        .push_back(error_event(&ApiError::from_storage(e)));
                    self.stream = None;
                }
            }
        }
    }

    fn matches(&self, object: &Object) -> bool {
        self.options.labels.matches(object) && self.options.fields.matches(object)
    }

    /// The event a change is to this watcher, if any: an object that starts matching is
    /// ADDED, one that stops matching is DELETED.
    fn event(&self, change: Change) -> Result<Option<WatchEvent>, ApiError> {
        let revision = change.revision();
        let old = change
            .prev
            .as_ref()
            .map(|kv| self.shared(kv, kv.mod_revision, false))
            .transpose()?;
        let old_matches = old.as_ref().is_some_and(|o| self.matches(o.object()));
        // An object that leaves is shown in its last state at the revision it left.
        let gone = |prev: Option<&Kv>| -> Result<Option<WatchEvent>, ApiError> {
            match prev {
                Some(prev) if old_matches => Ok(Some(WatchEvent {
                    kind: "DELETED",
                    object: self.shared(prev, revision, true)?,
                })),
                _ => Ok(None),
            }
        };
        match change.kind {
            ChangeKind::Delete => gone(change.prev.as_ref()),
            ChangeKind::Put => {
                let new = self.shared(&change.kv, revision, false)?;
                match (old_matches, self.matches(new.object())) {
                    (true, true) => Ok(Some(WatchEvent {
                        kind: "MODIFIED",
                        object: new,
                    })),
                    (false, true) => Ok(Some(WatchEvent {
                        kind: "ADDED",
                        object: new,
                    })),
                    (true, false) => gone(change.prev.as_ref()),
                    (false, false) => Ok(None),
                }
            }
        }
    }

    /// The object of `kv` shown at `revision`, decoded once for every watcher of the change
    /// (custom resources, shown in the version each watcher asked for, decode their own).
    fn shared(&self, kv: &Kv, revision: i64, deleted: bool) -> Result<Arc<SharedObject>, ApiError> {
        let decode = || {
            let mut object = self.registry.decode_as(&self.resource, kv)?;
            if deleted {
                set_resource_version(&mut object, revision);
            }
            Ok(object)
        };
        if self.resource.custom {
            return decode().map(SharedObject::new);
        }
        self.registry
            .events()
            .get_or_decode(kv, revision, deleted, decode)
    }
}

fn error_event(error: &ApiError) -> WatchEvent {
    WatchEvent::new(
        "ERROR",
        error.status().as_object().cloned().unwrap_or_default(),
    )
}
