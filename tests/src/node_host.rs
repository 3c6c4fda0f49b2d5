//! The host side of a kubelet end-to-end test: a private network and mount namespace for the
//! test, a private containerd (with Debian's runc) inside it, a busybox image to import, and
//! removal of the cgroups runc makes.
//!
//! It owns what a test starts through it: the namespaces [`isolate`] makes for the calling
//! thread, a [`Containerd`]'s process, shims, tasks, mounts and directory, and the cgroup
//! subtree of a [`TestCgroup`]. It does not own the kubelet, the API server or their files
//! (the test's other helpers do), nor anything of the machine's: it never touches the
//! machine's containerd (if one runs), its network or its mounts.
//!
//! Cgroups are the one thing a namespace does not contain: runc creates each container's
//! cgroup at its cgroupsPath in every v1 hierarchy and in the cgroup2 one, on the machine,
//! so tests put their pods under a [`TestCgroup`] and remove it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;
use sha2::{Digest, Sha256};

/// The name [`busybox_image`]'s archive gives its image.
pub const BUSYBOX: &str = "docker.io/library/busybox:1.35";

/// Where Debian's `busybox-static` puts its one binary.
const BUSYBOX_BINARY: &str = "/bin/busybox";

thread_local! {
    /// Namespaces belong to a thread, not to the process: only the thread that called
    /// [`isolate`] (and what it spawns) is isolated.
    static ISOLATED: Cell<bool> = const { Cell::new(false) };
}

/// Moves the calling thread into a network and mount namespace of its own. Call it first in a
/// test, on the test's own thread, before spawning anything: every process (and thread) started
/// from this thread afterwards — API server, kubelet, containerd, its shims, kubectl — lives in
/// these namespaces, and when they have all exited the namespaces and every mount in them are
/// gone, also when the test panics or is killed.
///
/// Why: the machine's root network namespace has an external interface and ip_forward=0, so
/// a kubelet that sets up pod networking (veths, routes, forwarding) must never run there; and
/// containerd, its shims and runc mount overlays and write sockets and state under fixed paths
/// (`/run/containerd/{s,runc,fifo}`, whatever the config says), so each test gets a fresh
/// tmpfs at `/run`, seen only inside its mount namespace.
///
/// unshare(CLONE_NEWNS) works from a multithreaded process (libtest runs each test on a thread
/// of its own): the kernel unshares the thread's filesystem context (cwd, root) with it, unlike
/// CLONE_NEWUSER, which needs a single-threaded process. Two consequences: threads that existed
/// before the call stay in the machine's namespaces, and `/proc/self` shows the main thread's
/// view, so this module reads `/proc/thread-self`. `/sys` still shows the machine's network
/// devices (sysfs follows the namespace it was mounted in); ask netlink (`ip`) instead.
pub fn isolate() {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .expect("unshare(CLONE_NEWNET | CLONE_NEWNS) (tests that run containers need root)");
    // The new namespace starts as a copy whose mounts still share propagation with the
    // machine's; private, no mount made here reaches the machine.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("making / recursively private");
    // /run is a plain directory on this machine's disk, not a tmpfs: without this, sockets and
    // runc state of killed shims would outlive the test there.
    nix::mount::mount(
        Some("tmpfs"),
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755"),
    )
    .expect("mounting a private tmpfs on /run");
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("running ip");
    assert!(status.success(), "ip link set lo up failed");
    ISOLATED.with(|isolated| isolated.set(true));
}

/// A containerd of the test's own, with its root, state, sockets and plugin directories in a
/// fresh temporary directory. The CRI plugin is off: Basalt's kubelet uses containerd's native
/// API. Dropping it kills its tasks, shims and itself, unmounts what they left mounted and
/// removes the directory; drop it on the thread that started it (the mounts are in that
/// thread's namespace), as a test's locals are.
pub struct Containerd {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Containerd {
    /// Starts containerd in a temporary directory named `basalt-containerd-<dir_prefix>…` and
    /// waits until it answers. [`isolate`] must have been called on this thread.
    pub fn start(dir_prefix: &str) -> Containerd {
        assert!(
            ISOLATED.with(Cell::get),
            "call node_host::isolate() on this thread before starting containerd"
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("basalt-containerd-{dir_prefix}"))
            .tempdir()
            .expect("temp dir")
            .keep();
        let socket = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
temp = "{dir}/tmp"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
"#,
            dir = dir.display(),
            socket = socket.display(),
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("writing containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let mut containerd = Containerd { child, dir, socket };

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = containerd.child.try_wait() {
                panic!("containerd exited ({status}):\n{}", containerd.log_tail());
            }
            if containerd.ctr_in(None, &["version"]).status.success() {
                return containerd;
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer within 30 s:\n{}",
                    containerd.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its gRPC socket.
    pub fn address(&self) -> &Path {
        &self.socket
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `ctr` against it in the `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(Some("k8s.io"), args)
    }

    /// Imports an image archive (such as [`busybox_image`]'s) into the `k8s.io` namespace.
    pub fn import(&self, archive: &Path) {
        let archive = archive.to_str().expect("archive path is UTF-8");
        let out = self.ctr(&["images", "import", archive]);
        assert!(
            out.status.success(),
            "ctr images import {archive} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn ctr_in(&self, namespace: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new("ctr");
        command.arg("--address").arg(&self.socket);
        if let Some(namespace) = namespace {
            command.args(["-n", namespace]);
        }
        command.args(args).output().expect("running ctr")
    }

    fn ctr_lines(&self, namespace: Option<&str>, args: &[&str]) -> Vec<String> {
        let out = self.ctr_in(namespace, args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(String::from)
            .collect()
    }

    /// Kills and deletes every task and container, in every containerd namespace, while
    /// containerd can still unmount their root filesystems and runc remove their cgroups.
    fn remove_tasks(&self) {
        for namespace in self.ctr_lines(None, &["namespaces", "ls", "-q"]) {
            let ns = Some(namespace.as_str());
            let tasks = self.ctr_lines(ns, &["tasks", "ls", "-q"]);
            for task in &tasks {
                self.ctr_in(ns, &["tasks", "kill", "--all", "--signal", "SIGKILL", task]);
            }
            for task in &tasks {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.ctr_in(ns, &["tasks", "delete", task]).status.success()
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            for container in self.ctr_lines(ns, &["containers", "ls", "-q"]) {
                self.ctr_in(ns, &["containers", "rm", &container]);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_tasks();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims outlive containerd by design (they are reparented); ours name our socket.
        kill_and_wait(shim_pids(&self.dir));
        // Whatever the shims left mounted (container root filesystems) is in this thread's
        // namespace, which lives as long as the test does.
        remove_dir_with_mounts(&self.dir);
    }
}

/// Unmounts everything mounted under `dir` (deepest first), then removes it.
pub fn remove_dir_with_mounts(dir: &Path) {
    let mut mounts: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|m| m.point)
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in mounts {
        if let Err(e) = nix::mount::umount2(&point, MntFlags::MNT_DETACH) {
            eprintln!("node_host: unmounting {}: {e}", point.display());
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("node_host: removing {}: {e}", dir.display());
    }
}

/// Processes of `containerd-shim-runc-v2` whose command line names a path under `dir` (a
/// [`Containerd`]'s directory: its socket is there, and that path is unique to it).
pub fn shim_pids(dir: &Path) -> Vec<i32> {
    let dir = dir.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
            args.next()
                .is_some_and(|arg0| arg0.ends_with("containerd-shim-runc-v2"))
                && args.any(|arg| arg.contains(dir.as_ref()))
        })
        .collect()
}

/// SIGKILLs `pids` and waits (5 s at most) until they are gone.
fn kill_and_wait(pids: Vec<i32>) {
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && pids.iter().any(|pid| {
            // A killed process that is not yet reaped has an empty command line.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
        })
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount as `/proc/thread-self/mountinfo` lists it.
struct Mount {
    point: PathBuf,
    fstype: String,
}

/// The mounts this thread sees (in its own mount namespace after [`isolate`]).
fn mounts() -> Vec<Mount> {
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("reading mountinfo");
    info.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            // mountinfo escapes spaces and the like (`\040`); no path looked for here has one.
            Some(Mount {
                point: PathBuf::from(before.split(' ').nth(4)?),
                fstype: after.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// The directories of cgroup `path` (such as `/basalt-test-1a2b`) in every cgroup hierarchy
/// where it exists: each v1 controller's and the cgroup2 one (`/sys/fs/cgroup/unified` on a
/// hybrid machine, `/sys/fs/cgroup` on a pure cgroup2 one).
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.point.join(relative))
        .filter(|dir| !relative.is_empty() && dir.is_dir())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Kills every process in cgroup `parent` and below and removes the subtree, in every
/// hierarchy. Containers' cgroups are on the machine, not in a test's namespaces.
pub fn remove_cgroup_tree(parent: &str) {
    let dirs = cgroup_dirs(parent);
    for dir in &dirs {
        // cgroup2's cgroup.kill kills the whole subtree at once, also processes forking
        // meanwhile; v1 hierarchies have no such file, so kill what their cgroup.procs list.
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            let mut pids = Vec::new();
            for cgroup in subtree(dir) {
                let procs =
                    std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|p| p.parse::<i32>().ok()));
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    for dir in &dirs {
        // Deepest first; a cgroup is busy until its killed processes have been reaped.
        for cgroup in subtree(dir).into_iter().rev() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&cgroup) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() > deadline => {
                        eprintln!("node_host: removing cgroup {}: {e}", cgroup.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while let Some(current) = all.get(i).cloned() {
        if let Ok(entries) = std::fs::read_dir(&current) {
            all.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    all
}

/// A cgroup path of the test's own (`/basalt-test-<random>`) to put containers under; on drop
/// its processes are killed and its directories removed in every hierarchy.
pub struct TestCgroup {
    path: String,
}

impl TestCgroup {
    /// A fresh, not yet created, path (runc creates the directories).
    pub fn new() -> TestCgroup {
        TestCgroup {
            path: format!("/basalt-test-{:08x}", rand::rng().random::<u32>()),
        }
    }

    /// The cgroup path, such as `/basalt-test-1a2b3c4d`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        TestCgroup::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// An OCI image archive that `ctr images import` takes, named [`BUSYBOX`]: one layer with
/// Debian's busybox-static, a link per applet in /bin, and /etc/passwd and /etc/group. Built
/// once per busybox binary and kept in the target directory (`target/tmp`), so it costs one
/// build per machine and `cargo clean` removes it.
pub fn busybox_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let busybox = std::fs::read(BUSYBOX_BINARY)
                .expect("reading /bin/busybox (install busybox-static: cargo xtask setup)");
            // Bump the version when the archive's contents change for the same binary.
            let key = hex(&Sha256::new()
                .chain_update(b"basalt busybox image v1\0")
                .chain_update(&busybox)
                .finalize());
            let dir = target_tmp_dir();
            let path = dir.join(format!("basalt-busybox-{}.tar", &key[..16]));
            if !path.exists() {
                std::fs::create_dir_all(&dir).expect("creating target/tmp");
                // Tests in other processes may build it at the same time: write, then rename.
                let partial = dir.join(format!("{}.{}", key, std::process::id()));
                std::fs::write(&partial, image_archive(&busybox)).expect("writing busybox image");
                std::fs::rename(&partial, &path).expect("renaming busybox image");
            }
            path
        })
        .clone()
}

/// `target/tmp`, found from the test executable (`target/<profile>/deps/<test>`) since
/// `CARGO_TARGET_TMPDIR` is only given to integration tests, not to this library.
fn target_tmp_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut profile_dir = exe.parent().expect("target profile directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target profile directory");
    }
    profile_dir.parent().expect("target directory").join("tmp")
}

/// A file-system tree entry of the image's layer.
enum Entry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(&'static str),
}

fn image_archive(busybox: &[u8]) -> Vec<u8> {
    let list = Command::new(BUSYBOX_BINARY)
        .arg("--list")
        .output()
        .expect("running busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    let mut tree = BTreeMap::new();
    for dir in ["bin", "dev", "etc", "proc", "sys"] {
        tree.insert(dir.to_string(), Entry::Dir(0o755));
    }
    tree.insert("tmp".to_string(), Entry::Dir(0o1777));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            tree.insert(format!("bin/{applet}"), Entry::Symlink("busybox"));
        }
    }
    tree.insert(
        "bin/busybox".to_string(),
        Entry::File(0o755, busybox.to_vec()),
    );
    tree.insert(
        "etc/passwd".to_string(),
        Entry::File(
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
    );
    tree.insert(
        "etc/group".to_string(),
        Entry::File(0o644, b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
    );
    let layer = tar_of(&tree);

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&layer).expect("compressing the layer");
    let layer_gz = gzip.finish().expect("compressing the layer");

    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    }))
    .expect("image config json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer_gz)],
    }))
    .expect("manifest json");
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["platform"] =
        serde_json::json!({"architecture": architecture, "os": "linux"});
    manifest_descriptor["annotations"] = serde_json::json!({
        "io.containerd.image.name": BUSYBOX,
        "org.opencontainers.image.ref.name": "1.35",
    });
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))
    .expect("index json");

    let mut archive = BTreeMap::new();
    archive.insert("blobs".to_string(), Entry::Dir(0o755));
    archive.insert("blobs/sha256".to_string(), Entry::Dir(0o755));
    for blob in [config, manifest, layer_gz] {
        let name = format!("blobs/sha256/{}", hex(&Sha256::digest(&blob)));
        archive.insert(name, Entry::File(0o644, blob));
    }
    archive.insert(
        "oci-layout".to_string(),
        Entry::File(0o644, br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
    );
    archive.insert("index.json".to_string(), Entry::File(0o644, index));
    tar_of(&archive)
}

/// A tar of `tree` in path order, owned by root, every time stamp zero: the same tree gives
/// the same bytes, so the layer's digest is stable.
fn tar_of(tree: &BTreeMap<String, Entry>) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, entry) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let data: &[u8] = match entry {
            Entry::Dir(mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                &[]
            }
            Entry::File(mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                data
            }
            Entry::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_link_name(target).expect("symlink target");
                &[]
            }
        };
        header.set_size(data.len() as u64);
        header.set_path(path).expect("tar path");
        header.set_cksum();
        tar.append(&header, data).expect("appending to tar");
    }
    tar.into_inner().expect("finishing tar")
}

/// An OCI descriptor of `blob`.
fn descriptor(media_type: &str, blob: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest(blob), "size": blob.len()})
}

fn digest(blob: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(blob)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
