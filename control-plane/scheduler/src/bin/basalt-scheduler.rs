//! `basalt-scheduler`: Basalt's scheduler, with leader election so only one scheduler of a
//! cluster binds pods at a time. Flags follow kube-scheduler's names.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(name = "basalt-scheduler", about = "Basalt's scheduler")]
struct Args {
    /// The kubeconfig to reach the API server with.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Schedule pods whose spec.schedulerName is this.
    #[arg(long, default_value = scheduler::DEFAULT_SCHEDULER)]
    scheduler_name: String,
    /// Take the `kube-scheduler` Lease in `kube-system` before acting.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, default_value = "info")]
    log_level: String,
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
    let work = scheduler::run(client.clone(), &args.scheduler_name);
    if !args.leader_elect {
        return work.await.context("scheduler stopped");
    }
    let elector = leader_election::Elector::new(
        client,
        leader_election::Config::control_plane("kube-scheduler", leader_election::identity()),
    )?;
    elector.run(work).await?.context("scheduler stopped")
}
