//! Server-side apply and field ownership, as kube-apiserver does them.
//!
//! Every object records in `metadata.managedFields` which manager owns which of its fields.
//! An ordinary write ([`update`]) gives its manager the fields it changed and takes them from
//! the others. An apply ([`apply`]) states the whole intent of one manager: its configuration
//! is merged into the object, the fields it applied before and no longer mentions are
//! removed (unless another manager owns them), and changing a field another manager owns is a
//! conflict unless the apply is forced, which takes the field over.
//!
//! How values merge comes from the type's OpenAPI schema ([`Schema`]). **Does not know** the
//! store, HTTP, or the built-in types: the registry supplies schemas and calls in here inside
//! its read-modify-write.

pub mod managers;
pub mod path;
pub mod schema;
pub mod set;
pub mod walk;

use std::sync::LazyLock;

use serde_json::{Map, Value};

pub use managers::{Entry, Managers, Operation};
pub use path::Element;
pub use schema::Schema;
pub use set::FieldSet;

/// Why a write cannot be tracked or applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the field and the reason.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, dotted (`metadata.managedFields[0].operation`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The apply changes fields other managers own.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

impl Error {
    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager, described (`"kubectl-edit" using apps/v1`).
    pub manager: String,
    /// The field, dotted (`.spec.replicas`).
    pub field: String,
}

fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.field
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for manager in managers {
        lines.push(format!("conflicts with {manager}:"));
        for conflict in conflicts.iter().filter(|c| c.manager == manager) {
            lines.push(format!("- {}", conflict.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Which part of an object a write goes through: the status subresource owns only `status`,
/// and a resource with a status subresource does not let its main endpoint own `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The resource itself; `status` is excluded when the resource has a status subresource.
    Main {
        /// Whether `status` belongs to a subresource.
        has_status: bool,
    },
    /// The `status` subresource.
    Status,
    /// The `scale` subresource, which writes the resource's own replicas.
    Scale,
}

fn status() -> Element {
    Element::Field("status".into())
}

/// Fields the server sets, which no manager owns.
const SERVER_FIELDS: &[&[&str]] = &[
    &["apiVersion"],
    &["kind"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "uid"],
    &["metadata", "resourceVersion"],
    &["metadata", "generation"],
    &["metadata", "creationTimestamp"],
    &["metadata", "deletionTimestamp"],
    &["metadata", "deletionGracePeriodSeconds"],
    &["metadata", "selfLink"],
    &["metadata", "managedFields"],
];

impl Scope {
    /// The subresource name recorded in managedFields.
    fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
            Scope::Scale => "scale",
        }
    }

    /// `set` without what this scope does not own.
    fn restrict(self, set: &FieldSet) -> FieldSet {
        // Built once: every write restricts three sets.
        static EXCLUDED: LazyLock<[FieldSet; 2]> = LazyLock::new(|| {
            let mut server = FieldSet::default();
            for path in SERVER_FIELDS {
                let path: Vec<Element> = path.iter().map(|f| Element::Field((*f).into())).collect();
                server.insert(&path);
            }
            let mut with_status = server.clone();
            with_status.insert(&[status()]);
            [server, with_status]
        });
        match self {
            Scope::Main { has_status: false } => set.recursive_difference(&EXCLUDED[0]),
            Scope::Main { has_status: true } | Scope::Scale => {
                set.recursive_difference(&EXCLUDED[1])
            }
            Scope::Status => set.only(&status()),
        }
    }
}

/// What a write is, for field tracking.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    /// The type's schema at the object's root.
    pub schema: Schema<'a>,
    /// The API version the object is written in (`apps/v1`).
    pub api_version: &'a str,
    /// Which part of the object the write goes through.
    pub scope: Scope,
    /// The manager's name.
    pub manager: &'a str,
    /// Now, as managedFields times are written (RFC 3339).
    pub now: &'a str,
}

impl Write<'_> {
    fn entry(&self, operation: Operation, fields: FieldSet) -> Entry {
        Entry {
            manager: self.manager.to_owned(),
            operation,
            api_version: self.api_version.to_owned(),
            subresource: self.scope.subresource().to_owned(),
            time: Some(self.now.to_owned()),
            fields,
        }
    }

    /// The manager's new entry. A write that changed nothing keeps the entry's time, so that
    /// repeating it is a no-op that stores nothing.
    fn next_entry(
        &self,
        managers: &Managers,
        operation: Operation,
        fields: FieldSet,
        changed: bool,
    ) -> Entry {
        let mut entry = self.entry(operation, fields);
        if let Some(previous) = managers.get(&entry)
            && !changed
            && previous.fields == entry.fields
        {
            entry.time = previous.time.clone();
        }
        entry
    }

    fn changes(&self, old: &Map<String, Value>, new: &Map<String, Value>) -> walk::Comparison {
        let found = walk::compare(self.schema, old, new);
        walk::Comparison {
            added: self.scope.restrict(&found.added),
            modified: self.scope.restrict(&found.modified),
            removed: self.scope.restrict(&found.removed),
        }
    }
}

fn managed_fields(object: &Map<String, Value>) -> Option<&Value> {
    object.get("metadata").and_then(|m| m.get("managedFields"))
}

fn set_managed_fields(object: &mut Map<String, Value>, managers: Managers) {
    let encoded = managers.encode();
    let Some(Value::Object(meta)) = object.get_mut("metadata") else {
        if let Some(encoded) = encoded {
            let mut meta = Map::new();
            meta.insert("managedFields".into(), encoded);
            object.insert("metadata".into(), Value::Object(meta));
        }
        return;
    };
    match encoded {
        Some(encoded) => meta.insert("managedFields".into(), encoded),
        None => meta.remove("managedFields"),
    };
}

/// Records an ordinary write (create, update, a patch that is not an apply) that turned
/// `old` into `new` (for a create, `old` is empty). The manager comes to own what it added or
/// changed; other managers lose those fields and any that were removed. Managed fields the
/// client sent replace the stored ones (that is how clients edit or reset them), except
/// through a subresource.
pub fn update(
    write: &Write<'_>,
    old: &Map<String, Value>,
    new: &mut Map<String, Value>,
) -> Result<(), Error> {
    let sent = managed_fields(new).filter(|v| v.as_array().is_some_and(|a| !a.is_empty()));
    let mut managers = match sent {
        Some(sent) if matches!(write.scope, Scope::Main { .. }) => Managers::decode(Some(sent))?,
        _ => Managers::decode(managed_fields(old))?,
    };
    let changes = write.changes(old, new);
    let touched = changes.modified.union(&changes.added);
    let me = write.entry(Operation::Update, FieldSet::default());
    for entry in managers.entries.iter_mut().filter(|e| !e.same_manager(&me)) {
        entry.fields = entry
            .fields
            .difference(&touched)
            .difference(&changes.removed);
    }
    let mine = managers
        .get(&me)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mine = mine.union(&touched).difference(&changes.removed);
    if !mine.is_empty() {
        let changed = !touched.is_empty() || !changes.removed.is_empty();
        let entry = write.next_entry(&managers, Operation::Update, mine, changed);
        managers.set(entry);
    } else {
        managers.entries.retain(|e| !e.same_manager(&me));
    }
    set_managed_fields(new, managers);
    Ok(())
}

/// Applies `config` (the manager's whole intent) to `live` (empty when the object does not
/// exist yet) and returns the object to store, with its managedFields. Without `force`,
/// changing a field another manager owns fails with [`Error::Conflicts`]; with it, the field
/// changes owner.
pub fn apply(
    write: &Write<'_>,
    live: &Map<String, Value>,
    config: &Map<String, Value>,
    force: bool,
) -> Result<Map<String, Value>, Error> {
    if managed_fields(config).is_some_and(|m| !m.is_null()) {
        return Err(Error::invalid(
            "metadata.managedFields",
            "must be empty in an applied configuration",
        ));
    }
    let mut managers = Managers::decode(managed_fields(live))?;
    let applied = walk::field_set(write.schema, config).map_err(|e| Error::invalid("body", e))?;
    let applied = write.scope.restrict(&applied);
    let me = write.entry(Operation::Apply, FieldSet::default());
    let last = managers
        .get(&me)
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    let Value::Object(mut merged) = walk::merge(
        write.schema,
        &Value::Object(live.clone()),
        &Value::Object(config.clone()),
    ) else {
        return Err(Error::invalid(
            "body",
            "an applied configuration must be an object",
        ));
    };
    let kept = managers
        .entries
        .iter()
        .filter(|e| !e.same_manager(&me))
        .fold(applied.clone(), |all, e| all.union(&e.fields));
    walk::prune(write.schema, &mut merged, &last, &kept);

    let changes = write.changes(live, &merged);
    let touched = changes.modified.union(&changes.added);
    let mut conflicts = Vec::new();
    for entry in managers.entries.iter().filter(|e| !e.same_manager(&me)) {
        for path in entry.fields.intersection(&touched).paths() {
            conflicts.push(Conflict {
                manager: entry.describe(),
                field: path::display(&path),
            });
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(Error::Conflicts(conflicts));
    }
    for entry in managers.entries.iter_mut().filter(|e| !e.same_manager(&me)) {
        entry.fields = entry
            .fields
            .difference(&touched)
            .difference(&changes.removed);
    }
    let changed = !touched.is_empty() || !changes.removed.is_empty();
    let me = write.next_entry(&managers, Operation::Apply, applied, changed);
    managers.set(me);
    set_managed_fields(&mut merged, managers);
    Ok(merged)
}

#[cfg(test)]
mod tests;
