//! The scheduler against the real API server, with nodes registered as API objects: pods
//! land where they fit, a pod that fits nowhere says why in the words kube-scheduler uses
//! and is placed once a node that fits is added, and selectors and host ports are kept.

use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::wait;

fn node(name: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}}}\n{extra}status:\n  capacity: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n  allocatable: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n  conditions:\n  - {{type: Ready, status: \"True\", reason: KubeletReady, message: ready}}\n"
    )
}

fn pod(name: &str, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra}  containers:\n  - name: main\n    image: busybox:1.36\n    resources:\n      requests: {{cpu: \"{cpu}\"}}\n"
    )
}

fn node_of(plane: &ControlPlane, pod: &str) -> String {
    plane.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_for(what: &str, log: &dyn Fn() -> String, check: impl FnMut() -> bool) {
    wait::until(what, Duration::from_secs(30), check, || {
        format!("--- scheduler log ---\n{}", log())
    });
}

/// The messages of the events of `reason` about `pod`.
fn events(plane: &ControlPlane, pod: &str, reason: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&plane.ok(&["get", "events", "-o", "json"])).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn pods_land_where_they_fit_and_wait_with_a_reason() {
    let plane = ControlPlane::start();
    let scheduler = plane.start_scheduler("scheduler.log", &[]);
    let log = || scheduler.log();
    plane.apply(
        &[
            node(
                "n1",
                "2",
                "spec:\n  taints: [{key: dedicated, value: db, effect: NoSchedule}]\n",
            ),
            node("n2", "2", ""),
            node("n3", "2", ""),
        ]
        .join("---\n"),
    );

    // Fits on an untainted node; the assignment is an event.
    plane.apply(&pod("small", "500m", ""));
    wait_for("small scheduled", &log, || {
        !node_of(&plane, "small").is_empty()
    });
    let placed = node_of(&plane, "small");
    assert!(placed == "n2" || placed == "n3", "placed on {placed}");
    wait_for("a Scheduled event", &log, || {
        events(&plane, "small", "Scheduled")
            == [format!("Successfully assigned default/small to {placed}")]
    });

    // Fits nowhere: the reason, in the event and the PodScheduled condition.
    plane.apply(&pod("big", "3", ""));
    let expected = "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu. \
                    preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
                    2 No preemption victims found for incoming pod.";
    wait_for("a FailedScheduling event", &log, || {
        events(&plane, "big", "FailedScheduling")
            .iter()
            .any(|m| m == expected)
    });
    let condition = plane.ok(&["get", "pod", "big", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}: {.status.conditions[?(@.type==\"PodScheduled\")].message}"]);
    assert_eq!(condition, format!("Unschedulable: {expected}"));
    let described = plane.ok(&["describe", "pod", "big"]);
    assert!(described.contains("FailedScheduling"), "{described}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        events(&plane, "big", "FailedScheduling").len(),
        1,
        "one FailedScheduling event for one reason, not one per attempt"
    );

    // A node that fits arrives: the pod is placed there.
    plane.apply(&node("n4", "4", ""));
    wait_for("big scheduled on the new node", &log, || {
        node_of(&plane, "big") == "n4"
    });

    // Tolerations, node selectors and host ports are kept.
    plane.apply(&pod(
            "db",
            "100m",
            "  tolerations: [{key: dedicated, operator: Equal, value: db, effect: NoSchedule}]\n  nodeSelector: {kubernetes.io/hostname: n1}\n",
        ),
    );
    wait_for("db on n1", &log, || node_of(&plane, "db") == "n1");
    let port = |name: &str| {
        pod(
            name,
            "100m",
            "  nodeSelector: {kubernetes.io/hostname: n3}\n",
        )
        .replace(
            "    resources:",
            "    ports: [{containerPort: 80, hostPort: 8080}]\n    resources:",
        )
    };
    plane.apply(&port("web-a"));
    wait_for("web-a on n3", &log, || node_of(&plane, "web-a") == "n3");
    plane.apply(&port("web-b"));
    wait_for("web-b refused", &log, || {
        // Filters run in kube-scheduler's order: taints before selectors before ports.
        events(&plane, "web-b", "FailedScheduling").iter().any(|m| {
            m == "0/4 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, \
                  1 node(s) had untolerated taint {dedicated: db}, \
                  2 node(s) didn't match Pod's node affinity/selector. \
                  preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, \
                  3 Preemption is not helpful for scheduling."
        })
    });
    plane.ok(&["delete", "pod", "web-a", "--grace-period=0", "--force"]);
    wait_for("web-b placed once the port is free", &log, || {
        node_of(&plane, "web-b") == "n3"
    });

    // The scheduler holds its lease.
    assert!(!plane.lease_holder("kube-scheduler").is_empty());
}

#[test]
fn a_pod_of_higher_priority_preempts_lower_ones() {
    let plane = ControlPlane::start();
    let scheduler = plane.start_scheduler("scheduler.log", &[]);
    let log = || scheduler.log();
    // One node with 4 cpu, and a kubelet to finish the deletion of the preempted pod.
    let _n1 = basalt_tests::node_agent::NodeAgent::start(&plane.kubeconfig(), "n1");
    plane.apply(
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\n---\n\
         apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: polite\nvalue: 500\npreemptionPolicy: Never\n",
    );
    plane.apply(&pod("low-1", "2", ""));
    plane.apply(&pod("low-2", "2", ""));
    wait_for("both low pods on n1", &log, || {
        node_of(&plane, "low-1") == "n1" && node_of(&plane, "low-2") == "n1"
    });

    // A class that does not exist is refused; a polite pod waits and says why.
    let unknown = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("lost", "1", "  priorityClassName: nope\n"),
    );
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("no PriorityClass with name nope was found"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    plane.apply(&pod("polite", "2", "  priorityClassName: polite\n"));
    wait_for("the polite pod waits without preempting", &log, || {
        events(&plane, "polite", "FailedScheduling").iter().any(|m| {
            m == "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
        })
    });

    // The important pod takes a low pod's place.
    plane.apply(&pod("vip", "2", "  priorityClassName: high\n"));
    assert_eq!(
        plane.ok(&["get", "pod", "vip", "-o", "jsonpath={.spec.priority}"]),
        "1000"
    );
    wait_for("vip scheduled on n1", &log, || {
        node_of(&plane, "vip") == "n1"
    });
    let preempted: Vec<String> = ["low-1", "low-2"]
        .iter()
        .filter(|p| !events(&plane, p, "Preempted").is_empty())
        .map(|p| (*p).to_owned())
        .collect();
    assert_eq!(preempted.len(), 1, "one victim is enough: {preempted:?}");
    assert_eq!(
        events(&plane, &preempted[0], "Preempted"),
        ["Preempted by default/vip on node n1"]
    );
    wait_for("the victim gone", &log, || {
        !plane
            .kubectl(&["get", "pod", &preempted[0]])
            .status
            .success()
    });
    assert_eq!(node_of(&plane, "polite"), "", "the polite pod still waits");
}
