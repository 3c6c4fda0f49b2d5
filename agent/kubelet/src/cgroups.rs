//! The pods' cgroup directories. runc makes and removes each container's own cgroup; the
//! per-pod parent it creates on the way is the kubelet's to remove once the pod is gone, in
//! every hierarchy it appears in (cgroup v1 controllers and the unified hierarchy alike).
//! Reading a cgroup's CPU and memory counters is here too; what they are used for is not.

use std::fs;
use std::path::PathBuf;

/// Every mounted cgroup hierarchy (v1 controllers and cgroup2).
fn hierarchies() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split(' ').next()?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| before.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

/// Where a container's usage counters are read.
#[derive(Debug, Clone)]
pub enum Counters {
    /// The unified hierarchy (cgroup v2), mounted here.
    Unified(PathBuf),
    /// cgroup v1: the `cpuacct` and `memory` hierarchies.
    Split {
        /// `cpuacct`'s mount.
        cpuacct: PathBuf,
        /// `memory`'s mount.
        memory: PathBuf,
    },
}

/// CPU time and memory of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: u64,
    /// Memory charged.
    pub memory_bytes: u64,
    /// Memory charged less inactive file cache: what the OOM killer weighs.
    pub working_set_bytes: u64,
}

impl Counters {
    /// The hierarchies of this host: v1's `cpuacct` and `memory` where they are mounted
    /// (a hybrid host's cgroup2 mount holds no controllers), else the unified one.
    pub fn find() -> Option<Counters> {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut cpuacct = None;
        let mut memory = None;
        let mut unified = None;
        for line in mounts.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let Some(point) = before.split(' ').nth(4).map(PathBuf::from) else {
                continue;
            };
            let mut fields = after.split(' ');
            let fstype = fields.next().unwrap_or("");
            let options = fields.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => unified = Some(point),
                "cgroup" => {
                    let has = |name: &str| options.split(',').any(|o| o == name);
                    if has("cpuacct") {
                        cpuacct = Some(point.clone());
                    }
                    if has("memory") {
                        memory = Some(point);
                    }
                }
                _ => {}
            }
        }
        match (cpuacct, memory) {
            (Some(cpuacct), Some(memory)) => Some(Counters::Split { cpuacct, memory }),
            _ => unified.map(Counters::Unified),
        }
    }

    /// The usage of cgroup `path` (relative to the hierarchies' roots), if it exists.
    pub fn read(&self, path: &str) -> Option<Usage> {
        let relative = path.trim_start_matches('/');
        let number =
            |file: PathBuf| -> Option<u64> { fs::read_to_string(file).ok()?.trim().parse().ok() };
        let stat = |file: PathBuf, key: &str| -> u64 {
            fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        let (cpu_nanos, memory_bytes, inactive) = match self {
            Counters::Unified(root) => {
                let dir = root.join(relative);
                let micros = stat(dir.join("cpu.stat"), "usage_usec");
                let memory = number(dir.join("memory.current"))?;
                (
                    micros * 1000,
                    memory,
                    stat(dir.join("memory.stat"), "inactive_file"),
                )
            }
            Counters::Split { cpuacct, memory } => {
                let cpu = number(cpuacct.join(relative).join("cpuacct.usage"))?;
                let dir = memory.join(relative);
                let used = number(dir.join("memory.usage_in_bytes"))?;
                (
                    cpu,
                    used,
                    stat(dir.join("memory.stat"), "total_inactive_file"),
                )
            }
        };
        Some(Usage {
            cpu_nanos,
            memory_bytes,
            working_set_bytes: memory_bytes.saturating_sub(inactive),
        })
    }
}

/// Removes the cgroup `path` (relative to each hierarchy's root) and what is below it.
/// Directories still holding processes stay; the next sync tries again.
pub fn remove(path: &str) {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return;
    }
    for root in hierarchies() {
        let top = root.join(relative);
        if top.is_dir() {
            remove_tree(&top);
        }
    }
}

fn remove_tree(dir: &PathBuf) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    if let Err(error) = fs::remove_dir(dir) {
        tracing::debug!(cgroup = %dir.display(), %error, "cgroup not removed yet");
    }
}
