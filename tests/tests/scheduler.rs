//! The scheduler against the real API server, with nodes registered as API objects: pods
//! land where they fit, a pod that fits nowhere says why in the words kube-scheduler uses
//! and is placed once a node that fits is added, selectors and host ports are kept, pods of
//! higher priority preempt, inter-pod (anti-)affinity and topology spread hold, and a
//! standby scheduler takes over within 15 s of the leader's death.

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

fn zoned_node(name: &str, zone: &str) -> String {
    node(name, "4", "").replace(
        &format!("labels: {{kubernetes.io/hostname: {name}}}"),
        &format!("labels: {{kubernetes.io/hostname: {name}, topology.kubernetes.io/zone: {zone}}}"),
    )
}

fn app_pod(name: &str, app: &str, extra: &str) -> String {
    pod(name, "100m", extra).replace(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  labels: {{app: {app}}}\n"),
    )
}

fn zone_of(plane: &ControlPlane, pod: &str) -> String {
    let node = node_of(plane, pod);
    plane.ok(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.metadata.labels.topology\\.kubernetes\\.io/zone}",
    ])
}

#[test]
fn pods_keep_apart_stay_together_and_spread_over_zones() {
    let plane = ControlPlane::start();
    let scheduler = plane.start_scheduler("scheduler.log", &[]);
    let log = || scheduler.log();
    plane.apply(
        &[
            zoned_node("a1", "a"),
            zoned_node("a2", "a"),
            zoned_node("b1", "b"),
        ]
        .join("---\n"),
    );

    // Required anti-affinity on the hostname: one replica per node, the fourth waits.
    let apart = "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      \
                 - labelSelector: {matchLabels: {app: web}}\n        topologyKey: kubernetes.io/hostname\n";
    for i in 1..=4 {
        plane.apply(&app_pod(&format!("web-{i}"), "web", apart));
    }
    wait_for("three web pods placed", &log, || {
        (1..=4)
            .filter(|i| !node_of(&plane, &format!("web-{i}")).is_empty())
            .count()
            == 3
    });
    let mut hosts: Vec<String> = (1..=4)
        .map(|i| node_of(&plane, &format!("web-{i}")))
        .filter(|n| !n.is_empty())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["a1", "a2", "b1"], "one web pod per node");
    let waiting = (1..=4)
        .map(|i| format!("web-{i}"))
        .find(|p| node_of(&plane, p).is_empty())
        .unwrap_or_default();
    wait_for("the fourth says why it waits", &log, || {
        events(&plane, &waiting, "FailedScheduling")
            .iter()
            .any(|m| {
                m == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
                  preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
            })
    });

    // Required affinity to a pod that does not exist yet: the follower waits, then joins the
    // zone of the pod it follows as soon as that pod is placed.
    let follow = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      \
                  - labelSelector: {matchLabels: {app: cache}}\n        topologyKey: topology.kubernetes.io/zone\n";
    plane.apply(&app_pod("follower", "follower", follow));
    wait_for("the follower waits for its cache", &log, || {
        events(&plane, "follower", "FailedScheduling")
            .iter()
            .any(|m| {
                m.starts_with("0/3 nodes are available: 3 node(s) didn't match pod affinity rules.")
            })
    });
    plane.apply(&app_pod(
        "cache",
        "cache",
        "  nodeSelector: {kubernetes.io/hostname: b1}\n",
    ));
    wait_for("the follower joins zone b", &log, || {
        node_of(&plane, "follower") == "b1"
    });

    // DoNotSchedule spread over zones: two pods land in different zones.
    let spread = "  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    \
                  whenUnsatisfiable: DoNotSchedule\n    labelSelector: {matchLabels: {app: spread}}\n";
    plane.apply(&app_pod("spread-1", "spread", spread));
    wait_for("spread-1 placed", &log, || {
        !node_of(&plane, "spread-1").is_empty()
    });
    plane.apply(&app_pod("spread-2", "spread", spread));
    wait_for("spread-2 placed", &log, || {
        !node_of(&plane, "spread-2").is_empty()
    });
    assert_ne!(zone_of(&plane, "spread-1"), zone_of(&plane, "spread-2"));

    // minDomains: kept to zone a, which is one domain of the two asked for, so a second pod
    // would skew too far.
    let few = "  nodeSelector: {topology.kubernetes.io/zone: a}\n  topologySpreadConstraints:\n  - maxSkew: 1\n    \
               topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    minDomains: 2\n    \
               labelSelector: {matchLabels: {app: few}}\n";
    plane.apply(&app_pod("few-1", "few", few));
    wait_for("few-1 placed", &log, || {
        !node_of(&plane, "few-1").is_empty()
    });
    plane.apply(&app_pod("few-2", "few", few));
    wait_for("few-2 refused for the skew", &log, || {
        events(&plane, "few-2", "FailedScheduling").iter().any(|m| {
            m.starts_with(
                "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
                 2 node(s) didn't match pod topology spread constraints.",
            )
        })
    });

    // Bad constraints are refused by the API server, naming the field.
    let bad = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        &app_pod(
            "bad",
            "bad",
            "  topologySpreadConstraints:\n  - {maxSkew: 0, topologyKey: zone, whenUnsatisfiable: Sometimes}\n",
        ),
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("spec.topologySpreadConstraints[0].maxSkew: Invalid value: 0: must be greater than zero")
            || stderr.contains("spec.topologySpreadConstraints[0].maxSkew: Invalid value: \"0\": must be greater than zero"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "spec.topologySpreadConstraints[0].whenUnsatisfiable: Unsupported value: \"Sometimes\""
        ),
        "{stderr}"
    );
}

#[test]
fn a_standby_scheduler_takes_over_within_fifteen_seconds() {
    let plane = ControlPlane::start();
    let mut first = plane.start_scheduler("first.log", &[]);
    let holder = || plane.lease_holder("kube-scheduler");
    let log = || String::new();
    wait_for("a lease holder", &log, || !holder().is_empty());
    let leader = holder();
    let second = plane.start_scheduler("second.log", &[]);
    plane.apply(&node("n1", "4", ""));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder(), leader, "the standby waits");

    first.kill();
    let killed = std::time::Instant::now();
    wait_for("the standby leading", &log, || {
        let now = holder();
        !now.is_empty() && now != leader
    });
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(15), "took over after {took:?}");
    plane.apply(&pod("after", "100m", ""));
    wait_for("the new leader schedules", &|| second.log(), || {
        node_of(&plane, "after") == "n1"
    });
}
