//! Node lifecycle end to end: stand-in kubelets register nodes and heartbeat their Leases;
//! one goes silent, turns NotReady (Unknown) and gets the unreachable taints, its pods are
//! marked not ready and evicted once their (defaulted) toleration runs out, and the
//! Deployment's replacements land on the other nodes. A pod that tolerates the taint forever
//! stays. When the kubelet comes back the taints go. When every node goes silent, nothing is
//! evicted: that looks like the control plane's network failing, not the nodes. Node IPAM
//! gives each node a pod CIDR of its own.

use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::node_agent::NodeAgent;
use basalt_tests::wait;

/// Quick enough for a test: NotReady 6 s after the last heartbeat, evicted 3 s after that.
const MANAGER_FLAGS: &[&str] = &[
    "--node-monitor-grace-period=6s",
    "--node-monitor-period=1s",
    "--node-eviction-rate=10",
    "--allocate-node-cidrs",
    "--cluster-cidr=10.244.0.0/16",
];
const SERVER_FLAGS: &[&str] = &[
    "--default-not-ready-toleration-seconds=3",
    "--default-unreachable-toleration-seconds=3",
];

fn ready(plane: &ControlPlane, node: &str) -> String {
    plane.ok(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
}

/// `key:effect` of each taint of `node`.
fn taints(plane: &ControlPlane, node: &str) -> Vec<String> {
    plane
        .ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={range .spec.taints[*]}{.key}:{.effect}{\"\\n\"}{end}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `name node ready deleting` of every pod, `-` for what is unset.
fn pods(plane: &ControlPlane) -> Vec<(String, String, String, bool)> {
    let list: serde_json::Value =
        serde_json::from_str(&plane.ok(&["get", "pods", "-o", "json"])).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str())
                .unwrap_or("-");
            (
                p["metadata"]["name"].as_str().unwrap_or("-").to_owned(),
                p["spec"]["nodeName"].as_str().unwrap_or("-").to_owned(),
                ready.to_owned(),
                !p["metadata"]["deletionTimestamp"].is_null(),
            )
        })
        .collect()
}

fn context(plane: &ControlPlane, manager: &basalt_tests::component::Component) -> String {
    format!(
        "pods: {:#?}\nnodes:\n{}\n--- controller manager ---\n{}",
        pods(plane),
        plane.ok(&["get", "nodes", "-o", "wide"]),
        basalt_tests::control_plane::tail(&manager.log(), 40)
    )
}

#[test]
fn a_silent_node_goes_not_ready_and_its_pods_move() {
    let plane = ControlPlane::start_with(SERVER_FLAGS);
    let manager = plane.start_controller_manager("controller-manager.log", MANAGER_FLAGS);
    let _scheduler = plane.start_scheduler("scheduler.log", &[]);
    let kubeconfig = plane.kubeconfig();
    let mut agents: Vec<NodeAgent> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| NodeAgent::start(&kubeconfig, n))
        .collect();
    let wait_for = |what: &str, seconds: u64, check: &mut dyn FnMut() -> bool| {
        wait::until(what, Duration::from_secs(seconds), check, || {
            context(&plane, &manager)
        });
    };

    plane.apply(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 6\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: main\n        image: busybox:1.36\n        resources:\n          requests: {cpu: 500m}\n",
    );
    plane.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    // Every node got a pod CIDR of its own out of the cluster CIDR.
    wait_for("pod CIDRs for every node", 10, &mut || {
        let cidrs = plane.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.podCIDR}"]);
        let mut cidrs: Vec<&str> = cidrs.split_whitespace().collect();
        cidrs.sort_unstable();
        cidrs.dedup();
        cidrs.len() == 3
            && cidrs
                .iter()
                .all(|c| c.starts_with("10.244.") && c.ends_with(".0/24"))
    });
    // The Deployment's pods got the server's default tolerations.
    let tolerations = plane.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].spec.tolerations[*].tolerationSeconds}",
    ]);
    assert_eq!(tolerations, "3 3");
    let victim = pods(&plane)[0].1.clone();
    let on_victim = |plane: &ControlPlane| {
        pods(plane)
            .into_iter()
            .filter(|p| p.1 == victim && p.0.starts_with("web-"))
            .count()
    };
    assert!(on_victim(&plane) > 0);
    // A pod that tolerates the node's death forever.
    plane.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stays\nspec:\n  nodeName: {victim}\n  tolerations:\n  - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}}\n  containers:\n  - name: main\n    image: busybox:1.36\n"
    ));
    wait_for("the tolerant pod Ready", 20, &mut || {
        pods(&plane).iter().any(|p| p.0 == "stays" && p.2 == "True")
    });

    // The node loses power.
    let index = ["n1", "n2", "n3"]
        .iter()
        .position(|n| *n == victim)
        .unwrap_or_default();
    agents[index].stop();
    wait_for("the silent node NotReady (Unknown)", 20, &mut || {
        ready(&plane, &victim) == "Unknown"
    });
    let reason = plane.ok(&[
        "get",
        "node",
        &victim,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ]);
    assert_eq!(reason, "NodeStatusUnknown");
    wait_for("the unreachable taints", 10, &mut || {
        let t = taints(&plane, &victim);
        t.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_owned())
            && t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_owned())
    });
    // Its pods are marked not ready, evicted, and replaced elsewhere.
    wait_for("six web pods ready on the other nodes", 40, &mut || {
        let all = pods(&plane);
        let elsewhere = all
            .iter()
            .filter(|p| p.0.starts_with("web-") && p.1 != victim && p.2 == "True" && !p.3)
            .count();
        let evicted = all
            .iter()
            .filter(|p| p.0.starts_with("web-") && p.1 == victim)
            .all(|p| p.3 && p.2 == "False");
        elsewhere == 6 && evicted
    });
    let disrupted = plane.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type==\"DisruptionTarget\")].reason}{\"\\n\"}{end}",
    ]);
    assert!(
        disrupted
            .lines()
            .filter(|l| l.starts_with(&format!("{victim} ")))
            .all(|l| l.ends_with(" DeletionByTaintManager")),
        "{disrupted}"
    );
    let stays = pods(&plane).into_iter().find(|p| p.0 == "stays");
    assert_eq!(
        stays.map(|p| (p.2, p.3)),
        Some(("False".to_owned(), false)),
        "tolerated forever: marked not ready but not evicted"
    );

    // The kubelet comes back: Ready, no taints, and it finishes deleting the evicted pods.
    agents[index] = NodeAgent::start(&kubeconfig, &victim);
    wait_for("the node Ready and untainted again", 20, &mut || {
        ready(&plane, &victim) == "True" && taints(&plane, &victim).is_empty()
    });
    wait_for("the evicted pods gone", 20, &mut || on_victim(&plane) == 0);
}

#[test]
fn no_evictions_when_every_node_goes_silent_and_cordons_are_taints() {
    // Nodes go silent a second or two apart, so the first may be tainted NoExecute until
    // the second is seen down; tolerations longer than that gap keep its pod.
    let plane = ControlPlane::start_with(&[
        "--default-not-ready-toleration-seconds=10",
        "--default-unreachable-toleration-seconds=10",
    ]);
    let manager = plane.start_controller_manager("controller-manager.log", MANAGER_FLAGS);
    let kubeconfig = plane.kubeconfig();
    let mut agents: Vec<NodeAgent> = ["n1", "n2"]
        .iter()
        .map(|n| NodeAgent::start(&kubeconfig, n))
        .collect();
    let wait_for = |what: &str, seconds: u64, check: &mut dyn FnMut() -> bool| {
        wait::until(what, Duration::from_secs(seconds), check, || {
            context(&plane, &manager)
        });
    };
    wait_for("both nodes Ready", 20, &mut || {
        ready(&plane, "n1") == "True" && ready(&plane, "n2") == "True"
    });

    // A cordon is a NoSchedule taint, and an uncordon removes it.
    plane.ok(&["cordon", "n1"]);
    wait_for("the unschedulable taint", 10, &mut || {
        taints(&plane, "n1") == ["node.kubernetes.io/unschedulable:NoSchedule"]
    });
    plane.ok(&["uncordon", "n1"]);
    wait_for("no taint after uncordon", 10, &mut || {
        taints(&plane, "n1").is_empty()
    });

    for node in ["n1", "n2"] {
        plane.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-{node}\nspec:\n  nodeName: {node}\n  containers:\n  - name: main\n    image: busybox:1.36\n"
        ));
    }
    wait_for("both pods Ready", 20, &mut || {
        pods(&plane).iter().filter(|p| p.2 == "True").count() == 2
    });
    for agent in &mut agents {
        agent.stop();
    }
    wait_for("both nodes Unknown and kept off limits", 20, &mut || {
        ["n1", "n2"].iter().all(|n| {
            ready(&plane, n) == "Unknown"
                && taints(&plane, n) == ["node.kubernetes.io/unreachable:NoSchedule"]
        })
    });
    // Past the tolerations: nothing evicted, nothing tainted NoExecute.
    std::thread::sleep(Duration::from_secs(11));
    assert!(
        pods(&plane).iter().all(|p| !p.3 && p.2 == "False"),
        "{}",
        context(&plane, &manager)
    );
    for node in ["n1", "n2"] {
        assert_eq!(
            taints(&plane, node),
            ["node.kubernetes.io/unreachable:NoSchedule"]
        );
    }
    assert!(manager.log().contains("every node is down"));
}
