//! `store-bench`: Basalt's store and Debian's etcd 3.4 under the same load, side by side.
//!
//! For each cluster size it starts a fresh Basalt cluster and a fresh etcd cluster in turn
//! (alternating, so both see similar machine conditions; each torn down before the next), on
//! loopback addresses of their own, and runs the same phases against each:
//!
//! 1. a short unrecorded warm-up of puts;
//! 2. puts of random values at each concurrency (requests in flight) for `--seconds`;
//! 3. linearizable single-key gets at 256 in flight;
//! 4. watch delivery: 1,000 watchers on one key, a writer putting 200 time-stamped values.
//!
//! Fairness: both servers fsync every commit (etcd by default, Basalt always), keep their
//! default heartbeat and election timeouts and snapshot settings, get the same
//! `--quota-backend-bytes` (large, so etcd does not run out of space), and neither compacts
//! during the run. With several members, connection 0 goes to the leader (so a lone client talks
//! to the leader on both servers) and the rest spread round-robin over the members.
//!
//! `cargo xtask bench store` builds the release binaries and runs this with
//! `--markdown docs/benchmarks.md`, so every run is recorded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use basalt_tests::bench::load::{self, Pool, Request, WatchPlan, Workload};
use basalt_tests::bench::machine::Facts;
use basalt_tests::bench::measure::measure;
use basalt_tests::bench::record;
use basalt_tests::bench::report::{self, RunSummary, TopologyReport, server_name};
use basalt_tests::bench::stats::Phase;
use basalt_tests::process::Server;
use basalt_tests::procfs;
use basalt_tests::{Cluster, ClusterOptions};
use clap::{Parser, ValueEnum};

/// Large enough that etcd's default 2 GiB quota cannot end a run with NOSPACE; given to both.
const QUOTA_BACKEND_BYTES: &str = "8589934592";

#[derive(Parser, Debug)]
#[command(
    name = "store-bench",
    about = "Benchmark Basalt's store against etcd 3.4 side by side"
)]
struct Args {
    /// Seconds each put and get phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of unrecorded puts (16 in flight) before the first phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    nodes: Vec<usize>,
    /// Concurrencies (requests in flight) of the put phases.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 256])]
    concurrency: Vec<usize>,
    /// Concurrency of the linearizable get phase.
    #[arg(long, default_value_t = 256)]
    get_concurrency: usize,
    /// Keys in the key space (`bench/0` … `bench/<keys-1>`).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Watchers in the watch phase.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Puts the watch phase's writer makes.
    #[arg(long, default_value_t = 200)]
    watch_events: usize,
    /// Puts per second in the watch phase.
    #[arg(long, default_value_t = 20.0)]
    watch_rate: f64,
    /// Runs per server and cluster size; the report gives each figure's median.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Client connections the load is spread over (each to one member, round-robin).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Servers to run.
    #[arg(long, value_delimiter = ',', default_values = ["basalt", "etcd"])]
    servers: Vec<ServerArg>,
    /// Directory to create the clusters' data directories in (default: the system temp dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Append the results as a Markdown section to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ServerArg {
    Basalt,
    Etcd,
}

impl From<ServerArg> for Server {
    fn from(s: ServerArg) -> Server {
        match s {
            ServerArg::Basalt => Server::Basalt,
            ServerArg::Etcd => Server::Etcd,
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.value_size >= 8,
        "--value-size must hold an 8-byte timestamp"
    );
    ensure!(
        args.repeat >= 1 && args.seconds >= 1,
        "--repeat and --seconds must be ≥ 1"
    );
    ensure!(
        args.nodes.iter().all(|&n| (1..=9).contains(&n)),
        "--nodes must be between 1 and 9"
    );
    let servers: Vec<Server> = args.servers.iter().map(|&s| s.into()).collect();
    if servers.contains(&Server::Etcd) && !runs("etcd", &["--version"]) {
        bail!("etcd is not installed (cargo xtask setup installs Debian's etcd-server)");
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let facts = Facts::gather(&data_dir);
    // xtask passes the command the user typed; run directly, the command is our own.
    let command = std::env::var("BASALT_BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    eprintln!(
        "{}; {}; {}; {}; data on {}\n{}; basalt-store {}",
        facts.date,
        facts.cpus,
        facts.memory,
        facts.kernel,
        facts.filesystem,
        facts.etcd,
        facts.basalt
    );

    let workload = Workload::new(args.keys, args.value_size);
    let mut reports = Vec::new();
    for &nodes in &args.nodes {
        let mut runs = Vec::new();
        for run in 1..=args.repeat {
            for &server in &servers {
                eprintln!(
                    "--- {} with {nodes} member(s), run {run} of {}",
                    server_name(server),
                    args.repeat
                );
                let summary = run_cluster(server, nodes, &args, &workload, &data_dir)
                    .await
                    .with_context(|| format!("{} with {nodes} member(s)", server_name(server)))?;
                runs.push(summary);
            }
        }
        let median = |server| {
            let of: Vec<RunSummary> = runs
                .iter()
                .filter(|r| r.server == server)
                .cloned()
                .collect();
            RunSummary::median_of(&of)
        };
        let report = TopologyReport::new(
            nodes,
            median(Server::Basalt).as_ref(),
            median(Server::Etcd).as_ref(),
            args.value_size,
            args.repeat,
        );
        println!("\n{}", report.text());
        reports.push(report);
    }

    if let Some(path) = &args.markdown {
        record::append(path, &facts, &command, &plan(&args), &reports)?;
        eprintln!("recorded in {}", path.display());
    }
    Ok(())
}

/// Starts a fresh cluster, runs every phase against it, and tears it down.
async fn run_cluster(
    server: Server,
    nodes: usize,
    args: &Args,
    workload: &Arc<Workload>,
    data_dir: &Path,
) -> Result<RunSummary> {
    let options = match server {
        Server::Basalt => ClusterOptions::basalt(nodes),
        Server::Etcd => ClusterOptions::etcd(nodes),
    }
    .default_timeouts()
    .in_dir(data_dir)
    .with(&["--quota-backend-bytes", QUOTA_BACKEND_BYTES]);
    let mut cluster = Cluster::start(options).await;
    let leader = cluster
        .leader()
        .await
        .context("the cluster has no leader")?;
    // Leader first, so that connection 0 (the only one at concurrency 1) reaches it.
    let mut order: Vec<usize> = (0..nodes).collect();
    order.rotate_left(leader);
    let endpoints: Vec<String> = order
        .iter()
        .map(|&i| cluster.members[i].spec.endpoint())
        .collect();
    let pids = order
        .iter()
        .map(|&i| cluster.members[i].pid().context("a member is not running"))
        .collect::<Result<Vec<u32>>>()?;
    let pool = Pool::connect(&endpoints, args.connections).await?;

    let warmup = Duration::from_secs(args.warmup);
    load::closed_loop(&pool, workload, Request::Put, 16, warmup).await?;

    let mut plan: Vec<Phase> = args.concurrency.iter().map(|&c| Phase::Put(c)).collect();
    plan.push(Phase::Get(args.get_concurrency));
    plan.push(Phase::Watch {
        watchers: args.watchers,
        events: args.watch_events,
    });
    let duration = Duration::from_secs(args.seconds);
    let mut phases = Vec::new();
    for phase in plan {
        let sample = async {
            match phase {
                Phase::Put(c) => {
                    load::closed_loop(&pool, workload, Request::Put, c, duration).await
                }
                Phase::Get(c) => {
                    load::closed_loop(&pool, workload, Request::Get, c, duration).await
                }
                Phase::Watch { watchers, events } => {
                    let watch = WatchPlan {
                        watchers,
                        events,
                        rate: args.watch_rate,
                    };
                    load::watch_delivery(&pool, workload, watch).await
                }
            }
        };
        let figures = measure(&pids, sample)
            .await
            .with_context(|| format!("{}\n{}", phase.label(args.value_size), cluster.logs()))?;
        eprintln!(
            "{:>8} {:<40} {:>13}  p50 {:>9}  p99 {:>9}{}",
            server_name(server),
            phase.label(args.value_size),
            report::throughput(&figures),
            report::ms(figures.p50),
            report::ms(figures.p99),
            if figures.errors > 0 {
                format!("  ({} errors)", figures.errors)
            } else {
                String::new()
            }
        );
        phases.push((phase, figures));
    }
    let peak_rss = pids
        .iter()
        .map(|&pid| procfs::peak_rss(pid))
        .collect::<Result<Vec<u64>>>()?;
    // Dropping the cluster kills the members and removes their data.
    drop(pool);
    drop(cluster);
    Ok(RunSummary {
        server,
        nodes,
        phases,
        peak_rss,
    })
}

/// The run's plan in one line, for the record.
fn plan(args: &Args) -> String {
    format!(
        "{warmup} s warm-up, then {seconds} s per put/get phase; {keys} keys, {size} B values; \
         {connections} client connections; watch: {watchers} watchers, {events} puts at {rate}/s; fresh cluster per server and \
         size, servers alternating; default timeouts, `--quota-backend-bytes \
         {QUOTA_BACKEND_BYTES}` for both, no compaction",
        warmup = args.warmup,
        connections = args.connections,
        seconds = args.seconds,
        keys = report::thousands(args.keys.to_string()),
        size = args.value_size,
        watchers = args.watchers,
        events = args.watch_events,
        rate = args.watch_rate,
    )
}

/// Whether `program args…` runs and succeeds.
fn runs(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}
