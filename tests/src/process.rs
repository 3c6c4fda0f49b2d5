//! One store member as a child process: `basalt-store` or, for comparisons, `etcd`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which server a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Basalt's store.
    Basalt,
    /// Debian's etcd 3.4, the reference.
    Etcd,
}

/// The path of a workspace binary, built on first use unless `BASALT_SKIP_BUILD` is set
/// (`cargo xtask test` builds every binary before running tests).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps/<test>, binaries such as store-bench in
    // target/<profile>/<bin>; either way the workspace binaries are in target/<profile>.
    let mut profile_dir = exe.parent().expect("target profile directory");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target profile directory");
    }
    BUILT.get_or_init(|| {
        if std::env::var_os("BASALT_SKIP_BUILD").is_some() {
            return;
        }
        let release = profile_dir.ends_with("release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        // The same selection as `cargo xtask test`, so both resolve features alike and neither
        // invalidates the other's binaries.
        cargo.args(["build", "--quiet", "--workspace", "--bins"]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("running cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing; run `cargo build --bins`",
        path.display()
    );
    path
}

/// A member's addresses and files.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// Member name.
    pub name: String,
    /// Its loopback IP.
    pub ip: Ipv4Addr,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Whether its URLs are https (the member then needs certificate flags).
    pub tls: bool,
}

impl MemberSpec {
    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `http(s)://ip:client_port`.
    pub fn client_url(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.ip, self.client_port)
    }

    /// `ip:client_port`, the form etcdctl and etcd-client take.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.ip, self.client_port)
    }

    /// `http(s)://ip:peer_port`.
    pub fn peer_url(&self) -> String {
        format!("{}://{}:{}", self.scheme(), self.ip, self.peer_port)
    }
}

/// A running (or stopped) member process. Dropping it kills the process.
pub struct MemberProcess {
    /// Its addresses and files.
    pub spec: MemberSpec,
    /// Which server it is.
    pub server: Server,
    args: Vec<String>,
    child: Option<Child>,
}

impl MemberProcess {
    /// Starts a member with `extra` flags after the address flags.
    pub fn start(server: Server, spec: MemberSpec, extra: Vec<String>) -> MemberProcess {
        let mut member = MemberProcess {
            spec,
            server,
            args: extra,
            child: None,
        };
        member.spawn();
        member
    }

    fn spawn(&mut self) {
        let spec = &self.spec;
        let program = match self.server {
            Server::Basalt => binary("basalt-store"),
            Server::Etcd => PathBuf::from("etcd"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .expect("member log file");
        let mut command = Command::new(program);
        command
            .arg("--name")
            .arg(&spec.name)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--listen-client-urls")
            .arg(spec.client_url())
            .arg("--advertise-client-urls")
            .arg(spec.client_url())
            .arg("--listen-peer-urls")
            .arg(spec.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(spec.peer_url())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        self.child = Some(command.spawn().expect("starting a member"));
    }

    /// Kills the process with SIGKILL (no chance to flush or clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same flags and data directory; `extra` replaces the
    /// extra flags when given (e.g. to join with `--initial-cluster-state existing`).
    pub fn restart(&mut self, extra: Option<Vec<String>>) {
        self.kill();
        if let Some(extra) = extra {
            self.args = extra;
        }
        self.spawn();
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The process ID, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
