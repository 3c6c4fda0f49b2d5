//! The load generator: a pool of connections, closed-loop request phases, and watch delivery.
//!
//! Phases are closed-loop: each of `concurrency` tasks sends one request, waits for the reply
//! and sends the next, so `concurrency` is the number of requests in flight. Latency is taken
//! around each request; throughput is successful requests over the phase's wall time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etcd_client::{Client, KvClient, WatchClient};
use tokio::task::JoinSet;

use crate::bench::stats::{Latencies, micros};
use crate::cluster::try_connect;

/// Open connections, each to a single member, spread round-robin over the members.
pub struct Pool {
    clients: Vec<Client>,
}

impl Pool {
    /// Opens `size` connections; connection `i` goes to `endpoints[i % endpoints.len()]`, so
    /// put the member that should get the first connection first.
    pub async fn connect(endpoints: &[String], size: usize) -> Result<Pool> {
        if endpoints.is_empty() {
            bail!("no endpoints to connect to");
        }
        let mut clients = Vec::with_capacity(size);
        for i in 0..size {
            let endpoint = &endpoints[i % endpoints.len()];
            let client = try_connect(std::slice::from_ref(endpoint))
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            clients.push(client);
        }
        Ok(Pool { clients })
    }

    /// How many connections the pool holds.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether the pool holds no connection.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The connection for task `i` when `used` connections serve a phase.
    fn client(&self, i: usize, used: usize) -> &Client {
        &self.clients[i % used.clamp(1, self.clients.len())]
    }
}

/// The data a phase writes and reads: keys `bench/<n>` for n below `keys`, random values.
pub struct Workload {
    keys: u64,
    value_size: usize,
    // Values are slices at random offsets of one random buffer, so each request need not
    // draw `value_size` random bytes (which would cost the load generator CPU).
    random: Vec<u8>,
}

impl Workload {
    /// A key space of `keys` keys and values of `value_size` random bytes.
    pub fn new(keys: u64, value_size: usize) -> Arc<Workload> {
        let mut random = vec![0u8; 64 * 1024 + value_size];
        rand::fill(&mut random[..]);
        Arc::new(Workload {
            keys: keys.max(1),
            value_size,
            random,
        })
    }

    /// The size of each value.
    pub fn value_size(&self) -> usize {
        self.value_size
    }

    fn key(&self) -> String {
        format!("bench/{}", rand::random_range(0..self.keys))
    }

    fn value(&self) -> Vec<u8> {
        let start = rand::random_range(0..self.random.len() - self.value_size);
        self.random[start..start + self.value_size].to_vec()
    }
}

/// What a phase observed on the client side.
#[derive(Debug, Default)]
pub struct Sample {
    /// Latencies of successful requests (watch: of deliveries).
    pub latencies: Latencies,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Deliveries expected (watch phases only).
    pub expected: Option<u64>,
}

/// The kind of request a closed-loop phase sends.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// Put a random value at a random key.
    Put,
    /// Linearizable get of a random key.
    Get,
}

/// Runs `concurrency` closed loops of `request` for `duration`.
pub async fn closed_loop(
    pool: &Pool,
    workload: &Arc<Workload>,
    request: Request,
    concurrency: usize,
    duration: Duration,
) -> Result<Sample> {
    // More requests in flight than connections share them: gRPC multiplexes requests over one
    // HTTP/2 connection, as real clients (kube-apiserver uses one per endpoint) do.
    let used = concurrency.min(pool.len());
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for i in 0..concurrency {
        let kv = pool.client(i, used).kv_client();
        tasks.spawn(worker(kv, workload.clone(), request, deadline));
    }
    let mut samples = Vec::new();
    let mut sample = Sample::default();
    while let Some(done) = tasks.join_next().await {
        let done = done.context("a load task panicked")?;
        samples.extend(done.latencies);
        sample.errors += done.errors;
        if sample.first_error.is_none() {
            sample.first_error = done.first_error;
        }
    }
    sample.elapsed = start.elapsed();
    sample.latencies = Latencies::new(samples);
    Ok(sample)
}

struct WorkerResult {
    latencies: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    mut kv: KvClient,
    workload: Arc<Workload>,
    request: Request,
    deadline: Instant,
) -> WorkerResult {
    let mut result = WorkerResult {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
    };
    while Instant::now() < deadline {
        let key = workload.key();
        let sent = Instant::now();
        let outcome = match request {
            Request::Put => kv.put(key, workload.value(), None).await.map(drop),
            // etcd-client's default get is linearizable (not serializable).
            Request::Get => kv.get(key, None).await.map(drop),
        };
        match outcome {
            Ok(()) => result.latencies.push(micros(sent.elapsed())),
            Err(e) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| e.to_string());
                // Don't spin on a server that refuses everything.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    result
}

/// How the watch phase runs.
#[derive(Debug, Clone, Copy)]
pub struct WatchPlan {
    /// Watchers on the one key.
    pub watchers: usize,
    /// Puts the writer makes; each watcher should see every one.
    pub events: usize,
    /// Puts per second.
    pub rate: f64,
}

/// The key every watcher watches (outside the `bench/` key space).
const WATCH_KEY: &str = "bench-watch";

/// Registers `plan.watchers` watchers on one key over the pool's connections, then puts
/// `plan.events` values at `plan.rate`, each carrying its send time, and measures put-to-receive
/// latency at every watcher.
pub async fn watch_delivery(
    pool: &Pool,
    workload: &Arc<Workload>,
    plan: WatchPlan,
) -> Result<Sample> {
    // The clock that stamps and reads the values: one Instant shared by writer and watchers.
    let epoch = Instant::now();
    let registered = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut watchers = JoinSet::new();
    for i in 0..plan.watchers {
        let watch = pool.client(i, pool.len()).watch_client();
        watchers.spawn(watcher(
            watch,
            epoch,
            plan.events,
            registered.clone(),
            delivered.clone(),
            stopped.clone(),
        ));
    }

    // Start writing only once every watcher is registered, or the first events would be missed.
    let wait_until = Instant::now() + Duration::from_secs(60);
    while registered.load(Ordering::Relaxed) < plan.watchers {
        if let Some(failed) = watchers.try_join_next() {
            let result = failed.context("a watcher task panicked")?;
            result.context("a watcher failed before it was registered")?;
        }
        if Instant::now() > wait_until {
            bail!(
                "only {} of {} watchers registered within 60 s",
                registered.load(Ordering::Relaxed),
                plan.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut sample = Sample::default();
    let start = Instant::now();
    let mut kv = pool.client(0, 1).kv_client();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate.max(0.001)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..plan.events {
        tick.tick().await;
        let mut value = workload.value();
        let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        value[..8].copy_from_slice(&stamp.to_le_bytes());
        if let Err(e) = kv.put(WATCH_KEY, value, None).await {
            sample.errors += 1;
            sample.first_error.get_or_insert_with(|| e.to_string());
        }
    }
    // Give stragglers a bounded time to catch up, then stop everyone.
    let expected = (plan.watchers * plan.events) as u64;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sample.elapsed = start.elapsed();
    let _ = stop.send(true);

    let mut samples = Vec::with_capacity(expected as usize);
    while let Some(done) = watchers.join_next().await {
        match done.context("a watcher task panicked")? {
            Ok(latencies) => samples.extend(latencies),
            Err(e) => {
                sample.errors += 1;
                sample.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    sample.latencies = Latencies::new(samples);
    sample.expected = Some(expected);
    Ok(sample)
}

/// One watcher: registers, counts itself registered, then records the latency of each event
/// until it has `events` of them or is told to stop.
async fn watcher(
    mut client: WatchClient,
    epoch: Instant,
    events: usize,
    registered: Arc<AtomicUsize>,
    delivered: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<u32>> {
    let mut stream = client
        .watch(WATCH_KEY, None)
        .await
        .context("opening a watch")?;
    loop {
        match stream.message().await.context("waiting for the watch")? {
            Some(response) if response.created() => break,
            Some(_) => continue,
            None => bail!("the watch stream closed before the watch was created"),
        }
    }
    registered.fetch_add(1, Ordering::Relaxed);
    let mut latencies = Vec::with_capacity(events);
    while latencies.len() < events {
        let response = tokio::select! {
            message = stream.message() => message.context("receiving watch events")?,
            _ = stop.changed() => break,
        };
        let Some(response) = response else {
            bail!("the watch stream closed");
        };
        if response.canceled() {
            bail!("the watch was canceled: {}", response.cancel_reason());
        }
        let now = epoch.elapsed();
        for event in response.events() {
            let Some(stamp) = event.kv().and_then(|kv| kv.value().get(..8)) else {
                continue;
            };
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(stamp);
            let sent = Duration::from_nanos(u64::from_le_bytes(bytes));
            latencies.push(micros(now.saturating_sub(sent)));
            delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(latencies)
}
