//! `basalt-controller-manager`: Basalt's controllers, with leader election so only one
//! manager of a cluster acts at a time. Flags follow kube-controller-manager's names.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "basalt-controller-manager",
    about = "Basalt's controller manager"
)]
struct Args {
    /// The kubeconfig to reach the API server with.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The cluster CA (PEM), published in every namespace as the `kube-root-ca.crt` ConfigMap.
    #[arg(long)]
    root_ca_file: Option<PathBuf>,
    /// The controllers to run, comma separated (`*` for all).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Take the `kube-controller-manager` Lease in `kube-system` before acting.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a term lasts without renewal before a standby takes over.
    #[arg(long, default_value = "9s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often to try to take or renew the lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// How often the node lifecycle controller looks at every node.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: Duration,
    /// How long a node's kubelet may be silent before its node is NotReady (Unknown).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: Duration,
    /// How long a new node's kubelet has to report for the first time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    node_startup_grace_period: Duration,
    /// Nodes per second, per zone, that may get a NoExecute taint (their pods evicted).
    #[arg(long, default_value_t = 0.1, value_parser = parse_rate)]
    node_eviction_rate: f64,
    /// The same rate in a zone where many nodes are down.
    #[arg(long, default_value_t = 0.01, value_parser = parse_rate)]
    secondary_node_eviction_rate: f64,
    /// The share of down nodes (0–1] at which a zone counts as partially disrupted.
    #[arg(long, default_value_t = 0.55, value_parser = parse_share)]
    unhealthy_zone_threshold: f64,
    /// A zone of this many nodes or fewer stops evicting when partially disrupted.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// Give every node a pod CIDR out of `--cluster-cidr`.
    #[arg(long, requires = "cluster_cidr")]
    allocate_node_cidrs: bool,
    /// The range pod addresses come from (IPv4).
    #[arg(long)]
    cluster_cidr: Option<ipnet::Ipv4Net>,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How many finished pods may exist before the oldest are deleted (0: never).
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// The CA certificate (PEM) the CSR signer issues certificates with.
    #[arg(long, requires = "cluster_signing_key_file")]
    cluster_signing_cert_file: Option<PathBuf>,
    /// The CA's private key (PEM); without both files no certificates are signed.
    #[arg(long, requires = "cluster_signing_cert_file")]
    cluster_signing_key_file: Option<PathBuf>,
    /// The longest a signed certificate lasts.
    #[arg(long, default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: Duration,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 15s"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("{text:?}: unit must be ms, s, m or h")),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate (a number ≥ 0)")),
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 1.0 => Ok(share),
        _ => Err(format!("{text:?} must be a number in (0, 1]")),
    }
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
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", args.kubeconfig.display()))?;
    let client = kube::Client::try_from(config).context("building the API client")?;
    let root_ca = args
        .root_ca_file
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        })
        .transpose()?;
    let signer = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
            };
            let signer = controllers::certificates::sign::Signer::new(
                &read(cert)?,
                &read(key)?,
                args.cluster_signing_duration,
            )
            .map_err(anyhow::Error::msg)
            .context("--cluster-signing-cert-file/--cluster-signing-key-file")?;
            Some(std::sync::Arc::new(signer))
        }
        _ => None,
    };
    let options = controllers::Options {
        signer,
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        root_ca,
        controllers: args.controllers.clone(),
        node_lifecycle: controllers::node_lifecycle::Settings {
            monitor_period: args.node_monitor_period.max(Duration::from_millis(100)),
            grace: controllers::node_lifecycle::health::Grace {
                monitor: args.node_monitor_grace_period,
                startup: args.node_startup_grace_period,
            },
            eviction_rate: args.node_eviction_rate,
            secondary_eviction_rate: args.secondary_node_eviction_rate,
            unhealthy_zone_threshold: args.unhealthy_zone_threshold,
            large_cluster_threshold: args.large_cluster_size_threshold,
        },
        node_cidrs: args
            .cluster_cidr
            .filter(|_| args.allocate_node_cidrs)
            .map(|cidr| (cidr, args.node_cidr_mask_size)),
    };
    let work = controllers::run(client.clone(), options);
    if !args.leader_elect {
        return work.await.context("controllers stopped");
    }
    let identity = leader_election::identity();
    let election = leader_election::Config {
        lease_duration: args.leader_elect_lease_duration,
        renew_deadline: args.leader_elect_renew_deadline,
        retry_period: args.leader_elect_retry_period,
        ..leader_election::Config::control_plane("kube-controller-manager", identity)
    };
    let elector = leader_election::Elector::new(client, election)?;
    elector.run(work).await?.context("controllers stopped")
}
