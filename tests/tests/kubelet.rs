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
    assert!(
        web_log.contains(" stdout F web up"),
        "web's CRI log file: {web_log}"
    );
    // kubectl logs goes through the API server to the kubelet.
    assert_eq!(plane.ok(&["logs", "web"]), "web up\n");
    assert!(plane.ok(&["logs", "client"]).contains("served-by-web"));
    let stamped = plane.ok(&["logs", "web", "--timestamps"]);
    let (time, line) = stamped.trim_end().split_once(' ').expect("a timestamp");
    assert!(
        time.parse::<jiff::Timestamp>().is_ok() && line == "web up",
        "{stamped}"
    );

    // Only the API server's kubelet client may call the kubelet, not a cluster user.
    let bob = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(plane.ca_file())
        .arg("--cert")
        .arg(plane.kubeconfig().with_file_name("bob.pem"))
        .arg("--key")
        .arg(plane.kubeconfig().with_file_name("bob-key.pem"))
        .arg(format!(
            "https://{}:10250/containerLogs/default/web/web",
            basalt_tests::kubelet_node::NODE_IP
        ))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&bob.stdout), "403");

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
    assert_eq!(plane.ok(&["logs", "web", "--previous"]), "web up\n");

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

    // logs -f streams until the container exits; --tail keeps the last lines.
    plane.ok(&[
        "run",
        "counter",
        "--image",
        IMAGE,
        "--restart",
        "Never",
        "--",
        "sh",
        "-c",
        "for i in 0 1 2 3 4 5; do echo tick $i; sleep 0.5; done",
    ]);
    node.wait_pod(
        "counter",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        running,
    );
    let followed = plane.ok(&["logs", "-f", "counter"]);
    let expected: String = (0..6).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(followed, expected);
    assert_eq!(
        plane.ok(&["logs", "counter", "--tail", "2"]),
        "tick 4\ntick 5\n"
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

    // A postStart hook runs beside the container's process (as in Kubernetes, with no order
    // between them); a termination message
    // and an OOM kill show in the terminated state.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "until [ -f /tmp/hook ]; do sleep 0.2; done; cat /tmp/hook; sleep 3600"]
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo hook ran > /tmp/hook"]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: messenger}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "echo goodbye > /dev/termination-log; exit 3"]
---
apiVersion: v1
kind: Pod
metadata: {{name: hog}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "head -c 300m /dev/zero | tail"]
    resources: {{limits: {{memory: 32Mi}}}}
"#
    ));
    node.wait_pod(
        "hooked",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        running,
    );
    basalt_tests::wait::until(
        "the postStart hook's file to be read",
        Duration::from_secs(20),
        || node.container_log("hooked", "c").contains("hook ran"),
        || node.logs(),
    );
    node.wait_pod(
        "messenger",
        "{.status.phase}",
        "Failed",
        Duration::from_secs(60),
        |p| p == "Failed",
    );
    let terminated = node.pod_field(
        "messenger",
        "{.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.message}",
    );
    assert_eq!(terminated.trim_end(), "3 goodbye");
    let reason = node.wait_pod(
        "hog",
        "{.status.containerStatuses[0].state.terminated.reason}",
        "OOMKilled",
        Duration::from_secs(60),
        |r| r == "OOMKilled",
    );
    assert_eq!(reason, "OOMKilled");

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

#[test]
fn probes_restart_dead_containers_and_gate_readiness() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.ok(&[
        "create",
        "service",
        "clusterip",
        "ready",
        "--tcp",
        "80:8080",
    ]);
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ready, labels: {{app: ready}}}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "touch /tmp/ready; sleep 6; rm /tmp/ready; sleep 3600"]
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: sick}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www; echo ok > /www/healthz; httpd -p 8080 -h /www; sleep 4; rm /www/healthz; sleep 3600"]
    startupProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
    livenessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
      failureThreshold: 2
"#
    ));
    let slice_ready = || {
        String::from_utf8_lossy(
            &plane
                .kubectl(&[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=ready",
                    "-o",
                    "jsonpath={.items[0].endpoints[0].conditions.ready}",
                ])
                .stdout,
        )
        .into_owned()
    };
    node.wait_pod(
        "ready",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "Ready",
        Duration::from_secs(30),
        |s| s == "True",
    );
    basalt_tests::wait::until(
        "the EndpointSlice to list the ready pod",
        Duration::from_secs(20),
        || slice_ready() == "true",
        || node.logs(),
    );
    // The probe fails once the file is gone: the pod turns unready and leaves the slice's
    // ready endpoints, without a restart.
    node.wait_pod(
        "ready",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "not Ready",
        Duration::from_secs(30),
        |s| s == "False",
    );
    basalt_tests::wait::until(
        "the EndpointSlice to mark it not ready",
        Duration::from_secs(20),
        || slice_ready() == "false",
        || node.logs(),
    );
    assert_eq!(
        node.pod_field("ready", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // The liveness probe fails once /healthz is gone, and the container is restarted.
    node.wait_pod(
        "sick",
        "{.status.containerStatuses[0].restartCount}",
        "a restart",
        Duration::from_secs(40),
        |c| c.parse::<u32>().is_ok_and(|n| n >= 1),
    );
    assert!(
        node.logs().contains("Liveness probe failed"),
        "{}",
        node.logs()
    );
}

#[test]
fn pods_get_api_credentials_downward_api_files_and_memory_volumes() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: projected
  labels: {{app: demo, tier: web}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: ["sleep", "3600"]
    resources: {{limits: {{memory: 64Mi}}}}
    volumeMounts:
    - {{name: info, mountPath: /info}}
    - {{name: cache, mountPath: /cache}}
  volumes:
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: mem, resourceFieldRef: {{containerName: c, resource: limits.memory, divisor: 1Mi}}}}
  - name: cache
    emptyDir: {{medium: Memory, sizeLimit: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {{name: private}}
spec:
  automountServiceAccountToken: false
  containers:
  - name: c
    image: {IMAGE}
    command: ["sleep", "3600"]
"#
    ));
    for pod in ["projected", "private"] {
        node.wait_pod(
            pod,
            "{.status.phase}",
            "Running",
            Duration::from_secs(60),
            running,
        );
    }
    let exec = |pod: &str, script: &str| plane.ok(&["exec", pod, "--", "sh", "-c", script]);
    let credentials = "/var/run/secrets/kubernetes.io/serviceaccount";

    // The API access volume: the namespace, the cluster CA and a token the API accepts.
    assert_eq!(
        exec("projected", &format!("cat {credentials}/namespace")),
        "default"
    );
    let ca = exec("projected", &format!("cat {credentials}/ca.crt"));
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let token = exec("projected", &format!("cat {credentials}/token"));
    let review = plane.kubectl_stdin(
        &[
            "create",
            "-f",
            "-",
            "--validate=false",
            "-o",
            "jsonpath={.status.user.username}",
        ],
        &format!(
            "{{\"apiVersion\": \"authentication.k8s.io/v1\", \"kind\": \"TokenReview\", \"spec\": {{\"token\": \"{token}\"}}}}"
        ),
    );
    assert_eq!(
        String::from_utf8_lossy(&review.stdout),
        "system:serviceaccount:default:default",
        "{}",
        String::from_utf8_lossy(&review.stderr)
    );
    // A pod that opts out has none.
    assert_eq!(
        exec("private", &format!("ls {credentials} 2>/dev/null | wc -l")).trim(),
        "0"
    );

    // Downward API files.
    assert_eq!(
        exec("projected", "cat /info/labels"),
        "app=\"demo\"\ntier=\"web\"\n"
    );
    assert_eq!(exec("projected", "cat /info/name"), "projected");
    assert_eq!(exec("projected", "cat /info/mem"), "64");

    // A Memory emptyDir is a tmpfs of its size limit.
    let mount = exec("projected", "grep ' /cache ' /proc/mounts");
    assert!(
        mount.starts_with("tmpfs /cache tmpfs") && mount.contains("size=16384k"),
        "{mount}"
    );
    // Deleting the pod unmounts it and removes the pod's directory.
    let uid = node.pod_field("projected", "{.metadata.uid}");
    plane.ok(&["delete", "pod", "projected", "--grace-period", "1"]);
    let pod_dir = node.state_dir().join("pods").join(&uid);
    basalt_tests::wait::until(
        "the pod's directory to go",
        Duration::from_secs(30),
        || !pod_dir.exists(),
        || node.logs(),
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        !mounts.contains(&uid),
        "a mount of the deleted pod is left: {mounts}"
    );
}
