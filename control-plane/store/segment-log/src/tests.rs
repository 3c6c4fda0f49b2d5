//! Tests that need the crate's internals: injected write and fsync failures (the tmpfs ENOSPC test
//! in `tests/enospc.rs` covers a real full disk where the machine allows mounting).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use super::*;

fn records(range: Range<u64>, version: u8) -> Vec<(u64, Bytes)> {
    range
        .map(|i| (i, Bytes::from(format!("record {i} v{version}"))))
        .collect()
}

/// Appends and returns a receiver for the callback's result (or the append's own error).
fn append(log: &SegmentLog, recs: Vec<(u64, Bytes)>) -> mpsc::Receiver<Result<(), Error>> {
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    if let Err(e) = log.append(recs, Box::new(move |r| tx2.send(r).unwrap())) {
        tx.send(Err(e)).unwrap();
    }
    rx
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn check(log: &SegmentLog, range: Range<u64>, version: impl Fn(u64) -> u8) {
    let got = log.read(range.clone()).unwrap();
    assert_eq!(got.len() as u64, range.end - range.start);
    for ((i, p), want) in got.into_iter().zip(range) {
        assert_eq!(i, want);
        assert_eq!(p, Bytes::from(format!("record {i} v{}", version(i))));
    }
}

fn segment_len(log: &SegmentLog) -> u64 {
    let st = log.shared().state.lock();
    let seg = st.segments.last().unwrap();
    assert_eq!(fs::metadata(&*seg.path).unwrap().len(), seg.end);
    seg.end
}

#[test]
fn failed_write_is_cut_back_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(Config::new(dir.path())).unwrap();
    append(&log, records(0..10, 0)).recv().unwrap().unwrap();
    let durable_len = segment_len(&log);

    log.shared().fail_write_in.store(1, Ordering::SeqCst);
    // Queue more behind the failing batch; whatever the writer has not taken yet is failed with
    // it, whatever arrives after the rollback is rejected as non-contiguous.
    let a = append(&log, records(10..20, 0));
    let b = append(&log, records(20..30, 0));
    let truncated = log.truncate_after(Some(25));
    let c = append(&log, records(26..28, 0));
    assert!(matches!(a.recv().unwrap(), Err(Error::Io { .. })));
    for rx in [b, c] {
        match rx.recv().unwrap() {
            Err(Error::Io { .. } | Error::NotContiguous { .. }) => {}
            other => panic!("queued append must fail, got {other:?}"),
        }
    }
    block_on(truncated).unwrap();
    block_on(log.flush()).unwrap();
    assert_eq!(
        log.last_index(),
        Some(9),
        "rolled back to the last durable record"
    );
    assert_eq!(segment_len(&log), durable_len, "partial write cut off");
    check(&log, 0..10, |_| 0);

    append(&log, records(10..40, 1)).recv().unwrap().unwrap();
    check(&log, 0..40, |i| u8::from(i >= 10));
    drop(log);
    let log = SegmentLog::open(Config::new(dir.path())).unwrap();
    assert_eq!(log.last_index(), Some(39));
    check(&log, 0..40, |i| u8::from(i >= 10));
}

#[test]
fn failed_write_on_roll() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 200,
        cache_bytes: 0,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg.clone()).unwrap();
    append(&log, records(0..3, 0)).recv().unwrap().unwrap();
    // One append spanning several segments. The first write (finishing segment 0) fails: nothing
    // of the batch survives.
    log.shared().fail_write_in.store(1, Ordering::SeqCst);
    assert!(append(&log, records(3..30, 0)).recv().unwrap().is_err());
    assert_eq!(log.last_index(), Some(2));
    assert_eq!(
        segment_len(&log),
        3 * 27,
        "\"record i v0\" plus a 16-byte header"
    );

    // Now the second write fails: segment 0 was finished and fsynced by the roll, so its records
    // stay; the next segment is cut back to empty and new appends go on into it.
    log.shared().fail_write_in.store(2, Ordering::SeqCst);
    assert!(append(&log, records(3..30, 0)).recv().unwrap().is_err());
    let kept = log.next_index();
    assert!(kept > 3 && kept < 30, "kept up to {kept}");
    assert_eq!(segment_len(&log), 0);
    check(&log, 0..kept, |_| 0);
    append(&log, records(kept..60, 1)).recv().unwrap().unwrap();
    check(&log, 0..60, |i| u8::from(i >= kept));
    drop(log);
    let log = SegmentLog::open(cfg).unwrap();
    assert_eq!(log.last_index(), Some(59));
    check(&log, 0..60, |i| u8::from(i >= kept));
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(Config::new(dir.path())).unwrap();
    append(&log, records(0..10, 0)).recv().unwrap().unwrap();

    log.shared().fail_next_sync.store(true, Ordering::SeqCst);
    let failed = append(&log, records(10..20, 0));
    let queued = append(&log, records(20..30, 0));
    assert!(matches!(failed.recv().unwrap(), Err(Error::Poisoned)));
    assert!(matches!(queued.recv().unwrap(), Err(Error::Poisoned)));
    // Everything after fails too, without touching the disk.
    assert!(matches!(
        log.append(records(30..31, 0), Box::new(|_| {})),
        Err(Error::Poisoned)
    ));
    assert!(matches!(log.read(0..10), Err(Error::Poisoned)));
    assert!(matches!(block_on(log.flush()), Err(Error::Poisoned)));
    assert!(matches!(
        block_on(log.truncate_after(Some(3))),
        Err(Error::Poisoned)
    ));
    assert!(matches!(block_on(log.purge_upto(3)), Err(Error::Poisoned)));
    drop(log);

    // Reopening re-validates from disk. The injected failure left the written data in place, so
    // the unacknowledged batch may be there; everything acknowledged certainly is.
    let log = SegmentLog::open(Config::new(dir.path())).unwrap();
    assert!(log.last_index() >= Some(9));
    check(&log, 0..10, |_| 0);
    let next = log.next_index();
    append(&log, records(next..next + 5, 2))
        .recv()
        .unwrap()
        .unwrap();
}

#[test]
fn failed_roll_fsync_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 100,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg).unwrap();
    append(&log, records(0..5, 0)).recv().unwrap().unwrap();
    log.shared().fail_next_sync.store(true, Ordering::SeqCst);
    assert!(matches!(
        append(&log, records(5..6, 0)).recv().unwrap(),
        Err(Error::Poisoned)
    ));
    assert!(matches!(block_on(log.flush()), Err(Error::Poisoned)));
}

#[test]
fn cache_lets_go_of_records_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        cache_bytes: 0,
        ..Config::new(dir.path())
    };
    let log = SegmentLog::open(cfg).unwrap();
    let cached = |log: &SegmentLog| log.shared().state.lock().cache.len();
    let acks: Vec<_> = (0..10)
        .map(|b| append(&log, records(b * 10..b * 10 + 10, 0)))
        .collect();
    // A truncation overtaking pending appends starts a new epoch; once it is durable, what is left
    // below the cut is evictable even though no append of the new epoch follows.
    block_on(log.truncate_after(Some(49))).unwrap();
    for rx in acks {
        rx.recv().unwrap().unwrap();
    }
    assert_eq!(cached(&log), 0);
    check(&log, 0..50, |_| 0);
    append(&log, records(50..60, 1)).recv().unwrap().unwrap();
    assert_eq!(cached(&log), 0);
    block_on(log.flush()).unwrap();
    check(&log, 0..60, |i| u8::from(i >= 50));
    assert_eq!(log.stats().records_read_from_cache, 0);
}

#[test]
fn handle_is_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<SegmentLog>();
    fn future<F: Future + Send + 'static>(_: F) {}
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(Config::new(dir.path())).unwrap();
    future(log.flush());
    future(log.truncate_after(None));
    future(log.purge_upto(0));
}
