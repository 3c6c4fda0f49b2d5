//! The kubelet's Node: registration with what this machine has, the Lease renewed every
//! 10 s, and the status (conditions, addresses, capacity) reported every 10 s. It also waits
//! for the control plane to hand the node its podCIDR. Pods are not here.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How often the Lease is renewed and the status reported (the kubelet's defaults).
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The kubelet version the Node reports.
pub const VERSION: &str = concat!("v1.33.0-basalt.", env!("CARGO_PKG_VERSION"));

/// What the node reports about itself.
pub struct Facts {
    /// The node's name.
    pub name: String,
    /// Its InternalIP.
    pub address: Ipv4Addr,
    /// containerd's version (`containerd://…`).
    pub runtime_version: String,
    /// Pods it takes at most.
    pub max_pods: u32,
    /// The kubelet API's port.
    pub port: u16,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// MemTotal from /proc/meminfo, in bytes.
fn memory_bytes() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// The filesystem holding `path`: its size in bytes.
fn disk_bytes(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|stat| stat.blocks() * stat.fragment_size())
        .unwrap_or(0)
}

fn os_image() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|line| line.strip_prefix("PRETTY_NAME="))
        .map(|name| name.trim_matches('"').to_string())
        .unwrap_or_else(|| "Basalt".to_string())
}

fn condition(kind: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": kind, "status": status, "reason": reason, "message": message,
           "lastHeartbeatTime": now, "lastTransitionTime": now})
}

/// The status this node reports now.
pub fn status(facts: &Facts, root_dir: &Path) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory_bytes() / 1024),
        "ephemeral-storage": format!("{}Ki", disk_bytes(root_dir) / 1024),
        "pods": facts.max_pods.to_string(),
    });
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [
            {"type": "InternalIP", "address": facts.address.to_string()},
            {"type": "Hostname", "address": facts.name},
        ],
        "conditions": [
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", &now),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", &now),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", &now),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", &now),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.port}},
        "nodeInfo": {
            "machineID": read("/etc/machine-id"),
            "systemUUID": read("/sys/class/dmi/id/product_uuid"),
            "bootID": read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": kernel,
            "osImage": os_image(),
            "containerRuntimeVersion": facts.runtime_version,
            "kubeletVersion": VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
    })
}

/// Creates the Node, or takes over the one registered under this name before.
pub async fn register(nodes: &Api<Node>, facts: &Facts, root_dir: &Path) -> Result<()> {
    let arch = std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": facts.name, "labels": {
            "kubernetes.io/hostname": facts.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
        }},
    }))
    .context("building the Node")?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error).context(format!("registering node {}", facts.name)),
    }
    report(nodes, facts, root_dir).await
}

/// Reports the node's status.
pub async fn report(nodes: &Api<Node>, facts: &Facts, root_dir: &Path) -> Result<()> {
    let patch = json!({"status": status(facts, root_dir)});
    nodes
        .patch_status(
            &facts.name,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .with_context(|| format!("reporting the status of node {}", facts.name))?;
    Ok(())
}

/// Renews the node's Lease in `kube-node-lease`.
pub async fn renew(leases: &Api<Lease>, name: &str) -> Result<()> {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    });
    leases
        .patch(
            name,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(lease),
        )
        .await
        .with_context(|| format!("renewing the Lease of node {name}"))?;
    Ok(())
}

/// Waits until the control plane has given the node a podCIDR, and returns it.
pub async fn pod_cidr(nodes: &Api<Node>, name: &str) -> Result<Ipv4Net> {
    let mut waited = 0u32;
    loop {
        let node = nodes
            .get(name)
            .await
            .with_context(|| format!("reading node {name}"))?;
        if let Some(cidr) = node.spec.and_then(|spec| spec.pod_cidr) {
            return cidr
                .parse()
                .map_err(|error| anyhow!("node {name} has an invalid podCIDR {cidr:?}: {error}"));
        }
        if waited.is_multiple_of(30) {
            tracing::info!(
                node = name,
                "waiting for the control plane to assign a podCIDR"
            );
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
