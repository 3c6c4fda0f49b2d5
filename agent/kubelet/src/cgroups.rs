//! The pods' cgroup directories. runc makes and removes each container's own cgroup; the
//! per-pod parent it creates on the way is the kubelet's to remove once the pod is gone, in
//! every hierarchy it appears in (cgroup v1 controllers and the unified hierarchy alike).

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
