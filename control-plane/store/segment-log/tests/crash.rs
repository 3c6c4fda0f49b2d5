//! Crash safety: a child process (this test binary re-executed) appends and purges in a loop,
//! printing each acknowledged range, and is killed with SIGKILL at a random moment. After each
//! kill the log is reopened: every acknowledged record must be there, intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use segment_log::{Config, SegmentLog};

const CHILD_ENV: &str = "SEGMENT_LOG_CRASH_CHILD_DIR";
const ROUNDS: u64 = 6;

/// The child's body; a no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    child_main(Path::new(&dir));
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).unwrap();
    out.flush().unwrap();
}

fn child_main(dir: &Path) -> ! {
    let log = SegmentLog::open(Config {
        segment_bytes: 16 << 10,
        cache_bytes: 256 << 10,
        ..Config::new(dir)
    })
    .unwrap();
    // Bound the appends in flight so the child always has acknowledgements to print.
    let in_flight = Arc::new((Mutex::new(0u32), Condvar::new()));
    let mut rng = u64::from(std::process::id()) | 1;
    let mut next = log.next_index();
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let n = 1 + rng % 16;
        {
            let (count, cv) = &*in_flight;
            let mut c = count.lock().unwrap();
            while *c >= 32 {
                c = cv.wait(c).unwrap();
            }
            *c += 1;
        }
        let flight = in_flight.clone();
        let (first, last) = (next, next + n - 1);
        log.append(
            records(next..next + n),
            Box::new(move |r| {
                r.unwrap();
                say(format!("ack {first} {last}\n"));
                let (count, cv) = &*flight;
                *count.lock().unwrap() -= 1;
                cv.notify_one();
            }),
        )
        .unwrap();
        next += n;
        if rng % 97 == 0 && next > 500 {
            let upto = next - 400;
            // Announced before it starts: it may become durable without being acknowledged.
            say(format!("purge {upto}\n"));
            block_on(log.purge_upto(upto)).unwrap();
        }
    }
}

#[test]
fn killed_writer_loses_no_acknowledged_record() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut max_purge: Option<u64> = None;
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    if r.read_until(b'\n', &mut buf).unwrap() == 0 {
                        break;
                    }
                    // A line cut by the kill has no newline and proves nothing.
                    if buf.ends_with(b"\n") {
                        lines
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf).into_owned());
                    }
                }
            })
        };
        // Let it get going, then kill it at a moment that varies per round.
        let started = Instant::now();
        while lines.lock().unwrap().len() < 20 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "child made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50 + round * 37 % 200));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();

        let lines = std::mem::take(&mut *lines.lock().unwrap());
        let mut round_acks = 0;
        for line in &lines {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("ack") => {
                    let first: u64 = words.next().unwrap().parse().unwrap();
                    let last: u64 = words.next().unwrap().parse().unwrap();
                    acked.push((first, last));
                    round_acks += 1;
                }
                Some("purge") => {
                    let upto: u64 = words.next().unwrap().parse().unwrap();
                    max_purge = max_purge.max(Some(upto));
                }
                _ => {}
            }
        }
        assert!(round_acks >= 20);

        let log = SegmentLog::open(Config::new(dir.path())).unwrap();
        let first = log.first_index().unwrap_or(log.next_index());
        let next = log.next_index();
        // A purge may have become durable without being acknowledged, but never one not issued.
        assert!(first <= max_purge.map_or(0, |p| p + 1), "first {first}");
        let max_acked = acked.iter().map(|(_, l)| *l).max().unwrap();
        assert!(
            next > max_acked,
            "acked up to {max_acked}, log ends before {next}"
        );
        for &(a, b) in &acked {
            for i in a.max(first)..=b {
                assert!(i < next);
            }
        }
        // Every record present, acknowledged or not, is intact and in place.
        let all = log.read(first..next).unwrap();
        assert_eq!(all.len() as u64, next - first);
        for (i, p) in &all {
            assert_eq!(*p, payload(*i), "record {i}");
        }
        eprintln!(
            "round {round}: {} acks, log {first}..{next}, {} segments",
            round_acks,
            segment_files(dir.path()).len()
        );
    }
}
