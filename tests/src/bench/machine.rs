//! Facts about the machine and the software under test, recorded with each run so that figures
//! from different days and machines are read in context.

use std::path::Path;
use std::process::Command;

/// What a recorded run states about where it ran.
#[derive(Debug, Clone)]
pub struct Facts {
    /// When, in UTC.
    pub date: String,
    /// CPUs this process may use, and their model.
    pub cpus: String,
    /// Installed memory.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// File system and device holding the members' data.
    pub filesystem: String,
    /// `etcd --version`'s first line.
    pub etcd: String,
    /// The commit basalt-store was built from.
    pub basalt: String,
}

impl Facts {
    /// Gathers the facts; any that cannot be read are given as "unknown" rather than failing a
    /// benchmark over a footnote.
    pub fn gather(data_dir: &Path) -> Facts {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown model".into());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB RAM", kib / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown RAM".into());
        let basalt = match output("git", &["rev-parse", "--short", "HEAD"]) {
            Some(rev) => {
                let clean = Command::new("git")
                    .args(["diff", "--quiet", "HEAD", "--"])
                    .status()
                    .is_ok_and(|s| s.success());
                if clean {
                    rev
                } else {
                    format!("{rev} + uncommitted changes")
                }
            }
            None => "unknown commit".into(),
        };
        Facts {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
                .unwrap_or_else(|| "unknown".into()),
            cpus: format!("{cpus} CPUs ({model})"),
            memory,
            kernel: format!("Linux {}", read("/proc/sys/kernel/osrelease").trim()),
            filesystem: filesystem(data_dir),
            etcd: output("etcd", &["--version"])
                .and_then(|v| v.lines().next().map(|l| l.replace("etcd Version:", "etcd")))
                .unwrap_or_else(|| "etcd: unknown version".into()),
            basalt,
        }
    }
}

/// "ext4 on /dev/vda (/)" for the mount that holds `path`.
fn filesystem(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    read("/proc/mounts")
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (device, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fstype} on {device} ({mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "unknown file system".into())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
