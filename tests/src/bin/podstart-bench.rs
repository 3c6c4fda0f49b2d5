//! `podstart-bench`: how fast basalt-kubelet turns a created pod into a running container,
//! beside the floor of `ctr run --rm` of the same image on the same machine.
//!
//! One node as the kubelet tests build it (`kubelet_node`: API server, controller manager,
//! scheduler, a private containerd and basalt-kubelet, all release builds, in a network and
//! mount namespace of their own). First the floor: `ctr run --rm` of busybox `true`, one after
//! another. Then batches of 1, 10 and 50 pods created at once, each pod timed from its create
//! request being sent to a watch seeing it Running (its container's process started); the pods
//! are deleted between batches. Last, 100 pods kept running: the kubelet's CPU and RSS at steady
//! state, and the RSS of the per-container log writers beside it.
//!
//! `cargo xtask bench podstart` builds the release binaries and runs this with `--markdown
//! docs/benchmarks.md`, so every run is recorded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use basalt_tests::bench::apiserver::closed_loop;
use basalt_tests::bench::machine::Facts;
use basalt_tests::bench::record;
use basalt_tests::bench::stats::{Latencies, micros};
use basalt_tests::kubelet_node::KubeletNode;
use basalt_tests::node_host::BUSYBOX;
use basalt_tests::procfs;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "podstart-bench",
    about = "Benchmark basalt-kubelet's pod start against ctr run"
)]
struct Args {
    /// `ctr run --rm` repetitions for the floor.
    #[arg(long, default_value_t = 20)]
    floor_runs: usize,
    /// Rounds of the 1-pod and 10-pod batches (the 50-pod batch runs once).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Pods kept running for the steady-state measurement.
    #[arg(long, default_value_t = 100)]
    steady_pods: usize,
    /// How long the steady state is measured.
    #[arg(long, default_value_t = 30)]
    steady_seconds: u64,
    /// Append the results as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const P50_FACTOR_TARGET: f64 = 1.5;
const P99_TARGET: Duration = Duration::from_secs(1);
const RSS_TARGET: u64 = 40 * 1024 * 1024;

fn pod(name: &str) -> Result<Pod> {
    let image = BUSYBOX.trim_start_matches("docker.io/library/");
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "podstart"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}],
        },
    }))?)
}

async fn connect(node: &KubeletNode) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(node.plane.kubeconfig())?;
    let options = KubeConfigOptions {
        context: Some("admin".into()),
        ..KubeConfigOptions::default()
    };
    Ok(Client::try_from(
        Config::from_custom_kubeconfig(kubeconfig, &options).await?,
    )?)
}

/// When each pod was first seen Running, by name.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

fn watch_running(pods: Api<Pod>) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let recorder = seen.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let (Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod))) = event
            else {
                continue;
            };
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if let (true, Some(name), Ok(mut seen)) = (running, pod.metadata.name, recorder.lock())
            {
                seen.entry(name).or_insert_with(Instant::now);
            }
        }
    });
    (seen, task)
}

/// Creates `count` pods at once and returns each one's create → Running time.
async fn batch(
    pods: &Api<Pod>,
    seen: &Seen,
    prefix: &str,
    count: usize,
    in_flight: usize,
) -> Result<Vec<u32>> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let created = {
        let (pods, sent, prefix) = (pods.clone(), sent.clone(), prefix.to_string());
        closed_loop(count, in_flight, move |i| {
            let (pods, sent) = (pods.clone(), sent.clone());
            let name = format!("{prefix}-{i:03}");
            async move {
                let body = pod(&name)?;
                sent.lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .insert(name, Instant::now());
                pods.create(&PostParams::default(), &body).await?;
                Ok(())
            }
        })
        .await
    };
    ensure!(
        created.errors == 0,
        "creating pods: {:?}",
        created.first_error
    );
    let sent = sent.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = {
            let seen = seen.lock().map_err(|_| anyhow!("poisoned"))?;
            sent.keys().filter(|name| seen.contains_key(*name)).count()
        };
        if done == count {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "only {done} of {count} pods ran within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().map_err(|_| anyhow!("poisoned"))?;
    Ok(sent
        .iter()
        .filter_map(|(name, at)| {
            seen.get(name)
                .map(|ran| micros(ran.saturating_duration_since(*at)))
        })
        .collect())
}

async fn delete_all(pods: &Api<Pod>) -> Result<()> {
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "pods were not deleted within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The resident memory of the container log writers (one per running container).
fn log_writers_rss() -> (usize, u64) {
    let mut count = 0;
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let program = args.next().unwrap_or_default();
        if program.ends_with(b"basalt-container-log") && args.next() == Some(b"container-log") {
            count += 1;
            total += procfs::rss(pid).unwrap_or(0);
        }
    }
    (count, total)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // The node isolates this thread in namespaces of its own; the runtime's threads, started
    // after, share them, and so reach its API server.
    let node = KubeletNode::start();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(run(args, node))
}

async fn run(args: Args, node: KubeletNode) -> Result<()> {
    let mut floor = Vec::with_capacity(args.floor_runs);
    for run in 0..args.floor_runs {
        let started = Instant::now();
        let out = node
            .containerd()
            .ctr(&["run", "--rm", BUSYBOX, &format!("floor-{run}"), "true"]);
        floor.push(micros(started.elapsed()));
        ensure!(
            out.status.success(),
            "ctr run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let floor = Latencies::new(floor);

    let client = connect(&node).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let (seen, watch) = watch_running(pods.clone());
    let mut results: Vec<(usize, Latencies)> = Vec::new();
    for (count, rounds) in [(1, args.rounds), (10, args.rounds.div_ceil(3)), (50, 1)] {
        let mut samples = Vec::new();
        for round in 0..rounds {
            samples.extend(batch(&pods, &seen, &format!("p{count}-r{round}"), count, count).await?);
            delete_all(&pods).await?;
        }
        results.push((count, Latencies::new(samples)));
    }

    let steady_started = Instant::now();
    batch(&pods, &seen, "steady", args.steady_pods, 16).await?;
    let all_running = steady_started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kubelet = node.kubelet_pid();
    let before = procfs::usage(kubelet)?;
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let cpu = procfs::usage(kubelet)?.since(&before).cpu;
    let window = measured.elapsed();
    let rss = procfs::rss(kubelet)?;
    let (writers, writers_rss) = log_writers_rss();
    watch.abort();
    delete_all(&pods).await?;

    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    let floor_p50 = floor.quantile(0.5);
    let mut table = String::from(
        "| measure | p50 | p99 | vs `ctr run --rm` p50 | target |\n|---|---|---|---|---|\n",
    );
    table.push_str(&format!(
        "| `ctr run --rm` busybox `true` ({} runs, one at a time) | {} | {} | 1.00× | |\n",
        args.floor_runs,
        ms(floor_p50),
        ms(floor.quantile(0.99))
    ));
    for (count, latencies) in &results {
        let p50 = latencies.quantile(0.5);
        let p99 = latencies.quantile(0.99);
        let ratio = p50.as_secs_f64() / floor_p50.as_secs_f64().max(1e-9);
        let mut target = String::new();
        if *count == 1 {
            target = format!(
                "p50 ≤ {P50_FACTOR_TARGET}× floor: {}",
                verdict(ratio <= P50_FACTOR_TARGET)
            );
        }
        if *count == 10 {
            target = format!("p99 ≤ 1 s: {}", verdict(p99 <= P99_TARGET));
        }
        table.push_str(&format!(
            "| {count} pod(s) created at once: create → Running ({} samples) | {} | {} | {ratio:.2}× | {target} |\n",
            latencies.len(),
            ms(p50),
            ms(p99)
        ));
    }
    table.push_str(&format!(
        "\n| steady state, {} pods | value | target |\n|---|---|---|\n\
         | all {} Running after (16 creates in flight) | {} | |\n\
         | kubelet CPU over {:.0} s | {:.1}% of a core | |\n\
         | kubelet RSS | {} | ≤ 40 MB: {} |\n\
         | container log writers ({writers} processes) RSS, total | {} | |\n",
        args.steady_pods,
        args.steady_pods,
        ms(all_running),
        window.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
        mib(rss),
        verdict(rss <= RSS_TARGET),
        mib(writers_rss),
    ));
    println!("{table}");
    if let Some(path) = &args.markdown {
        let facts = Facts::gather(&node.state_dir());
        let setup = format!(
            "basalt-kubelet at {} (release) with Debian's containerd 1.6.20 and runc 1.1.5, \
             the API server, controller manager and scheduler on the same machine; pods run \
             busybox-static `sleep 3600` from a locally imported image",
            facts.basalt
        );
        record::append_run(path, &facts, "podstart", "podstart-bench", &setup, &table)?;
    }
    Ok(())
}
