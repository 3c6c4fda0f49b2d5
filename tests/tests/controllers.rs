//! The controller manager against the real API server, driven with the real kubectl:
//! ReplicaSets keep their pods, the garbage collector carries out background, foreground
//! and orphan deletion (custom owners included), namespaces empty themselves on delete,
//! every namespace gets its defaults, a standby manager takes over from a killed one,
//! ResourceQuotas show what their namespace uses, and the pods of a deleted node are
//! collected.

use std::time::{Duration, Instant};

use basalt_tests::control_plane::{ControlPlane, tail};
use basalt_tests::wait;

const REPLICA_SET: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: busybox:1.36, command: ["sleep", "3600"]}
"#;

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

/// Polls `check` until it holds; past `timeout`, fails with the server's log tail.
fn eventually(what: &str, plane: &ControlPlane, timeout: Duration, check: impl FnMut() -> bool) {
    wait::until(what, timeout, check, || {
        format!("--- server log tail ---\n{}", tail(&plane.log(), 30))
    });
}

/// Names of the pods matching `selector` in `namespace` that are not being deleted.
fn pods(plane: &ControlPlane, namespace: &str, selector: &str) -> Vec<String> {
    let out = plane.ok(&[
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|line| match line.trim_end().split_once(' ') {
            None if !line.trim().is_empty() => Some(line.trim().to_owned()),
            _ => None,
        })
        .collect()
}

fn owners(plane: &ControlPlane, pod: &str) -> String {
    plane.ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.metadata.ownerReferences[*].name}",
    ])
}

#[test]
fn replica_sets_and_the_garbage_collector() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager("controller-manager.log", &[]);
    let wait = |what: &str, check: &mut dyn FnMut() -> bool| {
        wait::until(what, Duration::from_secs(30), check, || {
            format!(
                "--- controller manager log ---\n{}",
                tail(&manager.log(), 30)
            )
        });
    };

    plane.apply(REPLICA_SET);
    wait("3 pods", &mut || {
        pods(&plane, "default", "app=web").len() == 3
    });
    let first = pods(&plane, "default", "app=web");
    for pod in &first {
        assert!(
            pod.starts_with("web-") && pod.len() == 9,
            "generated name {pod}"
        );
        assert_eq!(owners(&plane, pod), "web");
    }
    wait("status.replicas 3", &mut || {
        plane.ok(&[
            "get",
            "rs",
            "web",
            "-o",
            "jsonpath={.status.replicas}/{.status.observedGeneration}",
        ]) == "3/1"
    });

    // Scale up and down with kubectl; a deleted pod is replaced.
    plane.ok(&["scale", "rs", "web", "--replicas=5"]);
    wait("5 pods", &mut || {
        pods(&plane, "default", "app=web").len() == 5
    });
    plane.ok(&["scale", "rs", "web", "--replicas=2"]);
    wait("2 pods", &mut || {
        pods(&plane, "default", "app=web").len() == 2
    });
    let victim = pods(&plane, "default", "app=web")[0].clone();
    plane.ok(&["delete", "pod", &victim]);
    wait("a replacement", &mut || {
        let now = pods(&plane, "default", "app=web");
        now.len() == 2 && !now.contains(&victim)
    });
    // It stays at two: no duplicate creations from a stale cache.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pods(&plane, "default", "app=web").len(), 2);

    // Orphan: the ReplicaSet goes, its pods stay, released.
    plane.ok(&["delete", "rs", "web", "--cascade=orphan"]);
    let orphans = pods(&plane, "default", "app=web");
    assert_eq!(orphans.len(), 2);
    wait("owner references removed", &mut || {
        orphans.iter().all(|p| owners(&plane, p).is_empty())
    });
    assert!(
        !plane.kubectl(&["get", "rs", "web"]).status.success(),
        "the ReplicaSet is gone"
    );

    // A new ReplicaSet adopts the orphans and creates only what is missing.
    plane.apply(REPLICA_SET);
    wait("adoption", &mut || {
        orphans.iter().all(|p| owners(&plane, p) == "web")
    });
    wait("3 pods again", &mut || {
        pods(&plane, "default", "app=web").len() == 3
    });
    let adopted = pods(&plane, "default", "app=web");
    assert!(
        orphans.iter().all(|p| adopted.contains(p)),
        "{orphans:?} kept in {adopted:?}"
    );

    // Foreground: kubectl waits until the ReplicaSet is gone, which is after its pods.
    plane.ok(&[
        "delete",
        "rs",
        "web",
        "--cascade=foreground",
        "--timeout=30s",
    ]);
    assert!(
        pods(&plane, "default", "app=web").is_empty(),
        "pods went first"
    );
    assert!(!plane.kubectl(&["get", "rs", "web"]).status.success());

    // Background: the ReplicaSet goes at once, the collector removes the pods after.
    plane.apply(REPLICA_SET);
    wait("3 pods", &mut || {
        pods(&plane, "default", "app=web").len() == 3
    });
    plane.ok(&["delete", "rs", "web"]);
    wait("pods collected", &mut || {
        pods(&plane, "default", "app=web").is_empty()
    });

    // A custom resource owns a ConfigMap: deleting it collects the ConfigMap.
    plane.apply(WIDGETS);
    plane.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
    ]);
    let widget = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: gear}\n",
    );
    assert!(
        widget.status.success(),
        "{}",
        String::from_utf8_lossy(&widget.stderr)
    );
    let uid = plane.ok(&["get", "widget", "gear", "-o", "jsonpath={.metadata.uid}"]);
    let owned = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gear-parts\n  ownerReferences:\n  - {{apiVersion: example.com/v1, kind: Widget, name: gear, uid: {uid}}}\n"
    );
    plane.apply(&owned);
    plane.ok(&["delete", "widget", "gear"]);
    wait("the custom resource's ConfigMap collected", &mut || {
        !plane
            .kubectl(&["get", "configmap", "gear-parts"])
            .status
            .success()
    });

    // An object whose owner never existed is collected too.
    let dangling = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stray\n  ownerReferences:\n  - {apiVersion: apps/v1, kind: ReplicaSet, name: ghost, uid: 00000000-0000-0000-0000-000000000001}\n";
    plane.apply(dangling);
    wait("the dangling ConfigMap collected", &mut || {
        !plane
            .kubectl(&["get", "configmap", "stray"])
            .status
            .success()
    });
}

#[test]
fn namespaces_get_defaults_and_are_emptied_on_delete() {
    let plane = ControlPlane::start();
    let _manager = plane.start_controller_manager("controller-manager.log", &[]);
    let long = Duration::from_secs(30);

    plane.ok(&["create", "namespace", "scratch"]);
    eventually("the default ServiceAccount", &plane, long, || {
        plane
            .kubectl(&["get", "serviceaccount", "default", "-n", "scratch"])
            .status
            .success()
    });
    eventually("kube-root-ca.crt", &plane, long, || {
        let ca = plane.kubectl(&[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "scratch",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]);
        ca.status.success() && String::from_utf8_lossy(&ca.stdout).contains("BEGIN CERTIFICATE")
    });
    // Deleted or edited, they come back as they were.
    plane.ok(&["delete", "serviceaccount", "default", "-n", "scratch"]);
    eventually("the default ServiceAccount again", &plane, long, || {
        plane
            .kubectl(&["get", "serviceaccount", "default", "-n", "scratch"])
            .status
            .success()
    });
    plane.ok(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "scratch",
        "--type=merge",
        "-p",
        r#"{"data":{"ca.crt":"tampered"}}"#,
    ]);
    eventually("kube-root-ca.crt reset", &plane, long, || {
        plane
            .ok(&[
                "get",
                "configmap",
                "kube-root-ca.crt",
                "-n",
                "scratch",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ])
            .contains("BEGIN CERTIFICATE")
    });

    // Content of every kind, custom resources included, and one object held by a finalizer.
    plane.apply(WIDGETS);
    plane.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
    ]);
    plane.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "scratch",
        "--from-literal=a=b",
    ]);
    plane.ok(&[
        "create",
        "secret",
        "generic",
        "token",
        "-n",
        "scratch",
        "--from-literal=t=x",
    ]);
    let content = format!(
        "{REPLICA_SET}---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: gear}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: held, finalizers: [example.com/hold]}}\n"
    );
    let made = plane.kubectl_stdin(&["apply", "-n", "scratch", "-f", "-"], &content);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    eventually("the ReplicaSet's pods", &plane, long, || {
        pods(&plane, "scratch", "app=web").len() == 3
    });

    plane.ok(&["delete", "namespace", "scratch", "--wait=false"]);
    eventually("a condition naming the finalizer", &plane, long, || {
        plane
            .ok(&["get", "namespace", "scratch", "-o", "jsonpath={.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].message}"])
            .contains("example.com/hold")
    });
    for kind in ["pods", "replicasets", "widgets", "secrets"] {
        let left = plane.ok(&["get", kind, "-n", "scratch", "-o", "name"]);
        assert!(left.trim().is_empty(), "{kind} left: {left}");
    }
    plane.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "scratch",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("the namespace gone", &plane, long, || {
        !plane
            .kubectl(&["get", "namespace", "scratch"])
            .status
            .success()
    });
}

#[test]
fn a_standby_manager_takes_over() {
    let plane = ControlPlane::start();
    let mut first = plane.start_controller_manager("first.log", &[]);
    let holder = || plane.lease_holder("kube-controller-manager");
    eventually("a lease holder", &plane, Duration::from_secs(30), || {
        !holder().is_empty()
    });
    let leader = holder();
    let second = plane.start_controller_manager("second.log", &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder(), leader, "the standby waits");
    assert!(
        !second.log().contains("became the leader"),
        "{}",
        second.log()
    );

    first.kill();
    let killed = Instant::now();
    eventually(
        "the standby leading",
        &plane,
        Duration::from_secs(20),
        || {
            let now = holder();
            !now.is_empty() && now != leader
        },
    );
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(15), "took over after {took:?}");
    let transitions = plane.ok(&[
        "get",
        "lease",
        "kube-controller-manager",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.leaseTransitions}",
    ]);
    assert_eq!(transitions, "1");

    // The new leader does the work.
    plane.apply(REPLICA_SET);
    eventually(
        "pods from the new leader",
        &plane,
        Duration::from_secs(30),
        || pods(&plane, "default", "app=web").len() == 3,
    );
    assert!(
        second.log().contains("became the leader"),
        "{}",
        second.log()
    );
}

#[test]
fn resource_quotas_show_what_their_namespace_uses() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager(
        "controller-manager.log",
        &["--controllers", "resourcequota,replicaset"],
    );
    plane.ok(&["create", "namespace", "team"]);
    plane.apply(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\n  namespace: team\nspec:\n  hard:\n    \
         pods: \"10\"\n    requests.cpu: \"4\"\n    limits.memory: 1Gi\n    configmaps: \"5\"\n    count/replicasets.apps: \"2\"\n---\n\
         apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: best-effort\n  namespace: team\nspec:\n  hard: {pods: \"3\"}\n  scopes: [BestEffort]\n",
    );
    let used = |quota: &str, resource: &str| {
        plane.ok(&[
            "get",
            "resourcequota",
            quota,
            "-n",
            "team",
            "-o",
            &format!("jsonpath={{.status.used.{}}}", resource.replace('.', "\\.")),
        ])
    };
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        wait::until(what, Duration::from_secs(30), check, || {
            format!("--- controller manager ---\n{}", manager.log())
        });
    };
    wait_for("an empty namespace uses nothing", &|| {
        used("compute", "pods") == "0" && used("compute", "requests.cpu") == "0"
    });
    // Without the serviceaccount controller there is no kube-root-ca.crt either.
    assert_eq!(used("compute", "configmaps"), "0");

    // Pods with requests and limits, one best-effort, one finished.
    let pod = |name: &str, resources: &str, phase_note: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team\n  annotations: {{note: {phase_note}}}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n{resources}"
        )
    };
    plane.apply(&pod(
        "a",
        "    resources: {requests: {cpu: 500m}, limits: {memory: 128Mi}}\n",
        "running",
    ));
    plane.apply(&pod(
        "b",
        "    resources: {requests: {cpu: \"1\"}, limits: {memory: 256Mi}}\n",
        "running",
    ));
    plane.apply(&pod("c", "", "best-effort"));
    wait_for("three pods counted", &|| {
        used("compute", "pods") == "3"
            && used("compute", "requests.cpu") == "1500m"
            && used("compute", "limits.memory") == "384Mi"
            && used("best-effort", "pods") == "1"
    });

    // Objects are counted too, and a deletion gives back what it took.
    plane.apply(&REPLICA_SET.replace("replicas: 3", "replicas: 0").replacen(
        "name: web",
        "name: web\n  namespace: team",
        1,
    ));
    plane.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal=a=b",
    ]);
    wait_for("a ReplicaSet and a ConfigMap counted", &|| {
        used("compute", "count/replicasets.apps") == "1" && used("compute", "configmaps") == "1"
    });
    plane.ok(&[
        "delete",
        "pod",
        "b",
        "-n",
        "team",
        "--grace-period=0",
        "--force",
    ]);
    wait_for("the deleted pod gives its share back", &|| {
        used("compute", "pods") == "2" && used("compute", "requests.cpu") == "500m"
    });
    let hard = plane.ok(&[
        "get",
        "resourcequota",
        "compute",
        "-n",
        "team",
        "-o",
        "jsonpath={.status.hard.requests\\.cpu}",
    ]);
    assert_eq!(hard, "4");
    let listed = plane.ok(&["get", "quota", "compute", "-n", "team"]);
    assert!(
        listed.contains("requests.cpu: 500m/4") && listed.contains("limits.memory: 128Mi/1Gi"),
        "{listed}"
    );
    let described = plane.ok(&["describe", "resourcequota", "compute", "-n", "team"]);
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["requests.cpu", "500m", "4"]),
        "{described}"
    );
}

#[test]
fn pods_of_a_deleted_node_are_collected() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager(
        "controller-manager.log",
        &[
            "--controllers",
            "podgc",
            "--terminated-pod-gc-threshold",
            "1",
        ],
    );
    plane.apply(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: doomed\n---\n\
         apiVersion: v1\nkind: Node\nmetadata:\n  name: elsewhere\n",
    );
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: doomed\n  containers:\n  - {{name: c, image: busybox:1.36}}\n"
        )
    };
    plane.apply(&pod("stranded"));
    // Two finished pods, one over the threshold: the older goes.
    for name in ["done-old", "done-new"] {
        plane.apply(&pod(name).replace("nodeName: doomed", "nodeName: elsewhere"));
        plane.ok(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Succeeded"}}"#,
        ]);
        std::thread::sleep(Duration::from_millis(1100));
    }
    plane.ok(&["delete", "node", "doomed"]);
    let exists = |name: &str| plane.kubectl(&["get", "pod", name]).status.success();
    // The node must stay gone for the 40 s quarantine; the collector looks every 20 s.
    wait::until(
        "the stranded pod and the older finished pod collected",
        Duration::from_secs(90),
        || !exists("stranded") && !exists("done-old"),
        || format!("--- controller manager ---\n{}", manager.log()),
    );
    assert!(
        exists("done-new"),
        "the threshold keeps the newest finished pod"
    );
}
