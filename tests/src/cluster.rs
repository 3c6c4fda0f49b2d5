//! A cluster of member processes on a loopback subnet of its own (127.a.b.1, 127.a.b.2, …),
//! so that tests running in parallel never share an address.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use rand::Rng;

use crate::pki::Pki;
use crate::process::{MemberProcess, MemberSpec, Server};

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Basalt or etcd.
    pub server: Server,
    /// How many founding members.
    pub members: usize,
    /// Short heartbeat and election timeouts, so failover tests run quickly.
    pub fast: bool,
    /// Extra flags for every member.
    pub extra: Vec<String>,
    /// Where to create the cluster's directory (default: the system's temporary directory),
    /// e.g. to put data on the disk a benchmark should measure.
    pub parent_dir: Option<PathBuf>,
    /// Mutual TLS on the client and peer APIs, with a throwaway CA.
    pub tls: bool,
}

impl ClusterOptions {
    /// `members` Basalt members with fast timeouts.
    pub fn basalt(members: usize) -> ClusterOptions {
        ClusterOptions {
            server: Server::Basalt,
            members,
            fast: true,
            extra: Vec::new(),
            parent_dir: None,
            tls: false,
        }
    }

    /// `members` etcd members with fast timeouts.
    pub fn etcd(members: usize) -> ClusterOptions {
        ClusterOptions {
            server: Server::Etcd,
            ..ClusterOptions::basalt(members)
        }
    }

    /// Keeps each server's default heartbeat and election timeouts (benchmarks want the
    /// production settings, not the short ones that make failover tests quick).
    pub fn default_timeouts(mut self) -> ClusterOptions {
        self.fast = false;
        self
    }

    /// Creates the cluster's directory under `parent`.
    pub fn in_dir(mut self, parent: impl Into<PathBuf>) -> ClusterOptions {
        self.parent_dir = Some(parent.into());
        self
    }

    /// Turns on mutual TLS.
    pub fn with_tls(mut self) -> ClusterOptions {
        self.tls = true;
        self
    }

    /// Adds flags for every member.
    pub fn with(mut self, flags: &[&str]) -> ClusterOptions {
        self.extra.extend(flags.iter().map(|f| f.to_string()));
        self
    }
}

/// Running members and their directory. Dropping it kills them and deletes everything.
pub struct Cluster {
    /// The members, in the order they were added.
    pub members: Vec<MemberProcess>,
    options: ClusterOptions,
    subnet: (u8, u8),
    token: String,
    /// The certificates of a TLS cluster.
    pub pki: Option<Pki>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the founding members and waits until they have a leader.
    pub async fn start(options: ClusterOptions) -> Cluster {
        let mut rng = rand::rng();
        let subnet = (rng.random_range(1..=254u8), rng.random_range(0..=255u8));
        let mut builder = tempfile::Builder::new();
        builder.prefix("basalt-cluster-");
        let mut dir = match &options.parent_dir {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .expect("cluster directory");
        // Keeping the data and logs lets a failure be examined after the test.
        if std::env::var_os("BASALT_KEEP_CLUSTERS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping the cluster directory {}", dir.path().display());
        }
        let token = format!("test-{}", rng.random::<u32>());
        let pki = options.tls.then(|| {
            let ips: Vec<Ipv4Addr> = (1..=9)
                .map(|n| Ipv4Addr::new(127, subnet.0, subnet.1, n))
                .collect();
            Pki::issue(&dir.path().join("pki"), &ips)
        });
        let mut cluster = Cluster {
            members: Vec::new(),
            options,
            subnet,
            token,
            pki,
            dir,
        };
        let specs: Vec<MemberSpec> = (0..cluster.options.members)
            .map(|i| cluster.spec(i))
            .collect();
        let initial = specs
            .iter()
            .map(|s| format!("{}={}", s.name, s.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for spec in specs {
            let mut flags = cluster.common_flags();
            flags.extend(["--initial-cluster".into(), initial.clone()]);
            flags.extend(["--initial-cluster-state".into(), "new".into()]);
            cluster
                .members
                .push(MemberProcess::start(cluster.options.server, spec, flags));
        }
        cluster.wait_ready(Duration::from_secs(30)).await;
        cluster
    }

    fn spec(&self, i: usize) -> MemberSpec {
        let name = format!("m{i}");
        MemberSpec {
            ip: Ipv4Addr::new(127, self.subnet.0, self.subnet.1, (i + 1) as u8),
            client_port: 2379,
            peer_port: 2380,
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            tls: self.options.tls,
            name,
        }
    }

    fn common_flags(&self) -> Vec<String> {
        let mut flags = vec!["--initial-cluster-token".to_string(), self.token.clone()];
        if self.options.fast {
            let (heartbeat, election) = match self.options.server {
                Server::Basalt => ("50", "300"),
                Server::Etcd => ("50", "500"),
            };
            flags.extend([
                "--heartbeat-interval".into(),
                heartbeat.into(),
                "--election-timeout".into(),
                election.into(),
            ]);
        }
        if let Some(pki) = &self.pki {
            flags.extend(pki.member_flags());
        }
        flags.extend(self.options.extra.iter().cloned());
        flags
    }

    /// How clients reach this cluster (with the client certificate if TLS is on).
    pub fn access(&self) -> Access {
        Access {
            tls: self.pki.as_ref().map(Pki::client_tls),
        }
    }

    /// Runs etcdctl against the running members, with the client certificate if TLS is on.
    pub fn etcdctl(&mut self, args: &[&str]) -> crate::etcdctl::Run {
        let mut all: Vec<String> = self
            .pki
            .as_ref()
            .map(Pki::etcdctl_flags)
            .unwrap_or_default();
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        crate::etcdctl::etcdctl(&self.endpoints(), &all)
    }

    /// Endpoints of members whose process is running.
    pub fn endpoints(&mut self) -> Vec<String> {
        self.members
            .iter_mut()
            .filter_map(|m| m.is_running().then(|| m.spec.endpoint()))
            .collect()
    }

    /// All members' endpoints, running or not.
    pub fn all_endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.spec.endpoint()).collect()
    }

    /// A client balancing over the running members.
    pub async fn client(&mut self) -> Client {
        let endpoints = self.endpoints();
        self.access().connect(&endpoints).await
    }

    /// A client talking to member `i` only.
    pub async fn client_to(&self, i: usize) -> Client {
        self.access()
            .connect(&[self.members[i].spec.endpoint()])
            .await
    }

    /// Panics unless every running member holds the same keys and history: each member's
    /// `HashKV` at one revision (after a linearizable read, so each has applied up to it) must
    /// match. Replicas that applied different entries at the same log positions differ here even
    /// when no client happened to read the difference.
    pub async fn assert_members_agree(&mut self) {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].is_running())
            .collect();
        let Some(&first) = running.first() else {
            panic!("no member is running");
        };
        let revision = self
            .client_to(first)
            .await
            .get("any key: only the header's revision is used", None)
            .await
            .expect("reading the current revision")
            .header()
            .map(|h| h.revision())
            .expect("response header");
        let mut hashes = Vec::new();
        for &i in &running {
            let hash = self
                .client_to(i)
                .await
                .hash_kv(revision)
                .await
                .unwrap_or_else(|e| panic!("hashkv at revision {revision} on m{i}: {e}"));
            hashes.push((self.members[i].spec.name.clone(), hash.hash()));
        }
        assert!(
            hashes.windows(2).all(|w| w[0].1 == w[1].1),
            "members disagree on their contents at revision {revision}: {hashes:?}\n{}",
            self.logs()
        );
    }

    /// The index of the member that leads, as the running members report it.
    pub async fn leader(&mut self) -> Option<usize> {
        for i in 0..self.members.len() {
            if !self.members[i].is_running() {
                continue;
            }
            let Ok(mut client) = self
                .access()
                .try_connect(&[self.members[i].spec.endpoint()])
                .await
            else {
                continue;
            };
            if let Ok(status) = client.status().await {
                if status.leader() == 0 {
                    continue;
                }
                let Some(header) = status.header() else {
                    continue;
                };
                if status.leader() == header.member_id() {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits until every running member knows a leader and serves a linearizable read.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        'retry: while Instant::now() < deadline {
            for i in 0..self.members.len() {
                if !self.members[i].is_running() {
                    continue;
                }
                let Ok(mut client) = self
                    .access()
                    .try_connect(&[self.members[i].spec.endpoint()])
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'retry;
                };
                let ready = matches!(client.status().await, Ok(s) if s.leader() != 0)
                    && client.get("ready-probe", None).await.is_ok();
                if !ready {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'retry;
                }
            }
            return;
        }
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("--- {}:\n{}", m.spec.name, m.log_tail(30)))
            .collect();
        panic!("cluster not ready within {timeout:?}\n{}", logs.join("\n"));
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Restarts member `i` on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.members[i].restart(None);
    }

    /// Prepares the next member (not started): its spec, for `member add`.
    pub fn next_spec(&self) -> MemberSpec {
        self.spec(self.members.len())
    }

    /// Starts a member that `member add` already added, joining the running cluster.
    pub fn join(&mut self, spec: MemberSpec) -> usize {
        let mut flags = self.common_flags();
        flags.extend(["--initial-cluster-state".into(), "existing".into()]);
        if self.options.server == Server::Etcd {
            // etcd needs the whole membership to join; Basalt learns it from the leader.
            let mut initial: Vec<String> = self
                .members
                .iter()
                .map(|m| format!("{}={}", m.spec.name, m.spec.peer_url()))
                .collect();
            initial.push(format!("{}={}", spec.name, spec.peer_url()));
            flags.extend(["--initial-cluster".into(), initial.join(",")]);
        }
        self.members
            .push(MemberProcess::start(self.options.server, spec, flags));
        self.members.len() - 1
    }

    /// The cluster's directory (member data and logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Every member's recent log lines, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {}:\n{}", m.spec.name, m.log_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How clients reach a cluster: plain, or with a TLS client identity.
#[derive(Clone, Default)]
pub struct Access {
    tls: Option<etcd_client::TlsOptions>,
}

impl Access {
    /// Connects, retrying while the members start.
    pub async fn connect(&self, endpoints: &[String]) -> Client {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.try_connect(endpoints).await {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot connect to {endpoints:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// One connection attempt with short timeouts.
    pub async fn try_connect(&self, endpoints: &[String]) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        let endpoints: Vec<String> = match &self.tls {
            Some(tls) => {
                options = options.with_tls(tls.clone());
                endpoints.iter().map(|e| format!("https://{e}")).collect()
            }
            None => endpoints.to_vec(),
        };
        Client::connect(endpoints, Some(options)).await
    }
}

/// Connects to endpoints, retrying while they start.
pub async fn connect(endpoints: &[String]) -> Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_connect(endpoints).await {
            Ok(client) => return client,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {endpoints:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One connection attempt with short timeouts.
pub async fn try_connect(endpoints: &[String]) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    Client::connect(endpoints, Some(options)).await
}
