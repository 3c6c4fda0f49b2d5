//! Behaviour of the log on real files: round trips, segments, recovery, truncate, purge, group
//! commit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;
use common::*;
use segment_log::{Config, Error, MAX_PAYLOAD, SegmentLog};

const HEADER: u64 = 16;

fn on_disk_len(range: std::ops::Range<u64>) -> u64 {
    range.map(|i| HEADER + payload(i).len() as u64).sum()
}

#[test]
fn append_read_reopen_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::DEFAULT_SEGMENT_BYTES);
    assert_eq!(log.first_index(), None);
    assert_eq!(log.last_index(), None);
    assert_eq!(log.next_index(), 0);
    assert!(log.read(0..10).unwrap().is_empty());

    append_sync(&log, records(0..50)).unwrap();
    append_sync(&log, records(50..100)).unwrap();
    assert_eq!(log.first_index(), Some(0));
    assert_eq!(log.last_index(), Some(99));
    assert_records(&log, 0..100, |_| 0);
    assert_records(&log, 17..18, |_| 0);
    assert_eq!(log.read(90..1000).unwrap().len(), 10, "clamped at the end");
    assert!(log.read(100..200).unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let empty = log.read(50..10).unwrap();
    assert!(empty.is_empty());
    block_on(log.flush()).unwrap();
    let stats = log.stats();
    assert_eq!(stats.records_appended, 100);
    assert_eq!(stats.append_calls, 2);
    assert_eq!(stats.bytes_written, on_disk_len(0..100));
    drop(log);

    let log = open(dir.path(), Config::DEFAULT_SEGMENT_BYTES);
    assert_eq!(log.first_index(), Some(0));
    assert_eq!(log.last_index(), Some(99));
    assert_records(&log, 0..100, |_| 0);
    assert_eq!(
        log.stats().records_read_from_disk,
        100,
        "fresh cache is empty"
    );
    append_sync(&log, records(100..110)).unwrap();
    assert_records(&log, 95..110, |_| 0);
}

#[test]
fn records_are_readable_before_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::DEFAULT_SEGMENT_BYTES);
    let (tx, rx) = mpsc::channel();
    let reader = log.clone();
    // The callback reads the log; records must be visible from the moment append returns, so
    // check before the callback can possibly have run too.
    log.append(
        records(0..10),
        Box::new(move |r| {
            tx.send((r, reader.read(0..10).unwrap().len())).unwrap();
        }),
    )
    .unwrap();
    assert_records(&log, 0..10, |_| 0);
    let (r, n) = rx.recv().unwrap();
    r.unwrap();
    assert_eq!(n, 10);
    assert_eq!(log.stats().records_read_from_disk, 0);
}

#[test]
fn appends_must_be_contiguous_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::DEFAULT_SEGMENT_BYTES);
    let never = || -> segment_log::AppendDone { Box::new(|_| panic!("must not run")) };
    assert!(matches!(
        log.append(records(1..3), never()),
        Err(Error::NotContiguous {
            expected: 0,
            got: 1
        })
    ));
    let gap = vec![(0, Bytes::new()), (2, Bytes::new())];
    assert!(matches!(
        log.append(gap, never()),
        Err(Error::NotContiguous {
            expected: 1,
            got: 2
        })
    ));
    let big = vec![(0, Bytes::from(vec![0u8; MAX_PAYLOAD + 1]))];
    assert!(matches!(
        log.append(big, never()),
        Err(Error::TooLarge { index: 0, .. })
    ));
    assert_eq!(log.last_index(), None, "rejected appends leave no trace");
    append_sync(&log, records(0..3)).unwrap();
    append_sync(&log, Vec::new()).unwrap();
    assert!(matches!(
        log.append(records(2..4), never()),
        Err(Error::NotContiguous {
            expected: 3,
            got: 2
        })
    ));
    let msg = Error::NotContiguous {
        expected: 3,
        got: 2,
    }
    .to_string();
    assert!(msg.starts_with(|c: char| c.is_lowercase()) && !msg.ends_with('.'));
}

#[test]
fn directory_is_locked_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), Config::DEFAULT_SEGMENT_BYTES);
    assert!(matches!(
        SegmentLog::open(Config::new(dir.path())),
        Err(Error::Locked { .. })
    ));
    drop(log);
    open(dir.path(), Config::DEFAULT_SEGMENT_BYTES);
}

#[test]
fn many_records_across_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 512,
        cache_bytes: 0,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg.clone()).unwrap();
    let mut next = 0;
    for batch in 1..60u64 {
        append_sync(&log, records(next..next + batch % 13)).unwrap();
        next += batch % 13;
    }
    let files = segment_files(dir.path());
    assert!(files.len() > 20, "{} segments", files.len());
    // Every file is named after its first record and, except the last, is past the size limit.
    let mut expected_first = 0;
    for (n, f) in files.iter().enumerate() {
        assert_eq!(segment_first(f), expected_first);
        let len = fs::metadata(f).unwrap().len();
        let mut i = expected_first;
        let mut sum = 0;
        while sum < len {
            sum += HEADER + payload(i).len() as u64;
            i += 1;
        }
        assert_eq!(sum, len, "{f:?} holds whole records");
        if n + 1 < files.len() {
            assert!(len >= 512);
        }
        expected_first = i;
    }
    assert_eq!(expected_first, next);
    assert_records(&log, 0..next, |_| 0);
    for start in (0..next).step_by(37) {
        assert_records(&log, start..(start + 50).min(next), |_| 0);
    }
    assert!(log.stats().records_read_from_disk > 0);
    drop(log);

    let log = SegmentLog::open(cfg).unwrap();
    assert_eq!(log.last_index(), Some(next - 1));
    assert_records(&log, 0..next, |_| 0);
    append_sync(&log, records(next..next + 100)).unwrap();
    assert_records(&log, 0..next + 100, |_| 0);
}

/// Writes `0..n` in batches of 10 to a log with `segment_bytes`, then closes it.
fn make_log(dir: &Path, n: u64, segment_bytes: u64) {
    let log = open(dir, segment_bytes);
    for start in (0..n).step_by(10) {
        append_sync(&log, records(start..(start + 10).min(n))).unwrap();
    }
}

fn chop(path: &Path, bytes: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - bytes).unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= 0x5a;
    fs::write(path, data).unwrap();
}

#[test]
fn torn_tail_chopped_mid_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 300, 2048);
    let files = segment_files(dir.path());
    let last = files.last().unwrap();
    let last_first = segment_first(last);
    assert!(files.len() > 3);
    // Index 299's payload is 299*7919 % 97 = 29 bytes: chop into its payload.
    chop(last, 5);
    let log = open(dir.path(), 2048);
    assert_eq!(log.last_index(), Some(298));
    assert_records(&log, 0..299, |_| 0);
    assert_eq!(
        fs::metadata(last).unwrap().len(),
        on_disk_len(last_first..299),
        "file cut at the record boundary"
    );
    append_sync(&log, records(299..310)).unwrap();
    drop(log);
    let log = open(dir.path(), 2048);
    assert_records(&log, 0..310, |_| 0);
}

#[test]
fn torn_tail_short_header_and_whole_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 100, 1 << 20);
    let file = segment_files(dir.path()).pop().unwrap();
    // Leave 10 bytes of record 99's header.
    let keep = on_disk_len(0..99) + 10;
    chop(&file, fs::metadata(&file).unwrap().len() - keep);
    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.last_index(), Some(98));
    drop(log);
    // A crash right after creating the very first file leaves it empty.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(format!("{:020}.seg", 0)), b"").unwrap();
    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.last_index(), None);
    append_sync(&log, records(0..5)).unwrap();
    drop(log);
    assert_records(&open(dir.path(), 1 << 20), 0..5, |_| 0);
}

#[test]
fn torn_tail_corrupt_byte_in_last_record_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 300, 2048);
    let last = segment_files(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    flip_byte(&last, len - 1);
    let log = open(dir.path(), 2048);
    assert_eq!(log.last_index(), Some(298));
    assert_records(&log, 0..299, |_| 0);
}

#[test]
fn torn_tail_absurd_length_is_cut_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 50, 1 << 20);
    let file = segment_files(dir.path()).pop().unwrap();
    let mut data = fs::read(&file).unwrap();
    let at = on_disk_len(0..49) as usize;
    data[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&file, data).unwrap();
    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.last_index(), Some(48));
}

#[test]
fn corruption_in_an_earlier_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 300, 2048);
    let files = segment_files(dir.path());
    let victim = &files[1];
    let first = segment_first(victim);
    let offset = on_disk_len(first..first + 3);
    // Flip a payload byte of the fourth record in the second segment.
    flip_byte(victim, offset + HEADER + 2);
    let before: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    match SegmentLog::open(Config {
        segment_bytes: 2048,
        ..Config::new(dir.path())
    }) {
        Err(Error::Corrupt {
            path,
            offset: at,
            reason,
        }) => {
            assert_eq!(&path, victim);
            assert_eq!(at, offset);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let after: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
    assert_eq!(before, after, "a failed open changes nothing");
}

#[test]
fn truncated_earlier_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 300, 2048);
    let files = segment_files(dir.path());
    chop(&files[0], 3);
    assert!(matches!(
        SegmentLog::open(Config::new(dir.path())),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn missing_segments_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make_log(dir.path(), 300, 2048);
    let files = segment_files(dir.path());
    fs::remove_file(&files[2]).unwrap();
    match SegmentLog::open(Config::new(dir.path())) {
        Err(Error::Corrupt { path, reason, .. }) => {
            assert_eq!(path, files[3]);
            assert!(reason.contains("previous segment"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Losing the first file (with no purge recorded) loses records too.
    fs::remove_file(&files[0]).unwrap();
    match SegmentLog::open(Config::new(dir.path())) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn truncate_inside_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    append_sync(&log, records(0..100)).unwrap();
    block_on(log.truncate_after(Some(59))).unwrap();
    assert_eq!(log.last_index(), Some(59));
    assert!(log.read(60..100).unwrap().is_empty());
    let file = segment_files(dir.path()).pop().unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), on_disk_len(0..60));
    append_sync(&log, records_v(60..80, 1)).unwrap();
    let version = |i| if i >= 60 { 1 } else { 0 };
    assert_records(&log, 0..80, version);
    drop(log);
    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.last_index(), Some(79));
    assert_records(&log, 0..80, version);
}

#[test]
fn truncate_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 1024,
        cache_bytes: 0,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg.clone()).unwrap();
    for s in (0..400).step_by(20) {
        append_sync(&log, records(s..s + 20)).unwrap();
    }
    let files = segment_files(dir.path());
    let n_files = files.len();
    // Cut in the middle of the third segment.
    let third = segment_first(&files[2]);
    let keep = third + 2;
    block_on(log.truncate_after(Some(keep))).unwrap();
    assert_eq!(log.last_index(), Some(keep));
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3, "later segments deleted (had {n_files})");
    assert_eq!(
        fs::metadata(&files[2]).unwrap().len(),
        on_disk_len(third..keep + 1)
    );
    // Truncating exactly at a segment boundary deletes the whole file.
    block_on(log.truncate_after(Some(third - 1))).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 2);
    append_sync(&log, records_v(third..third + 100, 2)).unwrap();
    let version = |i| if i >= third { 2 } else { 0 };
    assert_records(&log, 0..third + 100, version);
    drop(log);
    let log = SegmentLog::open(cfg.clone()).unwrap();
    assert_eq!(log.last_index(), Some(third + 99));
    assert_records(&log, 0..third + 100, version);

    // Truncate everything.
    block_on(log.truncate_after(None)).unwrap();
    assert_eq!(log.last_index(), None);
    assert!(segment_files(dir.path()).is_empty());
    assert_eq!(log.next_index(), 0);
    append_sync(&log, records_v(0..10, 3)).unwrap();
    drop(log);
    let log = SegmentLog::open(cfg).unwrap();
    assert_records(&log, 0..10, |_| 3);
}

#[test]
fn truncate_is_ordered_after_pending_appends_and_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 700);
    let acks = Arc::new(AtomicU64::new(0));
    // No waiting in between: the truncation overtakes nothing, the re-append follows at once.
    for s in (0..200).step_by(10) {
        let acks = acks.clone();
        log.append(
            records(s..s + 10),
            Box::new(move |r| {
                r.unwrap();
                acks.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
    }
    let truncated = log.truncate_after(Some(149));
    assert_eq!(log.last_index(), Some(149));
    assert_eq!(log.next_index(), 150);
    append_sync(&log, records_v(150..170, 1)).unwrap();
    block_on(truncated).unwrap();
    assert_eq!(acks.load(Ordering::SeqCst), 20);
    let version = |i| if i >= 150 { 1 } else { 0 };
    assert_records(&log, 0..170, version);
    drop(log);
    assert_records(&open(dir.path(), 700), 0..170, version);
}

#[test]
fn purge_inside_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    append_sync(&log, records(0..100)).unwrap();
    block_on(log.purge_upto(39)).unwrap();
    assert_eq!(log.first_index(), Some(40));
    assert_eq!(log.purged(), Some(39));
    assert_eq!(log.read(0..100).unwrap().len(), 60);
    assert!(log.read(0..40).unwrap().is_empty());
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "partly covered file stays"
    );
    drop(log);
    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.first_index(), Some(40));
    assert_eq!(log.purged(), Some(39));
    assert_records(&log, 40..100, |_| 0);
    // A stale, lower purge changes nothing.
    block_on(log.purge_upto(10)).unwrap();
    assert_eq!(log.first_index(), Some(40));
    assert_eq!(log.purged(), Some(39));
}

#[test]
fn purge_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1024);
    for s in (0..400).step_by(20) {
        append_sync(&log, records(s..s + 20)).unwrap();
    }
    let files = segment_files(dir.path());
    let fourth = segment_first(&files[3]);
    let upto = fourth + 1;
    block_on(log.purge_upto(upto)).unwrap();
    let left = segment_files(dir.path());
    assert_eq!(left.len(), files.len() - 3);
    assert_eq!(left[0], files[3]);
    assert_eq!(log.first_index(), Some(upto + 1));
    assert_records(&log, upto + 1..400, |_| 0);
    // Purging exactly a segment's last record deletes it.
    let fifth = segment_first(&files[4]);
    block_on(log.purge_upto(fifth - 1)).unwrap();
    assert_eq!(segment_files(dir.path())[0], files[4]);
    append_sync(&log, records(400..420)).unwrap();
    drop(log);
    let log = open(dir.path(), 1024);
    assert_eq!(log.first_index(), Some(fifth));
    assert_eq!(log.last_index(), Some(419));
    assert_records(&log, fifth..420, |_| 0);
}

#[test]
fn purge_beyond_last_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1024);
    append_sync(&log, records(0..100)).unwrap();
    block_on(log.purge_upto(1000)).unwrap();
    assert_eq!(log.first_index(), None);
    assert_eq!(log.last_index(), None);
    assert_eq!(log.next_index(), 1001);
    assert!(segment_files(dir.path()).is_empty());
    assert!(matches!(
        log.append(records(100..101), Box::new(|_| {})),
        Err(Error::NotContiguous {
            expected: 1001,
            got: 100
        })
    ));
    drop(log);
    // Empty and purged: reopen keeps the purge point.
    let log = open(dir.path(), 1024);
    assert_eq!(log.first_index(), None);
    assert_eq!(log.next_index(), 1001);
    append_sync(&log, records(1001..1050)).unwrap();
    assert_eq!(segment_first(&segment_files(dir.path())[0]), 1001);
    drop(log);
    let log = open(dir.path(), 1024);
    assert_eq!(log.first_index(), Some(1001));
    assert_eq!(log.last_index(), Some(1049));
    assert_records(&log, 1001..1050, |_| 0);
}

#[test]
fn purge_then_truncate_everything_keeps_the_purge_point() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1024);
    append_sync(&log, records(0..100)).unwrap();
    block_on(log.purge_upto(49)).unwrap();
    block_on(log.truncate_after(Some(10))).unwrap();
    assert_eq!(log.last_index(), None);
    assert_eq!(log.next_index(), 50);
    append_sync(&log, records_v(50..60, 1)).unwrap();
    drop(log);
    let log = open(dir.path(), 1024);
    assert_eq!(log.first_index(), Some(50));
    assert_records(&log, 50..60, |_| 1);
}

#[test]
fn interrupted_purge_is_finished_on_open() {
    // Simulate a crash after the purge point was persisted but before files were deleted: copy the
    // segments aside before purging and put them back.
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1024);
    append_sync(&log, records(0..300)).unwrap();
    let files = segment_files(dir.path());
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = files
        .iter()
        .map(|f| (f.clone(), fs::read(f).unwrap()))
        .collect();
    let upto = segment_first(&files[3]) + 1;
    block_on(log.purge_upto(upto)).unwrap();
    drop(log);
    for (f, data) in &saved[..3] {
        fs::write(f, data).unwrap();
    }
    let log = open(dir.path(), 1024);
    assert_eq!(log.first_index(), Some(upto + 1));
    assert_eq!(segment_files(dir.path()).len(), files.len() - 3);
    assert_records(&log, upto + 1..300, |_| 0);
}

/// Runs 8 threads appending 125 single-record appends each (indices handed out under a mutex),
/// each keeping up to `window` appends in flight; returns the stats.
fn concurrent_appends(dir: &Path, window: usize) -> segment_log::Stats {
    let log = open(dir, Config::DEFAULT_SEGMENT_BYTES);
    let next = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                let mut pending = std::collections::VecDeque::new();
                for _ in 0..125 {
                    if pending.len() == window {
                        let rx: mpsc::Receiver<Result<(), Error>> = pending.pop_front().unwrap();
                        rx.recv().unwrap().unwrap();
                    }
                    let (tx, rx) = mpsc::channel();
                    let mut next = next.lock().unwrap();
                    log.append(
                        records(*next..*next + 1),
                        Box::new(move |r| tx.send(r).unwrap()),
                    )
                    .unwrap();
                    *next += 1;
                    pending.push_back(rx);
                }
                for rx in pending {
                    rx.recv().unwrap().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_records(&log, 0..1000, |_| 0);
    log.stats()
}

#[test]
fn group_commit_shares_fsyncs() {
    // Clients that wait for each write: while one batch is being fsynced the others queue up, so
    // at steady state about half of them share each fsync.
    let dir = tempfile::tempdir().unwrap();
    let stats = concurrent_appends(dir.path(), 1);
    eprintln!("one append in flight per thread: {stats:?}");
    assert_eq!(stats.records_appended, 1000);
    assert_eq!(stats.append_calls, 1000);
    // One fsync of the directory for the new segment, then one fdatasync and one write per batch.
    assert_eq!(stats.fsyncs, stats.batches_written + 1);
    assert_eq!(stats.write_calls, stats.batches_written);
    assert!(
        stats.fsyncs < 500,
        "8 concurrent writers must share fsyncs: {stats:?}"
    );

    // Clients that pipeline (as a Raft leader does): everything queued during an fsync goes out
    // with the next one.
    let dir = tempfile::tempdir().unwrap();
    let stats = concurrent_appends(dir.path(), 16);
    eprintln!("16 appends in flight per thread: {stats:?}");
    assert!(stats.fsyncs < 100, "{stats:?}");
}

#[test]
fn tail_cache_serves_recent_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 4096,
        cache_bytes: 64 * 1024,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg).unwrap();
    for s in (0..5000).step_by(50) {
        append_sync(&log, records(s..s + 50)).unwrap();
    }
    let before = log.stats();
    assert_records(&log, 4900..5000, |_| 0);
    let after = log.stats();
    assert_eq!(
        after.records_read_from_cache - before.records_read_from_cache,
        100
    );
    assert_eq!(after.records_read_from_disk, before.records_read_from_disk);
    assert_records(&log, 0..5000, |_| 0);
    let end = log.stats();
    assert!(end.records_read_from_disk > 3000, "{end:?}");
    assert!(end.records_read_from_cache > after.records_read_from_cache);
}

#[test]
fn dropping_the_last_handle_in_a_callback_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    let (tx, rx) = mpsc::channel();
    let inner = log.clone();
    log.append(
        records(0..3),
        Box::new(move |r| {
            drop(inner);
            tx.send(r).unwrap();
        }),
    )
    .unwrap();
    drop(log);
    rx.recv().unwrap().unwrap();
    // The writer finished (and released the lock) even though it dropped the last handle itself.
    for _ in 0..100 {
        if let Ok(log) = SegmentLog::open(Config::new(dir.path())) {
            assert_records(&log, 0..3, |_| 0);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("log never closed");
}

#[test]
fn concurrent_reads_during_truncation_see_consistent_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 2048,
        cache_bytes: 0,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg).unwrap();
    append_sync(&log, records(0..500)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let log = log.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let start = (n * 37 + t * 101) % 500;
                    for (i, p) in log.read(start..start + 60).unwrap() {
                        // Every version of a record starts with its index; the version byte must
                        // be one that was written.
                        if !p.is_empty() {
                            assert_eq!(&p[..8], &i.to_le_bytes());
                            assert!(p[8] < 30);
                        }
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for version in 1..30u8 {
        let keep = 300 + u64::from(version) * 5;
        block_on(log.truncate_after(Some(keep))).unwrap();
        append_sync(&log, records_v(keep + 1..500, version)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
