//! `basalt-store`: one member of Basalt's replicated store, standalone.
//!
//! Flags follow etcd's names so that anyone who has run etcd can run this, and so tests and
//! benchmarks can start one or three members on 127.0.0.x exactly as they would start etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use store_raft::{ClusterState, NodeConfig, StoreNode, Tls};
use store_server::{ApiConfig, Limits};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "basalt-store",
    version,
    about = "A member of Basalt's Raft-replicated store (etcd v3 API)"
)]
struct Args {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where the log, snapshots and metadata live (default: <name>.basalt).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URLs to serve the etcd client API on (comma-separated).
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    listen_client_urls: Vec<String>,
    /// Client URLs to publish in the member list (default: the listen URLs).
    #[arg(long, value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URL to serve the peer protocol on.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    listen_peer_urls: String,
    /// Peer URL other members use to reach this one (default: the listen URL).
    #[arg(long)]
    initial_advertise_peer_urls: Option<String>,
    /// Founding members, `name=peer-url,...` (default: this member alone).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new` to form a cluster, `existing` to join one that already added this member.
    #[arg(long, default_value = "new")]
    initial_cluster_state: String,
    /// Mixed into member IDs so separate clusters do not collide.
    #[arg(long, default_value = "basalt")]
    initial_cluster_token: String,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Raft election timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Log entries applied between snapshots.
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// Log entries kept behind a snapshot for slow followers.
    #[arg(long, default_value_t = 5_000)]
    snapshot_catchup_entries: u64,
    /// Largest request (and value) accepted, in bytes.
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Most operations in one transaction branch.
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Refuse writes once the store holds this many bytes (0: no quota).
    #[arg(long, default_value_t = 8 << 30)]
    quota_backend_bytes: u64,
    /// Refuse writes while the data directory's filesystem has less free space (0: no check).
    #[arg(long, default_value_t = 64 << 20)]
    disk_reserve_bytes: u64,
    /// Compact history older than this many revisions, every five minutes (0: never).
    #[arg(long, default_value_t = 0)]
    auto_compaction_retention: i64,
    /// Interval of progress notifications for watchers that ask for them.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    watch_progress_notify_interval: Duration,
    /// Certificate for the client API (serve https://).
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Private key for the client API certificate.
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// CA that signs client certificates.
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Require clients to present a certificate signed by --trusted-ca-file.
    #[arg(long, requires = "trusted_ca_file")]
    client_cert_auth: bool,
    /// Certificate for the peer protocol; peers then authenticate each other with it (mutual TLS).
    #[arg(long, requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    peer_cert_file: Option<PathBuf>,
    /// Private key for the peer certificate.
    #[arg(long, requires = "peer_cert_file")]
    peer_key_file: Option<PathBuf>,
    /// CA that signs every member's peer certificate.
    #[arg(long, requires = "peer_cert_file")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// The socket address of an `http(s)://ip:port` URL; the scheme must say whether TLS is on.
fn socket_addr(url: &str, flag: &str, tls: bool) -> Result<SocketAddr> {
    let parsed = url::Url::parse(url).with_context(|| format!("--{flag}: {url:?} is not a URL"))?;
    match (parsed.scheme(), tls) {
        ("https", true) | ("http", false) => {}
        (_, true) => bail!("--{flag}: {url:?} must be https:// when a certificate is configured"),
        (_, false) => {
            bail!("--{flag}: {url:?} must be http:// without a certificate (or configure one)")
        }
    }
    let host = parsed
        .host_str()
        .with_context(|| format!("--{flag}: {url:?} has no host"))?;
    let port = parsed
        .port()
        .with_context(|| format!("--{flag}: {url:?} has no port"))?;
    let ip = host
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("--{flag}: {url:?}: listen on an IP address, not a name"))?;
    Ok(SocketAddr::new(ip, port))
}

fn parse_cluster(spec: &str) -> Result<Vec<(String, String)>> {
    spec.split(',')
        .map(|member| {
            let (name, url) = member
                .split_once('=')
                .with_context(|| format!("--initial-cluster: {member:?} is not name=peer-url"))?;
            url::Url::parse(url)
                .with_context(|| format!("--initial-cluster: {url:?} is not a URL"))?;
            Ok((name.to_owned(), url.trim_end_matches('/').to_owned()))
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&args.log_level)),
        )
        .with_writer(std::io::stderr)
        .init();

    let peer_tls = match (
        &args.peer_cert_file,
        &args.peer_key_file,
        &args.peer_trusted_ca_file,
    ) {
        (Some(cert), Some(key), Some(ca)) => {
            Some(Tls::from_files(cert, key, ca).context("peer TLS")?)
        }
        _ => None,
    };
    let client_tls = match (&args.cert_file, &args.key_file) {
        (Some(cert), Some(key)) => {
            let ca = match &args.trusted_ca_file {
                Some(ca) => std::fs::read(ca)
                    .with_context(|| format!("--trusted-ca-file {}", ca.display()))?,
                None => Vec::new(),
            };
            let mut tls = Tls::from_files(cert, key, cert).context("client TLS")?;
            tls.ca = ca;
            Some(tls)
        }
        _ => None,
    };
    let listen_peer = socket_addr(
        &args.listen_peer_urls,
        "listen-peer-urls",
        peer_tls.is_some(),
    )?;
    let advertise_peer = args
        .initial_advertise_peer_urls
        .clone()
        .unwrap_or_else(|| args.listen_peer_urls.clone())
        .trim_end_matches('/')
        .to_owned();
    let client_addrs = args
        .listen_client_urls
        .iter()
        .map(|url| socket_addr(url, "listen-client-urls", client_tls.is_some()))
        .collect::<Result<Vec<_>>>()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.basalt", args.name)));
    let mut config = NodeConfig::new(&args.name, data_dir, listen_peer, &advertise_peer);
    config.advertise_client_urls = if args.advertise_client_urls.is_empty() {
        args.listen_client_urls.clone()
    } else {
        args.advertise_client_urls.clone()
    };
    if let Some(cluster) = &args.initial_cluster {
        config.initial_cluster = parse_cluster(cluster)?;
    }
    config.cluster_state = match args.initial_cluster_state.as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => bail!("--initial-cluster-state: {other:?} is neither new nor existing"),
    };
    config.cluster_token = args.initial_cluster_token.clone();
    config.heartbeat = Duration::from_millis(args.heartbeat_interval);
    config.election_timeout = Duration::from_millis(args.election_timeout);
    config.snapshot_entries = args.snapshot_count;
    config.catch_up_entries = args.snapshot_catchup_entries;
    config.quota_bytes = args.quota_backend_bytes;
    config.disk_reserve_bytes = args.disk_reserve_bytes;
    config.peer_tls = peer_tls;
    if config.cluster_state == ClusterState::New
        && !config
            .initial_cluster
            .iter()
            .any(|(_, url)| *url == advertise_peer)
    {
        bail!("--initial-cluster does not contain this member's peer URL {advertise_peer}");
    }

    let node = StoreNode::start(config)
        .await
        .context("starting the store member")?;
    tracing::info!(
        member = format_args!("{:x}", node.id()),
        name = %args.name,
        peer = %advertise_peer,
        clients = ?args.listen_client_urls,
        "store member started"
    );
    let api = ApiConfig {
        limits: Limits {
            max_request_bytes: args.max_request_bytes,
            max_txn_ops: args.max_txn_ops,
        },
        watch_progress_interval: args.watch_progress_notify_interval,
        tls: client_tls,
        client_cert_auth: args.client_cert_auth,
    };
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for addr in client_addrs {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for clients on {addr}"))?;
        let mut stopped = stop.subscribe();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        servers.push(tokio::spawn(store_server::serve_listener(
            node.clone(),
            listener,
            api.clone(),
            shutdown,
        )));
    }
    if args.auto_compaction_retention > 0 {
        tokio::spawn(auto_compact(node.clone(), args.auto_compaction_retention));
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let fatal = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = terminate.recv() => None,
        reason = node.fatal() => Some(reason),
    };
    if let Some(reason) = fatal {
        // Raft cannot go on after a storage failure; exit so a supervisor restarts the
        // member, which recovers from what is durably on disk.
        tracing::error!("raft stopped on a fatal error: {reason}");
        std::process::exit(2);
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    node.shutdown().await;
    Ok(())
}

/// Compacts history older than `retention` revisions every five minutes, as etcd's revision
/// mode does, when this member leads.
async fn auto_compact(node: StoreNode, retention: i64) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    tick.tick().await;
    loop {
        tick.tick().await;
        let status = node.status();
        if status.leader != node.id() {
            continue;
        }
        let target = status.revision - retention;
        if target > node.shared().state.read().mvcc.compact_revision() {
            match node.propose(store_raft::Op::Compact(target)).await {
                Ok(_) => tracing::info!(revision = target, "auto-compacted"),
                Err(e) => tracing::warn!("auto-compaction to {target} failed: {e}"),
            }
        }
    }
}
