//! The generic storage every resource shares: create, get, list, update (and the read-modify-
//! write that patches use), delete and watch, with Kubernetes' metadata semantics —
//! resourceVersion from the store revision, optimistic concurrency, generateName, uid,
//! creationTimestamp, generation, finalizers and graceful deletion, namespace lifecycle.

use std::sync::Arc;

use apiserver_storage::{Backend, Kv, ListRequest, StorageError};
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};

use crate::allocation::ServiceAllocator;
use crate::catalog::{Catalog, Resource};
use crate::continuation;
use crate::error::{ApiError, FieldError, Subject};
use crate::object::{
    self, Object, finalizers, is_deleting, metadata, metadata_mut, set_finalizers,
    set_resource_version,
};
use crate::selector::{FieldSelector, LabelSelector};
use crate::validation::object_meta;

/// How a write is made.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Validate and prepare, but store nothing (`dryRun=All`).
    pub dry_run: bool,
    /// Refuse fields the type does not have (`fieldValidation=Strict`).
    pub strict: bool,
    /// Whom the write's changes are recorded for in managedFields (`fieldManager`, or the
    /// client's user agent); None for the server's own writes, which are not tracked.
    pub field_manager: Option<String>,
}

/// How a write's field ownership is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracking {
    /// An ordinary write: its manager (from the options) owns what it changed.
    Update,
    /// A server-side apply, which already set managedFields.
    Applied,
}

/// How a list is read.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only objects whose labels match.
    pub labels: LabelSelector,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
    /// At most this many items (0: all).
    pub limit: usize,
    /// The token of the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion` as given ("" when absent).
    pub resource_version: String,
    /// `resourceVersionMatch` as given.
    pub resource_version_match: String,
}

/// A page of a list: its objects, or what the caller made of each ([`Registry::list_with`]).
#[derive(Debug, Clone)]
pub struct ListPage<T = Object> {
    /// The objects.
    pub items: Vec<T>,
    /// The revision it was read at.
    pub revision: i64,
    /// Where the next page starts, if there is one.
    pub continue_token: Option<String>,
    /// Items left after this page (known only without selectors).
    pub remaining: Option<i64>,
}

/// How a delete is made.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Seconds a pod gets to stop (its spec's by default).
    pub grace_period_seconds: Option<i64>,
    /// `Foreground`, `Background` or `Orphan`.
    pub propagation_policy: Option<String>,
    /// Delete only if the object still has this uid.
    pub precondition_uid: Option<String>,
    /// Delete only if the object is still at this resourceVersion.
    pub precondition_resource_version: Option<String>,
    /// Validate only.
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; this is its last state.
    Gone(Object),
    /// Deletion started; finalizers or a grace period keep the object for now.
    Pending(Object),
}

/// A compare-and-swap write.
pub(crate) enum Swap {
    /// Store this value.
    Put(Bytes),
    /// Delete the key.
    Delete,
}

/// The write a read-modify-write wants from the current object.
pub type Mutation<'a> = dyn Fn(Object) -> Result<Object, ApiError> + Send + Sync + 'a;

/// The generic storage of every resource.
#[derive(Clone)]
pub struct Registry {
    backend: Arc<dyn Backend>,
    catalog: Arc<Catalog>,
    services: Option<Arc<ServiceAllocator>>,
    /// Changes recently decoded for watchers.
    events: Arc<crate::shared::EventCache>,
}

const GENERATE_NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Finalizer that makes the garbage collector delete dependents before the owner.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer that makes the garbage collector orphan dependents.
pub const ORPHAN_FINALIZER: &str = "orphan";

pub(crate) fn subject<'a>(resource: &'a Resource, name: &'a str) -> Subject<'a> {
    Subject {
        group: &resource.group,
        kind: &resource.kind,
        resource: &resource.plural,
        name,
    }
}

impl Registry {
    /// Serves the resources of `catalog` from `backend`.
    pub fn new(backend: Arc<dyn Backend>, catalog: Arc<Catalog>) -> Registry {
        Registry {
            backend,
            catalog,
            services: None,
            events: Arc::default(),
        }
    }

    /// This registry, with Services given cluster IPs and node ports by `allocator`.
    pub fn with_service_allocator(mut self, allocator: Arc<ServiceAllocator>) -> Registry {
        self.services = Some(allocator);
        self
    }

    /// The Service allocator, if one is configured.
    pub fn service_allocator(&self) -> Option<Arc<ServiceAllocator>> {
        self.services.clone()
    }

    /// The Service allocator for `resource`, if it is Services and one is configured.
    fn allocator_for(&self, resource: &Resource) -> Option<&ServiceAllocator> {
        self.services
            .as_deref()
            .filter(|_| resource.group.is_empty() && resource.plural == "services")
    }

    /// The catalog served.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Changes recently decoded for watchers.
    pub(crate) fn events(&self) -> &crate::shared::EventCache {
        &self.events
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Decodes a stored value, setting its resourceVersion.
    pub fn decode(&self, kv: &Kv) -> Result<Object, ApiError> {
        let mut object: Object = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::internal(format!(
                "stored object {} does not decode: {e}",
                String::from_utf8_lossy(&kv.key)
            ))
        })?;
        set_resource_version(&mut object, kv.mod_revision);
        Ok(object)
    }

    /// Every object stored under `prefix`, by key, and the revision they were read at: what a
    /// cache loads before it watches from that revision.
    pub async fn read_prefix(
        &self,
        prefix: &str,
    ) -> Result<(std::collections::BTreeMap<String, Object>, i64), ApiError> {
        let page = self
            .backend
            .list(&ListRequest {
                prefix: prefix.to_owned(),
                start: String::new(),
                limit: 0,
                revision: 0,
                serializable: false,
            })
            .await
            .map_err(ApiError::from_storage)?;
        let mut objects = std::collections::BTreeMap::new();
        for kv in &page.kvs {
            objects.insert(
                String::from_utf8_lossy(&kv.key).into_owned(),
                self.decode(kv)?,
            );
        }
        Ok((objects, page.revision))
    }

    /// Decodes a stored object of `resource` as that resource serves it: a custom resource
    /// served in several versions is stored in one, and the others differ only in their
    /// apiVersion (conversion `None`).
    pub fn decode_as(&self, resource: &Resource, kv: &Kv) -> Result<Object, ApiError> {
        let mut object = self.decode(kv)?;
        if resource.custom {
            object.insert("apiVersion".into(), json!(resource.api_version()));
        }
        Ok(object)
    }

    pub(crate) fn encode(object: &mut Object) -> Result<Bytes, ApiError> {
        // The revision is the store's, not part of the value.
        let meta = metadata_mut(object);
        let version = meta.remove("resourceVersion");
        meta.remove("selfLink");
        let bytes = serde_json::to_vec(object).map_err(|e| ApiError::internal(e.to_string()));
        if let Some(version) = version {
            metadata_mut(object).insert("resourceVersion".into(), version);
        }
        bytes.map(Bytes::from)
    }

    /// Checks a client's object against the resource, fills `apiVersion`/`kind` and decodes it
    /// with the type's schema. Returns it and the unknown fields it dropped.
    pub fn decode_body(
        &self,
        resource: &Resource,
        mut body: Object,
        strict: bool,
    ) -> Result<(Object, Vec<String>), ApiError> {
        let api_version = resource.api_version();
        match body.get("apiVersion").and_then(Value::as_str) {
            Some(v) if v != api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
            _ => {
                body.insert("apiVersion".into(), json!(api_version));
            }
        }
        match body.get("kind").and_then(Value::as_str) {
            Some(k) if k != resource.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    resource.kind
                )));
            }
            _ => {
                body.insert("kind".into(), json!(resource.kind));
            }
        }
        let (mut object, unknown) = resource.strategy.normalize(body).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
                kind = resource.kind,
                version = resource.version
            ))
        })?;
        // Empty metadata maps and lists mean "none", and Kubernetes leaves them out.
        let meta = metadata_mut(&mut object);
        meta.retain(|_, v| match v {
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        });
        if strict && !unknown.is_empty() {
            let fields = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {fields}"
            )));
        }
        Ok((object, unknown))
    }

    fn validate(
        &self,
        resource: &Resource,
        object: &Object,
        old: Option<&Object>,
    ) -> Result<(), ApiError> {
        let mut errors = object_meta(object, resource.namespaced, resource.name_rule);
        errors.extend(match old {
            Some(old) => resource.strategy.validate_update(object, old),
            None => resource.strategy.validate(object),
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                subject(resource, object::name(object)),
                &errors,
            ))
        }
    }

    /// Refuses new objects in a namespace that does not exist or is being deleted.
    async fn check_namespace(&self, resource: &Resource, namespace: &str) -> Result<(), ApiError> {
        if !resource.namespaced {
            return Ok(());
        }
        let Some(namespaces) = self.catalog.get("", "v1", "namespaces") else {
            return Ok(());
        };
        let key = namespaces.key(None, namespace);
        // This member's state answers nearly always; a namespace it does not know yet may have
        // just been created elsewhere, so only a miss is confirmed with a linearizable read.
        let known = self
            .backend
            .get_serializable(&key)
            .await
            .map_err(ApiError::from_storage)?;
        let found = match known {
            Some(kv) => Some(kv),
            None => self
                .backend
                .get(&key)
                .await
                .map_err(ApiError::from_storage)?,
        };
        match found {
            None => Err(ApiError::not_found(subject(&namespaces, namespace))),
            Some(kv) => {
                let ns = self.decode(&kv)?;
                if is_deleting(&ns) {
                    Err(ApiError::forbidden(format!(
                        "unable to create new content in namespace {namespace} because it is being terminated"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Creates an object. `namespace` is the request's (for namespaced resources).
    pub async fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Object,
        options: &WriteOptions,
    ) -> Result<Object, ApiError> {
        self.create_tracked(resource, namespace, body, options, Tracking::Update)
            .await
    }

    pub(crate) async fn create_tracked(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        body: Object,
        options: &WriteOptions,
        tracking: Tracking,
    ) -> Result<Object, ApiError> {
        let (mut object, _) = self.decode_body(resource, body, options.strict)?;
        let meta = metadata_mut(&mut object);
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        set_namespace(resource, meta, namespace)?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if name.is_empty()
            && let Some(prefix) = meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
        {
            let name = generate_name(prefix);
            meta.insert("name".into(), json!(name));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(object::now()));
        for field in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(field);
        }
        if tracks_generation(resource) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if resource.has_status() && resource.strategy.reset_status_on_create() {
            object.remove("status");
        }
        resource.strategy.prepare_for_create(&mut object);
        match (tracking, &options.field_manager) {
            (Tracking::Applied, _) => {}
            (Tracking::Update, Some(manager)) => {
                crate::fields::track_update(resource, None, manager, &Object::new(), &mut object)?
            }
            (Tracking::Update, None) => {
                metadata_mut(&mut object).remove("managedFields");
            }
        }
        self.validate(resource, &object, None)?;
        let namespace = object::namespace(&object).to_owned();
        self.check_namespace(resource, &namespace).await?;
        let reserved = match self.allocator_for(resource) {
            Some(allocator) => {
                allocator
                    .assign(self.backend.as_ref(), &mut object, None, options.dry_run)
                    .await?
            }
            None => Vec::new(),
        };
        if options.dry_run {
            return Ok(object);
        }
        let name = object::name(&object).to_owned();
        let key = resource.key(Some(&namespace), &name);
        let written = match Self::encode(&mut object) {
            Ok(bytes) => self.backend.create(&key, bytes).await,
            Err(e) => Err(StorageError::Internal(e.message)),
        };
        if written.is_err()
            && let Some(allocator) = self.allocator_for(resource)
        {
            allocator.release(self.backend.as_ref(), &reserved).await;
        }
        match written {
            Ok(revision) => {
                set_resource_version(&mut object, revision);
                Ok(object)
            }
            Err(StorageError::AlreadyExists { .. }) => {
                Err(ApiError::already_exists(subject(resource, &name)))
            }
            Err(e) => Err(ApiError::from_storage(e)),
        }
    }

    /// Reads one object.
    pub async fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Object, ApiError> {
        let (_, object) = self
            .current(resource, &resource.key(namespace, name), name)
            .await?;
        Ok(object)
    }

    /// The stored value at `key` and its object; 404 if there is none.
    pub(crate) async fn current(
        &self,
        resource: &Resource,
        key: &str,
        name: &str,
    ) -> Result<(Kv, Object), ApiError> {
        let kv = self
            .backend
            .get(key)
            .await
            .map_err(ApiError::from_storage)?
            .ok_or_else(|| ApiError::not_found(subject(resource, name)))?;
        let object = self.decode_as(resource, &kv)?;
        Ok((kv, object))
    }

    /// Lists objects, a page at a time, at one consistent revision.
    pub async fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        self.list_with(resource, namespace, options, &mut Ok).await
    }

    /// [`Registry::list`], keeping what `keep` makes of each matching object instead of the
    /// object, so a large list need not hold every decoded object at once (the server keeps
    /// each one's encoding).
    pub async fn list_with<T>(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        options: &ListOptions,
        keep: &mut (dyn FnMut(Object) -> Result<T, ApiError> + Send),
    ) -> Result<ListPage<T>, ApiError> {
        let prefix = resource.namespace_prefix(namespace);
        let (mut revision, serializable, mut start) = match &options.continue_token {
            Some(token) => {
                let (revision, start) = continuation::decode(token)?;
                (revision, false, format!("{prefix}{start}"))
            }
            None => {
                let (revision, serializable) = self.list_revision(options).await?;
                (revision, serializable, String::new())
            }
        };
        let filtered = !options.labels.is_empty() || !options.fields.is_empty();
        let mut items = Vec::new();
        loop {
            let want = if options.limit == 0 {
                0
            } else {
                options.limit - items.len()
            };
            let page = self
                .backend
                .list(&ListRequest {
                    prefix: prefix.clone(),
                    start: start.clone(),
                    limit: want,
                    revision,
                    serializable,
                })
                .await
                .map_err(|e| match e {
                    StorageError::Compacted { .. } if options.continue_token.is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter.",
                    ),
                    other => ApiError::from_storage(other),
                })?;
            revision = page.revision;
            let last_key = page.kvs.last().map(|kv| kv.key.clone());
            for kv in &page.kvs {
                let object = self.decode_as(resource, kv)?;
                if options.labels.matches(&object) && options.fields.matches(&object) {
                    items.push(keep(object)?);
                }
            }
            let done = options.limit == 0 || items.len() >= options.limit;
            match (page.more, last_key) {
                (true, Some(last)) if done => {
                    let next = format!("{}\0", String::from_utf8_lossy(&last[prefix.len()..]));
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: Some(continuation::encode(revision, &next)),
                        remaining: (!filtered).then_some(page.remaining),
                    });
                }
                (true, Some(last)) => start = format!("{}\0", String::from_utf8_lossy(&last)),
                _ => {
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: None,
                        remaining: None,
                    });
                }
            }
        }
    }

    /// The revision a first page is read at (0: the latest), from `resourceVersion` and its
    /// match rule, and whether this member's state may serve it without a round to the leader:
    /// `resourceVersion=0` asks for any recent state, and a "not older than" read is served
    /// once this member has caught up with the version asked for.
    async fn list_revision(&self, options: &ListOptions) -> Result<(i64, bool), ApiError> {
        let version = parse_resource_version(&options.resource_version)?;
        match (version, options.resource_version_match.as_str()) {
            (_, m) if !matches!(m, "" | "Exact" | "NotOlderThan") => {
                Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
            (None, "Exact" | "NotOlderThan") => Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
            (Some(version), "Exact") => Ok((version, false)),
            (Some(version), _) if version > 0 => {
                let current = self
                    .backend
                    .revision()
                    .await
                    .map_err(ApiError::from_storage)?;
                if current < version {
                    Err(ApiError::timeout(format!(
                        "Too large resource version: {version}, current: {current}"
                    )))
                } else {
                    Ok((0, true))
                }
            }
            (Some(_), _) => Ok((0, true)),
            (None, _) => Ok((0, false)),
        }
    }

    /// Replaces an object (`PUT`), on the resource or its `subresource` (`status`,
    /// `finalize`). A resourceVersion in the body must still be current.
    pub async fn update(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        body: Object,
        options: &WriteOptions,
    ) -> Result<Object, ApiError> {
        let (mut new, _) = self.decode_body(resource, body, options.strict)?;
        let body_name = object::name(&new);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        set_namespace(resource, metadata_mut(&mut new), namespace)?;
        let expected = parse_resource_version(object::resource_version(&new))?;
        let check_and_replace = |current: Object| {
            if let Some(expected) = expected.filter(|v| *v > 0)
                && object::resource_version(&current) != expected.to_string()
            {
                return Err(ApiError::modified(subject(resource, name)));
            }
            Ok(new.clone())
        };
        // The body was decoded above; the write need not decode it again.
        self.read_modify_write(
            resource,
            namespace,
            name,
            subresource,
            options,
            &check_and_replace,
            false,
            Tracking::Update,
        )
        .await
    }

    /// Read-modify-write of one object: `mutate` gets the current object and returns the one
    /// wanted; the write retries from a fresh read if the object changed meanwhile.
    pub async fn update_with(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        options: &WriteOptions,
        mutate: &Mutation<'_>,
    ) -> Result<Object, ApiError> {
        self.read_modify_write(
            resource,
            namespace,
            name,
            subresource,
            options,
            mutate,
            true,
            Tracking::Update,
        )
        .await
    }

    /// [`Registry::update_with`], recording field ownership as `tracking` says; `decode` is
    /// false when `mutate` returns an object already decoded against the type (a PUT body).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn read_modify_write(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        options: &WriteOptions,
        mutate: &Mutation<'_>,
        decode: bool,
        tracking: Tracking,
    ) -> Result<Object, ApiError> {
        let key = resource.key(namespace, name);
        loop {
            let (kv, old) = self.current(resource, &key, name).await?;
            let mut wanted = mutate(old.clone())?;
            if decode {
                // Whatever the mutation produced (a patched object, say) is checked like a body.
                wanted = self.decode_body(resource, wanted, options.strict)?.0;
            }
            let mut new = self.prepare_update(resource, wanted, &old, subresource)?;
            match (tracking, &options.field_manager) {
                (Tracking::Applied, _) => {}
                (Tracking::Update, Some(manager)) => {
                    crate::fields::track_update(resource, subresource, manager, &old, &mut new)?
                }
                (Tracking::Update, None) => keep_managed_fields(&old, &mut new),
            }
            let allocator = self
                .allocator_for(resource)
                .filter(|_| subresource.is_none());
            let reserved = match allocator {
                Some(allocator) => {
                    allocator
                        .assign(self.backend.as_ref(), &mut new, Some(&old), options.dry_run)
                        .await?
                }
                None => Vec::new(),
            };
            if same_content(&new, &old) {
                return Ok(old);
            }
            if options.dry_run {
                return Ok(new);
            }
            // The last finalizer gone from an object being deleted: the write is its delete.
            let deleted = is_deleting(&new) && !blocks_deletion(resource, &new);
            let write = if deleted {
                Swap::Delete
            } else {
                Swap::Put(Self::encode(&mut new)?)
            };
            let swapped = self
                .swap(resource, name, &key, kv.mod_revision, write)
                .await;
            if let Some(allocator) = allocator {
                match &swapped {
                    Ok(Some(_)) => {
                        let kept = (!deleted).then_some(&new);
                        allocator
                            .release_unused(self.backend.as_ref(), &old, kept)
                            .await;
                    }
                    _ => allocator.release(self.backend.as_ref(), &reserved).await,
                }
            }
            let Some(revision) = swapped? else {
                continue;
            };
            set_resource_version(&mut new, revision);
            return Ok(new);
        }
    }

    /// Writes or deletes `key` if it is still at revision `expected`. `None` when it changed
    /// meanwhile (the caller reads again and retries).
    pub(crate) async fn swap(
        &self,
        resource: &Resource,
        name: &str,
        key: &str,
        expected: i64,
        write: Swap,
    ) -> Result<Option<i64>, ApiError> {
        let result = match write {
            Swap::Put(bytes) => self.backend.update(key, bytes, expected).await,
            Swap::Delete => self
                .backend
                .delete(key, Some(expected))
                .await
                .map(|(revision, _)| revision),
        };
        match result {
            Ok(revision) => Ok(Some(revision)),
            Err(StorageError::Conflict { .. }) => Ok(None),
            Err(StorageError::NotFound { .. }) => Err(ApiError::not_found(subject(resource, name))),
            Err(e) => Err(ApiError::from_storage(e)),
        }
    }

    /// Applies the rules of an update to `new` given the stored `old`.
    fn prepare_update(
        &self,
        resource: &Resource,
        mut new: Object,
        old: &Object,
        subresource: Option<&str>,
    ) -> Result<Object, ApiError> {
        let name = object::name(old).to_owned();
        let new_uid = object::uid(&new);
        if !new_uid.is_empty() && new_uid != object::uid(old) {
            return Err(ApiError::conflict(
                subject(resource, &name),
                &format!(
                    "Precondition failed: UID in precondition: {new_uid}, UID in object meta: {}",
                    object::uid(old)
                ),
            ));
        }
        new = match subresource {
            // A status write changes only the status (and nothing of the metadata).
            Some("status") => {
                let mut merged = old.clone();
                match new.remove("status") {
                    Some(status) => merged.insert("status".into(), status),
                    None => merged.remove("status"),
                };
                keep_managed_fields(&new, &mut merged);
                merged
            }
            // An approval changes only the request's conditions.
            Some("approval") => {
                let mut merged = old.clone();
                let conditions = new.get("status").and_then(|s| s.get("conditions")).cloned();
                let status = object::map_mut(&mut merged, "status");
                match conditions {
                    Some(c) => status.insert("conditions".into(), c),
                    None => status.remove("conditions"),
                };
                merged
            }
            Some("finalize") => {
                let mut merged = old.clone();
                let finalizers = new.get("spec").and_then(|s| s.get("finalizers")).cloned();
                let spec = object::map_mut(&mut merged, "spec");
                match finalizers {
                    Some(f) => spec.insert("finalizers".into(), f),
                    None => spec.remove("finalizers"),
                };
                merged
            }
            // A scale write is a write of the resource's replicas.
            None | Some("scale") => {
                if resource.has_status() {
                    match old.get("status") {
                        Some(status) => new.insert("status".into(), status.clone()),
                        None => new.remove("status"),
                    };
                }
                new
            }
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "update is not supported on {}/{other}",
                    resource.plural
                )));
            }
        };
        let old_meta = metadata(old).cloned().unwrap_or_default();
        let meta = metadata_mut(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "name",
            "namespace",
        ] {
            match old_meta.get(field) {
                Some(value) => meta.insert(field.into(), value.clone()),
                None => meta.remove(field),
            };
        }
        meta.remove("selfLink");
        if is_deleting(old) {
            let before = finalizers(old);
            if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    subject(resource, &name),
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                        ),
                    )],
                ));
            }
        }
        if matches!(subresource, None | Some("scale")) {
            resource.strategy.prepare_for_update(&mut new, old);
        }
        if tracks_generation(resource) {
            let generation = object::generation(old).max(1);
            let bumped = if spec_changed(resource, &new, old) {
                generation + 1
            } else {
                generation
            };
            metadata_mut(&mut new).insert("generation".into(), json!(bumped));
        }
        self.validate(resource, &new, Some(old))?;
        Ok(new)
    }

    /// Deletes an object, or starts its deletion when finalizers or a grace period keep it.
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let key = resource.key(namespace, name);
        loop {
            let (kv, old) = self.current(resource, &key, name).await?;
            check_preconditions(resource, &old, options)?;
            let mut new = old.clone();
            let mut finalizers = finalizers(&new);
            match options.propagation_policy.as_deref() {
                Some("Foreground") => {
                    finalizers.retain(|f| f != ORPHAN_FINALIZER);
                    if !finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
                        finalizers.push(FOREGROUND_FINALIZER.into());
                    }
                }
                Some("Orphan") => {
                    finalizers.retain(|f| f != FOREGROUND_FINALIZER);
                    if !finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
                        finalizers.push(ORPHAN_FINALIZER.into());
                    }
                }
                Some("Background") | None => {}
                Some(other) => {
                    return Err(ApiError::invalid(
                        subject(resource, name),
                        &[FieldError::not_supported(
                            "propagationPolicy",
                            other,
                            &["Foreground", "Background", "Orphan"],
                        )],
                    ));
                }
            }
            set_finalizers(&mut new, &finalizers);
            let grace = self.grace_period(resource, &old, options);
            let meta = metadata_mut(&mut new);
            if !meta.contains_key("deletionTimestamp") || grace.is_some() {
                let at =
                    jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace.unwrap_or(0));
                let earlier = meta
                    .get("deletionTimestamp")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|current| current <= at);
                if !earlier {
                    meta.insert("deletionTimestamp".into(), json!(object::timestamp(at)));
                    meta.insert(
                        "deletionGracePeriodSeconds".into(),
                        json!(grace.unwrap_or(0)),
                    );
                }
            }
            if resource.plural == "namespaces" && resource.group.is_empty() {
                object::map_mut(&mut new, "status").insert("phase".into(), json!("Terminating"));
            }
            let pending = blocks_deletion(resource, &new) || grace.is_some();
            if options.dry_run {
                return Ok(if pending {
                    Deleted::Pending(new)
                } else {
                    Deleted::Gone(old)
                });
            }
            if pending && same_content(&new, &old) {
                return Ok(Deleted::Pending(old));
            }
            let write = if pending {
                Swap::Put(Self::encode(&mut new)?)
            } else {
                Swap::Delete
            };
            let Some(revision) = self
                .swap(resource, name, &key, kv.mod_revision, write)
                .await?
            else {
                continue;
            };
            if !pending && let Some(allocator) = self.allocator_for(resource) {
                allocator
                    .release_unused(self.backend.as_ref(), &old, None)
                    .await;
            }
            return Ok(if pending {
                set_resource_version(&mut new, revision);
                Deleted::Pending(new)
            } else {
                let mut gone = old;
                set_resource_version(&mut gone, revision);
                Deleted::Gone(gone)
            });
        }
    }

    /// The grace period a pod on a node gets before it is removed; `None` when the object
    /// goes at once.
    fn grace_period(
        &self,
        resource: &Resource,
        object: &Object,
        options: &DeleteOptions,
    ) -> Option<i64> {
        if resource.plural != "pods" || !resource.group.is_empty() {
            return None;
        }
        let spec = object.get("spec");
        let scheduled = spec
            .and_then(|s| s.get("nodeName"))
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let finished = object
            .get("status")
            .and_then(|s| s.get("phase"))
            .and_then(Value::as_str)
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let grace = options.grace_period_seconds.unwrap_or_else(|| {
            spec.and_then(|s| s.get("terminationGracePeriodSeconds"))
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        // An unscheduled or finished pod has nothing to stop; a kubelet's delete with
        // grace 0 is the final one.
        (scheduled && !finished && grace > 0).then_some(grace)
    }

    /// Deletes every object that matches (`deletecollection`).
    pub async fn delete_collection(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        list: &ListOptions,
        options: &DeleteOptions,
    ) -> Result<Vec<Object>, ApiError> {
        let page = self.list(resource, namespace, list).await?;
        let mut deleted = Vec::new();
        for item in page.items {
            let ns = object::namespace(&item).to_owned();
            let ns = (!ns.is_empty()).then_some(ns);
            match self
                .delete(resource, ns.as_deref(), object::name(&item), options)
                .await
            {
                Ok(Deleted::Gone(object) | Deleted::Pending(object)) => deleted.push(object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

/// Whether finalizers keep an object whose deletion has begun.
fn blocks_deletion(resource: &Resource, object: &Object) -> bool {
    if !finalizers(object).is_empty() {
        return true;
    }
    resource.plural == "namespaces"
        && resource.group.is_empty()
        && object
            .get("spec")
            .and_then(|s| s.get("finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

fn check_preconditions(
    resource: &Resource,
    object: &Object,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let name = object::name(object);
    if let Some(uid) = &options.precondition_uid
        && uid != object::uid(object)
    {
        return Err(ApiError::conflict(
            subject(resource, name),
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                object::uid(object)
            ),
        ));
    }
    if let Some(version) = &options.precondition_resource_version
        && version != object::resource_version(object)
    {
        return Err(ApiError::conflict(
            subject(resource, name),
            &format!(
                "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                object::resource_version(object)
            ),
        ));
    }
    Ok(())
}

fn set_namespace(
    resource: &Resource,
    meta: &mut Object,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    if !resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let given = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    match namespace {
        Some(ns) if !given.is_empty() && given != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        Some(ns) => {
            meta.insert("namespace".into(), json!(ns));
            Ok(())
        }
        None => Ok(()),
    }
}

/// `prefix` and five random characters of the set Kubernetes uses for generated names.
pub fn generate_name(prefix: &str) -> String {
    // Kubernetes keeps the whole name within 63 characters.
    let prefix: String = prefix.chars().take(58).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| GENERATE_NAME_CHARS[rng.random_range(0..GENERATE_NAME_CHARS.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Parses a `resourceVersion` parameter: absent/empty is `None`.
pub fn parse_resource_version(version: &str) -> Result<Option<i64>, ApiError> {
    if version.is_empty() {
        return Ok(None);
    }
    version
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid value: \"{version}\": must be a non-negative integer resourceVersion"
            ))
        })
}

/// Gives `new` the managedFields of `from` when it has none of its own.
fn keep_managed_fields(from: &Object, new: &mut Object) {
    let Some(fields) = metadata(from).and_then(|m| m.get("managedFields")) else {
        return;
    };
    let meta = metadata_mut(new);
    if !meta.contains_key("managedFields") {
        meta.insert("managedFields".into(), fields.clone());
    }
}

/// Equal apart from the resourceVersion.
fn same_content(a: &Object, b: &Object) -> bool {
    let same_except_version = |x: &Object, y: &Object| {
        let rest = |m: &Object| m.iter().filter(|(k, _)| *k != "resourceVersion").count();
        rest(x) == rest(y)
            && x.iter()
                .filter(|(k, _)| *k != "resourceVersion")
                .all(|(k, v)| y.get(k) == Some(v))
    };
    a.len() == b.len()
        && a.iter()
            .all(|(key, value)| match (key.as_str(), value, b.get(key)) {
                ("metadata", Value::Object(x), Some(Value::Object(y))) => same_except_version(x, y),
                (_, value, other) => other == Some(value),
            })
}

/// Whether objects of `resource` count their spec changes in metadata.generation: those with
/// a status subresource, and every custom resource.
fn tracks_generation(resource: &Resource) -> bool {
    resource.has_status() || resource.custom
}

/// Whether anything but metadata (and status, when it is a subresource) changed: what bumps
/// `metadata.generation`.
fn spec_changed(resource: &Resource, new: &Object, old: &Object) -> bool {
    let has_status = resource.has_status();
    let keys = new
        .keys()
        .chain(old.keys())
        .filter(|k| *k != "metadata" && !(has_status && *k == "status"));
    keys.into_iter().any(|k| new.get(k) != old.get(k))
}
