//! `basalt-kubelet`: the node agent.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use kubelet::pods::{self, Dns};
use kubelet::runtime::Runtime;
use kubelet::{node, server};

/// Basalt's kubelet.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The kubeconfig holding this node's client credentials.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The Node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP, which pods' traffic and other nodes' routes use.
    #[arg(long)]
    node_ip: Ipv4Addr,
    /// containerd's socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_address: PathBuf,
    /// The containerd namespace the kubelet's containers live in.
    #[arg(long, default_value = "k8s.io")]
    containerd_namespace: String,
    /// The kubelet's state: pod network namespaces, IPAM, pods' files and volumes.
    #[arg(long, default_value = "/var/lib/basalt/kubelet")]
    root_dir: PathBuf,
    /// Where container logs are written.
    #[arg(long, default_value = "/var/log/pods")]
    pod_log_dir: PathBuf,
    /// The cgroup every pod lives under.
    #[arg(long, default_value = "/kubepods")]
    cgroup_parent: String,
    /// The cluster DNS Service's address, written into pods' resolv.conf.
    #[arg(long)]
    cluster_dns: Option<Ipv4Addr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The log writer containerd's shims run per container (default: `basalt-container-log`
    /// beside this program).
    #[arg(long)]
    container_log_program: Option<PathBuf>,
    /// How many pods the node takes.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The kubelet API's serving certificate (its SANs must include the node's address).
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"])]
    tls_cert_file: Option<PathBuf>,
    /// The serving certificate's key.
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// The CA that clients' certificates must chain to (the cluster CA).
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// The kubelet API's port.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Users (client certificate common names) allowed to call the kubelet API.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kube-apiserver-kubelet-client"
    )]
    authorized_users: Vec<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let name = match args.node_name.clone() {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .context("reading the host name")?
            .to_string_lossy()
            .to_lowercase(),
    };
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the API client")?;
    tracing::info!(node = %name, containerd = %args.containerd_address.display(), "starting");
    let runtime = Runtime::connect(&args.containerd_address, &args.containerd_namespace).await?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("creating {}", args.root_dir.display()))?;

    if let (Some(cert), Some(key), Some(ca)) = (
        &args.tls_cert_file,
        &args.tls_private_key_file,
        &args.client_ca_file,
    ) {
        let tls = server::tls_config(cert, key, ca)?;
        // FIFOs of execs a previous run left behind lead nowhere now.
        let fifo_dir = args.root_dir.join("exec");
        let _ = std::fs::remove_dir_all(&fifo_dir);
        std::fs::create_dir_all(&fifo_dir)
            .with_context(|| format!("creating {}", fifo_dir.display()))?;
        let stats = server::stats::Stats::new(runtime.clone(), name.clone(), args.root_dir.clone());
        tokio::spawn(Arc::clone(&stats).sample());
        let api = Arc::new(server::Server::new(
            runtime.clone(),
            args.authorized_users.clone(),
            fifo_dir,
            stats,
        ));
        let address = std::net::SocketAddr::from((args.node_ip, args.port));
        tokio::spawn(async move {
            if let Err(error) = api.serve(address, tls).await {
                tracing::error!(%error, "the kubelet API stopped");
            }
        });
    } else {
        tracing::warn!("no --tls-cert-file: the kubelet API (logs for kubectl) is not served");
    }

    let facts = node::Facts {
        name: name.clone(),
        address: args.node_ip,
        runtime_version: runtime.version().await?,
        max_pods: args.max_pods,
        port: args.port,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    node::register(&nodes, &facts, &args.root_dir).await?;
    tracing::info!(node = %name, "registered");
    let pod_cidr = node::pod_cidr(&nodes, &name).await?;
    tracing::info!(node = %name, %pod_cidr, "podCIDR assigned");
    let network = podnet::PodNetwork::open(&args.root_dir, pod_cidr).await?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let root_dir = args.root_dir.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(node::RENEW_EVERY);
        loop {
            tick.tick().await;
            if let Err(error) = node::renew(&leases, &facts.name).await {
                tracing::warn!(error = format!("{error:#}"), "lease renewal failed");
            }
            if let Err(error) = node::report(&nodes, &facts, &root_dir).await {
                tracing::warn!(error = format!("{error:#}"), "node status update failed");
            }
        }
    });

    let ctx = Arc::new(pods::Context {
        client: client.clone(),
        runtime,
        network,
        node_name: name.clone(),
        node_ip: args.node_ip.to_string(),
        root_dir: args.root_dir.clone(),
        log_dir: args.pod_log_dir.clone(),
        cgroup_parent: args.cgroup_parent.trim_end_matches('/').to_string(),
        log_program: match &args.container_log_program {
            Some(program) => program.clone(),
            None => std::env::current_exe()
                .context("finding this program's path")?
                .with_file_name("basalt-container-log"),
        },
        dns: Dns {
            server: args.cluster_dns.map(|ip| ip.to_string()),
            domain: args.cluster_domain.clone(),
        },
    });
    tokio::spawn(route_other_nodes(Arc::clone(&ctx)));
    pods::run(ctx).await
}

/// Keeps a route to every other node's podCIDR via its InternalIP (host-gw).
async fn route_other_nodes(ctx: Arc<pods::Context>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Ok(list) = nodes.list(&Default::default()).await else {
            continue;
        };
        let mut wanted = BTreeMap::new();
        for other in list.items {
            if other.metadata.name.as_deref() == Some(ctx.node_name.as_str()) {
                continue;
            }
            let cidr = other
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .and_then(|c| c.parse::<Ipv4Net>().ok());
            let address = other
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
            if let (Some(cidr), Some(address)) = (cidr, address) {
                wanted.insert(cidr, address);
            }
        }
        if let Err(error) = ctx.network.route_nodes(&wanted).await {
            tracing::warn!(%error, "routing other nodes' pods");
        }
    }
}
