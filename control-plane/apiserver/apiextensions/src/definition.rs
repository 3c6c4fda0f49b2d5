//! CustomResourceDefinitions as stored objects: their defaults, their validation (names,
//! versions, structural schemas, subresources, printer columns) and their status (accepted
//! names, conditions, stored versions), which this server sets itself because it serves a
//! definition as soon as it is stored.
//!
//! **Does not** serve the custom resources; `served` turns a definition into catalog entries.

use std::collections::BTreeSet;

use apiserver_registry::FieldError;
use apiserver_registry::object::{self, Object};
use apiserver_registry::strategy::{Strategy, normalize_as};
use apiserver_registry::validation::{is_dns1123_label, is_dns1123_subdomain};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::{Value, json};

use crate::structural;

/// The finalizer that keeps a definition until its custom resources are deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The annotation a definition in a Kubernetes-owned group must carry.
const APPROVAL_ANNOTATION: &str = "api-approved.kubernetes.io";

const COLUMN_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];

/// The strategy of `customresourcedefinitions`.
pub struct DefinitionStrategy;

/// Decodes a stored or normalised definition.
pub fn decode(object: &Object) -> Option<CustomResourceDefinition> {
    serde_json::from_value(Value::Object(object.clone())).ok()
}

impl Strategy for DefinitionStrategy {
    fn normalize(&self, object: Object) -> Result<(Object, Vec<String>), String> {
        normalize_as::<CustomResourceDefinition>(object)
    }

    fn prepare_for_create(&self, object: &mut Object) {
        fill_defaults(object);
        let mut finalizers = object::finalizers(object);
        if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
            finalizers.push(CLEANUP_FINALIZER.into());
            object::set_finalizers(object, &finalizers);
        }
        set_status(object, &[]);
    }

    fn prepare_for_update(&self, new: &mut Object, old: &Object) {
        fill_defaults(new);
        let stored: Vec<String> = old
            .get("status")
            .and_then(|s| s.get("storedVersions"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        set_status(new, &stored);
    }

    fn validate(&self, object: &Object) -> Vec<FieldError> {
        match decode(object) {
            Some(crd) => validate(&crd),
            None => vec![FieldError::invalid("spec", "", "does not decode")],
        }
    }

    fn validate_update(&self, new: &Object, old: &Object) -> Vec<FieldError> {
        let mut errors = self.validate(new);
        let scope = |o: &Object| object::str_at(o, "spec.scope").map(str::to_owned);
        if scope(new) != scope(old) {
            errors.push(FieldError::invalid(
                "spec.scope",
                scope(new).unwrap_or_default(),
                "field is immutable",
            ));
        }
        errors
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> Option<schemars::Schema> {
        Some(generator.subschema_for::<CustomResourceDefinition>())
    }
}

/// kube-apiserver's defaults: singular and listKind from kind, conversion `None`.
fn fill_defaults(object: &mut Object) {
    let spec = object::map_mut(object, "spec");
    let kind = spec
        .get("names")
        .and_then(|n| n.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let names = object::map_mut(spec, "names");
    if names
        .get("singular")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        names.insert("singular".into(), json!(kind.to_ascii_lowercase()));
    }
    if names
        .get("listKind")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        names.insert("listKind".into(), json!(format!("{kind}List")));
    }
    let conversion = object::map_mut(spec, "conversion");
    if conversion
        .get("strategy")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        conversion.insert("strategy".into(), json!("None"));
    }
}

/// Sets the status a served definition has: its names accepted, Established, and the storage
/// version added to the versions ever stored (`already` kept).
fn set_status(object: &mut Object, already: &[String]) {
    let names = object
        .get("spec")
        .and_then(|s| s.get("names"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut stored: Vec<String> = already.to_vec();
    let storage = object
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == json!(true))
        .and_then(|v| v["name"].as_str());
    if let Some(storage) = storage
        && !stored.iter().any(|s| s == storage)
    {
        stored.push(storage.to_owned());
    }
    let now = object::now();
    let previous: Vec<Value> = object
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let since = |kind: &str| {
        previous
            .iter()
            .find(|c| c["type"] == kind && c["status"] == "True")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or(&now)
            .to_owned()
    };
    let mut conditions = vec![
        json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
               "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")}),
        json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
               "message": "the initial names have been accepted", "lastTransitionTime": since("Established")}),
    ];
    if object::is_deleting(object) {
        conditions.push(json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress", "lastTransitionTime": since("Terminating")}));
    }
    object.insert(
        "status".into(),
        json!({"acceptedNames": names, "conditions": conditions, "storedVersions": stored}),
    );
}

/// Everything wrong with a definition, by field.
pub fn validate(crd: &CustomResourceDefinition) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let spec = &crd.spec;
    let name = crd.metadata.name.as_deref().unwrap_or("");
    let group = spec.group.as_str();
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    } else if !is_dns1123_subdomain(group) || !group.contains('.') {
        errors.push(FieldError::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    } else if (group.ends_with(".k8s.io")
        || group.ends_with(".kubernetes.io")
        || group == "k8s.io"
        || group == "kubernetes.io")
        && !crd
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(APPROVAL_ANNOTATION))
    {
        errors.push(FieldError::required(
            format!("metadata.annotations[{APPROVAL_ANNOTATION}]"),
            format!("protected groups must have approval annotation \"{APPROVAL_ANNOTATION}\""),
        ));
    }
    let names = &spec.names;
    if name != format!("{}.{group}", names.plural) {
        errors.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    label("spec.names.plural", &names.plural, true, &mut errors);
    label(
        "spec.names.singular",
        names.singular.as_deref().unwrap_or(""),
        false,
        &mut errors,
    );
    kind_name("spec.names.kind", &names.kind, &mut errors);
    let list_kind = names.list_kind.as_deref().unwrap_or("");
    kind_name("spec.names.listKind", list_kind, &mut errors);
    if !names.kind.is_empty() && names.kind == list_kind {
        errors.push(FieldError::invalid(
            "spec.names.listKind",
            list_kind,
            "kind and listKind may not be the same",
        ));
    }
    for (i, short) in names.short_names.iter().flatten().enumerate() {
        label(
            &format!("spec.names.shortNames[{i}]"),
            short,
            true,
            &mut errors,
        );
    }
    for (i, category) in names.categories.iter().flatten().enumerate() {
        label(
            &format!("spec.names.categories[{i}]"),
            category,
            true,
            &mut errors,
        );
    }
    if !matches!(spec.scope.as_str(), "Namespaced" | "Cluster") {
        errors.push(FieldError::not_supported(
            "spec.scope",
            &spec.scope,
            &["Cluster", "Namespaced"],
        ));
    }
    if spec.preserve_unknown_fields == Some(true) {
        errors.push(FieldError::invalid(
            "spec.preserveUnknownFields",
            "true",
            "must be false in order to use defaults in the schema",
        ));
    }
    versions(&spec.versions, &mut errors);
    let strategy = spec
        .conversion
        .as_ref()
        .map_or("None", |c| c.strategy.as_str());
    match strategy {
        "None" => {}
        "Webhook" if spec.versions.len() > 1 => errors.push(FieldError::forbidden(
            "spec.conversion.strategy",
            "conversion webhooks are not supported by this server; use strategy None",
        )),
        "Webhook" => {}
        other => errors.push(FieldError::not_supported(
            "spec.conversion.strategy",
            other,
            &["None", "Webhook"],
        )),
    }
    errors
}

fn label(field: &str, value: &str, required: bool, errors: &mut Vec<FieldError>) {
    if value.is_empty() {
        if required {
            errors.push(FieldError::required(field, ""));
        }
    } else if !is_dns1123_label(value) {
        errors.push(FieldError::invalid(
            field,
            value,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ));
    }
}

fn kind_name(field: &str, value: &str, errors: &mut Vec<FieldError>) {
    let valid = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && value.chars().all(|c| c.is_ascii_alphanumeric());
    if value.is_empty() {
        errors.push(FieldError::required(field, ""));
    } else if !valid {
        errors.push(FieldError::invalid(
            field,
            value,
            "must start with a letter and contain only letters and digits",
        ));
    }
}

fn versions(versions: &[CustomResourceDefinitionVersion], errors: &mut Vec<FieldError>) {
    if versions.is_empty() {
        errors.push(FieldError::required(
            "spec.versions",
            "must have at least one version",
        ));
        return;
    }
    if versions.iter().filter(|v| v.storage).count() != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            "",
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, version) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        label(&format!("{at}.name"), &version.name, true, errors);
        if !seen.insert(version.name.as_str()) {
            errors.push(FieldError::duplicate(format!("{at}.name"), &version.name));
        }
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        let schema_at = format!("{at}.schema.openAPIV3Schema");
        match schema {
            None => errors.push(FieldError::required(&schema_at, "schemas are required")),
            Some(schema) => {
                if schema.type_.as_deref() != Some("object") {
                    errors.push(FieldError::invalid(
                        format!("{schema_at}.type"),
                        schema.type_.clone().unwrap_or_default(),
                        "must be object at the root",
                    ));
                }
                let metadata = schema.properties.as_ref().and_then(|p| p.get("metadata"));
                for field in metadata
                    .and_then(|m| m.properties.as_ref())
                    .into_iter()
                    .flatten()
                {
                    if !matches!(field.0.as_str(), "name" | "generateName") {
                        errors.push(FieldError::forbidden(
                            format!("{schema_at}.properties[metadata].properties[{}]", field.0),
                            "only name and generateName may be specified at the root of the metadata",
                        ));
                    }
                }
                structural_schema(schema, &schema_at, true, errors);
            }
        }
        if let Some(scale) = version.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
            let scale_at = format!("{at}.subresources.scale");
            json_path_under(
                &format!("{scale_at}.specReplicasPath"),
                &scale.spec_replicas_path,
                &[".spec."],
                errors,
            );
            json_path_under(
                &format!("{scale_at}.statusReplicasPath"),
                &scale.status_replicas_path,
                &[".status."],
                errors,
            );
            if let Some(selector) = &scale.label_selector_path {
                json_path_under(
                    &format!("{scale_at}.labelSelectorPath"),
                    selector,
                    &[".spec.", ".status."],
                    errors,
                );
            }
        }
        for (j, column) in version
            .additional_printer_columns
            .iter()
            .flatten()
            .enumerate()
        {
            let column_at = format!("{at}.additionalPrinterColumns[{j}]");
            if column.name.is_empty() {
                errors.push(FieldError::required(format!("{column_at}.name"), ""));
            }
            if !COLUMN_TYPES.contains(&column.type_.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("{column_at}.type"),
                    &column.type_,
                    COLUMN_TYPES,
                ));
            }
            if column.priority.is_some_and(|p| p < 0) {
                errors.push(FieldError::invalid(
                    format!("{column_at}.priority"),
                    column.priority.unwrap_or(0).to_string(),
                    "must be greater than or equal to 0",
                ));
            }
            if let Err(why) = apiserver_registry::jsonpath::JsonPath::parse(&column.json_path) {
                errors.push(FieldError::invalid(
                    format!("{column_at}.jsonPath"),
                    &column.json_path,
                    why,
                ));
            }
        }
    }
}

fn json_path_under(field: &str, path: &str, prefixes: &[&str], errors: &mut Vec<FieldError>) {
    let simple = path.len() > 1
        && path[1..].split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !prefixes.iter().any(|p| path.starts_with(p)) || !simple {
        let under = prefixes
            .iter()
            .map(|p| p.trim_end_matches('.'))
            .collect::<Vec<_>>()
            .join(" or ");
        errors.push(FieldError::invalid(
            field,
            path,
            format!("should be a json path under {under}"),
        ));
    }
}

/// Checks that a schema is structural: every node says its type (unless it is
/// int-or-string or keeps unknown fields), arrays say their items, an object has properties
/// or additionalProperties but not both, patterns compile and defaults validate.
fn structural_schema(schema: &JSONSchemaProps, at: &str, root: bool, errors: &mut Vec<FieldError>) {
    let typeless = schema.type_.as_deref().is_none_or(str::is_empty);
    let exempt = schema.x_kubernetes_int_or_string == Some(true)
        || schema.x_kubernetes_preserve_unknown_fields == Some(true);
    if typeless && !exempt && !root {
        errors.push(FieldError::required(
            format!("{at}.type"),
            "must not be empty for specified object fields",
        ));
    }
    if schema.properties.is_some()
        && matches!(
            schema.additional_properties,
            Some(JSONSchemaPropsOrBool::Schema(_)) | Some(JSONSchemaPropsOrBool::Bool(true))
        )
    {
        errors.push(FieldError::forbidden(
            format!("{at}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(pattern) = &schema.pattern
        && let Err(e) = regex::Regex::new(pattern)
    {
        errors.push(FieldError::invalid(
            format!("{at}.pattern"),
            pattern,
            format!("must be a valid regular expression, but isn't: {e}"),
        ));
    }
    if schema.x_kubernetes_list_type.as_deref() == Some("map")
        && schema
            .x_kubernetes_list_map_keys
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        errors.push(FieldError::required(
            format!("{at}.x-kubernetes-list-map-keys"),
            "must not be empty if x-kubernetes-list-type is map",
        ));
    }
    if let Some(default) = &schema.default {
        let mut found = Vec::new();
        structural::validate(schema, &default.0, "default", false, &mut found);
        for error in found {
            errors.push(FieldError::invalid(
                format!("{at}.default"),
                "",
                error.message(),
            ));
        }
    }
    for (field, property) in schema.properties.iter().flatten() {
        if root && matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        structural_schema(
            property,
            &format!("{at}.properties[{field}]"),
            false,
            errors,
        );
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
        structural_schema(values, &format!("{at}.additionalProperties"), false, errors);
    }
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => {
            structural_schema(items, &format!("{at}.items"), false, errors)
        }
        Some(JSONSchemaPropsOrArray::Schemas(_)) => errors.push(FieldError::forbidden(
            format!("{at}.items"),
            "items must be a schema object and not an array",
        )),
        None if schema.type_.as_deref() == Some("array") => errors.push(FieldError::required(
            format!("{at}.items"),
            "must be specified",
        )),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(spec: Value) -> CustomResourceDefinition {
        serde_json::from_value(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"}, "spec": spec}),
        )
        .unwrap()
    }

    fn good() -> Value {
        json!({"group": "stable.example.com", "scope": "Namespaced",
               "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "listKind": "CronTabList"},
               "versions": [{"name": "v1", "served": true, "storage": true,
                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                       "properties": {"replicas": {"type": "integer", "default": 1}}}}}},
                   "subresources": {"scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                   "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]}]})
    }

    fn messages(spec: Value) -> Vec<String> {
        validate(&crd(spec))
            .iter()
            .map(FieldError::message)
            .collect()
    }

    #[test]
    fn a_good_definition_passes() {
        assert_eq!(messages(good()), Vec::<String>::new());
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let mut spec = good();
        spec["group"] = json!("nodots");
        spec["scope"] = json!("Galaxy");
        spec["versions"][0]["storage"] = json!(false);
        spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["image"] =
            json!({"description": "no type"});
        spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]
            ["default"] = json!("one");
        spec["versions"][0]["subresources"]["scale"]["specReplicasPath"] = json!(".metadata.x");
        spec["versions"][0]["additionalPrinterColumns"][0]["type"] = json!("color");
        let errors = messages(spec);
        let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
        assert!(
            has("spec.group: Invalid value: \"nodots\": should be a domain with at least one dot"),
            "{errors:#?}"
        );
        assert!(has("metadata.name: Invalid value"), "{errors:#?}");
        assert!(
            has("spec.scope: Unsupported value: \"Galaxy\""),
            "{errors:#?}"
        );
        assert!(
            has(
                "spec.versions: Invalid value: \"\": must have exactly one version marked as storage version"
            ),
            "{errors:#?}"
        );
        assert!(
            has(
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image].type: Required value"
            ),
            "{errors:#?}"
        );
        assert!(
            has("properties[replicas].default: Invalid value"),
            "{errors:#?}"
        );
        assert!(
            has(
                "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".metadata.x\": should be a json path under .spec"
            ),
            "{errors:#?}"
        );
        assert!(
            has("spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: \"color\""),
            "{errors:#?}"
        );
    }

    #[test]
    fn protected_groups_need_approval() {
        let mut spec = good();
        spec["group"] = json!("stable.k8s.io");
        let mut definition = crd(spec);
        definition.metadata.name = Some("crontabs.stable.k8s.io".into());
        let errors: Vec<String> = validate(&definition)
            .iter()
            .map(FieldError::message)
            .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("api-approved.kubernetes.io")),
            "{errors:#?}"
        );
    }

    #[test]
    fn creating_sets_defaults_status_and_the_cleanup_finalizer() {
        let mut spec = good();
        spec["names"] = json!({"plural": "crontabs", "kind": "CronTab"});
        let mut object = serde_json::to_value(crd(spec))
            .unwrap()
            .as_object()
            .cloned()
            .unwrap();
        DefinitionStrategy.prepare_for_create(&mut object);
        assert_eq!(object["spec"]["names"]["singular"], "crontab");
        assert_eq!(object["spec"]["names"]["listKind"], "CronTabList");
        assert_eq!(object["spec"]["conversion"]["strategy"], "None");
        assert_eq!(object::finalizers(&object), [CLEANUP_FINALIZER]);
        assert_eq!(object["status"]["acceptedNames"]["kind"], "CronTab");
        assert_eq!(object["status"]["storedVersions"], json!(["v1"]));
        let established = object["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established);
    }
}
