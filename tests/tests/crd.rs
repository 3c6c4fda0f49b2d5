//! CustomResourceDefinitions with the real kubectl: a definition applied is served at once,
//! its custom resources are pruned, defaulted and validated against the structural schema,
//! listed with the definition's printer columns, scaled, patched, applied server-side and
//! explained; deleting the definition deletes them.

use basalt_tests::control_plane::ControlPlane;

const DEFINITION: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec, description: The cron schedule}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        description: A schedule that runs an image.
        properties:
          spec:
            type: object
            description: What to run and when.
            required: [cronSpec]
            properties:
              cronSpec:
                type: string
                description: When to run, in cron syntax.
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image: {type: string}
              replicas: {type: integer, minimum: 0, maximum: 10, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
"#;

const TABS: &str = r#"
apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: nightly}
spec: {cronSpec: "0 3 * * *", image: backup:1}
---
apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: hourly}
spec: {cronSpec: "0 * * * *", image: report:2, replicas: 4}
"#;

fn stderr_of(plane: &ControlPlane, args: &[&str], input: &str) -> String {
    let out = plane.kubectl_stdin(args, input);
    assert!(!out.status.success(), "kubectl {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apply(plane: &ControlPlane, args: &[&str], input: &str) -> String {
    let out = plane.kubectl_stdin(args, input);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_definition_is_served_and_its_resources_follow_the_schema() {
    let plane = ControlPlane::start();
    let out = apply(&plane, &["apply", "-f", "-"], DEFINITION);
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created"
        ),
        "{out}"
    );
    plane.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/crontabs.stable.example.com",
        "--timeout=10s",
    ]);
    let stored = plane.ok(&[
        "get",
        "crd",
        "crontabs.stable.example.com",
        "-o",
        "jsonpath={.status.acceptedNames.kind} {.status.storedVersions} {.spec.names.listKind} {.metadata.finalizers}",
    ]);
    assert_eq!(
        stored,
        r#"CronTab ["v1"] CronTabList ["customresourcecleanup.apiextensions.k8s.io"]"#
    );

    // Served at once: discovery, a multi-document apply, the printer columns.
    let resources = plane.ok(&["api-resources", "--api-group=stable.example.com"]);
    assert!(
        resources.contains("crontabs") && resources.contains("ct") && resources.contains("CronTab"),
        "{resources}"
    );
    let out = apply(&plane, &["apply", "-f", "-"], TABS);
    assert!(
        out.contains("crontab.stable.example.com/nightly created")
            && out.contains("crontab.stable.example.com/hourly created"),
        "{out}"
    );
    let listed = plane.ok(&["get", "crontabs"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert!(
        lines[0].split_whitespace().collect::<Vec<_>>() == ["NAME", "SPEC", "REPLICAS", "AGE"],
        "{listed}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("hourly") && l.contains("0 * * * *") && l.contains(" 4 ")),
        "{listed}"
    );
    assert!(
        plane
            .ok(&["get", "ct", "nightly", "-o", "name"])
            .contains("crontab.stable.example.com/nightly")
    );
    // The schema's default filled what was left out.
    assert_eq!(
        plane.ok(&["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"]),
        "1"
    );

    // Another served version shows the same objects under its own apiVersion.
    assert_eq!(
        plane.ok(&[
            "get",
            "crontabs.v1beta1.stable.example.com",
            "hourly",
            "-o",
            "jsonpath={.apiVersion} {.spec.replicas}"
        ]),
        "stable.example.com/v1beta1 4"
    );

    // Validation against the schema, worded as kube-apiserver words it.
    let bad = r#"{"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "bad"},
                  "spec": {"cronSpec": "whenever", "replicas": 20}}"#;
    let error = stderr_of(&plane, &["create", "-f", "-"], bad);
    assert!(
        error.contains(r#"The CronTab "bad" is invalid"#)
            && error.contains(
                "spec.cronSpec: Invalid value: \"whenever\": spec.cronSpec in body should match"
            )
            && error.contains("spec.replicas in body should be less than or equal to 10"),
        "{error}"
    );
    let typed = r#"{"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "bad"},
                    "spec": {"cronSpec": "0 * * * *", "replicas": "two"}}"#;
    let error = stderr_of(&plane, &["create", "-f", "-"], typed);
    assert!(
        error.contains("spec.replicas in body must be of type integer: \"string\""),
        "{error}"
    );
    // Unknown fields: refused under strict validation (kubectl's default), pruned otherwise.
    let extra = r#"{"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {"name": "extra"},
                    "spec": {"cronSpec": "0 * * * *", "colour": "blue"}}"#;
    let error = stderr_of(&plane, &["create", "-f", "-"], extra);
    assert!(error.contains(r#"unknown field "spec.colour""#), "{error}");
    apply(&plane, &["create", "--validate=false", "-f", "-"], extra);
    assert_eq!(
        plane.ok(&["get", "ct", "extra", "-o", "jsonpath={.spec}"]),
        r#"{"cronSpec":"0 * * * *","replicas":1}"#
    );

    // Strategic merge patches do not apply to custom resources; merge and JSON patches do.
    let out = plane.kubectl(&[
        "patch",
        "ct",
        "nightly",
        "-p",
        r#"{"spec":{"image":"backup:2"}}"#,
    ]);
    assert!(!out.status.success());
    plane.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"backup:2"}}"#,
    ]);
    plane.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    assert_eq!(
        plane.ok(&[
            "get",
            "ct",
            "nightly",
            "-o",
            "jsonpath={.spec.image} {.spec.replicas} {.metadata.generation}"
        ]),
        "backup:2 2 3"
    );

    // The status and scale subresources.
    plane.ok(&[
        "patch",
        "ct",
        "nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"selector":"app=nightly"}}"#,
    ]);
    plane.ok(&["scale", "ct", "nightly", "--replicas=5"]);
    assert_eq!(
        plane.ok(&[
            "get",
            "ct",
            "nightly",
            "-o",
            "jsonpath={.spec.replicas} {.status.replicas} {.status.selector}"
        ]),
        "5 2 app=nightly"
    );
    // A write of the main resource leaves the status alone.
    plane.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    assert_eq!(
        plane.ok(&["get", "ct", "nightly", "-o", "jsonpath={.status.replicas}"]),
        "2"
    );

    // Server-side apply merges by the definition's schema.
    let applied = r#"
apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: applied}
spec: {cronSpec: "*/5 * * * *", image: sync:1}
"#;
    apply(&plane, &["apply", "--server-side", "-f", "-"], applied);
    let managers = plane.ok(&[
        "get",
        "ct",
        "applied",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers, "kubectl");

    // kubectl explain reads the definition's schema from OpenAPI v3.
    let explained = plane.ok(&["explain", "crontab.spec.cronSpec"]);
    assert!(
        explained.contains("KIND:")
            && explained.contains("CronTab")
            && explained.contains("When to run, in cron syntax."),
        "{explained}"
    );

    // Deleting the definition deletes its resources first, then stops serving them.
    plane.ok(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--timeout=30s",
    ]);
    let out = plane.kubectl(&["get", "crontabs"]);
    assert!(!out.status.success());
    // kubectl's cached discovery may still name the resource; the server no longer serves it.
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("the server doesn't have a resource type \"crontabs\"")
            || error.contains("Unable to list \"stable.example.com/v1, Resource=crontabs\": the server could not find the requested resource"),
        "{error}"
    );
    // A new definition of the same kind starts empty.
    apply(&plane, &["apply", "-f", "-"], DEFINITION);
    let listed = plane.kubectl(&["get", "crontabs", "-o", "name"]);
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "");
}

#[test]
fn bad_definitions_are_refused_with_the_field() {
    let plane = ControlPlane::start();
    let bad = DEFINITION
        .replace(
            "name: crontabs.stable.example.com",
            "name: wrong.stable.example.com",
        )
        .replace(
            "replicas: {type: integer, minimum: 0, maximum: 10, default: 1}",
            "replicas: {minimum: 0}",
        );
    let error = stderr_of(&plane, &["apply", "-f", "-"], &bad);
    assert!(
        error.contains("metadata.name: Invalid value: \"wrong.stable.example.com\": must be spec.names.plural+\".\"+spec.group")
            && error.contains("spec.versions[1].schema.openAPIV3Schema.properties[spec].properties[replicas].type: Required value"),
        "{error}"
    );
    let out = plane.kubectl(&["get", "crd", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}
