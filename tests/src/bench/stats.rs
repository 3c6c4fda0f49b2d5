//! Latency samples, the figures one phase yields, and medians over repetitions.

use std::time::Duration;

/// One benchmark phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Puts of random values with this many requests in flight.
    Put(usize),
    /// Linearizable single-key gets with this many requests in flight.
    Get(usize),
    /// Watchers on one key, each expected to see every one of `events` puts.
    Watch {
        /// Number of watchers.
        watchers: usize,
        /// Number of puts the writer makes.
        events: usize,
    },
}

impl Phase {
    /// A short label for tables.
    pub fn label(&self, value_size: usize) -> String {
        match *self {
            Phase::Put(c) => format!("put {value_size} B, {c} in flight"),
            Phase::Get(c) => format!("get (linearizable), {c} in flight"),
            Phase::Watch { watchers, events } => {
                format!("watch: {watchers} watchers × {events} puts")
            }
        }
    }
}

/// Request latencies of one phase in microseconds, sorted.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Sorts the samples.
    pub fn new(mut samples: Vec<u32>) -> Latencies {
        samples.sort_unstable();
        Latencies(samples)
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0..=1) by nearest rank; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        Duration::from_micros(u64::from(self.0[rank - 1]))
    }
}

/// A duration in whole microseconds, saturating at `u32::MAX` (over an hour).
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What one phase measured on one server.
#[derive(Debug, Clone, Default)]
pub struct PhaseFigures {
    /// Successful operations (for watches: deliveries) per second.
    pub ops_per_sec: f64,
    /// Median latency (for watches: put sent → event received).
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Successful operations or deliveries.
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Deliveries a watch phase expected (watchers × events); `None` for other phases.
    pub expected: Option<u64>,
    /// Server CPU time (all members) per operation, in microseconds.
    pub server_cpu_us_per_op: f64,
    /// Load generator CPU time per operation, in microseconds.
    pub client_cpu_us_per_op: f64,
    /// Bytes the servers (all members) caused to be written to storage, per operation.
    pub disk_bytes_per_op: f64,
    /// Server CPU time divided by wall time: how many cores the servers kept busy.
    pub server_cores: f64,
    /// Resident memory of the largest member right after the phase, in bytes (how memory
    /// grows phase by phase; the peak is reported separately).
    pub rss_after: u64,
    /// Cores kept busy by processes other than the servers and the load generator (other work
    /// on the machine, which makes figures noisy).
    pub other_cores: f64,
}

impl PhaseFigures {
    /// Each figure's median over repetitions of the same phase.
    pub fn median_of(runs: &[PhaseFigures]) -> PhaseFigures {
        let m = |f: fn(&PhaseFigures) -> f64| median(runs.iter().map(f).collect());
        let d = |f: fn(&PhaseFigures) -> Duration| {
            Duration::from_secs_f64(median(runs.iter().map(|r| f(r).as_secs_f64()).collect()))
        };
        PhaseFigures {
            ops_per_sec: m(|r| r.ops_per_sec),
            p50: d(|r| r.p50),
            p99: d(|r| r.p99),
            ops: m(|r| r.ops as f64) as u64,
            errors: m(|r| r.errors as f64) as u64,
            first_error: runs.iter().find_map(|r| r.first_error.clone()),
            expected: runs.first().and_then(|r| r.expected),
            server_cpu_us_per_op: m(|r| r.server_cpu_us_per_op),
            client_cpu_us_per_op: m(|r| r.client_cpu_us_per_op),
            disk_bytes_per_op: m(|r| r.disk_bytes_per_op),
            server_cores: m(|r| r.server_cores),
            other_cores: m(|r| r.other_cores),
            rss_after: m(|r| r.rss_after as f64) as u64,
        }
    }
}

/// The median (mean of the middle two for an even count); zero when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let l = Latencies::new((1..=100).rev().collect());
        assert_eq!(l.quantile(0.5), Duration::from_micros(50));
        assert_eq!(l.quantile(0.99), Duration::from_micros(99));
        assert_eq!(l.quantile(1.0), Duration::from_micros(100));
        assert_eq!(Latencies::default().quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
