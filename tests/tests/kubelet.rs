//! The kubelet end to end: real containerd and runc, pods in network namespaces of their own,
//! driven with kubectl against a real control plane (see `basalt_tests::kubelet_node`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use basalt_tests::kubelet_node::{KubeletNode, NODE};
use basalt_tests::node_host::BUSYBOX;

const IMAGE: &str = "busybox:1.35";

/// A shell command that fetches web's page by pod IP, retrying while the server starts.
/// (nc, not wget: Debian's static busybox wget crashes in a container without glibc's NSS.)
fn fetch(ip: &str) -> String {
    format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {ip} 8080 && exit 0; sleep 1; done; exit 1"
    )
}

fn running(phase: &str) -> bool {
    phase == "Running"
}

#[test]
fn pods_run_reach_each_other_restart_and_survive_a_kubelet_restart() {
    let mut node = KubeletNode::start();
    let plane = &node.plane;
    assert!(BUSYBOX.ends_with(IMAGE));

    // A web server pod, and a client that fetches from it by pod IP.
    plane.ok(&[
        "run", "web", "--image", IMAGE, "--", "sh", "-c",
        "mkdir -p /www && echo served-by-web > /www/index.html && echo web up && exec httpd -f -p 8080 -h /www",
    ]);
    node.wait_pod(
        "web",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        running,
    );
    let ip = node.pod_field("web", "{.status.podIP}");
    let cidr = plane.ok(&["get", "node", NODE, "-o", "jsonpath={.spec.podCIDR}"]);
    let prefix = cidr.trim_end_matches("0/24");
    assert!(
        ip.starts_with(prefix),
        "pod IP {ip} outside the node's podCIDR {cidr}"
    );
    assert_eq!(
        node.pod_field("web", "{.status.hostIP}"),
        basalt_tests::kubelet_node::NODE_IP
    );
    let conditions = node.pod_field("web", "{.status.conditions[?(@.type==\"Ready\")].status}");
    assert_eq!(conditions, "True");

    plane.ok(&[
        "run",
        "client",
        "--image",
        IMAGE,
        "--restart",
        "Never",
        "--",
        "sh",
        "-c",
        &fetch(&ip),
    ]);
    node.wait_pod(
        "client",
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(60),
        |p| p == "Succeeded",
    );
    let fetched = node.container_log("client", "client");
    assert!(
        fetched.contains(" stdout F served-by-web"),
        "client's log: {fetched}"
    );
    let exit = node.pod_field(
        "client",
        "{.status.containerStatuses[0].state.terminated.exitCode}",
    );
    assert_eq!(exit, "0");
    let web_log = node.container_log("web", "web");
    assert!(web_log.contains(" stdout F web up"), "web's log: {web_log}");

    // A container killed from outside is restarted, and its restartCount rises.
    let id = node.pod_field("web", "{.status.containerStatuses[0].containerID}");
    let id = id.trim_start_matches("containerd://").to_string();
    let killed = node
        .containerd()
        .ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    assert!(
        killed.status.success(),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    node.wait_pod(
        "web",
        "{.status.containerStatuses[0].restartCount}",
        "restartCount 1",
        Duration::from_secs(30),
        |c| c == "1",
    );
    node.wait_pod(
        "web",
        "{.status.phase}",
        "Running again",
        Duration::from_secs(30),
        running,
    );
    let last_exit = node.pod_field(
        "web",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last_exit, "137");
    assert_eq!(
        node.pod_field("web", "{.status.podIP}"),
        ip,
        "a restart keeps the pod's address"
    );

    // Restarting the kubelet leaves running pods alone.
    let before = node.pod_field("web", "{.status.containerStatuses[0].containerID}");
    node.restart_kubelet();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        node.pod_field("web", "{.status.containerStatuses[0].containerID}"),
        before
    );
    assert_eq!(
        node.pod_field("web", "{.status.containerStatuses[0].restartCount}"),
        "1"
    );
    assert_eq!(node.pod_field("web", "{.status.phase}"), "Running");

    // After the restart the kubelet still runs new pods and reaches old ones.
    node.plane.ok(&[
        "run",
        "client2",
        "--image",
        IMAGE,
        "--restart",
        "Never",
        "--",
        "sh",
        "-c",
        &fetch(&ip),
    ]);
    node.wait_pod(
        "client2",
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(60),
        |p| p == "Succeeded",
    );

    // Deleting pods removes their containers and networks.
    node.plane.ok(&[
        "delete",
        "pod",
        "web",
        "client",
        "client2",
        "--grace-period",
        "1",
    ]);
    let netns = node.state_dir().join("netns");
    basalt_tests::wait::until(
        "every pod's network namespace to go",
        Duration::from_secs(30),
        || {
            std::fs::read_dir(&netns)
                .map(|d| d.count() == 0)
                .unwrap_or(false)
        },
        || node.logs(),
    );
    let left = node.containerd().ctr(&["containers", "ls", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "containers left behind"
    );
}

#[test]
fn deletion_honours_the_grace_period_and_bad_images_are_named() {
    let node = KubeletNode::start();
    let plane = &node.plane;

    // One pod stops on SIGTERM after cleaning up for 2 s; another ignores it and is killed
    // when its 3 s grace period runs out.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: polite}}
spec:
  terminationGracePeriodSeconds: 20
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "trap 'echo got TERM; sleep 2; exit 0' TERM; while true; do sleep 0.2; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: stubborn}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
"#
    ));
    node.wait_pod(
        "polite",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        running,
    );
    node.wait_pod(
        "stubborn",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        running,
    );

    let started = Instant::now();
    plane.ok(&["delete", "pod", "polite", "--wait=true", "--timeout=30s"]);
    let polite = started.elapsed();
    assert!(
        polite >= Duration::from_secs(2) && polite < Duration::from_secs(15),
        "polite pod took {polite:?}"
    );

    let started = Instant::now();
    plane.ok(&["delete", "pod", "stubborn", "--wait=true", "--timeout=30s"]);
    let stubborn = started.elapsed();
    assert!(
        stubborn >= Duration::from_secs(3) && stubborn < Duration::from_secs(15),
        "stubborn pod took {stubborn:?}"
    );

    // An image nobody has: the pod waits with the image named.
    plane.ok(&["run", "nope", "--image", "registry.invalid/nope:1"]);
    let reason = node.wait_pod(
        "nope",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "an image pull error",
        Duration::from_secs(60),
        |r| r == "ErrImagePull" || r == "ImagePullBackOff",
    );
    let message = node.pod_field(
        "nope",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(
        message.contains("registry.invalid/nope:1"),
        "{reason}: {message}"
    );
    node.wait_pod(
        "nope",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ImagePullBackOff",
        Duration::from_secs(30),
        |r| r == "ImagePullBackOff",
    );
}

#[test]
fn config_map_volumes_and_environment_reach_containers_and_follow_updates() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal",
        "color=blue",
    ]);
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "echo env=$COLOR node=$NODE; while true; do echo file=$(cat /config/color); sleep 1; done"]
    env:
    - name: COLOR
      valueFrom: {{configMapKeyRef: {{name: settings, key: color}}}}
    - name: NODE
      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
    volumeMounts:
    - {{name: config, mountPath: /config}}
  volumes:
  - name: config
    configMap: {{name: settings}}
"#
    ));
    node.wait_pod(
        "reader",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        running,
    );
    basalt_tests::wait::until(
        "the container to print its settings",
        Duration::from_secs(20),
        || {
            let log = node.container_log("reader", "c");
            log.contains("env=blue node=n1") && log.contains("file=blue")
        },
        || node.container_log("reader", "c"),
    );
    plane.ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"color":"green"}}"#,
    ]);
    basalt_tests::wait::until(
        "the ConfigMap update to reach the volume",
        Duration::from_secs(40),
        || node.container_log("reader", "c").contains("file=green"),
        || node.container_log("reader", "c"),
    );

    // A missing ConfigMap key is a config error naming it.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: misconfigured}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["true"]
    env:
    - name: X
      valueFrom: {{configMapKeyRef: {{name: settings, key: absent}}}}
"#
    ));
    node.wait_pod(
        "misconfigured",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
        Duration::from_secs(60),
        |r| r == "CreateContainerConfigError",
    );
    let message = node.pod_field(
        "misconfigured",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("absent"), "{message}");
}
