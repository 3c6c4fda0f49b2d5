//! Helpers shared by the integration tests: deterministic payloads, synchronous appends, and a
//! tiny `block_on`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bytes::Bytes;
use segment_log::{Config, Error, SegmentLog};

/// Payload for record `index` in "version" `version`: self-describing, variable length (including
/// empty), so any misplaced or stale record is detected by `check_payload`.
pub fn payload_v(index: u64, version: u8) -> Bytes {
    let len = (index.wrapping_mul(7919) % 97) as usize;
    if len < 9 {
        return Bytes::new();
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&index.to_le_bytes());
    v.push(version);
    while v.len() < len {
        v.push(
            (index as u8)
                .wrapping_add(v.len() as u8)
                .wrapping_add(version),
        );
    }
    Bytes::from(v)
}

pub fn payload(index: u64) -> Bytes {
    payload_v(index, 0)
}

pub fn records(range: std::ops::Range<u64>) -> Vec<(u64, Bytes)> {
    range.map(|i| (i, payload(i))).collect()
}

pub fn records_v(range: std::ops::Range<u64>, version: u8) -> Vec<(u64, Bytes)> {
    range.map(|i| (i, payload_v(i, version))).collect()
}

pub fn config(dir: &Path, segment_bytes: u64) -> Config {
    Config {
        segment_bytes,
        ..Config::new(dir)
    }
}

pub fn open(dir: &Path, segment_bytes: u64) -> SegmentLog {
    SegmentLog::open(config(dir, segment_bytes)).unwrap()
}

/// Appends and waits for the durability callback.
pub fn append_sync(log: &SegmentLog, records: Vec<(u64, Bytes)>) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel();
    log.append(
        records,
        Box::new(move |r| {
            tx.send(r).unwrap();
        }),
    )?;
    rx.recv().unwrap()
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Reads `range` and checks it is exactly `expected` (indices and `payload_v(_, version)`).
pub fn assert_records(
    log: &SegmentLog,
    range: std::ops::Range<u64>,
    version_of: impl Fn(u64) -> u8,
) {
    let got = log.read(range.clone()).unwrap();
    let want: Vec<u64> = range.collect();
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        want,
        "indices"
    );
    for (i, p) in &got {
        assert_eq!(*p, payload_v(*i, version_of(*i)), "payload of {i}");
    }
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

pub fn segment_first(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}
