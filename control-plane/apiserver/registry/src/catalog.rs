//! The resources the API server serves: their names, scope, verbs and strategy.
//!
//! Built-in resources are registered at start; custom resources are added and removed as
//! their definitions change, so the catalog is shared behind a lock and hands out `Arc`s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::strategy::Strategy;
use crate::validation::NameRule;

/// The verbs of an ordinary resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A subresource (`status`, `scale`, `log`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subresource {
    /// Its name, the path segment after the object's name.
    pub name: &'static str,
    /// The kind it takes and returns (`Pod` for status, `Scale` for scale).
    pub kind: String,
    /// Its group/version when it differs from the resource's (`autoscaling/v1` for scale).
    pub api_version: Option<&'static str>,
    /// The verbs it supports.
    pub verbs: &'static [&'static str],
}

/// One resource.
pub struct Resource {
    /// The API group ("" for core).
    pub group: String,
    /// The version served.
    pub version: String,
    /// The kind of its objects.
    pub kind: String,
    /// The plural name in paths.
    pub plural: String,
    /// The singular name.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl's short names (`po`, `svc`, …).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// The verbs it supports.
    pub verbs: Vec<&'static str>,
    /// Its subresources.
    pub subresources: Vec<Subresource>,
    /// How its object names are checked.
    pub name_rule: NameRule,
    /// Fields it can be selected by, besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: Vec<&'static str>,
    /// Its behaviour.
    pub strategy: Arc<dyn Strategy>,
    /// Whether its objects are stored; reviews (access, rules, self) are answered, not kept.
    pub stored: bool,
    /// Where the `scale` subresource reads and writes replicas.
    pub scale_paths: ScalePaths,
    /// The columns of its Tables, when its definition names them (custom resources).
    pub printer_columns: Vec<PrinterColumn>,
    /// Whether it is served from a CustomResourceDefinition: its objects take no strategic
    /// merge patches (their schemas carry no patch strategies), always count generation, are
    /// shown in the version asked for, and print the definition's columns.
    pub custom: bool,
}

/// Where a resource keeps what its `scale` subresource shows, as dotted field paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// The desired replicas (`spec.replicas`).
    pub spec_replicas: String,
    /// The observed replicas (`status.replicas`).
    pub status_replicas: String,
    /// The selector of its pods: a LabelSelector object or a selector string.
    pub label_selector: Option<String>,
}

impl Default for ScalePaths {
    fn default() -> ScalePaths {
        ScalePaths {
            spec_replicas: "spec.replicas".into(),
            status_replicas: "status.replicas".into(),
            label_selector: Some("spec.selector".into()),
        }
    }
}

/// One column of a custom resource's Tables (a CRD's `additionalPrinterColumns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Its header.
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub kind: String,
    /// An OpenAPI format hint (`name` for the name column).
    pub format: String,
    /// What it shows.
    pub description: String,
    /// 0 for the default view, more for `-o wide`.
    pub priority: i64,
    /// The JSONPath of the value in each object, e.g. `.spec.replicas`.
    pub json_path: String,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Resource({}/{} {})",
            self.group, self.version, self.plural
        )
    }
}

impl Resource {
    /// A namespaced resource with every verb and no subresources.
    pub fn new(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        strategy: Arc<dyn Strategy>,
    ) -> Resource {
        Resource {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            verbs: ALL_VERBS.to_vec(),
            subresources: Vec::new(),
            name_rule: NameRule::Subdomain,
            field_selectors: Vec::new(),
            strategy,
            stored: true,
            scale_paths: ScalePaths::default(),
            printer_columns: Vec::new(),
            custom: false,
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key prefix of all its objects.
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The key prefix of its objects in one namespace (all of them if not namespaced).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.namespace_prefix(namespace))
    }

    /// The subresource called `name`.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether `status` is a subresource, so the main resource's writes leave it alone.
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    /// Whether it supports `verb`.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// Adds short names.
    pub fn short(mut self, names: &[&str]) -> Resource {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Puts it in the `all` category.
    pub fn in_all(mut self) -> Resource {
        self.categories = vec!["all".into()];
        self
    }

    /// Adds the `status` subresource.
    pub fn with_status(mut self) -> Resource {
        self.subresources.push(Subresource {
            name: "status",
            kind: self.kind.clone(),
            api_version: None,
            verbs: &["get", "patch", "update"],
        });
        self
    }

    /// Adds the `scale` subresource.
    pub fn with_scale(mut self) -> Resource {
        self.subresources.push(Subresource {
            name: "scale",
            kind: "Scale".into(),
            api_version: Some("autoscaling/v1"),
            verbs: &["get", "patch", "update"],
        });
        self
    }

    /// Adds a subresource whose kind is in another group/version (`authentication.k8s.io/v1`
    /// TokenRequest for a service account's `token`).
    pub fn with_sub_of(
        self,
        name: &'static str,
        api_version: &'static str,
        kind: &str,
        verbs: &'static [&'static str],
    ) -> Resource {
        self.push_sub(name, Some(api_version), kind, verbs)
    }

    /// Adds another subresource.
    pub fn with_sub(
        self,
        name: &'static str,
        kind: &str,
        verbs: &'static [&'static str],
    ) -> Resource {
        self.push_sub(name, None, kind, verbs)
    }

    fn push_sub(
        mut self,
        name: &'static str,
        api_version: Option<&'static str>,
        kind: &str,
        verbs: &'static [&'static str],
    ) -> Resource {
        self.subresources.push(Subresource {
            name,
            kind: kind.to_owned(),
            api_version,
            verbs,
        });
        self
    }

    /// Sets the name rule.
    pub fn names(mut self, rule: NameRule) -> Resource {
        self.name_rule = rule;
        self
    }

    /// A review: created to get an answer, never stored.
    pub fn review(mut self) -> Resource {
        self.verbs = vec!["create"];
        self.stored = false;
        self
    }

    /// Sets the verbs.
    pub fn verbs(mut self, verbs: &[&'static str]) -> Resource {
        self.verbs = verbs.to_vec();
        self
    }

    /// Adds fields it can be selected by.
    pub fn fields(mut self, fields: &[&'static str]) -> Resource {
        self.field_selectors = fields.to_vec();
        self
    }
}

/// Every resource served, by group, version and plural.
#[derive(Default)]
pub struct Catalog {
    resources: RwLock<BTreeMap<(String, String, String), Arc<Resource>>>,
    /// Bumped on every change, so what is built from the catalog (OpenAPI) knows to rebuild.
    generation: AtomicU64,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Adds (or replaces) a resource.
    pub fn insert(&self, resource: Resource) {
        let key = (
            resource.group.clone(),
            resource.version.clone(),
            resource.plural.clone(),
        );
        self.resources.write().insert(key, Arc::new(resource));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever a resource is added or removed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Removes a resource.
    pub fn remove(&self, group: &str, version: &str, plural: &str) {
        self.resources
            .write()
            .remove(&(group.to_owned(), version.to_owned(), plural.to_owned()));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The resource at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources
            .read()
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// The resource serving `kind` in `group`.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<Resource>> {
        self.resources
            .read()
            .values()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// Every resource, ordered by group, version and plural.
    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.resources.read().values().cloned().collect()
    }

    /// The groups served and each one's versions, core ("") first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for (group, version, _) in self.resources.read().keys() {
            match groups.iter_mut().find(|(g, _)| g == group) {
                Some((_, versions)) if !versions.contains(version) => {
                    versions.push(version.clone())
                }
                Some(_) => {}
                None => groups.push((group.clone(), vec![version.clone()])),
            }
        }
        groups
    }
}
