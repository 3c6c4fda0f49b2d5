//! StatefulSets end to end with the real kubectl: pods with stable names created one by one
//! in ordinal order, removed highest first, a partitioned rolling update that `kubectl
//! rollout status` follows, and a clear refusal of volume claim templates. A stand-in agent
//! reports pods Ready after a delay, so the ordering is visible.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::pod_agent::PodAgent;
use basalt_tests::wait;

/// `name image` of each pod of app=db not being deleted, by name.
fn pods(plane: &ControlPlane) -> Vec<String> {
    let mut list: Vec<String> = plane
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=db",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|l| l.split_whitespace().count() == 2)
        .map(|l| l.trim().to_owned())
        .collect();
    list.sort();
    list
}

fn statefulset(replicas: i32, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: db}}\n{extra}  template:\n    metadata:\n      labels: {{app: db}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

#[test]
fn statefulsets_create_in_order_scale_down_from_the_top_and_roll_by_partition() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager("controller-manager.log", &[]);
    let _agent = PodAgent::start(&plane.kubeconfig(), "default", Duration::from_millis(700));
    let wait_for = |what: &str, check: &mut dyn FnMut() -> bool| {
        wait::until(what, Duration::from_secs(40), check, || {
            format!(
                "pods: {:?}\n--- controller manager ---\n{}",
                pods(&plane),
                basalt_tests::control_plane::tail(&manager.log(), 30)
            )
        });
    };

    // Record every set of pods seen while the StatefulSet comes up.
    let seen = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        let kubeconfig = plane.kubeconfig();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = std::process::Command::new("kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args([
                        "get",
                        "pods",
                        "-l",
                        "app=db",
                        "-o",
                        "jsonpath={.items[*].metadata.name}",
                    ])
                    .output();
                if let Ok(out) = out {
                    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect();
                    names.sort();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if seen.last() != Some(&names) {
                        seen.push(names);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    plane.apply(&statefulset(3, "busybox:1.36", ""));
    plane.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    assert_eq!(
        pods(&plane),
        [
            "db-0 busybox:1.36",
            "db-1 busybox:1.36",
            "db-2 busybox:1.36"
        ]
    );
    let history = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for names in &history {
        let expected: Vec<String> = (0..names.len()).map(|i| format!("db-{i}")).collect();
        assert_eq!(
            names, &expected,
            "created in order, one by one: {history:?}"
        );
    }
    // Each pod waits for its predecessor to be Ready (0.7 s here), so one and two pods were
    // each seen on their own; created all at once, they would not be.
    let sizes: Vec<usize> = history.iter().map(Vec::len).collect();
    assert!(
        sizes.contains(&1) && sizes.contains(&2),
        "one at a time: {history:?}"
    );
    let hostname = plane.ok(&[
        "get",
        "pod",
        "db-1",
        "-o",
        "jsonpath={.spec.hostname}.{.spec.subdomain}",
    ]);
    assert_eq!(hostname, "db-1.db");

    // A partitioned update changes only the ordinals at or above the partition.
    plane.apply(&statefulset(
        3,
        "busybox:1.37",
        "  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {partition: 1}\n",
    ));
    plane.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    wait_for("ordinals 1 and 2 updated", &mut || {
        pods(&plane)
            == [
                "db-0 busybox:1.36",
                "db-1 busybox:1.37",
                "db-2 busybox:1.37",
            ]
    });
    // Lowering the partition to 0 finishes the rollout.
    plane.apply(&statefulset(
        3,
        "busybox:1.37",
        "  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {partition: 0}\n",
    ));
    plane.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    wait_for("every ordinal updated", &mut || {
        pods(&plane)
            == [
                "db-0 busybox:1.37",
                "db-1 busybox:1.37",
                "db-2 busybox:1.37",
            ]
    });
    let revisions = plane.ok(&[
        "get",
        "statefulset",
        "db",
        "-o",
        "jsonpath={.status.currentRevision} {.status.updateRevision}",
    ]);
    let (current, update) = revisions.split_once(' ').unwrap_or_default();
    assert_eq!(current, update, "the rollout is complete");

    // Scaling down removes the highest ordinal first.
    plane.ok(&["scale", "statefulset", "db", "--replicas=1"]);
    wait_for("only db-0 left", &mut || {
        pods(&plane) == ["db-0 busybox:1.37"]
    });

    // Volume claims are refused up front, naming the field.
    let refused = plane.kubectl_stdin(
        &["apply", "-f", "-"],
        &statefulset(1, "busybox:1.36", "  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n")
            .replace("name: db\n", "name: withdisk\n"),
    );
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("spec.volumeClaimTemplates: Forbidden"),
        "{message}"
    );
}
