//! Apply and update together, on a deployment-like type.

use serde_json::{Value, json};

use super::*;

fn definitions() -> Value {
    json!({
        "Deployment": {"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {
                "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "containers": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "image": {"type": "string"}}},
                    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "integer"}}}
        }}
    })
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn run<T>(f: impl FnOnce(Schema<'_>) -> T) -> T {
    let definitions = definitions();
    let root = json!({"$ref": "#/definitions/Deployment"});
    f(Schema::new(definitions.as_object(), Some(&root)))
}

fn write<'a>(schema: Schema<'a>, manager: &'a str, scope: Scope) -> Write<'a> {
    Write {
        schema,
        api_version: "apps/v1",
        scope,
        manager,
        now: "2026-11-21T10:00:00Z",
    }
}

const MAIN: Scope = Scope::Main { has_status: true };

fn managers(object: &Map<String, Value>) -> Vec<(String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        format!(
                            "{}/{}",
                            e["manager"].as_str().unwrap_or(""),
                            e["operation"].as_str().unwrap_or("")
                        ),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn created(schema: Schema<'_>) -> Map<String, Value> {
    let mut new = object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 1, "containers": [{"name": "web", "image": "nginx:1"}]}
    }));
    update(
        &write(schema, "kubectl-create", MAIN),
        &Map::new(),
        &mut new,
    )
    .unwrap();
    new
}

#[test]
fn a_create_owns_what_it_set_but_not_server_fields() {
    run(|schema| {
        let object = created(schema);
        assert_eq!(
            managers(&object),
            [(
                "kubectl-create/Update".to_owned(),
                json!({
                    "f:metadata": {".": {}, "f:labels": {".": {}, "f:app": {}}},
                    "f:spec": {".": {}, "f:containers": {".": {}, "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}, "f:replicas": {}}
                })
            )]
        );
        assert_eq!(
            object["metadata"]["managedFields"][0]["apiVersion"],
            "apps/v1"
        );
    });
}

#[test]
fn apply_conflicts_with_another_owner_unless_forced() {
    run(|schema| {
        let live = created(schema);
        let config = object(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                                   "spec": {"replicas": 3}}),
        );
        let error = apply(&write(schema, "kubectl", MAIN), &live, &config, false).unwrap_err();
        let Error::Conflicts(conflicts) = &error else {
            panic!("{error}")
        };
        assert_eq!(
            conflicts,
            &[Conflict {
                manager: "\"kubectl-create\" using apps/v1".into(),
                field: ".spec.replicas".into()
            }]
        );
        assert_eq!(
            error.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        );

        let forced = apply(&write(schema, "kubectl", MAIN), &live, &config, true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(
            forced["spec"]["containers"][0]["image"], "nginx:1",
            "unmentioned fields stay"
        );
        let owners = managers(&forced);
        assert_eq!(
            owners[0],
            (
                "kubectl/Apply".to_owned(),
                json!({"f:spec": {"f:replicas": {}}})
            )
        );
        assert!(
            owners[1].1["f:spec"].get("f:replicas").is_none(),
            "the old owner lost the field"
        );
        assert!(owners[1].1["f:spec"].get("f:containers").is_some());
    });
}

#[test]
fn applying_the_same_value_shares_the_field() {
    run(|schema| {
        let live = created(schema);
        let config = object(
            json!({"spec": {"replicas": 1, "containers": [{"name": "web", "image": "nginx:1"}]}}),
        );
        let shared = apply(&write(schema, "kubectl", MAIN), &live, &config, false).unwrap();
        let owners = managers(&shared);
        assert_eq!(owners.len(), 2);
        assert_eq!(owners[1].1["f:spec"]["f:replicas"], json!({}));
        // Now the creator changes the image: the applier loses it, keeps the rest.
        let mut changed = shared.clone();
        changed["spec"]["containers"][0]["image"] = json!("nginx:2");
        update(
            &write(schema, "kubectl-create", MAIN),
            &shared,
            &mut changed,
        )
        .unwrap();
        let owners = managers(&changed);
        assert!(
            owners[0].1["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
                .get("f:image")
                .is_none()
        );
        assert!(
            owners[0].1["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
                .get("f:name")
                .is_some()
        );
    });
}

#[test]
fn fields_an_applier_stops_mentioning_are_removed_unless_someone_else_owns_them() {
    run(|schema| {
        let first = object(
            json!({"metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
                                  "spec": {"containers": [{"name": "web", "image": "x"}, {"name": "log", "image": "y"}]}}),
        );
        let live = apply(&write(schema, "ci", MAIN), &Map::new(), &first, false).unwrap();
        // Someone else labels it too.
        let mut labelled = live.clone();
        labelled["metadata"]["labels"]["c"] = json!("3");
        update(&write(schema, "kubectl-label", MAIN), &live, &mut labelled).unwrap();

        let second = object(json!({"metadata": {"name": "web", "labels": {"a": "1"}},
                                   "spec": {"containers": [{"name": "web", "image": "x"}]}}));
        let after = apply(&write(schema, "ci", MAIN), &labelled, &second, false).unwrap();
        assert_eq!(after["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(
            after["spec"]["containers"],
            json!([{"name": "web", "image": "x"}])
        );
    });
}

#[test]
fn the_status_subresource_owns_only_status() {
    run(|schema| {
        let live = created(schema);
        let mut new = live.clone();
        new.insert("status".into(), json!({"ready": 1}));
        new["spec"]["replicas"] = json!(5);
        update(&write(schema, "controller", Scope::Status), &live, &mut new).unwrap();
        let entry = new["metadata"]["managedFields"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["manager"] == "controller"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(entry["subresource"], "status");
        assert_eq!(
            entry["fieldsV1"],
            json!({"f:status": {".": {}, "f:ready": {}}})
        );
        // Through the main endpoint, status belongs to nobody.
        let config = object(json!({"status": {"ready": 9}, "spec": {"replicas": 1}}));
        let applied = apply(&write(schema, "kubectl", MAIN), &live, &config, false).unwrap();
        assert_eq!(
            managers(&applied)[0].1,
            json!({"f:spec": {"f:replicas": {}}})
        );
    });
}

#[test]
fn repeating_a_write_changes_nothing() {
    run(|schema| {
        let live = created(schema);
        let config = object(json!({"spec": {"replicas": 1}}));
        let mut later = write(schema, "kubectl", MAIN);
        let once = apply(&later, &live, &config, false).unwrap();
        later.now = "2026-11-21T11:00:00Z";
        assert_eq!(apply(&later, &once, &config, false).unwrap(), once);
        let mut same = once.clone();
        update(&later, &once, &mut same).unwrap();
        assert_eq!(same, once);
    });
}

#[test]
fn managed_fields_sent_by_the_client_replace_the_stored_ones() {
    run(|schema| {
        let live = created(schema);
        let mut reset = live.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        update(&write(schema, "kubectl-edit", MAIN), &live, &mut reset).unwrap();
        assert!(reset["metadata"].get("managedFields").is_none());

        let config = object(json!({"metadata": {"managedFields": [{"manager": "x"}]}}));
        let error = apply(&write(schema, "kubectl", MAIN), &live, &config, false).unwrap_err();
        assert!(
            error.to_string().starts_with("metadata.managedFields"),
            "{error}"
        );
    });
}
