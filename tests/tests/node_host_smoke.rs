//! The node-host harness itself: a private containerd imports the locally built busybox image
//! and runs containers with runc, and dropping it leaves no shim, mount, directory or cgroup.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code panics on failure by design

use basalt_tests::node_host::{self, BUSYBOX, Containerd, TestCgroup};

#[test]
fn containerd_runs_busybox_and_leaves_nothing_behind() {
    node_host::isolate();
    let image = node_host::busybox_image();
    let cgroup = TestCgroup::new();
    let containerd = Containerd::start("smoke-");
    let dir = containerd.dir().to_path_buf();

    containerd.import(&image);
    let images = containerd.ctr(&["images", "ls", "-q"]);
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(images.lines().any(|l| l == BUSYBOX), "images: {images}");

    let t1 = format!("{}/t1", cgroup.path());
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--cgroup",
        &t1,
        BUSYBOX,
        "t1",
        "sh",
        "-c",
        "echo hello",
    ]);
    assert!(
        out.status.success(),
        "ctr run failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        containerd.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // One left running, for drop to kill.
    let t2 = format!("{}/t2", cgroup.path());
    let out = containerd.ctr(&[
        "run",
        "-d",
        "--null-io",
        "--cgroup",
        &t2,
        BUSYBOX,
        "t2",
        "sleep",
        "3600",
    ]);
    assert!(
        out.status.success(),
        "ctr run -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!node_host::shim_pids(&dir).is_empty(), "no shim for t2");
    assert!(!node_host::cgroup_dirs(&t2).is_empty(), "no cgroup for t2");

    drop(containerd);
    assert_eq!(node_host::shim_pids(&dir), Vec::<i32>::new(), "shims left");
    assert!(!dir.exists(), "{} left", dir.display());

    let path = cgroup.path().to_string();
    drop(cgroup);
    assert_eq!(
        node_host::cgroup_dirs(&path),
        Vec::<std::path::PathBuf>::new()
    );
}
