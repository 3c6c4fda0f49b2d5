//! Running one phase while reading the servers' and the load generator's resource use, and
//! turning both into the phase's figures.

use std::future::Future;
use std::time::Instant;

use anyhow::Result;

use crate::bench::load::Sample;
use crate::bench::stats::PhaseFigures;
use crate::procfs::{self, Usage};

/// Runs one phase and adds the servers' and the load generator's resource use to its figures.
pub async fn measure(
    pids: &[u32],
    phase: impl Future<Output = Result<Sample>>,
) -> Result<PhaseFigures> {
    let usage = || {
        pids.iter()
            .map(|&pid| procfs::usage(pid))
            .collect::<Result<Vec<Usage>>>()
    };
    let (before, own_before, busy_before) = (usage()?, procfs::own_cpu()?, procfs::machine_busy()?);
    let started = Instant::now();
    let sample = phase.await?;
    let wall = started.elapsed().as_secs_f64();
    let own = procfs::own_cpu()?.saturating_sub(own_before);
    let busy = procfs::machine_busy()?.saturating_sub(busy_before);
    let after = usage()?;
    let spent: Vec<Usage> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
    let server = Usage::total(&spent);
    let other = busy.saturating_sub(server.cpu + own);
    let mut rss_after = 0;
    for &pid in pids {
        rss_after = rss_after.max(procfs::rss(pid)?);
    }

    let ops = sample.latencies.len() as u64;
    let per_op = |total: f64| if ops > 0 { total / ops as f64 } else { 0.0 };
    Ok(PhaseFigures {
        ops_per_sec: ops as f64 / sample.elapsed.as_secs_f64().max(1e-9),
        p50: sample.latencies.quantile(0.50),
        p99: sample.latencies.quantile(0.99),
        ops,
        errors: sample.errors,
        first_error: sample.first_error,
        expected: sample.expected,
        server_cpu_us_per_op: per_op(server.cpu.as_secs_f64() * 1e6),
        client_cpu_us_per_op: per_op(own.as_secs_f64() * 1e6),
        disk_bytes_per_op: per_op(server.disk_write_bytes as f64),
        server_cores: server.cpu.as_secs_f64() / wall.max(1e-9),
        other_cores: other.as_secs_f64() / wall.max(1e-9),
        rss_after,
    })
}
