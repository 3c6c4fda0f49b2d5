//! A process's CPU time, storage writes and memory, from /proc; and a directory's size.

use std::time::Duration;

use anyhow::{Context, Result};

/// Linux reports CPU times in /proc in units of USER_HZ, which is 100 on every architecture
/// Linux supports (it is part of the ABI, unlike the kernel's internal HZ).
const USER_HZ: u64 = 100;

/// Cumulative resource use of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU time of all its threads.
    pub cpu: Duration,
    /// Bytes it caused to be sent to storage (`write_bytes` in /proc/<pid>/io).
    pub disk_write_bytes: u64,
}

impl Usage {
    /// The use between `earlier` and `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            disk_write_bytes: self
                .disk_write_bytes
                .saturating_sub(earlier.disk_write_bytes),
        }
    }

    /// The sum of several processes' use.
    pub fn total(usages: &[Usage]) -> Usage {
        usages.iter().fold(Usage::default(), |a, u| Usage {
            cpu: a.cpu + u.cpu,
            disk_write_bytes: a.disk_write_bytes + u.disk_write_bytes,
        })
    }
}

/// The resource use of process `pid` so far.
pub fn usage(pid: u32) -> Result<Usage> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    let disk_write_bytes =
        field(&io, "write_bytes:").with_context(|| format!("no write_bytes in /proc/{pid}/io"))?;
    Ok(Usage {
        cpu: cpu_time(&format!("/proc/{pid}/stat"))?,
        disk_write_bytes,
    })
}

/// This process's own CPU time so far (the load generator's).
pub fn own_cpu() -> Result<Duration> {
    cpu_time("/proc/self/stat")
}

/// CPU time all processes on the machine have used so far (busy time summed over CPUs, from the
/// first line of /proc/stat), so that a phase can tell how much went to processes other than
/// the servers and the load generator.
pub fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already within user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Ok(Duration::from_millis(busy * 1000 / USER_HZ))
}

/// Peak resident set size of process `pid` in bytes (`VmHWM`, which the kernel keeps).
pub fn peak_rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmHWM:")
}

/// Current resident set size of process `pid` in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS:")
}

fn status_bytes(pid: u32, name: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = field(&status, name).with_context(|| format!("no {name} for {pid}"))?;
    Ok(kib * 1024)
}

/// Bytes used by the files under `dir` (0 if it cannot be read).
pub fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            Some(if meta.is_dir() {
                disk_bytes(&entry.path())
            } else {
                meta.len()
            })
        })
        .sum()
}

/// utime + stime from a /proc/<pid>/stat file.
fn cpu_time(path: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces; count from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the file; `rest` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected {path}: field {i} missing"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_millis(total * 1000 / USER_HZ))
}

/// The number after `name` in a `name value [unit]` line.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        // The peak read later is at least the current size read first.
        let now = rss(pid).unwrap();
        assert!(peak_rss(pid).unwrap() >= now);
        usage(pid).unwrap();
        own_cpu().unwrap();
        machine_busy().unwrap();
    }
}
