//! One real node for the kubelet's end-to-end tests: in a network and mount namespace of the
//! test's own ([`node_host::isolate`]), an API server, controller manager (which hands out
//! podCIDRs), scheduler, a private containerd with the busybox test image, and
//! `basalt-kubelet` as node `n1`, whose address sits on the namespace's loopback. Dropping it
//! kills the kubelet, every container and containerd, and removes the pods' cgroups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::component::Component;
use crate::control_plane::{ControlPlane, KUBELET, tail};
use crate::node_host::{self, Containerd, TestCgroup};
use crate::{binary, wait};

/// The node's name (the test kubeconfig's kubelet user is `system:node:n1`).
pub const NODE: &str = "n1";
/// The node's InternalIP, on the loopback of the test's network namespace.
pub const NODE_IP: &str = "10.200.0.2";
/// The cluster's pod range; the node gets a /24 of it.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// A control plane with one real kubelet node.
pub struct KubeletNode {
    kubelet: Option<Component>,
    scheduler: Component,
    controllers: Component,
    containerd: Containerd,
    cgroup: TestCgroup,
    /// The API server (kubectl goes through it).
    pub plane: ControlPlane,
    dir: PathBuf,
}

impl KubeletNode {
    /// Isolates the test in namespaces of its own and starts everything; returns once node
    /// `n1` is Ready with a podCIDR.
    pub fn start() -> KubeletNode {
        node_host::isolate();
        // This kernel has no dummy links; an address on lo serves as well.
        let status = Command::new("ip")
            .args(["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"])
            .status()
            .expect("ip addr add");
        assert!(status.success(), "giving the node its address");
        let plane = ControlPlane::start();
        let controllers = plane.start_controller_manager(
            "controller-manager.log",
            &["--allocate-node-cidrs", "--cluster-cidr", CLUSTER_CIDR],
        );
        let scheduler = plane.start_scheduler("scheduler.log", &[]);
        let containerd = Containerd::start("basalt-kubelet-test-");
        containerd.import(&node_host::busybox_image());
        let dir = tempfile::Builder::new()
            .prefix("basalt-kubelet-")
            .tempdir()
            .expect("kubelet dir")
            .keep();
        let mut node = KubeletNode {
            kubelet: None,
            scheduler,
            controllers,
            containerd,
            cgroup: TestCgroup::new(),
            plane,
            dir,
        };
        node.start_kubelet();
        node.wait_ready();
        node
    }

    fn start_kubelet(&mut self) {
        let ip = NODE_IP.parse().expect("node ip");
        let serving = self
            .plane
            .issue_serving_certificate("kubelet-serving", &[ip]);
        let mut command = Command::new(binary("basalt-kubelet"));
        command
            .arg("--kubeconfig")
            .arg(self.plane.kubeconfig_for(KUBELET.context))
            .args(["--node-name", NODE, "--node-ip", NODE_IP])
            .arg("--containerd-address")
            .arg(self.containerd.address())
            .arg("--root-dir")
            .arg(self.dir.join("state"))
            .arg("--pod-log-dir")
            .arg(self.log_dir())
            .args(["--cgroup-parent", self.cgroup.path()])
            .args(["--cluster-dns", "10.96.0.10"])
            .arg("--tls-cert-file")
            .arg(&serving.0)
            .arg("--tls-private-key-file")
            .arg(&serving.1)
            .arg("--client-ca-file")
            .arg(self.plane.ca_file())
            .env("RUST_LOG", "info");
        self.kubelet = Some(Component::spawn(command, self.dir.join("kubelet.log")));
    }

    fn wait_ready(&self) {
        wait::until(
            "node n1 to be Ready with a podCIDR",
            Duration::from_secs(60),
            || {
                let out = self.plane.kubectl(&[
                    "get",
                    "node",
                    NODE,
                    "-o",
                    "jsonpath={.spec.podCIDR} {.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                let text = String::from_utf8_lossy(&out.stdout);
                text.starts_with("10.244.") && text.ends_with("True")
            },
            || self.logs(),
        );
    }

    /// Kills the kubelet (SIGKILL) and starts it again on the same state.
    pub fn restart_kubelet(&mut self) {
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.kill();
        }
        self.start_kubelet();
    }

    /// The kubelet's process id (0 when it is not running).
    pub fn kubelet_pid(&self) -> u32 {
        self.kubelet.as_ref().map_or(0, Component::pid)
    }

    /// The kubelet's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Where container logs are written.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// containerd.
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// The tail of every component's log, for failure messages.
    pub fn logs(&self) -> String {
        let kubelet = self
            .kubelet
            .as_ref()
            .map(Component::log)
            .unwrap_or_default();
        format!(
            "--- kubelet ---\n{}\n--- controller manager ---\n{}\n--- scheduler ---\n{}\n--- containerd ---\n{}\n--- apiserver ---\n{}",
            tail(&kubelet, 40),
            tail(&self.controllers.log(), 10),
            tail(&self.scheduler.log(), 10),
            tail(&self.containerd.log(), 15),
            tail(&self.plane.log(), 10),
        )
    }

    /// `kubectl get pod NAME -o jsonpath=PATH` as the admin ("" when it fails).
    pub fn pod_field(&self, name: &str, path: &str) -> String {
        let out = self
            .plane
            .kubectl(&["get", "pod", name, "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `pod_field(name, path)` satisfies `check`.
    pub fn wait_pod(
        &self,
        name: &str,
        path: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        wait::until(
            &format!("pod {name}: {what}"),
            timeout,
            || {
                last = self.pod_field(name, path);
                check(&last)
            },
            || {
                format!(
                    "{}\n--- pod ---\n{}",
                    self.logs(),
                    String::from_utf8_lossy(
                        &self
                            .plane
                            .kubectl(&["get", "pod", name, "-o", "yaml"])
                            .stdout
                    )
                )
            },
        );
        last
    }

    /// Every log line container `container` of pod `name` wrote so far (CRI format).
    pub fn container_log(&self, name: &str, container: &str) -> String {
        let mut text = String::new();
        let Ok(pods) = std::fs::read_dir(self.log_dir()) else {
            return text;
        };
        for pod in pods.flatten() {
            if !pod
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("default_{name}_"))
            {
                continue;
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(pod.path().join(container))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            for file in files {
                text.push_str(&std::fs::read_to_string(&file).unwrap_or_default());
            }
        }
        text
    }

    /// Whether `path` exists.
    pub fn exists(path: &Path) -> bool {
        path.exists()
    }
}

impl Drop for KubeletNode {
    fn drop(&mut self) {
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.kill();
        }
        self.scheduler.kill();
        self.controllers.kill();
        // The pods' network namespaces are bind-mounted under the kubelet's directory.
        node_host::remove_dir_with_mounts(&self.dir);
        // The fields drop next, in order: containerd kills every container, the cgroup guard
        // removes what runc left, and the namespaces go with the test's last process.
    }
}
