//! Append throughput and group-commit effectiveness on a real disk.
//!
//! ```text
//! cargo run --release -p segment-log --example append_bench -- [records] [payload] [threads] [dir]
//! ```
//!
//! Defaults: 100000 records of 256 bytes from 16 threads, in a temporary directory under the
//! current directory (so on the disk being measured, not a tmpfs). Each thread keeps one append in
//! flight, like a client waiting for its write; a second phase appends from one thread with up to
//! 256 appends in flight, like a Raft leader streaming entries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use segment_log::{Config, SegmentLog, Stats};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).map_or(default, |s| s.parse().unwrap());
    let records = arg(0, 100_000);
    let payload_len = arg(1, 256) as usize;
    let threads = arg(2, 16);
    let base = args
        .get(3)
        .map_or_else(|| std::env::current_dir().unwrap(), Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let payload = Bytes::from(vec![0xabu8; payload_len]);

    let log = SegmentLog::open(Config::new(dir.path().join("clients"))).unwrap();
    let next = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, next, payload) = (log.clone(), next.clone(), payload.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                loop {
                    let (tx, rx) = mpsc::channel();
                    let t0 = Instant::now();
                    {
                        let mut next = next.lock().unwrap();
                        if *next >= records {
                            break;
                        }
                        let rec = vec![(*next, payload.clone())];
                        log.append(rec, Box::new(move |r| tx.send(r).unwrap()))
                            .unwrap();
                        *next += 1;
                    }
                    rx.recv().unwrap().unwrap();
                    latencies.push(t0.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    report(
        &format!("{threads} threads, 1 append in flight each"),
        start.elapsed(),
        log.stats(),
        &mut latencies,
    );
    drop(log);

    let log = SegmentLog::open(Config::new(dir.path().join("pipelined"))).unwrap();
    let in_flight = Arc::new((Mutex::new(0u32), Condvar::new()));
    let (lat_tx, lat_rx) = mpsc::channel();
    let start = Instant::now();
    for i in 0..records {
        {
            let (count, cv) = &*in_flight;
            let mut c = count.lock().unwrap();
            while *c >= 256 {
                c = cv.wait(c).unwrap();
            }
            *c += 1;
        }
        let flight = in_flight.clone();
        let lat_tx = lat_tx.clone();
        let t0 = Instant::now();
        log.append(
            vec![(i, payload.clone())],
            Box::new(move |r| {
                r.unwrap();
                lat_tx.send(t0.elapsed()).unwrap();
                let (count, cv) = &*flight;
                *count.lock().unwrap() -= 1;
                cv.notify_one();
            }),
        )
        .unwrap();
    }
    drop(lat_tx);
    let mut latencies: Vec<Duration> = lat_rx.iter().collect();
    report(
        "1 thread, up to 256 appends in flight",
        start.elapsed(),
        log.stats(),
        &mut latencies,
    );

    // Reading back: the newest records come from the tail cache, old ones from disk.
    drop(log);
    let log = SegmentLog::open(Config::new(dir.path().join("pipelined"))).unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    for start in (0..records).step_by(1000) {
        n += log.read(start..start + 1000).unwrap().len();
    }
    let read = t0.elapsed();
    println!(
        "read back {n} records from disk after reopen in {:.1} ms ({:.0} records/s)",
        read.as_secs_f64() * 1e3,
        n as f64 / read.as_secs_f64()
    );
}

fn report(title: &str, elapsed: Duration, stats: Stats, latencies: &mut [Duration]) {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let secs = elapsed.as_secs_f64();
    println!("== {title}");
    println!(
        "{} appends in {:.2} s: {:.0} appends/s, {:.1} MB/s written",
        stats.records_appended,
        secs,
        stats.records_appended as f64 / secs,
        stats.bytes_written as f64 / secs / 1e6
    );
    println!(
        "{} fsyncs, {} batches ({:.1} records per fsync'd batch), {} write calls",
        stats.fsyncs,
        stats.batches_written,
        stats.records_appended as f64 / stats.batches_written.max(1) as f64,
        stats.write_calls
    );
    println!(
        "append-to-durable latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
}
