//! The strategy of one served version of a custom resource: objects are pruned to its
//! structural schema, defaulted and validated against it; server-side apply merges by it;
//! OpenAPI publishes it.

use std::sync::Arc;

use apiserver_registry::strategic::Types;
use apiserver_registry::strategy::{Strategy, normalize_as};
use apiserver_registry::{FieldError, Object};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::structural;

/// How one version of a custom resource behaves.
pub struct CustomStrategy {
    schema: JSONSchemaProps,
    /// The types the field manager merges by.
    types: Arc<Types>,
    /// The schema as JSON, for OpenAPI.
    schema_json: Value,
    /// The OpenAPI definition name (`com.example.stable.v1.CronTab`).
    definition: String,
    group: String,
    version: String,
    kind: String,
}

impl CustomStrategy {
    /// The strategy of `group/version` `kind` whose objects follow `schema`.
    pub fn new(group: &str, version: &str, kind: &str, schema: JSONSchemaProps) -> CustomStrategy {
        let schema_json = serde_json::to_value(&schema).unwrap_or_else(|_| json!({}));
        let reversed: Vec<&str> = group.split('.').rev().collect();
        CustomStrategy {
            types: Arc::new(Types::standalone(schema_json.clone())),
            schema,
            schema_json,
            definition: format!("{}.{version}.{kind}", reversed.join(".")),
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

impl Strategy for CustomStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        let mut value = Value::Object(object);
        let mut unknown = Vec::new();
        structural::prune(&self.schema, &mut value, "", true, &mut unknown);
        let Value::Object(mut object) = value else {
            return Err("the object is not a JSON object".into());
        };
        // Metadata is ObjectMeta whatever the schema says.
        if let Some(meta) = object.get_mut("metadata") {
            let given = match meta.take() {
                Value::Object(m) => m,
                Value::Null => Object::new(),
                other => {
                    return Err(format!(
                        "metadata: expected a map, found {}",
                        match other {
                            Value::Array(_) => "a list",
                            _ => "a scalar",
                        }
                    ));
                }
            };
            let (normalized, dropped) =
                normalize_as::<ObjectMeta>(given).map_err(|e| format!("metadata.{e}"))?;
            unknown.extend(dropped.into_iter().map(|f| format!("metadata.{f}")));
            *meta = Value::Object(normalized);
        }
        let mut value = Value::Object(object);
        structural::default(&self.schema, &mut value);
        match value {
            Value::Object(object) => Ok((object, unknown)),
            _ => Err("the object is not a JSON object".into()),
        }
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        let mut errors = Vec::new();
        structural::validate_object(&self.schema, object, &mut errors);
        errors
    }

    fn merge_types(&self) -> Option<Arc<Types>> {
        Some(self.types.clone())
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        let metadata = generator.subschema_for::<ObjectMeta>();
        let mut schema = self.schema_json.clone();
        if let Some(object) = schema.as_object_mut() {
            let properties = object
                .entry("properties")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(properties) = properties {
                properties.insert(
                    "apiVersion".into(),
                    json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
                );
                properties.insert(
                    "kind".into(),
                    json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
                );
                properties.insert(
                    "metadata".into(),
                    json!({"allOf": [metadata.to_value()], "description": "Standard object's metadata."}),
                );
            }
            object.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": self.group, "version": self.version, "kind": self.kind}]),
            );
        }
        generator
            .definitions_mut()
            .insert(self.definition.clone(), schema);
        let path = generator.settings().definitions_path.trim_end_matches('/');
        let reference = format!("#{path}/{}", self.definition);
        Some(schemars::Schema::from(
            json!({"$ref": reference})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy() -> CustomStrategy {
        let schema = serde_json::from_value(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 1},
                "image": {"type": "string"}}}},
        }))
        .unwrap();
        CustomStrategy::new("stable.example.com", "v1", "CronTab", schema)
    }

    #[test]
    fn objects_are_pruned_defaulted_and_checked() {
        let body = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "a", "labels": {"x": "y"}, "bogus": 1},
            "spec": {"image": "busybox", "junk": true}});
        let (object, mut unknown) = strategy()
            .normalize(body.as_object().cloned().unwrap())
            .unwrap();
        unknown.sort();
        assert_eq!(unknown, ["metadata.bogus", "spec.junk"]);
        assert_eq!(object["spec"]["replicas"], 1);
        assert_eq!(object["metadata"]["labels"]["x"], "y");
        assert!(strategy().validate(&object).is_empty());
        let bad = json!({"metadata": {"name": "a"}, "spec": {"replicas": "x"}});
        let errors = strategy().validate(bad.as_object().unwrap());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "spec.replicas");
        let error = strategy()
            .normalize(
                json!({"metadata": {"name": 5}})
                    .as_object()
                    .cloned()
                    .unwrap(),
            )
            .unwrap_err();
        assert!(error.starts_with("metadata.name: invalid type"), "{error}");
    }

    #[test]
    fn the_openapi_schema_names_its_kind() {
        let mut generator =
            schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::openapi3());
        let reference = strategy().schema(&mut generator).unwrap();
        assert_eq!(
            reference.get("$ref").and_then(Value::as_str),
            Some("#/components/schemas/com.example.stable.v1.CronTab")
        );
        let definitions = generator.take_definitions(true);
        let crontab = &definitions["com.example.stable.v1.CronTab"];
        assert_eq!(
            crontab["x-kubernetes-group-version-kind"][0]["kind"],
            "CronTab"
        );
        assert!(crontab["properties"]["metadata"]["allOf"][0]["$ref"].is_string());
    }
}
