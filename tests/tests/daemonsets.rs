//! DaemonSets end to end with the real kubectl, scheduler and stand-in kubelets: one pod on
//! every node that fits and none where a taint is not tolerated, a pod for a node that
//! joins later, daemons kept on cordoned nodes, a rolling update node by node that
//! `kubectl rollout status` follows, `kubectl rollout undo`, eviction by a NoExecute
//! taint, and adoption of the pods a DaemonSet deleted with `--cascade=orphan` left behind.

use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::node_agent::NodeAgent;
use basalt_tests::wait;

/// `node image` of each daemon pod not being deleted, sorted.
fn daemons(plane: &ControlPlane) -> Vec<String> {
    let mut list: Vec<String> = plane
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.spec.containers[0].image} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|l| l.split_whitespace().count() == 2)
        .map(|l| l.trim().to_owned())
        .collect();
    list.sort();
    list
}

#[test]
fn daemonsets_run_on_every_fitting_node_and_roll_out() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager("controller-manager.log", &[]);
    let scheduler = plane.start_scheduler("scheduler.log", &[]);
    let kubeconfig = plane.kubeconfig();
    let _agents: Vec<NodeAgent> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| NodeAgent::start(&kubeconfig, n))
        .collect();
    let wait_for = |what: &str, check: &mut dyn FnMut() -> bool| {
        wait::until(what, Duration::from_secs(40), check, || {
            format!(
                "daemons: {:?}\n--- controller manager ---\n{}\n--- scheduler ---\n{}",
                daemons(&plane),
                basalt_tests::control_plane::tail(&manager.log(), 30),
                basalt_tests::control_plane::tail(&scheduler.log(), 10)
            )
        });
    };
    wait_for("three nodes", &mut || {
        plane.ok(&["get", "nodes", "-o", "name"]).lines().count() == 3
    });
    plane.ok(&["taint", "node", "n3", "dedicated=db:NoSchedule"]);
    plane.ok(&["cordon", "n2"]);

    let daemonset = |image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {{app: agent}}\n  template:\n    metadata:\n      labels: {{app: agent}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n"
        )
    };
    plane.apply(&daemonset("busybox:1.36"));
    plane.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert_eq!(
        daemons(&plane),
        ["n1 busybox:1.36", "n2 busybox:1.36"],
        "none on the tainted node; the cordoned one keeps its daemon"
    );
    let status = plane.ok(&[
        "get",
        "daemonset",
        "agent",
        "-o",
        "jsonpath={.status.desiredNumberScheduled}/{.status.numberReady}/{.status.updatedNumberScheduled}",
    ]);
    assert_eq!(status, "2/2/2");

    // A node that joins gets its daemon.
    let _n4 = NodeAgent::start(&kubeconfig, "n4");
    wait_for("a daemon on the new node", &mut || {
        daemons(&plane).len() == 3
    });

    // An image change rolls out one node at a time (maxUnavailable 1).
    plane.ok(&["set", "image", "daemonset/agent", "main=busybox:1.37"]);
    plane.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert_eq!(
        daemons(&plane),
        ["n1 busybox:1.37", "n2 busybox:1.37", "n4 busybox:1.37"]
    );
    let history = plane.ok(&["rollout", "history", "daemonset/agent"]);
    assert_eq!(
        history
            .lines()
            .filter(|l| l.starts_with(['1', '2']))
            .count(),
        2,
        "{history}"
    );
    plane.ok(&["rollout", "undo", "daemonset/agent"]);
    plane.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    wait_for("the old image back everywhere", &mut || {
        daemons(&plane) == ["n1 busybox:1.36", "n2 busybox:1.36", "n4 busybox:1.36"]
    });

    // A NoExecute taint the daemon does not tolerate evicts it.
    plane.ok(&["taint", "node", "n4", "evict=now:NoExecute"]);
    wait_for("the daemon gone from the NoExecute node", &mut || {
        daemons(&plane) == ["n1 busybox:1.36", "n2 busybox:1.36"]
    });

    // Deleted with --cascade=orphan, its pods stay; a new DaemonSet of the same selector
    // adopts them instead of starting others beside them.
    let uids = || {
        let mut list: Vec<String> = plane
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].metadata.uid}",
            ])
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        list.sort();
        list
    };
    let before = uids();
    plane.ok(&["delete", "daemonset", "agent", "--cascade=orphan"]);
    plane.apply(&daemonset("busybox:1.36"));
    let owner = plane.ok(&[
        "get",
        "daemonset",
        "agent",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    wait_for("the orphans adopted", &mut || {
        plane
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=agent",
                "-o",
                "jsonpath={.items[*].metadata.ownerReferences[0].uid}",
            ])
            .split_whitespace()
            .filter(|uid| *uid == owner)
            .count()
            == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(uids(), before, "the same pods, none added");
}
