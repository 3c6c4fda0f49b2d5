//! The API server's OpenAPI documents, built from the catalog: schemas from the k8s-openapi
//! types (via schemars) and paths for every resource and verb it serves.
//!
//! kubectl reads OpenAPI v3: `/openapi/v3` lists one document per group version, and each
//! document's PATCH operations tell kubectl (by their `fieldValidation` parameter) that the
//! server validates fields itself; its schemas drive `kubectl explain`. Kubernetes' vendor
//! extensions are set where clients look for them (`x-kubernetes-group-version-kind` on kinds
//! and operations, `x-kubernetes-action` on operations). v2 (`/openapi/v2`) is the same content
//! in Swagger 2.0 form for older clients. Documents are built on first use and cached until the
//! catalog changes.

mod paths;

use std::collections::BTreeMap;
use std::sync::Arc;

use apiserver_registry::{Catalog, Resource};
use bytes::Bytes;
use parking_lot::Mutex;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// A built document and its content hash (clients cache by it).
#[derive(Debug, Clone)]
pub struct Document {
    /// The JSON bytes.
    pub body: Bytes,
    /// A hash of the body, for `?hash=` URLs and ETags.
    pub hash: String,
}

impl Document {
    fn new(value: &Value) -> Document {
        let body = Bytes::from(serde_json::to_vec(value).unwrap_or_default());
        let hash = format!("{:08X}", crc32c::crc32c(&body));
        Document { body, hash }
    }
}

/// The OpenAPI documents of a catalog.
pub struct OpenApi {
    catalog: Arc<Catalog>,
    /// Built documents, and the catalog generation they were built from.
    cache: Mutex<(u64, BTreeMap<String, Arc<Document>>)>,
    version: String,
}

/// The group-version path of a document: `api/v1` or `apis/{group}/{version}`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

impl OpenApi {
    /// Documents for `catalog`; `version` is the server's version shown in `info`.
    pub fn new(catalog: Arc<Catalog>, version: &str) -> OpenApi {
        OpenApi {
            catalog,
            // No catalog is at generation u64::MAX, so the first use builds.
            cache: Mutex::new((u64::MAX, BTreeMap::new())),
            version: version.to_owned(),
        }
    }

    /// The document at `key`, built again when the catalog has changed since it was built.
    fn cached(&self, key: &str, build: impl FnOnce() -> Option<Value>) -> Option<Arc<Document>> {
        let generation = self.catalog.generation();
        {
            let mut cache = self.cache.lock();
            if cache.0 != generation {
                *cache = (generation, BTreeMap::new());
            }
            if let Some(document) = cache.1.get(key) {
                return Some(document.clone());
            }
        }
        let document = Arc::new(Document::new(&build()?));
        let mut cache = self.cache.lock();
        if cache.0 == generation {
            cache.1.insert(key.to_owned(), document.clone());
        }
        Some(document)
    }

    /// `/openapi/v3`: where each group version's document is.
    pub fn v3_index(&self) -> Value {
        let mut paths = Map::new();
        for (group, versions) in self.catalog.groups() {
            for version in versions {
                let path = gv_path(&group, &version);
                if let Some(document) = self.v3(&group, &version) {
                    paths.insert(
                        path.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", document.hash)}),
                    );
                }
            }
        }
        json!({"paths": paths})
    }

    /// The OpenAPI 3.0 document of one group version.
    pub fn v3(&self, group: &str, version: &str) -> Option<Arc<Document>> {
        self.cached(&format!("v3/{}", gv_path(group, version)), || {
            let resources: Vec<Arc<Resource>> = self
                .catalog
                .all()
                .into_iter()
                .filter(|r| r.group == group && r.version == version)
                .collect();
            if resources.is_empty() {
                return None;
            }
            let (schemas, refs) = schemas(
                &resources,
                SchemaSettings::openapi3(),
                "#/components/schemas/",
            );
            let paths = paths::paths(&resources, &refs, paths::Flavor::V3);
            Some(json!({
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes", "version": self.version},
                "paths": paths,
                "components": {"schemas": schemas},
            }))
        })
    }

    /// The Swagger 2.0 document of every group version.
    pub fn v2(&self) -> Arc<Document> {
        let built = self.cached("v2", || {
            let resources = self.catalog.all();
            let (definitions, refs) =
                schemas(&resources, SchemaSettings::draft07(), "#/definitions/");
            let paths = paths::paths(&resources, &refs, paths::Flavor::V2);
            Some(json!({
                "swagger": "2.0",
                "info": {"title": "Kubernetes", "version": self.version},
                "paths": paths,
                "definitions": definitions,
            }))
        });
        built.unwrap_or_else(|| Arc::new(Document::new(&json!({"swagger": "2.0"}))))
    }
}

/// Where each resource's schemas are: the object's and its list's references.
pub(crate) struct Refs {
    /// By resource plural: (object $ref, list $ref).
    pub by_plural: BTreeMap<String, (String, String)>,
    /// The prefix of references.
    pub prefix: &'static str,
}

/// The schemas of `resources` and everything they reference, with Kubernetes' extensions.
fn schemas(
    resources: &[Arc<Resource>],
    settings: SchemaSettings,
    prefix: &'static str,
) -> (Map<String, Value>, Refs) {
    let mut generator = SchemaGenerator::new(settings);
    let mut kinds: Vec<(String, &Resource)> = Vec::new();
    for resource in resources {
        let schema = resource.strategy.schema(&mut generator);
        let name = schema
            .as_ref()
            .and_then(|s| s.get("$ref"))
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next());
        if let Some(name) = name {
            kinds.push((name.to_owned(), resource));
        }
    }
    // Types the paths refer to besides the resources' own (generating adds the definitions).
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::ListMeta>();
    generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>();
    let mut definitions = generator.take_definitions(true);
    // Which lists merge, for clients that compute strategic merge patches from OpenAPI.
    for (type_name, field, strategy, key) in apiserver_registry::strategic::PATCH_META {
        let property = definitions
            .get_mut(*type_name)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
            .and_then(Value::as_object_mut);
        if let Some(property) = property {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if !key.is_empty() {
                property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    let mut refs = Refs {
        by_plural: BTreeMap::new(),
        prefix,
    };
    for (name, resource) in kinds {
        let gvk =
            json!([{"group": resource.group, "version": resource.version, "kind": resource.kind}]);
        if let Some(Value::Object(definition)) = definitions.get_mut(&name) {
            definition.insert("x-kubernetes-group-version-kind".into(), gvk);
        }
        let list_name = format!("{name}List");
        definitions.insert(
            list_name.clone(),
            json!({
                "description": format!("{}List is a list of {}.", resource.kind, resource.kind),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
                    "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
                    "items": {"type": "array", "items": {"$ref": format!("{prefix}{name}")}, "description": format!("List of {}.", resource.plural)},
                    "metadata": {"allOf": [{"$ref": format!("{prefix}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")}], "description": "Standard list metadata."},
                },
                "x-kubernetes-group-version-kind": [{"group": resource.group, "version": resource.version, "kind": format!("{}List", resource.kind)}],
            }),
        );
        refs.by_plural.insert(
            resource.plural.clone(),
            (format!("{prefix}{name}"), format!("{prefix}{list_name}")),
        );
    }
    (definitions, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_what_kubectl_looks_for() {
        let openapi = OpenApi::new(
            Arc::new(apiserver_registry::builtin::catalog()),
            "v1.32.0-basalt",
        );
        let index = openapi.v3_index();
        let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap_or("");
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");

        let document = openapi.v3("apps", "v1").expect("apps/v1 document");
        let doc: Value = serde_json::from_slice(&document.body).expect("json");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(params.contains(&"fieldValidation"), "{params:?}");
        let deployment = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentList"].is_object());

        let v2: Value = serde_json::from_slice(&openapi.v2().body).expect("json");
        assert_eq!(v2["swagger"], "2.0");
        assert!(v2["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
        assert!(openapi.v3("nope", "v1").is_none());
    }
}
