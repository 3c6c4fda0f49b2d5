//! The real kubectl against basalt-apiserver: the everyday commands, watches, conflicts,
//! and what unauthenticated and unauthorized users get.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use basalt_tests::control_plane::ControlPlane;

const APP: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
  labels: {app: web}
data:
  mode: fast
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: frontend}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn everyday_commands() {
    let plane = ControlPlane::start();
    let out = plane.kubectl_stdin(&["apply", "-f", "-"], APP);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    assert!(applied.contains("deployment.apps/web created"), "{applied}");

    let table = plane.ok(&["get", "deployments"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["web", "0/2", "0", "0"], "{table}");
    let wide = plane.ok(&["get", "deployment", "web", "-o", "wide"]);
    assert!(
        wide.contains("busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    let svc = plane.ok(&["get", "svc", "web"]);
    assert!(svc.contains("80/TCP"), "{svc}");

    // Defaults and metadata the server fills.
    let replicas = plane.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation} {.spec.strategy.type} {.spec.template.spec.restartPolicy}"]);
    assert_eq!(replicas, "2 1 RollingUpdate Always");
    let yaml = plane.ok(&["get", "configmap", "app-config", "-o", "yaml"]);
    for field in [
        "uid:",
        "creationTimestamp:",
        "resourceVersion:",
        "mode: fast",
    ] {
        assert!(yaml.contains(field), "{field} missing from {yaml}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&plane.ok(&["get", "cm", "-o", "json"])).expect("kubectl -o json");
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["metadata"]["name"], "app-config");

    // Selectors, label and annotate, patches of two types.
    assert_eq!(
        plane
            .ok(&["get", "deploy", "-l", "tier=frontend", "-o", "name"])
            .trim(),
        "deployment.apps/web"
    );
    assert_eq!(
        plane
            .ok(&["get", "deploy", "-l", "tier!=frontend", "-o", "name"])
            .trim(),
        ""
    );
    assert_eq!(
        plane
            .ok(&[
                "get",
                "cm",
                "--field-selector",
                "metadata.name=app-config",
                "-o",
                "name"
            ])
            .trim(),
        "configmap/app-config"
    );
    plane.ok(&["label", "cm", "app-config", "env=dev"]);
    plane.ok(&["annotate", "cm", "app-config", "owner=team-a"]);
    assert_eq!(
        plane.ok(&[
            "get",
            "cm",
            "app-config",
            "-o",
            "jsonpath={.metadata.labels.env} {.metadata.annotations.owner}"
        ]),
        "dev team-a"
    );
    plane.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":3}}"#,
    ]);
    plane.ok(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    assert_eq!(
        plane.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "4 3",
        "each spec change bumps the generation"
    );

    // A second apply merges with what others changed meanwhile (a strategic merge patch).
    plane.ok(&["label", "deploy", "web", "owner=ops"]);
    let changed = APP
        .replace("busybox:1.36", "busybox:1.37")
        .replace("replicas: 2", "replicas: 6");
    let out = plane.kubectl_stdin(&["apply", "-f", "-"], &changed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web configured"));
    assert_eq!(
        plane.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.labels.owner}"]),
        "6 busybox:1.37 ops"
    );
    // kubectl patch's default type is strategic: a container is added, not the list replaced.
    plane.ok(&["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#]);
    assert_eq!(
        plane.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ]),
        "web sidecar"
    );
    let bad = plane.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":"many"}}"#,
    ]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("spec.replicas"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    plane.ok(&["set", "image", "deploy/web", "sidecar=busybox:1.37"]);
    // edit runs $EDITOR on the object and patches what changed.
    let editor = plane.write_script(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/mode: fast/mode: slow/' \"$1\"\n",
    );
    let edited = plane
        .kubectl_command("admin")
        .env("EDITOR", &editor)
        .args(["edit", "cm", "app-config"])
        .output()
        .expect("kubectl edit");
    assert!(
        edited.status.success(),
        "{}",
        String::from_utf8_lossy(&edited.stderr)
    );
    assert_eq!(
        plane.ok(&["get", "cm", "app-config", "-o", "jsonpath={.data.mode}"]),
        "slow"
    );
    let out = plane.kubectl_stdin(&["replace", "-f", "-"], APP);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        plane.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    let explain = plane.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explain.contains("FIELD: containers <[]Container>"),
        "{explain}"
    );
    assert!(explain.contains("image"), "{explain}");

    // All namespaces, and a namespace that does not exist.
    let ns = plane.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-b"}}"#,
    );
    assert!(
        ns.status.success(),
        "{}",
        String::from_utf8_lossy(&ns.stderr)
    );
    let all = plane.ok(&["get", "cm", "-A"]);
    assert!(
        all.lines().next().unwrap_or("").starts_with("NAMESPACE"),
        "{all}"
    );
    let missing = plane.kubectl_stdin(
        &["create", "-n", "nowhere", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("namespaces \"nowhere\" not found"));

    // Bad input gets Kubernetes' messages.
    let invalid = plane.kubectl_stdin(&["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"Bad_Name"},"spec":{"containers":[{"name":"c"}]}}"#);
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("Pod \"Bad_Name\" is invalid"), "{stderr}");
    assert!(
        stderr.contains("spec.containers[0].image: Required value"),
        "{stderr}"
    );
    let exists = plane.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-config"}}"#,
    );
    assert!(
        String::from_utf8_lossy(&exists.stderr)
            .contains("configmaps \"app-config\" already exists")
    );

    // kubectl's imperative commands send protobuf bodies.
    plane.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team-b",
        "--from-literal=level=3",
    ]);
    plane.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "team-b",
        "--from-literal=key=s3cret",
    ]);
    plane.ok(&[
        "create",
        "deployment",
        "api",
        "-n",
        "team-b",
        "--image=busybox:1.36",
        "--replicas=2",
        "--port=8080",
    ]);
    plane.ok(&[
        "create",
        "service",
        "clusterip",
        "api",
        "-n",
        "team-b",
        "--tcp=80:8080",
    ]);
    plane.ok(&[
        "create",
        "job",
        "once",
        "-n",
        "team-b",
        "--image=busybox:1.36",
        "--",
        "true",
    ]);
    assert_eq!(
        plane.ok(&[
            "get",
            "secret",
            "token",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.data.key}"
        ]),
        "czNjcmV0"
    );
    assert_eq!(
        plane.ok(&[
            "get",
            "svc",
            "api",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.spec.ports[0].port}/{.spec.ports[0].targetPort}"
        ]),
        "80/8080"
    );
    plane.ok(&["scale", "deployment", "api", "-n", "team-b", "--replicas=5"]);
    assert_eq!(
        plane.ok(&[
            "get",
            "deploy",
            "api",
            "-n",
            "team-b",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    // Discovery.
    let resources = plane.ok(&["api-resources"]);
    for row in ["pods", "deployments", "clusterroles", "leases"] {
        assert!(
            resources.lines().any(|l| l.starts_with(row)),
            "{row} missing from {resources}"
        );
    }
    let versions = plane.ok(&["api-versions"]);
    for version in ["v1", "apps/v1", "rbac.authorization.k8s.io/v1"] {
        assert!(
            versions.lines().any(|l| l == version),
            "{version} missing from {versions}"
        );
    }

    // Delete.
    plane.ok(&["delete", "cm", "app-config"]);
    let gone = plane.kubectl(&["get", "cm", "app-config"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("configmaps \"app-config\" not found"));
}

#[test]
fn stale_writes_conflict_and_watches_see_changes() {
    let plane = ControlPlane::start();
    let out = plane.kubectl_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"v":"1"}}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stale = plane.ok(&["get", "cm", "c", "-o", "json"]);
    plane.ok(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ]);
    let replaced = plane.kubectl_stdin(&["replace", "-f", "-"], &stale);
    let stderr = String::from_utf8_lossy(&replaced.stderr);
    assert!(stderr.contains("the object has been modified"), "{stderr}");

    let mut watch = plane
        .kubectl_command("admin")
        .args([
            "get",
            "cm",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,V:.data.v",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    std::thread::sleep(Duration::from_secs(1));
    plane.ok(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"data":{"v":"3"}}"#,
    ]);
    let mut stdout = watch.stdout.take().expect("watch stdout");
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && !seen.contains("c      3") {
            match stdout.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            }
        }
        seen
    });
    std::thread::sleep(Duration::from_secs(3));
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = reader.join().expect("watch reader");
    assert!(seen.contains("c      2"), "initial state missing: {seen}");
    assert!(
        seen.contains("c      3"),
        "the later change was not observed: {seen}"
    );
}

#[test]
fn anonymous_and_forbidden_requests() {
    let plane = ControlPlane::start();
    let anonymous = plane
        .kubectl_command("anonymous")
        .args(["get", "pods"])
        .output()
        .expect("kubectl");
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(!anonymous.status.success());
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    let health = plane
        .kubectl_command("anonymous")
        .args(["get", "--raw", "/healthz"])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&health.stdout),
        "ok",
        "health is open to anyone"
    );

    // Metrics are for administrators and monitoring, under kube-apiserver's names.
    let metrics = plane.ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains("apiserver_request_total{verb=\"GET\"")
            && metrics.contains("apiserver_request_duration_seconds_bucket")
            && metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );
    let hidden = plane
        .kubectl_command("bob")
        .args(["get", "--raw", "/metrics"])
        .output()
        .expect("kubectl");
    assert!(
        String::from_utf8_lossy(&hidden.stderr).contains("Forbidden"),
        "{}",
        String::from_utf8_lossy(&hidden.stderr)
    );

    let bob = plane
        .kubectl_command("bob")
        .args(["get", "pods", "-n", "default"])
        .output()
        .expect("kubectl");
    let stderr = String::from_utf8_lossy(&bob.stderr);
    assert!(
        stderr.contains("pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{stderr}"
    );
}

#[test]
fn lists_page_and_watches_send_the_current_state_then_a_bookmark() {
    let plane = ControlPlane::start();
    for name in ["a", "b", "c"] {
        plane.ok(&["create", "configmap", name, "--from-literal=k=v"]);
    }
    let page = |query: &str| -> serde_json::Value {
        let raw = plane.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?{query}"),
        ]);
        serde_json::from_str(&raw).expect("a list")
    };
    let first = page("limit=2");
    let names = |list: &serde_json::Value| -> Vec<String> {
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    // A change after the first page does not show in the next one: pages share a revision.
    plane.ok(&["create", "configmap", "d", "--from-literal=k=v"]);
    let second = page(&format!("limit=2&continue={token}"));
    assert_eq!(names(&second), ["c"]);
    assert!(second["metadata"]["continue"].is_null());
    let bad = plane.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=1&continue=garbage",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("continue key is not valid"));

    let watched = plane.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=!skip&timeoutSeconds=2",
    ]);
    let events: Vec<serde_json::Value> = watched
        .lines()
        .map(|l| serde_json::from_str(l).expect("one event per line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        ["ADDED", "ADDED", "ADDED", "ADDED", "BOOKMARK"],
        "{watched}"
    );
    assert_eq!(
        events[4]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn services_get_addresses_and_node_ports_from_their_ranges() {
    let plane = ControlPlane::start();
    let jsonpath =
        |what: &str, path: &str| plane.ok(&["get", what, "-o", &format!("jsonpath={path}")]);
    assert_eq!(
        jsonpath("service/kubernetes", "{.spec.clusterIP}"),
        "10.96.0.1"
    );
    assert_eq!(
        jsonpath(
            "service/kubernetes",
            "{.spec.ports[0].port}/{.spec.ports[0].targetPort}"
        ),
        "443/6443"
    );
    let server_ip = plane
        .address
        .split(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        jsonpath("endpoints/kubernetes", "{.subsets[0].addresses[0].ip}"),
        server_ip
    );
    assert_eq!(
        jsonpath("endpointslice/kubernetes", "{.endpoints[0].addresses[0]}"),
        server_ip
    );

    plane.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    plane.ok(&["create", "service", "clusterip", "api", "--tcp=80:8080"]);
    let web_ip = jsonpath("service/web", "{.spec.clusterIP}");
    let api_ip = jsonpath("service/api", "{.spec.clusterIP}");
    assert!(web_ip.starts_with("10.") && web_ip != api_ip && web_ip != "10.96.0.1");
    let taken = plane.kubectl_stdin(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: copy}}\nspec: {{clusterIP: {web_ip}, ports: [{{port: 80}}]}}\n"),
    );
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("provided IP is already allocated"),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let outside = plane.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: outside}\nspec: {clusterIP: 192.168.0.1, ports: [{port: 80}]}\n",
    );
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("not in the valid range"),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );

    plane.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    assert_eq!(jsonpath("service/np", "{.spec.ports[0].nodePort}"), "30080");
    let clash = plane.kubectl(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    assert!(
        String::from_utf8_lossy(&clash.stderr).contains("provided port is already allocated"),
        "{}",
        String::from_utf8_lossy(&clash.stderr)
    );
    // Back to ClusterIP gives the port back.
    plane.ok(&[
        "patch",
        "service",
        "np",
        "-p",
        r#"{"spec":{"type":"ClusterIP","ports":[{"port":80,"nodePort":null}]}}"#,
    ]);
    plane.ok(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);

    // A deleted Service's address can be asked for again; a kept one cannot change.
    plane.ok(&["delete", "service", "web"]);
    let reuse = plane.kubectl_stdin(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web2}}\nspec: {{clusterIP: {web_ip}, ports: [{{port: 80}}]}}\n"),
    );
    assert!(
        reuse.status.success(),
        "{}",
        String::from_utf8_lossy(&reuse.stderr)
    );
    let moved = plane.kubectl(&[
        "patch",
        "service",
        "api",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.77","clusterIPs":["10.96.0.77"]}}"#,
    ]);
    assert!(
        String::from_utf8_lossy(&moved.stderr).contains("field is immutable"),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    // Re-applying a manifest without an address keeps the one assigned.
    let manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: applied}\nspec: {type: NodePort, ports: [{port: 80}]}\n";
    assert!(
        plane
            .kubectl_stdin(&["apply", "-f", "-"], manifest)
            .status
            .success()
    );
    let first = jsonpath(
        "service/applied",
        "{.spec.clusterIP} {.spec.ports[0].nodePort}",
    );
    let again = plane.kubectl_stdin(&["replace", "-f", "-"], manifest);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        jsonpath(
            "service/applied",
            "{.spec.clusterIP} {.spec.ports[0].nodePort}"
        ),
        first
    );
    let headless = plane.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: headless}\nspec: {clusterIP: None, ports: [{port: 80}]}\n",
    );
    assert!(headless.status.success());
    assert_eq!(jsonpath("service/headless", "{.spec.clusterIP}"), "None");
}

#[test]
fn limit_ranges_default_and_bound_new_pods() {
    let plane = ControlPlane::start();
    let created = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 250m}\n    max: {cpu: '1'}\n",
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let range = plane.ok(&[
        "get",
        "limitrange",
        "limits",
        "-o",
        "jsonpath={.spec.limits[0].defaultRequest}",
    ]);
    assert!(
        range.contains("\"memory\":\"256Mi\""),
        "defaultRequest falls back to default: {range}"
    );

    plane.ok(&["run", "small", "--image=nginx"]);
    let resources = plane.ok(&[
        "get",
        "pod",
        "small",
        "-o",
        "jsonpath={.spec.containers[0].resources}",
    ]);
    let resources: serde_json::Value = serde_json::from_str(&resources).unwrap_or_default();
    assert_eq!(
        resources,
        serde_json::json!({"limits": {"cpu": "500m", "memory": "256Mi"},
                           "requests": {"cpu": "250m", "memory": "256Mi"}})
    );
    let big = plane.kubectl(&["run", "big", "--image=nginx", "--overrides",
        r#"{"spec":{"containers":[{"name":"big","image":"nginx","resources":{"limits":{"cpu":"2"}}}]}}"#]);
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert!(
        stderr.contains(
            "pods \"big\" is forbidden: [maximum cpu usage per Container is 1, but limit is 2]"
        ),
        "{stderr}"
    );
    let bad_range = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: bad}\nspec:\n  limits:\n  - type: Container\n    min: {cpu: '2'}\n    max: {cpu: '1'}\n",
    );
    assert!(!bad_range.status.success());
}
