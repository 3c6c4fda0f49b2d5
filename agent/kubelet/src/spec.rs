//! The OCI runtime spec of one container of a pod: its process (command, environment, user,
//! capabilities), root filesystem, mounts, namespaces and cgroup limits. Everything it needs is
//! handed in already resolved (environment values, the pod's namespace path, the files it
//! mounts); it reads nothing and talks to nobody.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, SecurityContext};
use serde_json::{Value, json};

use crate::runtime::ImageConfig;

/// Docker's default capability set, which Kubernetes containers start from.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows, for privileged containers.
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The host path.
    pub source: PathBuf,
    /// Where it appears in the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything about the container's surroundings the spec needs.
pub struct Inputs<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container.
    pub container: &'a Container,
    /// Its image's defaults.
    pub image: &'a ImageConfig,
    /// The environment, resolved and in order.
    pub env: Vec<(String, String)>,
    /// The pod's network namespace; `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
    /// The container's cgroup path.
    pub cgroup: String,
    /// Bind mounts: /etc/hosts, /etc/resolv.conf, /etc/hostname, volumes.
    pub mounts: Vec<BindMount>,
}

/// Why a container's spec cannot be made (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The image runs as a user name, which would need the image's /etc/passwd.
    #[error("image's user {0:?} is not numeric; set securityContext.runAsUser")]
    NamedUser(String),
    /// runAsNonRoot holds but the container would run as root.
    #[error("container has runAsNonRoot and image will run as root")]
    RunsAsRoot,
    /// The container has neither a command nor an image default to run.
    #[error("no command specified")]
    NoCommand,
}

/// The effective security context: the container's fields over the pod's.
fn user(inputs: &Inputs) -> Result<(u32, u32, Vec<u32>), Error> {
    let pod = inputs
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.security_context.as_ref());
    let own = inputs.container.security_context.as_ref();
    let (image_uid, image_gid) = parse_user(&inputs.image.user)?;
    let uid = own
        .and_then(|c| c.run_as_user)
        .or(pod.and_then(|p| p.run_as_user))
        .map(|uid| uid as u32)
        .unwrap_or(image_uid);
    let gid = own
        .and_then(|c| c.run_as_group)
        .or(pod.and_then(|p| p.run_as_group))
        .map(|gid| gid as u32)
        .unwrap_or(image_gid);
    let non_root = own
        .and_then(|c| c.run_as_non_root)
        .or(pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    if non_root && uid == 0 {
        return Err(Error::RunsAsRoot);
    }
    let mut groups: Vec<u32> = pod
        .and_then(|p| p.supplemental_groups.as_ref())
        .map(|groups| groups.iter().map(|g| *g as u32).collect())
        .unwrap_or_default();
    if let Some(fs_group) = pod.and_then(|p| p.fs_group) {
        groups.push(fs_group as u32);
    }
    Ok((uid, gid, groups))
}

/// `USER` as `uid[:gid]`; an empty one is root.
fn parse_user(user: &str) -> Result<(u32, u32), Error> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    let uid: u32 = uid
        .parse()
        .map_err(|_| Error::NamedUser(user.to_string()))?;
    let gid: u32 = if gid.is_empty() {
        0
    } else {
        gid.parse()
            .map_err(|_| Error::NamedUser(user.to_string()))?
    };
    Ok((uid, gid))
}

/// The process's argv: the container's command and args over the image's, as the API says.
pub fn argv(container: &Container, image: &ImageConfig) -> Result<Vec<String>, Error> {
    let argv: Vec<String> = match (&container.command, &container.args) {
        (Some(command), Some(args)) => command.iter().chain(args).cloned().collect(),
        (Some(command), None) => command.clone(),
        (None, Some(args)) => image.entrypoint.iter().chain(args).cloned().collect(),
        (None, None) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(Error::NoCommand);
    }
    Ok(argv)
}

fn capabilities(security: Option<&SecurityContext>) -> Vec<String> {
    if security.and_then(|s| s.privileged) == Some(true) {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let normalize = |name: &String| {
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let caps = security.and_then(|s| s.capabilities.as_ref());
    let drop: Vec<String> = caps
        .and_then(|c| c.drop.as_ref())
        .map(|d| d.iter().map(normalize).collect())
        .unwrap_or_default();
    let drop_all = drop.iter().any(|d| d == "CAP_ALL");
    let mut set: Vec<String> = if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for add in caps.and_then(|c| c.add.as_ref()).into_iter().flatten() {
        let add = normalize(add);
        if add == "CAP_ALL" {
            return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        }
        if !set.contains(&add) {
            set.push(add);
        }
    }
    set
}

/// The container's resources as cgroup settings.
fn resources(container: &Container) -> Value {
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let millis = |quantity| Some(placement::resources::milli(quantity)).filter(|m| *m > 0);
    let bytes = |quantity| Some(placement::resources::milli(quantity) / 1000).filter(|b| *b > 0);
    let cpu_request = requests
        .and_then(|r| r.get("cpu"))
        .or(limits.and_then(|l| l.get("cpu")))
        .and_then(millis);
    // The kubelet's conversion: 1024 shares per CPU, at least 2.
    let shares = cpu_request.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2);
    let mut cpu = json!({"shares": shares});
    if let Some(limit) = limits.and_then(|l| l.get("cpu")).and_then(millis) {
        let period = 100_000i64;
        cpu["quota"] = json!((limit * period / 1000).max(1000));
        cpu["period"] = json!(period);
    }
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "cpu": cpu,
    });
    if let Some(limit) = limits.and_then(|l| l.get("memory")).and_then(bytes) {
        resources["memory"] = json!({"limit": limit});
    }
    resources
}

/// The OCI runtime spec for `inputs`.
pub fn build(inputs: &Inputs) -> Result<Value, Error> {
    let args = argv(inputs.container, inputs.image)?;
    let (uid, gid, groups) = user(inputs)?;
    let security = inputs.container.security_context.as_ref();
    let privileged = security.and_then(|s| s.privileged) == Some(true);
    let caps = capabilities(security);
    let no_new_privileges = !privileged
        && security.and_then(|s| s.allow_privilege_escalation) != Some(true)
        && !caps.iter().any(|c| c == "CAP_SYS_ADMIN");

    let mut env: Vec<String> = inputs.image.env.clone();
    for (name, value) in &inputs.env {
        let prefix = format!("{name}=");
        env.retain(|existing| !existing.starts_with(&prefix));
        env.push(format!("{name}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let cwd = inputs
        .container
        .working_dir
        .clone()
        .filter(|dir| !dir.is_empty())
        .or_else(|| Some(inputs.image.working_dir.clone()).filter(|dir| !dir.is_empty()))
        .unwrap_or_else(|| "/".to_string());

    let hostname = pod_hostname(inputs.pod);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
    ];
    for mount in &inputs.mounts {
        mounts.push(json!({
            "destination": mount.destination,
            "type": "bind",
            "source": mount.source,
            "options": ["rbind", "rprivate", if mount.read_only { "ro" } else { "rw" }],
        }));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if let Some(path) = &inputs.netns {
        namespaces.push(json!({"type": "network", "path": path}));
    }
    let host_network = inputs.netns.is_none();

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources(inputs.container),
        "cgroupsPath": inputs.cgroup,
    });
    if !privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"
        ]);
        linux["readonlyPaths"] = json!([
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]);
    }
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "noNewPrivileges": no_new_privileges,
            "oomScoreAdj": 1000 - 2,
        },
        "root": {
            "path": "rootfs",
            "readonly": security.and_then(|s| s.read_only_root_filesystem) == Some(true),
        },
        "hostname": if host_network { Value::Null } else { json!(hostname) },
        "mounts": mounts,
        "linux": linux,
    }))
}

/// The pod's hostname: `spec.hostname` if set, else its name cut to a DNS label.
pub fn pod_hostname(pod: &Pod) -> String {
    let spec_hostname = pod.spec.as_ref().and_then(|spec| spec.hostname.clone());
    let name = spec_hostname.unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Capabilities;

    fn image() -> ImageConfig {
        ImageConfig {
            name: "docker.io/library/busybox:1.35".into(),
            id: "sha256:c".into(),
            chain_id: "sha256:l".into(),
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            working_dir: String::new(),
            user: String::new(),
        }
    }

    fn pod(container: Container) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [container]},
        }))
        .expect("pod")
    }

    #[test]
    fn command_args_env_and_user_follow_the_api() {
        let container: Container = serde_json::from_value(json!({
            "name": "c", "args": ["-c", "echo hi"],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000,
                "capabilities": {"drop": ["NET_RAW"], "add": ["NET_ADMIN"]}},
        }))
        .expect("container");
        let mut img = image();
        img.entrypoint = vec!["/bin/sh".into()];
        let pod = pod(container.clone());
        let inputs = Inputs {
            pod: &pod,
            container: &container,
            image: &img,
            env: vec![("A".into(), "pod".into()), ("B".into(), "b".into())],
            netns: Some("/run/ns/u1".into()),
            cgroup: "/basalt/podu1/c".into(),
            mounts: vec![],
        };
        let spec = build(&inputs).expect("spec");
        assert_eq!(spec["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(spec["process"]["env"], json!(["PATH=/bin", "A=pod", "B=b"]));
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        let caps = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert!(caps.contains(&json!("CAP_NET_ADMIN")));
        assert!(!caps.contains(&json!("CAP_NET_RAW")));
        assert_eq!(spec["hostname"], "web");
        assert_eq!(spec["linux"]["namespaces"][4]["path"], "/run/ns/u1");
    }

    #[test]
    fn run_as_non_root_refuses_a_root_image() {
        let container = Container {
            name: "c".into(),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pod(container.clone());
        let img = image();
        let inputs = Inputs {
            pod: &pod,
            container: &container,
            image: &img,
            env: vec![],
            netns: None,
            cgroup: String::new(),
            mounts: vec![],
        };
        assert_eq!(build(&inputs).expect_err("root"), Error::RunsAsRoot);
    }

    #[test]
    fn limits_become_cgroup_settings() {
        let container: Container = serde_json::from_value(json!({
            "name": "c",
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
        }))
        .expect("container");
        let resources = resources(&container);
        assert_eq!(resources["cpu"]["shares"], 256);
        assert_eq!(resources["cpu"]["quota"], 50_000);
        assert_eq!(resources["memory"]["limit"], 64 * 1024 * 1024);
    }
}
