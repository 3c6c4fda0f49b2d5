//! `apiserver-bench`: basalt-apiserver under the loads the issue sets targets for.
//!
//! One fresh server (release build) on a loopback address of its own; the `kube` crate as the
//! client, as controllers use it. Phases, in order:
//!
//! 1. pod creates with 1 and 64 requests in flight;
//! 2. pod gets with 1 and 64 in flight;
//! 3. the store filled to `--pods` pods (unmeasured), then `--lists` unpaged lists of every pod;
//! 4. one write fanned out: `--watchers` watches on a namespace, `--events` pods created there
//!    one at a time, each delivery timed from the create being sent to the event line being
//!    read (watchers read raw lines: decoding typed Pods would measure this client);
//! 5. the server's peak resident memory (VmHWM) with every pod stored.
//!
//! There is no kube-apiserver on this machine to run beside it, so the figures are compared
//! with the targets. `cargo xtask bench apiserver` builds the release binaries and
//! runs this with `--markdown docs/benchmarks.md`, so every run is recorded.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use basalt_tests::bench::apiserver::{self, Outcome};
use basalt_tests::bench::machine::Facts;
use basalt_tests::bench::record;
use basalt_tests::bench::stats::median;
use basalt_tests::control_plane::ControlPlane;
use basalt_tests::procfs;
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

#[derive(Parser, Debug)]
#[command(
    name = "apiserver-bench",
    about = "Benchmark basalt-apiserver against the issue's targets"
)]
struct Args {
    /// Creates (and gets) in each of the create and get phases.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Requests in flight in the create and get phases.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64])]
    concurrency: Vec<usize>,
    /// Pods stored before the list and memory phases.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Full lists of every pod.
    #[arg(long, default_value_t = 5)]
    lists: usize,
    /// Watchers in the fan-out phase.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Writes in the fan-out phase.
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Append the results as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// The targets.
const CREATE_P99_AT_64: Duration = Duration::from_millis(20);
const LIST_10K: Duration = Duration::from_millis(300);
const WATCH_P99: Duration = Duration::from_millis(10);
const RSS_10K: u64 = 200 * 1024 * 1024;

async fn connect(plane: &ControlPlane) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig())?;
    let options = KubeConfigOptions {
        context: Some("admin".into()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    Ok(Client::try_from(config)?)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "MISSES" }
}

fn row(rows: &mut Vec<String>, label: &str, outcome: &Outcome, target: &str) {
    let errors = match &outcome.first_error {
        Some(first) => format!("{} ({first})", outcome.errors),
        None => "0".into(),
    };
    rows.push(format!(
        "| {label} | {:.0}/s | {} | {} | {errors} | {target} |",
        outcome.rate(),
        ms(outcome.latencies.quantile(0.5)),
        ms(outcome.latencies.quantile(0.99)),
    ));
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plane = ControlPlane::start();
    let client = connect(&plane).await.context("connecting to the server")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut rows = Vec::new();
    let mut stored = 0;

    for &in_flight in &args.concurrency {
        let prefix = format!("create-{in_flight}");
        let outcome = apiserver::create_pods(&pods, &prefix, args.requests, in_flight).await;
        stored += outcome.latencies.len();
        let target = if in_flight == 64 {
            let p99 = outcome.latencies.quantile(0.99);
            format!(
                "p99 ≤ 20 ms: {}",
                verdict(p99 <= CREATE_P99_AT_64 && outcome.errors == 0)
            )
        } else {
            String::new()
        };
        row(
            &mut rows,
            &format!("pod create, {in_flight} in flight"),
            &outcome,
            &target,
        );
    }
    // The pods of the first create phase are read back.
    let first = args.concurrency.first().copied().unwrap_or(1);
    let readable = args.requests.min(stored).max(1);
    for &in_flight in &args.concurrency {
        let api = pods.clone();
        let outcome = apiserver::closed_loop(args.requests, in_flight, move |i| {
            let (api, name) = (api.clone(), format!("create-{first}-{}", i % readable));
            async move {
                api.get(&name).await?;
                Ok(())
            }
        })
        .await;
        row(
            &mut rows,
            &format!("pod get, {in_flight} in flight"),
            &outcome,
            "",
        );
    }

    let fill = args.pods.saturating_sub(stored);
    let filled = apiserver::create_pods(&pods, "fill", fill, 64).await;
    anyhow::ensure!(
        filled.errors == 0,
        "filling the store: {:?}",
        filled.first_error
    );
    let mut lists = Vec::new();
    let (mut items, mut bytes) = (0, 0);
    for _ in 0..args.lists {
        let (took, count, size) = apiserver::list_all(&client).await?;
        lists.push(took.as_secs_f64());
        (items, bytes) = (count, size);
    }
    let list_median = Duration::from_secs_f64(median(lists.clone()));
    let list_max = Duration::from_secs_f64(lists.iter().copied().fold(0.0, f64::max));

    apiserver::namespace(&client, "fanout").await?;
    let fanned = apiserver::fan_out(
        &client,
        "fanout",
        args.watchers,
        args.events,
        Duration::from_millis(50),
    )
    .await?;
    let delivery_p99 = fanned.latencies.quantile(0.99);
    row(
        &mut rows,
        &format!(
            "watch delivery, {} watchers × {} writes",
            args.watchers, args.events
        ),
        &fanned,
        &format!(
            "p99 ≤ 10 ms: {}",
            verdict(delivery_p99 <= WATCH_P99 && fanned.errors == 0)
        ),
    );
    let peak = procfs::peak_rss(plane.pid()).unwrap_or(0);

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut table =
        String::from("| phase | rate | p50 | p99 | errors | target |\n|---|---|---|---|---|---|\n");
    for r in &rows {
        table += r;
        table += "\n";
    }
    table += &format!(
        "| list of {items} pods ({:.1} MiB), median of {} | | {} | max {} | 0 | ≤ 300 ms: {} |\n",
        mib(bytes as u64),
        lists.len(),
        ms(list_median),
        ms(list_max),
        verdict(list_median <= LIST_10K && items >= args.pods),
    );
    table += &format!(
        "| peak RSS with {items} pods stored | | {:.0} MiB | | | ≤ 200 MiB: {} |\n",
        mib(peak),
        verdict(peak <= RSS_10K),
    );
    println!("{table}");

    if let Some(path) = &args.markdown {
        let facts = Facts::gather(&plane.data_dir());
        let setup = format!(
            "server: basalt-apiserver at {} (release), one in-process store member; \
             client: the kube crate, one connection pool",
            facts.basalt
        );
        record::append_run(
            path,
            &facts,
            "API server",
            "apiserver-bench",
            &setup,
            &table,
        )?;
    }
    Ok(())
}
