//! `scheduler-bench`: basalt-scheduler placing pods on nodes that exist only as API objects.
//!
//! One fresh API server and one scheduler (release builds). `--nodes` nodes are registered
//! Ready with room for every pod; the scheduler starts and takes its lease; then `--pods` pods
//! are created with 64 requests in flight while a watch notes when each is seen bound. Reported:
//! the rate pods were created, the rate they were bound (first to last binding), and the time
//! from each pod's create request being sent to its binding being seen.
//!
//! There is no kube-scheduler on this machine to run beside it, so the figures are compared
//! with the targets. `cargo xtask bench scheduler` builds the release binaries and runs
//! this with `--markdown docs/benchmarks.md`, so every run is recorded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use basalt_tests::bench::apiserver::{self, closed_loop};
use basalt_tests::bench::machine::Facts;
use basalt_tests::bench::record;
use basalt_tests::bench::stats::{Latencies, micros};
use basalt_tests::control_plane::ControlPlane;
use basalt_tests::procfs;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "scheduler-bench",
    about = "Benchmark basalt-scheduler against the issue's targets"
)]
struct Args {
    /// Nodes registered.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods created and scheduled.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Append the results as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const RATE_TARGET: f64 = 1000.0;
const P99_TARGET: Duration = Duration::from_secs(2);

async fn connect(plane: &ControlPlane) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig())?;
    let options = KubeConfigOptions {
        context: Some("admin".into()),
        ..KubeConfigOptions::default()
    };
    Ok(Client::try_from(
        Config::from_custom_kubeconfig(kubeconfig, &options).await?,
    )?)
}

fn node(name: &str) -> Result<Node> {
    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": resources, "allocatable": resources,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
    }))?)
}

fn pod(name: &str) -> Result<Pod> {
    let mut pod = apiserver::pod(name)?;
    if let Some(container) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        container.resources = Some(serde_json::from_value(
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}}),
        )?);
    }
    Ok(pod)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plane = ControlPlane::start();
    let client = connect(&plane).await.context("connecting to the server")?;

    let nodes: Api<Node> = Api::all(client.clone());
    let registered = {
        let nodes = nodes.clone();
        closed_loop(args.nodes, 64, move |i| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .create(&PostParams::default(), &node(&format!("node-{i:04}"))?)
                    .await?;
                Ok(())
            }
        })
        .await
    };
    anyhow::ensure!(
        registered.errors == 0,
        "registering nodes: {:?}",
        registered.first_error
    );

    let scheduler = plane.start_scheduler("scheduler.log", &[]);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(60);
    while leases.get_opt("kube-scheduler").await?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scheduler did not take its lease:\n{}",
            scheduler.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The lease comes before the caches: give the first listing a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Bindings as the watch sees them, by pod name.
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let watch = {
        let bound = bound.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let (Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod))) = event
                else {
                    continue;
                };
                if pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
                    && let Some(name) = pod.metadata.name
                {
                    bound
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
            anyhow::Ok(())
        })
    };

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cpu_before = (
        procfs::usage(scheduler.pid())?,
        procfs::usage(plane.pid())?,
        procfs::own_cpu()?,
    );
    let started = Instant::now();
    let created = {
        let (pods, sent) = (pods.clone(), sent.clone());
        closed_loop(args.pods, 64, move |i| {
            let (pods, sent) = (pods.clone(), sent.clone());
            async move {
                let name = format!("bench-{i:05}");
                let body = pod(&name)?;
                sent.lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(name, Instant::now());
                pods.create(&PostParams::default(), &body).await?;
                Ok(())
            }
        })
        .await
    };
    anyhow::ensure!(
        created.errors == 0,
        "creating pods: {:?}",
        created.first_error
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let count = bound.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len();
        if count >= args.pods {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {count} of {} pods bound in time:\n{}",
            args.pods,
            scheduler.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let wall = started.elapsed();
    let cpu = (
        procfs::usage(scheduler.pid())?.since(&cpu_before.0).cpu,
        procfs::usage(plane.pid())?.since(&cpu_before.1).cpu,
        procfs::own_cpu()?.saturating_sub(cpu_before.2),
    );

    let bound = bound
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let sent = sent
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut delays = Vec::with_capacity(sent.len());
    for (name, at) in &sent {
        if let Some(seen) = bound.get(name) {
            delays.push(micros(seen.saturating_duration_since(*at)));
        }
    }
    let delays = Latencies::new(delays);
    let first = bound.values().min().copied().unwrap_or(started);
    let last = bound.values().max().copied().unwrap_or(started);
    let bind_rate = args.pods as f64 / last.duration_since(first).as_secs_f64().max(1e-9);
    let create_rate = created.rate();
    let p99 = delays.quantile(0.99);
    let peak = procfs::peak_rss(scheduler.pid()).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    let table = format!(
        "| measure | value | target |\n|---|---|---|\n\
         | nodes registered | {} | |\n\
         | pods created (64 in flight) | {:.0}/s | |\n\
         | pods bound, first to last | {bind_rate:.0}/s | ≥ 1,000/s: {} |\n\
         | create sent → binding seen, p50 | {} | |\n\
         | create sent → binding seen, p99 | {} | ≤ 2 s: {} |\n\
         | scheduler peak RSS | {peak:.0} MiB | |\n\
         | CPU over the {:.1} s run: scheduler, API server, this client | {:.1} s, {:.1} s, {:.1} s | |\n",
        args.nodes,
        create_rate,
        verdict(bind_rate >= RATE_TARGET),
        ms(delays.quantile(0.5)),
        ms(p99),
        verdict(p99 <= P99_TARGET),
        wall.as_secs_f64(),
        cpu.0.as_secs_f64(),
        cpu.1.as_secs_f64(),
        cpu.2.as_secs_f64(),
    );
    println!("{table}");
    if let Some(path) = &args.markdown {
        let facts = Facts::gather(&plane.data_dir());
        let setup = format!(
            "basalt-scheduler and basalt-apiserver at {} (release) on the same machine; \
             {} nodes registered as API objects (no kubelets), {} pods of 100m cpu",
            facts.basalt, args.nodes, args.pods
        );
        record::append_run(path, &facts, "scheduler", "scheduler-bench", &setup, &table)?;
    }
    Ok(())
}
