//! Deployments end to end with the real kubectl: scaling, a rolling update that keeps within
//! maxSurge and maxUnavailable, rollout history and undo, Recreate, and deletion of a
//! Deployment's ReplicaSets and pods. A stand-in agent reports pods Ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::pod_agent::PodAgent;
use basalt_tests::wait;

fn rollout(plane: &ControlPlane) {
    plane.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
}

/// `name image` of each pod of app=web not being deleted.
fn pods(plane: &ControlPlane) -> Vec<String> {
    plane
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|l| l.split_whitespace().count() == 2)
        .map(|l| l.trim_end().to_owned())
        .collect()
}

fn wait_for(plane: &ControlPlane, what: &str, check: impl FnMut() -> bool) {
    wait::until(what, Duration::from_secs(30), check, || {
        format!("pods: {:?}", pods(plane))
    });
}

#[test]
fn deployments_scale_roll_out_and_roll_back() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager("controller-manager.log", &[]);
    let _agent = PodAgent::start(&plane.kubeconfig(), "default", Duration::from_millis(300));

    plane.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
    ]);
    rollout(&plane);
    assert_eq!(pods(&plane).len(), 3);
    let status = plane.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.status.availableReplicas}/{.status.updatedReplicas}/{.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(status, "3/3/1");
    // What happened is told in events, as kube's controllers tell it.
    let reasons = |kind: &str| {
        plane.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind={kind}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
    };
    let scaling = reasons("Deployment");
    assert!(
        scaling.lines().any(
            |l| l.starts_with("ScalingReplicaSet: Scaled up replica set web-")
                && l.ends_with(" from 0 to 3")
        ),
        "{scaling}"
    );
    let created = reasons("ReplicaSet");
    assert_eq!(
        created
            .lines()
            .filter(|l| l.starts_with("SuccessfulCreate: Created pod: web-"))
            .count(),
        3,
        "{created}"
    );

    // 3 → 5 → 2.
    plane.ok(&["scale", "deployment", "web", "--replicas=5"]);
    rollout(&plane);
    wait_for(&plane, "5 pods", || pods(&plane).len() == 5);
    plane.ok(&["scale", "deployment", "web", "--replicas=2"]);
    rollout(&plane);
    wait_for(&plane, "2 pods", || pods(&plane).len() == 2);
    let first_set = plane.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);

    // An image change rolls out one surge pod at a time and never drops below two available.
    plane.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
    ]);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let samples = samples.clone();
        let done = done.clone();
        let kubeconfig = plane.kubeconfig();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let out = std::process::Command::new("kubectl")
                    .env("KUBECONFIG", &kubeconfig)
                    .args(["get", "rs", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.spec.replicas},{.status.availableReplicas} {end}"])
                    .output()
                    .expect("kubectl");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (mut wanted, mut available) = (0, 0);
                for pair in text.split_whitespace() {
                    let (w, a) = pair.split_once(',').unwrap_or((pair, "0"));
                    wanted += w.parse::<i32>().unwrap_or(0);
                    available += a.parse::<i32>().unwrap_or(0);
                }
                samples.lock().expect("samples").push((wanted, available));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    plane.ok(&["set", "image", "deployment/web", "busybox=busybox:1.37"]);
    rollout(&plane);
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let samples = samples.lock().expect("samples").clone();
    assert!(
        samples.iter().all(|(wanted, _)| *wanted <= 3),
        "more than replicas + maxSurge: {samples:?}"
    );
    assert!(
        samples.iter().all(|(_, available)| *available >= 2),
        "fewer than replicas - maxUnavailable: {samples:?}"
    );
    assert!(
        samples.iter().any(|(wanted, _)| *wanted == 3),
        "a surge pod was seen: {samples:?}"
    );
    wait_for(&plane, "two pods of the new image", || {
        let now = pods(&plane);
        now.len() == 2 && now.iter().all(|p| p.ends_with("busybox:1.37"))
    });

    let history = plane.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|r| r.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo returns to the first ReplicaSet, now revision 3.
    plane.ok(&["rollout", "undo", "deployment/web"]);
    rollout(&plane);
    wait_for(&plane, "two pods of the old image", || {
        let now = pods(&plane);
        now.len() == 2 && now.iter().all(|p| p.ends_with("busybox:1.36"))
    });
    let active = plane.ok(&[
        "get",
        "rs",
        first_set.as_str(),
        "-o",
        "jsonpath={.spec.replicas}/{.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(active, "2/3");

    // Recreate: the old pods all go before any new one comes.
    plane.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/strategy","value":{"type":"Recreate"}}]"#,
    ]);
    plane.ok(&["set", "image", "deployment/web", "busybox=busybox:1.38"]);
    rollout(&plane);
    wait_for(&plane, "two pods of the newest image", || {
        let now = pods(&plane);
        now.len() == 2 && now.iter().all(|p| p.ends_with("busybox:1.38"))
    });

    // Deleting the Deployment deletes its ReplicaSets and their pods.
    plane.ok(&["delete", "deployment", "web"]);
    wait_for(&plane, "everything collected", || {
        pods(&plane).is_empty()
            && plane
                .ok(&["get", "rs", "-l", "app=web", "-o", "name"])
                .trim()
                .is_empty()
    });
    assert!(!manager.log().contains("panicked"), "{}", manager.log());
}

#[test]
fn a_standby_manager_finishes_a_rollout_the_leader_started() {
    let plane = ControlPlane::start();
    let mut leader = plane.start_controller_manager("leader.log", &[]);
    let holder = || plane.lease_holder("kube-controller-manager");
    wait_for(&plane, "a leader", || !holder().is_empty());
    let standby = plane.start_controller_manager("standby.log", &[]);
    // Pods take a second to become ready, so the rollout outlives the leader.
    let _agent = PodAgent::start(&plane.kubeconfig(), "default", Duration::from_secs(1));
    plane.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=4",
    ]);
    rollout(&plane);
    plane.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"strategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
    ]);
    plane.ok(&["set", "image", "deployment/web", "busybox=busybox:1.37"]);
    wait_for(&plane, "the rollout under way", || {
        pods(&plane).iter().any(|p| p.ends_with("busybox:1.37"))
    });
    leader.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        pods(&plane).iter().any(|p| p.ends_with("busybox:1.36")),
        "old pods stay while no manager leads: {:?}",
        pods(&plane)
    );
    plane.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    wait_for(&plane, "four pods of the new image", || {
        let now = pods(&plane);
        now.len() == 4 && now.iter().all(|p| p.ends_with("busybox:1.37"))
    });
    assert!(
        standby.log().contains("became the leader"),
        "{}",
        standby.log()
    );
}
