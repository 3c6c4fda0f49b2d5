//! `/stats/summary` and `/metrics/resource`: what the node and each running pod use. CPU
//! and memory come from /proc and the containers' cgroups, network from the pods' host-side
//! veths, filesystems from statvfs and the pods' log and volume directories; they are served
//! as the Summary API's JSON and as the resource-metrics text metrics-server scrapes. CPU
//! rates (`usageNanoCores`) come from the last two readings of a sampler that runs every
//! 10 s, as cadvisor's do. **Does not** keep history or serve cadvisor's other metrics.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::cgroups::{Counters, Usage};
use crate::pods::labels;
use crate::runtime::{Runtime, TaskState};

/// How often CPU counters are sampled for rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The node's key among the sampled counters.
const NODE: &str = "";

/// A CPU counter reading: when, and how many nanoseconds.
type Reading = (Instant, u64);
/// A pod's namespace, name and UID.
type PodKey = (String, String, String);

/// One running container, as containerd and its cgroup tell.
#[derive(Debug, Clone)]
struct Running {
    namespace: String,
    pod: String,
    uid: String,
    name: String,
    started: Option<String>,
    log_path: String,
    usage: Usage,
}

/// The reader, with the CPU samples rates are made of.
pub struct Stats {
    runtime: Runtime,
    node_name: String,
    root_dir: PathBuf,
    counters: Option<Counters>,
    /// CPU nanoseconds by container ID (the node's under [`NODE`]): the last two readings.
    samples: Mutex<HashMap<String, [Option<Reading>; 2]>>,
}

impl Stats {
    /// A reader of this node's usage; call [`Stats::sample`] to have rates.
    pub fn new(runtime: Runtime, node_name: String, root_dir: PathBuf) -> Arc<Stats> {
        Arc::new(Stats {
            runtime,
            node_name,
            root_dir,
            counters: Counters::find(),
            samples: Mutex::new(HashMap::new()),
        })
    }

    /// Samples CPU counters every 10 s (twice at first, a second apart) until the end.
    pub async fn sample(self: Arc<Self>) {
        let mut first = true;
        loop {
            let running = self.running().await;
            self.record(NODE, node_cpu_nanos());
            for (id, container) in &running {
                self.record(id, container.usage.cpu_nanos);
            }
            {
                let mut samples = self.samples.lock();
                samples.retain(|k, _| k == NODE || running.contains_key(k));
            }
            let wait = if first {
                Duration::from_secs(1)
            } else {
                SAMPLE_EVERY
            };
            first = false;
            tokio::time::sleep(wait).await;
        }
    }

    fn record(&self, key: &str, nanos: u64) {
        let mut samples = self.samples.lock();
        let entry = samples.entry(key.to_string()).or_default();
        entry[0] = entry[1];
        entry[1] = Some((Instant::now(), nanos));
    }

    /// The CPU rate of `key` over its last two samples, in nanocores.
    fn rate(&self, key: &str) -> Option<u64> {
        let samples = self.samples.lock();
        let [Some((t0, n0)), Some((t1, n1))] = samples.get(key)? else {
            return None;
        };
        let elapsed = t1.duration_since(*t0).as_nanos() as u64;
        (elapsed > 0).then(|| n1.saturating_sub(*n0).saturating_mul(1_000_000_000) / elapsed)
    }

    /// The running containers of pods, by containerd ID.
    async fn running(&self) -> BTreeMap<String, Running> {
        let mut out = BTreeMap::new();
        let Some(counters) = &self.counters else {
            return out;
        };
        let Ok(containers) = self.runtime.containers(&[]).await else {
            return out;
        };
        for container in containers {
            let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
            let uid = label(labels::POD_UID);
            if uid.is_empty() {
                continue;
            }
            let running = matches!(
                self.runtime.task(&container.id).await,
                Ok(Some(TaskState::Running { .. }))
            );
            if !running {
                continue;
            }
            let Ok(spec) = self.runtime.container_spec(&container.id).await else {
                continue;
            };
            let Some(usage) = spec
                .pointer("/linux/cgroupsPath")
                .and_then(Value::as_str)
                .and_then(|path| counters.read(path))
            else {
                continue;
            };
            out.insert(
                container.id.clone(),
                Running {
                    namespace: label(labels::POD_NAMESPACE),
                    pod: label(labels::POD_NAME),
                    uid,
                    name: label(labels::CONTAINER),
                    started: container.labels.get(labels::STARTED).cloned(),
                    log_path: label(labels::LOG_PATH),
                    usage,
                },
            );
        }
        out
    }

    /// The Summary API's document.
    pub async fn summary(&self) -> Value {
        let now = jiff::Timestamp::now().to_string();
        let running = self.running().await;
        let mut pods: BTreeMap<PodKey, Vec<(&String, &Running)>> = BTreeMap::new();
        for (id, container) in &running {
            let key = (
                container.namespace.clone(),
                container.pod.clone(),
                container.uid.clone(),
            );
            pods.entry(key).or_default().push((id, container));
        }
        let cpu = |usage: u64, rate: Option<u64>| {
            let mut cpu = json!({"time": now, "usageCoreNanoSeconds": usage});
            if let Some(rate) = rate {
                cpu["usageNanoCores"] = json!(rate);
            }
            cpu
        };
        let memory = |usage: &Usage| {
            json!({"time": now, "usageBytes": usage.memory_bytes,
                   "workingSetBytes": usage.working_set_bytes})
        };
        let pod_stats: Vec<Value> = pods
            .iter()
            .map(|((namespace, name, uid), containers)| {
                let mut total = Usage::default();
                let mut total_rate = Some(0u64);
                let containers: Vec<Value> = containers
                    .iter()
                    .map(|(id, c)| {
                        total.cpu_nanos += c.usage.cpu_nanos;
                        total.memory_bytes += c.usage.memory_bytes;
                        total.working_set_bytes += c.usage.working_set_bytes;
                        let rate = self.rate(id);
                        total_rate = total_rate.zip(rate).map(|(a, b)| a + b);
                        let logs = Path::new(&c.log_path)
                            .parent()
                            .map(|dir| fs_usage(dir, &now))
                            .unwrap_or(Value::Null);
                        json!({"name": c.name, "startTime": c.started,
                               "cpu": cpu(c.usage.cpu_nanos, rate),
                               "memory": memory(&c.usage), "logs": logs})
                    })
                    .collect();
                let volumes = self.root_dir.join("pods").join(uid).join("volumes");
                let volume_stats: Vec<Value> = std::fs::read_dir(&volumes)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|entry| {
                        let mut stats = fs_usage(&entry.path(), &now);
                        stats["name"] = json!(entry.file_name().to_string_lossy());
                        stats
                    })
                    .collect();
                json!({
                    "podRef": {"name": name, "namespace": namespace, "uid": uid},
                    "containers": containers,
                    "cpu": cpu(total.cpu_nanos, total_rate),
                    "memory": memory(&total),
                    "network": pod_network(uid, &now),
                    "volume": volume_stats,
                })
            })
            .collect();
        let node_memory = node_memory();
        json!({
            "node": {
                "nodeName": self.node_name,
                "cpu": cpu(node_cpu_nanos(), self.rate(NODE)),
                "memory": {"time": now, "availableBytes": node_memory.0,
                           "usageBytes": node_memory.1, "workingSetBytes": node_memory.2},
                "fs": statvfs(&self.root_dir, &now),
            },
            "pods": pod_stats,
        })
    }

    /// The kubelet's own metrics (Prometheus text): how many pods and containers run.
    pub async fn kubelet_metrics(&self) -> String {
        let running = self.running().await;
        let pods: std::collections::BTreeSet<&str> =
            running.values().map(|c| c.uid.as_str()).collect();
        format!(
            "# HELP kubelet_running_pods Number of pods that have a running container\n# TYPE kubelet_running_pods gauge\nkubelet_running_pods {}\n# HELP kubelet_running_containers Number of running containers\n# TYPE kubelet_running_containers gauge\nkubelet_running_containers{{container_state=\"running\"}} {}\n",
            pods.len(),
            running.len()
        )
    }

    /// The resource metrics (Prometheus text) metrics-server reads.
    pub async fn resource_metrics(&self) -> String {
        let millis = jiff::Timestamp::now().as_millisecond();
        let running = self.running().await;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value} {millis}");
            }
        };
        let (_, _, node_working_set) = node_memory();
        family(
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
            vec![(String::new(), node_cpu_nanos() as f64 / 1e9)],
        );
        family(
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
            vec![(String::new(), node_working_set as f64)],
        );
        let container_labels = |c: &Running| {
            format!(
                "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
                c.name, c.namespace, c.pod
            )
        };
        let mut pods: BTreeMap<String, Usage> = BTreeMap::new();
        for c in running.values() {
            let entry = pods
                .entry(format!(
                    "{{namespace=\"{}\",pod=\"{}\"}}",
                    c.namespace, c.pod
                ))
                .or_default();
            entry.cpu_nanos += c.usage.cpu_nanos;
            entry.working_set_bytes += c.usage.working_set_bytes;
        }
        family(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            running
                .values()
                .map(|c| (container_labels(c), c.usage.cpu_nanos as f64 / 1e9))
                .collect(),
        );
        family(
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
            running
                .values()
                .map(|c| (container_labels(c), c.usage.working_set_bytes as f64))
                .collect(),
        );
        family(
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
            pods.iter()
                .map(|(l, u)| (l.clone(), u.cpu_nanos as f64 / 1e9))
                .collect(),
        );
        family(
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
            pods.iter()
                .map(|(l, u)| (l.clone(), u.working_set_bytes as f64))
                .collect(),
        );
        family(
            "resource_scrape_error",
            "gauge",
            "1 if there was an error while getting container metrics, 0 otherwise",
            vec![(
                String::new(),
                if self.counters.is_some() { 0.0 } else { 1.0 },
            )],
        );
        out
    }
}

/// The node's CPU time in nanoseconds: /proc/stat's busy jiffies (all but idle and iowait).
fn node_cpu_nanos() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, v)| v)
        .sum();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    busy.saturating_mul(1_000_000_000 / ticks)
}

/// The node's memory: (available, used, working set) bytes from /proc/meminfo.
fn node_memory() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let (total, free, available) = (field("MemTotal"), field("MemFree"), field("MemAvailable"));
    (
        available,
        total.saturating_sub(free),
        total.saturating_sub(available),
    )
}

/// A filesystem's capacity and use, from statvfs of `path`.
fn statvfs(path: &Path, now: &str) -> Value {
    let Ok(fs) = nix::sys::statvfs::statvfs(path) else {
        return Value::Null;
    };
    let block = fs.fragment_size();
    let capacity = fs.blocks() * block;
    let available = fs.blocks_available() * block;
    json!({"time": now, "capacityBytes": capacity, "availableBytes": available,
           "usedBytes": capacity.saturating_sub(fs.blocks_free() * block),
           "inodes": fs.files(), "inodesFree": fs.files_free(),
           "inodesUsed": fs.files().saturating_sub(fs.files_free())})
}

/// What the files under `dir` use, with their filesystem's capacity.
fn fs_usage(dir: &Path, now: &str) -> Value {
    let mut used = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                used += meta.len();
            }
        }
    }
    let mut stats = statvfs(dir, now);
    if stats.is_object() {
        stats["usedBytes"] = json!(used);
        stats["inodesUsed"] = json!(inodes);
    }
    stats
}

/// Pod `uid`'s traffic: its host-side veth's counters, receive and transmit swapped.
fn pod_network(uid: &str, now: &str) -> Value {
    let dir = Path::new("/sys/class/net")
        .join(podnet::PodNetwork::host_interface(uid))
        .join("statistics");
    let read = |name: &str| -> u64 {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let (rx, tx) = ("tx", "rx");
    let stats = json!({"name": "eth0", "rxBytes": read(&format!("{rx}_bytes")),
                       "rxErrors": read(&format!("{rx}_errors")),
                       "txBytes": read(&format!("{tx}_bytes")),
                       "txErrors": read(&format!("{tx}_errors"))});
    let mut out = stats.clone();
    out["time"] = json!(now);
    out["interfaces"] = json!([stats]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_reads_as_busy_and_with_memory() {
        assert!(node_cpu_nanos() > 0);
        let (available, used, working_set) = node_memory();
        assert!(available > 0 && used > 0 && working_set > 0);
        let fs = statvfs(Path::new("/"), "now");
        assert!(fs["capacityBytes"].as_u64().unwrap_or(0) > 0, "{fs}");
    }
}
