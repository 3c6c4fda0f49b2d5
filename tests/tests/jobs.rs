//! Jobs and CronJobs end to end with the real kubectl: a Job runs its completions with its
//! parallelism, an Indexed Job fills every index, a Job whose pods keep failing gives up
//! after `backoffLimit` retries (with kube's backoff between them), a finished Job with a TTL
//! is deleted, and a CronJob fires on its schedule. A stand-in agent plays the kubelet:
//! pods annotated with an exit code finish with it.

use std::time::Duration;

use basalt_tests::control_plane::ControlPlane;
use basalt_tests::pod_agent::{EXIT_CODE, PodAgent};
use basalt_tests::wait;

fn job(name: &str, exit: i32, spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    metadata:\n      annotations: {{{EXIT_CODE}: \"{exit}\"}}\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox:1.36\n"
    )
}

/// `phase finalizers` of each pod of job `name`.
fn pods_of(plane: &ControlPlane, name: &str) -> Vec<String> {
    plane
        .ok(&[
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.status.phase} {.metadata.finalizers}{\"\\n\"}{end}",
        ])
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

fn status(plane: &ControlPlane, name: &str, path: &str) -> String {
    plane.ok(&["get", "job", name, "-o", &format!("jsonpath={{{path}}}")])
}

#[test]
fn jobs_complete_fail_after_their_backoff_limit_and_expire() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager("controller-manager.log", &[]);
    let _agent = PodAgent::start(&plane.kubeconfig(), "default", Duration::from_millis(200));
    let context = || basalt_tests::control_plane::tail(&manager.log(), 40);

    plane.apply(&job("fails", 1, "  backoffLimit: 2\n"));
    plane.apply(&job("works", 0, "  completions: 3\n  parallelism: 2\n"));
    plane.apply(&job(
        "indexed",
        0,
        "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
    ));
    plane.apply(&job("expires", 0, "  ttlSecondsAfterFinished: 2\n"));

    plane.ok(&[
        "wait",
        "--for=condition=complete",
        "job/works",
        "--timeout=60s",
    ]);
    assert_eq!(status(&plane, "works", ".status.succeeded"), "3");
    let pods = pods_of(&plane, "works");
    assert_eq!(
        pods,
        ["Succeeded", "Succeeded", "Succeeded"],
        "counted, finalizers released"
    );

    plane.ok(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ]);
    assert_eq!(status(&plane, "indexed", ".status.completedIndexes"), "0-2");
    let hostnames = plane.ok(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-name=indexed",
        "-o",
        "jsonpath={.items[*].spec.hostname}",
    ]);
    let mut hostnames: Vec<&str> = hostnames.split_whitespace().collect();
    hostnames.sort_unstable();
    assert_eq!(hostnames, ["indexed-0", "indexed-1", "indexed-2"]);

    wait::until(
        "the expiring Job deleted after its TTL",
        Duration::from_secs(30),
        || !plane.kubectl(&["get", "job", "expires"]).status.success(),
        context,
    );

    // One try and two retries, 10 s and 20 s apart, then it gives up.
    plane.ok(&[
        "wait",
        "--for=condition=failed",
        "job/fails",
        "--timeout=90s",
    ]);
    let failed = plane.ok(&[
        "get",
        "job",
        "fails",
        "-o",
        "jsonpath={.status.failed} {.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(failed, "3 BackoffLimitExceeded");
    assert_eq!(pods_of(&plane, "fails"), ["Failed", "Failed", "Failed"]);
    let warnings = plane.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=fails,type=Warning",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert_eq!(
        warnings.trim(),
        "BackoffLimitExceeded: Job has reached the specified backoff limit"
    );

    // Deleting a Job takes its pods with it.
    plane.ok(&["delete", "job", "works"]);
    wait::until(
        "the deleted Job's pods gone",
        Duration::from_secs(30),
        || pods_of(&plane, "works").is_empty(),
        context,
    );
}

#[test]
fn a_cronjob_fires_on_schedule() {
    let plane = ControlPlane::start();
    let manager = plane.start_controller_manager("controller-manager.log", &[]);
    let _agent = PodAgent::start(&plane.kubeconfig(), "default", Duration::from_millis(200));
    plane.apply(&format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: tick\nspec:\n  schedule: \"* * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          annotations: {{{EXIT_CODE}: \"0\"}}\n        spec:\n          restartPolicy: Never\n          containers:\n          - name: main\n            image: busybox:1.36\n"
    ));
    // A Job made by hand from the CronJob's template works as any Job.
    plane.ok(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    plane.ok(&[
        "wait",
        "--for=condition=complete",
        "job/by-hand",
        "--timeout=60s",
    ]);

    // The next minute boundary is at most a minute away.
    let scheduled_done = || {
        plane
            .ok(&[
                "get",
                "jobs",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.succeeded}{\"\\n\"}{end}",
            ])
            .lines()
            .any(|l| l.starts_with("tick-") && l.ends_with(" 1"))
    };
    wait::until(
        "the CronJob's first scheduled run to succeed",
        Duration::from_secs(90),
        scheduled_done,
        || basalt_tests::control_plane::tail(&manager.log(), 40),
    );
    let last = plane.ok(&[
        "get",
        "cronjob",
        "tick",
        "-o",
        "jsonpath={.status.lastScheduleTime}",
    ]);
    assert!(last.ends_with(":00Z"), "runs on the minute: {last}");
    wait::until(
        "the last success recorded",
        Duration::from_secs(10),
        || {
            !plane
                .ok(&[
                    "get",
                    "cronjob",
                    "tick",
                    "-o",
                    "jsonpath={.status.lastSuccessfulTime}",
                ])
                .is_empty()
        },
        || basalt_tests::control_plane::tail(&manager.log(), 40),
    );
}
