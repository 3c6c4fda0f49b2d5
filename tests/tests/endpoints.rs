//! EndpointSlices and Endpoints with the real kubectl: a Service lists the pods it selects
//! with their readiness, a hundred endpoints to a slice, and follows scaling to zero and the
//! Service's deletion. A stand-in agent reports pods Ready with addresses.

use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::pod_agent::PodAgent;
use basalt_tests::wait;
use serde_json::Value;

fn slices(plane: &ControlPlane) -> Vec<Value> {
    let out = plane.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).unwrap_or_default();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// (ready, not ready) endpoints over every slice of `web`, and the slices' sizes.
fn counts(plane: &ControlPlane) -> (usize, usize, Vec<usize>) {
    let (mut ready, mut not_ready, mut sizes) = (0, 0, Vec::new());
    for slice in slices(plane) {
        let endpoints = slice["endpoints"].as_array().cloned().unwrap_or_default();
        sizes.push(endpoints.len());
        for endpoint in endpoints {
            if endpoint["conditions"]["ready"] == true {
                ready += 1;
            } else {
                not_ready += 1;
            }
        }
    }
    sizes.sort_unstable();
    (ready, not_ready, sizes)
}

fn wait_for(plane: &ControlPlane, what: &str, check: impl FnMut() -> bool) {
    wait::until(what, Duration::from_secs(60), check, || {
        format!("slices: {:?}", counts(plane))
    });
}

#[test]
fn endpoint_slices_follow_pod_readiness() {
    let plane = ControlPlane::start();
    let _manager = plane.start_controller_manager("controller-manager.log", &[]);
    let _agent = PodAgent::start(&plane.kubeconfig(), "default", Duration::from_millis(100));

    plane.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
    ]);
    plane.ok(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    wait_for(&plane, "three ready endpoints", || {
        counts(&plane) == (3, 0, vec![3])
    });
    let slice = &slices(&plane)[0];
    assert_eq!(slice["ports"][0]["port"], 8080);
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    let addresses = plane.ok(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[0].addresses[*].ip}",
    ]);
    assert_eq!(addresses.split_whitespace().count(), 3, "{addresses}");

    // One pod stops being ready: its endpoint says so, and Endpoints moves it aside.
    let pod = plane.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    plane.ok(&[
        "patch",
        "pod",
        &pod,
        "--subresource=status",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    wait_for(&plane, "one endpoint not ready", || {
        counts(&plane) == (2, 1, vec![3])
    });
    wait_for(&plane, "Endpoints to list it apart", || {
        plane.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[0].notReadyAddresses[*].targetRef.name}",
        ]) == pod
    });

    // A hundred endpoints to a slice.
    plane.ok(&["scale", "deployment", "web", "--replicas=120"]);
    wait_for(&plane, "120 endpoints in two slices", || {
        let (ready, not_ready, sizes) = counts(&plane);
        ready + not_ready == 120 && sizes == [20, 100]
    });

    // No pods: one empty slice stays; the Endpoints object has no subsets.
    plane.ok(&["scale", "deployment", "web", "--replicas=0"]);
    wait_for(&plane, "an empty slice", || {
        counts(&plane) == (0, 0, vec![0])
    });
    wait_for(&plane, "empty Endpoints", || {
        plane
            .ok(&["get", "endpoints", "web", "-o", "jsonpath={.subsets}"])
            .trim()
            .is_empty()
    });

    // The Service's slices go with it.
    plane.ok(&["delete", "service", "web"]);
    wait_for(&plane, "slices collected", || slices(&plane).is_empty());
}
