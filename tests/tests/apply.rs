//! Server-side apply with the real kubectl: managedFields, conflicts with other managers and
//! `--force-conflicts`, removal of fields an applier stops mentioning, and what other
//! managers own surviving an apply.

use basalt_tests::control_plane::ControlPlane;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, stage: beta}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "busybox:1.36"}
      - {name: log, image: "busybox:1.36"}
---
apiVersion: v1
kind: Service
metadata: {name: dns}
spec:
  selector: {app: dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
"#;

/// The same deployment without the `stage` label and the `log` container.
const SMALLER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "busybox:1.36"}
"#;

fn apply(plane: &ControlPlane, extra: &[&str], input: &str) -> (bool, String, String) {
    let mut args = vec!["apply", "--server-side", "-f", "-"];
    args.extend_from_slice(extra);
    let out = plane.kubectl_stdin(&args, input);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn jsonpath(plane: &ControlPlane, object: &str, path: &str) -> String {
    plane.ok(&["get", object, "-o", &format!("jsonpath={path}")])
}

#[test]
fn server_side_apply_owns_fields_conflicts_and_forces() {
    let plane = ControlPlane::start();
    let (ok, stdout, stderr) = apply(&plane, &[], APP);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("deployment.apps/web serverside-applied")
            && stdout.contains("service/dns serverside-applied"),
        "{stdout}"
    );
    // The applier owns what it sent, item by item in keyed lists.
    let managers = jsonpath(
        &plane,
        "deployment/web",
        "{range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
    );
    assert_eq!(managers.trim(), "kubectl/Apply");
    let yaml = plane.ok(&[
        "get",
        "deployment/web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        yaml.contains("k:{\"name\":\"log\"}") && yaml.contains("f:replicas: {}"),
        "{yaml}"
    );
    // One port number serves both protocols: service ports are keyed by port and protocol.
    assert_eq!(
        jsonpath(&plane, "service/dns", "{.spec.ports[*].protocol}"),
        "UDP TCP"
    );

    // Applying the same configuration again is a no-op.
    let version = jsonpath(&plane, "deployment/web", "{.metadata.resourceVersion}");
    let (ok, _, stderr) = apply(&plane, &[], APP);
    assert!(ok, "{stderr}");
    assert_eq!(
        jsonpath(&plane, "deployment/web", "{.metadata.resourceVersion}"),
        version
    );

    // Another manager takes the replicas; applying the old value conflicts with it.
    plane.ok(&["scale", "deployment/web", "--replicas=5"]);
    let (ok, _, stderr) = apply(&plane, &[], APP);
    assert!(!ok, "an apply over another manager's field must fail");
    assert!(
        stderr.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\""
        ) && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    assert_eq!(jsonpath(&plane, "deployment/web", "{.spec.replicas}"), "5");

    // Forcing takes the field over.
    let (ok, _, stderr) = apply(&plane, &["--force-conflicts"], APP);
    assert!(ok, "{stderr}");
    assert_eq!(jsonpath(&plane, "deployment/web", "{.spec.replicas}"), "2");
    let managers = jsonpath(
        &plane,
        "deployment/web",
        "{range .metadata.managedFields[*]}{.manager}{.subresource} {end}",
    );
    assert_eq!(
        managers.trim(),
        "kubectl",
        "the scaler owned only the replicas"
    );

    // Someone else labels it; then the applier drops a label and a container.
    plane.ok(&["label", "deployment/web", "owner=ops"]);
    let (ok, _, stderr) = apply(&plane, &[], SMALLER);
    assert!(ok, "{stderr}");
    assert_eq!(
        jsonpath(&plane, "deployment/web", "{.metadata.labels}"),
        r#"{"app":"web","owner":"ops"}"#
    );
    assert_eq!(
        jsonpath(
            &plane,
            "deployment/web",
            "{.spec.template.spec.containers[*].name}"
        ),
        "web"
    );

    // A server-side dry run shows the result and stores nothing.
    let changed = SMALLER.replace("busybox:1.36", "busybox:1.37");
    let (ok, _, stderr) = apply(&plane, &["--dry-run=server"], &changed);
    assert!(ok, "{stderr}");
    assert_eq!(
        jsonpath(
            &plane,
            "deployment/web",
            "{.spec.template.spec.containers[0].image}"
        ),
        "busybox:1.36"
    );

    // An object first applied client-side moves to server-side apply: kubectl hands the
    // client-side applier's fields over by editing managedFields.
    let config =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: \"1\", b: \"2\"}\n";
    let out = plane.kubectl_stdin(&["apply", "-f", "-"], config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, stderr) = apply(&plane, &[], &config.replace(", b: \"2\"", ""));
    assert!(ok, "{stderr}");
    assert_eq!(
        jsonpath(&plane, "configmap/settings", "{.data}"),
        r#"{"a":"1"}"#
    );
    let managers = jsonpath(
        &plane,
        "configmap/settings",
        "{range .metadata.managedFields[*]}{.manager}/{.operation} {end}",
    );
    // kubectl names the owner of its last-applied annotation `kubectl-last-applied`.
    let mut managers: Vec<&str> = managers.split_whitespace().collect();
    managers.sort_unstable();
    assert_eq!(managers, ["kubectl-last-applied/Apply", "kubectl/Apply"]);

    // Bad configurations name what is wrong.
    let (ok, _, stderr) = apply(
        &plane,
        &[],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\ndata: {a: \"1\"}\nbogus: 2\n",
    );
    assert!(!ok);
    assert!(stderr.contains("bogus"), "{stderr}");
}
