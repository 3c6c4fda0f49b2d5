//! Watch fan-out: synced delivery, filters, lagging on overflow, catch-up from history and
//! resync without gaps or duplicates.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use mvcc::watch::{WatchHub, WatchSpec};
use mvcc::*;

fn spec(key: &str, end: &str, start: i64) -> WatchSpec {
    WatchSpec {
        range: KeyRange::new(&b(key), &b(end)),
        start_revision: start,
        prev_kv: false,
        no_put: false,
        no_delete: false,
    }
}

/// Applies a write and publishes its events, as the replication layer does.
fn write(store: &mut Mvcc, hub: &mut WatchHub, key: &str, value: &str) -> i64 {
    let out = store
        .put(&PutRequest {
            key: b(key),
            value: b(value),
            ..PutRequest::default()
        })
        .unwrap();
    hub.publish(&out.events);
    out.revision
}

#[test]
fn synced_watchers_get_matching_changes_with_filters() {
    let mut store = Mvcc::new();
    let mut hub = WatchHub::new(100);
    let (_, exact) = hub.register(spec("a", "", 0), store.revision(), 0).unwrap();
    let (_, prefix) = hub
        .register(spec("p/", "p0", 0), store.revision(), 0)
        .unwrap();
    let mut no_put = spec("p/", "p0", 0);
    no_put.no_put = true;
    no_put.prev_kv = true;
    let (_, deletes) = hub.register(no_put, store.revision(), 0).unwrap();
    write(&mut store, &mut hub, "a", "1");
    write(&mut store, &mut hub, "p/x", "1");
    write(&mut store, &mut hub, "q", "1");
    let out = store
        .delete_range(&DeleteRangeRequest {
            key: b("p/x"),
            ..DeleteRangeRequest::default()
        })
        .unwrap();
    hub.publish(&out.events);

    let got = exact.take();
    assert_eq!(
        keys(&got.events.iter().map(|e| e.kv.clone()).collect::<Vec<_>>()),
        ["a"]
    );
    assert!(got.catch_up_from.is_none());
    let got = prefix.take().events;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].kind, EventKind::Delete);
    assert!(got[1].prev_kv.is_none(), "prev_kv only when asked");
    let got = deletes.take().events;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].prev_kv.as_ref().unwrap().value, b("1"));
}

#[test]
fn a_watch_from_the_past_catches_up_then_resyncs_without_gaps() {
    let mut store = Mvcc::new();
    let mut hub = WatchHub::new(100);
    for i in 0..10 {
        write(&mut store, &mut hub, "k", &format!("{i}"));
    }
    let (id, mailbox) = hub.register(spec("k", "", 3), store.revision(), 0).unwrap();
    let mut seen = Vec::new();
    let from = mailbox.take().catch_up_from.unwrap();
    assert_eq!(from, 3);
    // Catch up in small chunks while writes keep arriving between chunks.
    let mut next = from;
    loop {
        let (events, n) = store
            .events_since(&hub.spec(id).unwrap().range, next, 2, 100)
            .unwrap();
        seen.extend(events.iter().map(|e| e.revision()));
        next = n;
        if next > store.revision() {
            hub.resync(id, next);
            break;
        }
        write(&mut store, &mut hub, "k", "during catch-up");
    }
    write(&mut store, &mut hub, "k", "live");
    seen.extend(mailbox.take().events.iter().map(|e| e.revision()));
    let expected: Vec<i64> = (3..=store.revision()).collect();
    assert_eq!(seen, expected, "every revision exactly once, in order");
}

#[test]
fn an_overflowing_watcher_lags_instead_of_blocking_and_loses_nothing() {
    let mut store = Mvcc::new();
    let mut hub = WatchHub::new(4);
    let (id, mailbox) = hub
        .register(spec("", "\0", 0), store.revision(), 0)
        .unwrap();
    let first = store.revision() + 1;
    for i in 0..10 {
        write(&mut store, &mut hub, &format!("k{i}"), "v");
    }
    let delivery = mailbox.take();
    assert_eq!(delivery.events.len(), 4);
    let mut seen: Vec<i64> = delivery.events.iter().map(|e| e.revision()).collect();
    let mut next = delivery.catch_up_from.unwrap();
    loop {
        let (events, n) = store
            .events_since(&hub.spec(id).unwrap().range, next, 3, 100)
            .unwrap();
        seen.extend(events.iter().map(|e| e.revision()));
        next = n;
        if next > store.revision() {
            hub.resync(id, next);
            break;
        }
    }
    write(&mut store, &mut hub, "after", "v");
    seen.extend(mailbox.take().events.iter().map(|e| e.revision()));
    assert_eq!(seen, (first..=store.revision()).collect::<Vec<_>>());
}

#[test]
fn a_revision_is_never_split_between_queue_and_catch_up() {
    let mut store = Mvcc::new();
    let mut hub = WatchHub::new(3);
    let (_, mailbox) = hub
        .register(spec("", "\0", 0), store.revision(), 0)
        .unwrap();
    write(&mut store, &mut hub, "a", "1");
    // One transaction of four puts overflows the three-event mailbox mid-revision.
    let out = store
        .txn(&TxnRequest {
            success: (0..4)
                .map(|i| {
                    RequestOp::Put(PutRequest {
                        key: b(&format!("t{i}")),
                        ..PutRequest::default()
                    })
                })
                .collect(),
            ..TxnRequest::default()
        })
        .unwrap();
    hub.publish(&out.events);
    let delivery = mailbox.take();
    assert_eq!(
        delivery.events.len(),
        1,
        "the partial transaction was withdrawn"
    );
    assert_eq!(delivery.catch_up_from, Some(out.revision));
}

#[test]
fn compacted_and_future_starts() {
    let mut store = Mvcc::new();
    let mut hub = WatchHub::new(10);
    for i in 0..5 {
        write(&mut store, &mut hub, "k", &format!("{i}"));
    }
    store.compact(4).unwrap();
    assert_eq!(
        hub.register(spec("k", "", 3), store.revision(), store.compact_revision())
            .map(|r| r.0),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    assert!(hub.register(spec("k", "", 4), store.revision(), 4).is_ok());
    // A watch from a future revision skips everything before it.
    let future = store.revision() + 3;
    let (_, mailbox) = hub
        .register(spec("k", "", future), store.revision(), 4)
        .unwrap();
    for _ in 0..4 {
        write(&mut store, &mut hub, "k", "x");
    }
    let revs: Vec<i64> = mailbox.take().events.iter().map(|e| e.revision()).collect();
    assert_eq!(revs, [future, future + 1]);
}

#[test]
fn cancel_stops_delivery_and_many_watchers_are_cheap() {
    let mut store = Mvcc::new();
    let mut hub = WatchHub::new(16);
    let mut boxes = Vec::new();
    for i in 0..1000 {
        let (id, mailbox) = hub
            .register(spec(&format!("key{}", i % 10), "", 0), 1, 0)
            .unwrap();
        boxes.push((id, mailbox));
    }
    let started = std::time::Instant::now();
    write(&mut store, &mut hub, "key3", "v");
    assert!(started.elapsed() < std::time::Duration::from_millis(50));
    let delivered = boxes
        .iter()
        .filter(|(_, m)| !m.take().events.is_empty())
        .count();
    assert_eq!(delivered, 100);
    for (id, _) in &boxes {
        hub.cancel(*id);
    }
    assert!(hub.is_empty());
    write(&mut store, &mut hub, "key3", "v");
    assert!(boxes.iter().all(|(_, m)| m.take().events.is_empty()));
}
