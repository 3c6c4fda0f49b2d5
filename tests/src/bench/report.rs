//! Turning the figures of Basalt and etcd runs into side-by-side tables, ratios and target
//! verdicts, as plain text for the terminal and as Markdown for docs/benchmarks.md.

use std::time::Duration;

use crate::bench::stats::{Phase, PhaseFigures, median};
use crate::process::Server;

/// Everything one cluster run (or the median of several) measured.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Which server.
    pub server: Server,
    /// How many members.
    pub nodes: usize,
    /// Each phase's figures, in the order they ran.
    pub phases: Vec<(Phase, PhaseFigures)>,
    /// Each member's peak RSS in bytes.
    pub peak_rss: Vec<u64>,
}

impl RunSummary {
    /// The largest member's peak RSS, in bytes.
    pub fn largest_rss(&self) -> u64 {
        self.peak_rss.iter().copied().max().unwrap_or(0)
    }

    /// Figure by figure medians over runs of the same plan; `None` if there are none.
    pub fn median_of(runs: &[RunSummary]) -> Option<RunSummary> {
        let first = runs.first()?;
        let phases = first
            .phases
            .iter()
            .enumerate()
            .map(|(i, (phase, _))| {
                let figures: Vec<PhaseFigures> = runs
                    .iter()
                    .filter_map(|r| r.phases.get(i))
                    .map(|p| p.1.clone())
                    .collect();
                (*phase, PhaseFigures::median_of(&figures))
            })
            .collect();
        let peak_rss = (0..first.peak_rss.len())
            .map(|m| {
                median(
                    runs.iter()
                        .filter_map(|r| r.peak_rss.get(m))
                        .map(|&b| b as f64)
                        .collect(),
                ) as u64
            })
            .collect();
        Some(RunSummary {
            server: first.server,
            nodes: first.nodes,
            phases,
            peak_rss,
        })
    }

    fn phase(&self, phase: Phase) -> Option<&PhaseFigures> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, f)| f)
    }
}

/// The name a report gives a server.
pub fn server_name(server: Server) -> &'static str {
    match server {
        Server::Basalt => "basalt",
        Server::Etcd => "etcd",
    }
}

/// A table that renders as aligned text or as Markdown.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Aligned columns: the first left-aligned, the figures right-aligned.
    pub fn text(&self) -> String {
        let width = |i: usize| {
            std::iter::once(&self.header)
                .chain(&self.rows)
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.header.len()).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, &w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            padded.join(" | ").trim_end().to_string()
        };
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let mut out = vec![line(&self.header), rule.join("-+-")];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n") + "\n"
    }

    /// A GitHub-flavoured Markdown table.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let align: Vec<String> = (0..self.header.len())
            .map(|i| if i == 0 { "---" } else { "---:" }.to_string())
            .collect();
        let mut out = vec![line(&self.header), line(&align)];
        out.extend(self.rows.iter().map(|r| line(r)));
        out.join("\n") + "\n"
    }
}

/// The comparison for one topology: the main table, notes (RSS, watch completeness, errors),
/// target verdicts, and the table of hints where the time goes.
#[derive(Debug, Clone)]
pub struct TopologyReport {
    title: String,
    main: Table,
    notes: Vec<String>,
    verdicts: Vec<String>,
    costs: Table,
}

/// Throughput target at 256 requests in flight: Basalt at least this many times etcd's.
const THROUGHPUT_TARGET: f64 = 2.0;
/// Memory target: Basalt's peak RSS at most this fraction of etcd's.
const RSS_TARGET: f64 = 0.5;
/// Cores used by other processes above which a phase counts as disturbed.
const DISTURBED_CORES: f64 = 0.25;
/// The concurrency the targets are stated at.
const TARGET_CONCURRENCY: usize = 256;

impl TopologyReport {
    /// Compares `basalt` with `etcd` (either may be missing when only one server ran).
    pub fn new(
        nodes: usize,
        basalt: Option<&RunSummary>,
        etcd: Option<&RunSummary>,
        value_size: usize,
        runs: usize,
    ) -> TopologyReport {
        let plural = if nodes == 1 { "node" } else { "nodes" };
        let title = if runs > 1 {
            format!("{nodes} {plural} (medians of {runs} runs)")
        } else {
            format!("{nodes} {plural}")
        };
        let phases: Vec<Phase> = basalt
            .or(etcd)
            .map(|r| r.phases.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();

        let mut main = Table::new(&[
            "phase",
            "basalt ops/s",
            "p50",
            "p99",
            "etcd ops/s",
            "p50",
            "p99",
            "ops/s ratio",
            "p99 ratio",
        ]);
        let mut costs = Table::new(&[
            "phase",
            "server CPU µs/op basalt",
            "etcd",
            "server cores basalt",
            "etcd",
            "disk B/op basalt",
            "etcd",
            "loadgen CPU µs/op basalt",
            "etcd",
            "other cores basalt",
            "etcd",
            "RSS after basalt",
            "etcd",
        ]);
        let mut notes = Vec::new();
        for &phase in &phases {
            let (b, e) = (
                basalt.and_then(|r| r.phase(phase)),
                etcd.and_then(|r| r.phase(phase)),
            );
            let mut row = vec![phase.label(value_size)];
            for f in [b, e] {
                row.push(f.map_or_else(|| "–".into(), throughput));
                row.push(cell(f, |f| ms(f.p50)));
                row.push(cell(f, |f| ms(f.p99)));
            }
            // A watch phase's rate is the writer's; what counts there is latency and loss.
            let rate = |f: &PhaseFigures| f.expected.is_none().then_some(f.ops_per_sec);
            row.push(ratio(b.and_then(rate), e.and_then(rate)));
            row.push(ratio(
                b.map(|f| f.p99.as_secs_f64()),
                e.map(|f| f.p99.as_secs_f64()),
            ));
            main.row(row);

            let mut row = vec![phase.label(value_size)];
            for show in [
                |f: &PhaseFigures| thousands(format!("{:.0}", f.server_cpu_us_per_op)),
                |f: &PhaseFigures| format!("{:.2}", f.server_cores),
                |f: &PhaseFigures| thousands(format!("{:.0}", f.disk_bytes_per_op)),
                |f: &PhaseFigures| thousands(format!("{:.0}", f.client_cpu_us_per_op)),
                |f: &PhaseFigures| format!("{:.2}", f.other_cores),
                |f: &PhaseFigures| mib(f.rss_after),
            ] {
                row.push(cell(b, show));
                row.push(cell(e, show));
            }
            costs.row(row);

            for (run, f) in [(basalt, b), (etcd, e)] {
                let (Some(run), Some(f)) = (run, f) else {
                    continue;
                };
                let name = server_name(run.server);
                if let Some(expected) = f.expected {
                    let complete = if f.ops >= expected {
                        "every watcher got every event"
                    } else {
                        "EVENTS MISSING"
                    };
                    notes.push(format!(
                        "watch, {name}: {} of {} deliveries ({complete})",
                        thousands(f.ops.to_string()),
                        thousands(expected.to_string())
                    ));
                }
                if f.errors > 0 {
                    notes.push(format!(
                        "{}, {name}: {} failed requests, first: {}",
                        phase.label(value_size),
                        f.errors,
                        f.first_error.as_deref().unwrap_or("?")
                    ));
                }
            }
        }

        let rss = |r: &RunSummary| {
            let members: Vec<String> = r.peak_rss.iter().map(|&b| mib(b)).collect();
            if members.len() > 1 {
                format!(
                    "{} {} (members: {})",
                    server_name(r.server),
                    mib(r.largest_rss()),
                    members.join(", ")
                )
            } else {
                format!("{} {}", server_name(r.server), mib(r.largest_rss()))
            }
        };
        let rss_line: Vec<String> = [basalt, etcd].into_iter().flatten().map(rss).collect();
        let rss_ratio = ratio(
            basalt.map(|r| r.largest_rss() as f64),
            etcd.map(|r| r.largest_rss() as f64),
        );
        notes.insert(
            0,
            format!(
                "peak RSS (VmHWM, largest member): {} → ratio {rss_ratio}",
                rss_line.join("; ")
            ),
        );

        // Other work on the machine takes CPU from the servers and the load generator alike;
        // say so, since it can move every figure.
        let load: Vec<String> = [basalt, etcd]
            .into_iter()
            .flatten()
            .map(|r| {
                let cores: Vec<f64> = r.phases.iter().map(|(_, f)| f.other_cores).collect();
                let mean = cores.iter().sum::<f64>() / cores.len().max(1) as f64;
                format!("{mean:.2} during {}'s phases", server_name(r.server))
            })
            .collect();
        let busiest = [basalt, etcd]
            .into_iter()
            .flatten()
            .flat_map(|r| r.phases.iter().map(|(_, f)| f.other_cores))
            .fold(0.0, f64::max);
        let verdict = if busiest > DISTURBED_CORES {
            "the figures are disturbed by it"
        } else {
            "a quiet machine"
        };
        notes.push(format!(
            "cores other processes kept busy, on average: {} ({verdict})",
            load.join(", ")
        ));

        let verdicts = match (basalt, etcd) {
            (Some(b), Some(e)) => verdicts(b, e),
            _ => Vec::new(),
        };
        TopologyReport {
            title,
            main,
            notes,
            verdicts,
            costs,
        }
    }

    /// For the terminal.
    pub fn text(&self) -> String {
        let mut out = format!("== {} ==\n{}", self.title, self.main.text());
        for line in self.notes.iter().chain(&self.verdicts) {
            out += &format!("{line}\n");
        }
        out += &format!(
            "\nwhere the time goes, {}:\n{}",
            self.title,
            self.costs.text()
        );
        out
    }

    /// For docs/benchmarks.md.
    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n{}\n", self.title, self.main.markdown());
        for line in self.notes.iter().chain(&self.verdicts) {
            out += &format!("- {line}\n");
        }
        out += &format!("\nWhere the time goes:\n\n{}\n", self.costs.markdown());
        out
    }
}

/// The targets, judged at 256 requests in flight.
fn verdicts(basalt: &RunSummary, etcd: &RunSummary) -> Vec<String> {
    let mut out = Vec::new();
    let at = Phase::Put(TARGET_CONCURRENCY);
    let mark = |met: bool| if met { "met" } else { "MISSED" };
    if let (Some(b), Some(e)) = (basalt.phase(at), etcd.phase(at)) {
        let x = b.ops_per_sec / e.ops_per_sec.max(f64::MIN_POSITIVE);
        out.push(format!(
            "target: put throughput at {TARGET_CONCURRENCY} in flight ≥ {THROUGHPUT_TARGET}× etcd's: {x:.2}× — {}",
            mark(x >= THROUGHPUT_TARGET)
        ));
        out.push(format!(
            "target: put p99 at {TARGET_CONCURRENCY} in flight ≤ etcd's: {} vs {} — {}",
            ms(b.p99),
            ms(e.p99),
            mark(b.p99 <= e.p99)
        ));
    }
    let x = basalt.largest_rss() as f64 / (etcd.largest_rss() as f64).max(1.0);
    out.push(format!(
        "target: peak RSS ≤ {RSS_TARGET}× etcd's: {x:.2}× — {}",
        mark(x <= RSS_TARGET)
    ));
    out
}

fn cell(f: Option<&PhaseFigures>, show: impl Fn(&PhaseFigures) -> String) -> String {
    f.map_or_else(|| "–".into(), show)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// The throughput cell: ops/s, or for a watch phase (whose rate the writer sets) whether every
/// event reached every watcher.
pub fn throughput(f: &PhaseFigures) -> String {
    match f.expected {
        Some(expected) if f.ops >= expected => "all delivered".into(),
        Some(expected) => format!(
            "{:.1}% delivered",
            100.0 * f.ops as f64 / (expected as f64).max(1.0)
        ),
        None => thousands(format!("{:.0}", f.ops_per_sec)),
    }
}

/// Milliseconds with about three significant digits.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Mebibytes with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// An integer's digits grouped by thousands: 28123 → 28,123.
pub fn thousands(digits: String) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest.to_string()),
        None => ("", digits),
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands("28123".into()), "28,123");
        assert_eq!(thousands("123".into()), "123");
        assert_eq!(thousands("1234567".into()), "1,234,567");
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(ms(Duration::from_micros(420)), "0.42 ms");
        assert_eq!(ms(Duration::from_micros(29_400)), "29.4 ms");
        assert_eq!(ms(Duration::from_millis(123)), "123 ms");
    }
}
