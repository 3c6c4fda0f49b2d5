//! `kubectl exec` and `kubectl attach` end to end: real kubectl through the API server to the
//! kubelet's WebSocket streams, into containers on real containerd and runc.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use basalt_tests::kubelet_node::KubeletNode;

const IMAGE: &str = "busybox:1.35";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

#[test]
fn exec_returns_output_errors_exit_codes_and_drives_a_terminal() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.ok(&[
        "run",
        "box",
        "--image",
        IMAGE,
        "--env",
        "GREETING=hello",
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 3600",
    ]);
    node.wait_pod(
        "box",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        |p| p == "Running",
    );

    // Output and errors come back apart, and kubectl exits with the command's code.
    let out = plane.kubectl(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo out $GREETING; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(text(&out.stdout), "out hello\n", "{}", show(&out));
    assert!(text(&out.stderr).starts_with("err\n"), "{}", show(&out));
    assert_eq!(plane.ok(&["exec", "box", "--", "hostname"]), "box\n");

    // Input reaches the command, and its end ends the command's input.
    let cat = plane.kubectl_stdin(
        &["exec", "-i", "box", "--", "sh", "-c", "cat; echo done"],
        "line one\nline two\n",
    );
    assert!(cat.status.success(), "{}", show(&cat));
    assert_eq!(text(&cat.stdout), "line one\nline two\ndone\n");

    // Plenty of output arrives whole and in order.
    let many = plane.ok(&["exec", "box", "--", "seq", "1", "50000"]);
    let lines: Vec<&str> = many.lines().collect();
    assert_eq!(lines.len(), 50000);
    assert_eq!((lines[0], lines[49999]), ("1", "50000"));

    // A command that does not exist is named.
    let missing = plane.kubectl(&["exec", "box", "--", "no-such-command"]);
    assert!(!missing.status.success(), "{}", show(&missing));
    assert!(
        text(&missing.stderr).contains("no-such-command"),
        "{}",
        show(&missing)
    );
    // And a container that does not exist.
    let wrong = plane.kubectl(&["exec", "box", "-c", "nope", "--", "true"]);
    assert!(
        text(&wrong.stderr).contains("container nope is not valid for pod box"),
        "{}",
        show(&wrong)
    );

    // A terminal of kubectl's own size: script(1) gives kubectl one of 45 rows by 123 columns.
    let kubectl = format!(
        "kubectl --kubeconfig {} --context admin exec -it box -- sh -c 'tty; stty size'",
        plane.kubeconfig().display()
    );
    let tty = Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 45 cols 123; {kubectl}"),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let shown = text(&tty.stdout);
    assert!(tty.status.success(), "{}", show(&tty));
    assert!(shown.contains("/dev/pts/"), "{}", show(&tty));
    assert!(shown.contains("45 123"), "{}", show(&tty));

    // Opening a stream is a write: `get` on pods/exec is not enough.
    plane.ok(&[
        "create",
        "role",
        "peek",
        "--verb",
        "get,list",
        "--resource",
        "pods,pods/exec",
    ]);
    plane.ok(&[
        "create",
        "rolebinding",
        "peek",
        "--role",
        "peek",
        "--user",
        "bob",
    ]);
    let bob = plane.kubectl_as("bob", &["exec", "box", "--", "true"]);
    assert!(!bob.status.success(), "{}", show(&bob));
    assert!(
        text(&bob.stderr).contains("cannot create resource \"pods/exec\""),
        "{}",
        show(&bob)
    );

    // The FIFOs of finished execs are gone.
    let fifos = node.state_dir().join("exec");
    let left: Vec<_> = std::fs::read_dir(&fifos)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "exec FIFOs left in {}: {left:?}",
        fifos.display()
    );
}

#[test]
fn attach_shows_what_the_container_writes_until_it_exits() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.ok(&[
        "run",
        "ticker",
        "--image",
        IMAGE,
        "--restart",
        "Never",
        "--",
        "sh",
        "-c",
        "sleep 3; for i in 1 2 3 4 5 6 7 8; do echo tick $i; echo tock $i >&2; sleep 0.3; done",
    ]);
    node.wait_pod(
        "ticker",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    let attached = plane.kubectl(&["attach", "ticker"]);
    assert!(attached.status.success(), "{}", show(&attached));
    let (out, err) = (text(&attached.stdout), text(&attached.stderr));
    assert!(out.contains("tick 8\n"), "{}", show(&attached));
    assert!(!out.contains("tock"), "{}", show(&attached));
    assert!(err.contains("tock 8\n"), "{}", show(&attached));
    // A finished pod cannot be attached to.
    node.wait_pod(
        "ticker",
        "{.status.phase}",
        "Succeeded",
        Duration::from_secs(30),
        |p| p == "Succeeded",
    );
    let late = plane.kubectl(&["attach", "ticker"]);
    assert!(!late.status.success(), "{}", show(&late));
}

/// `kubectl port-forward pod/web LOCAL:8080` in the background, once it listens.
fn port_forward(
    plane: &basalt_tests::control_plane::ControlPlane,
    local: u16,
    websockets: bool,
) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let mut child = plane
        .kubectl_command("admin")
        .env("PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .args([
            "port-forward",
            "pod/web",
            &format!("{local}:8080"),
            "9999:9999",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.starts_with("Forwarding from 127.0.0.1:"), "{first}");
    // Keep reading so kubectl never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// An HTTP/1.0 GET of `path` on 127.0.0.1:`port`, the whole answer.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn port_forward_reaches_the_pods_localhost_over_websocket_and_spdy() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.ok(&[
        "run", "web", "--image", IMAGE, "--", "sh", "-c",
        "mkdir -p /www && seq 1 100000 > /www/big && echo forwarded > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
    ]);
    node.wait_pod(
        "web",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    for (local, websockets) in [(18080, true), (18081, false)] {
        let mut kubectl = port_forward(plane, local, websockets);
        // The server listens on the pod's loopback only: the connection is made inside it.
        let page = get(local, "/index.html");
        assert!(page.ends_with("\r\n\r\nforwarded\n"), "{page}");
        let big = get(local, "/big");
        assert!(big.ends_with("99999\n100000\n"), "{} bytes", big.len());
        // Connections in parallel.
        let many: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || get(local, "/index.html")))
            .collect();
        for answer in many {
            assert!(answer.join().unwrap_or_default().ends_with("forwarded\n"));
        }
        // A port nothing listens on: the connection ends, and kubectl (as against any
        // kubelet) reports the failure and stops.
        assert_eq!(get(9999, "/"), "");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while kubectl.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = kubectl.kill();
        let output = kubectl.wait_with_output().expect("kubectl output");
        assert!(
            text(&output.stderr).contains("failed to connect to localhost:9999"),
            "{}",
            show(&output)
        );
    }
}

/// `kubectl get --raw` of `path` as the admin, parsed.
fn raw_json(plane: &basalt_tests::control_plane::ControlPlane, path: &str) -> serde_json::Value {
    let text = plane.ok(&["get", "--raw", path]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

#[test]
fn the_nodes_usage_is_served_through_the_api_servers_node_proxy() {
    let node = KubeletNode::start();
    let plane = &node.plane;
    plane.ok(&[
        "run",
        "busy",
        "--image",
        IMAGE,
        "--",
        "sh",
        "-c",
        "dd if=/dev/zero bs=1M count=64 | md5sum; exec sleep 3600",
    ]);
    node.wait_pod(
        "busy",
        "{.status.phase}",
        "Running",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    let summary_path = "/api/v1/nodes/n1/proxy/stats/summary";
    let summary = raw_json(plane, summary_path);
    assert_eq!(summary["node"]["nodeName"], "n1", "{summary}");
    for field in [
        "/node/cpu/usageCoreNanoSeconds",
        "/node/memory/workingSetBytes",
        "/node/fs/capacityBytes",
    ] {
        assert!(
            summary.pointer(field).and_then(|v| v.as_u64()).unwrap_or(0) > 0,
            "{field}: {summary}"
        );
    }
    let pod = |summary: &serde_json::Value| {
        summary["pods"]
            .as_array()
            .and_then(|pods| pods.iter().find(|p| p["podRef"]["name"] == "busy").cloned())
            .unwrap_or_default()
    };
    let busy = pod(&summary);
    assert_eq!(busy["containers"][0]["name"], "busy", "{summary}");
    assert!(
        busy["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0,
        "{busy}"
    );
    assert!(
        busy["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0) > 0,
        "{busy}"
    );
    assert!(busy["network"]["rxBytes"].is_u64(), "{busy}");
    // Rates come once the sampler has read the counters twice.
    basalt_tests::wait::until(
        "a CPU rate for the pod",
        Duration::from_secs(30),
        || pod(&raw_json(plane, summary_path))["cpu"]["usageNanoCores"].is_u64(),
        || node.logs(),
    );

    let metrics = plane.ok(&["get", "--raw", "/api/v1/nodes/n1/proxy/metrics/resource"]);
    assert!(
        metrics.contains("container_memory_working_set_bytes{container=\"busy\",namespace=\"default\",pod=\"busy\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nnode_cpu_usage_seconds_total "),
        "{metrics}"
    );
    assert!(metrics.contains("\nresource_scrape_error 0 "), "{metrics}");
    let kubelet = plane.ok(&["get", "--raw", "/api/v1/nodes/n1/proxy/metrics"]);
    assert!(kubelet.contains("\nkubelet_running_pods 1\n"), "{kubelet}");

    // Reaching a node's kubelet is a right of its own.
    let bob = plane.kubectl_as("bob", &["get", "--raw", summary_path]);
    assert!(!bob.status.success(), "{}", show(&bob));
    assert!(text(&bob.stderr).contains("Forbidden"), "{}", show(&bob));
}
