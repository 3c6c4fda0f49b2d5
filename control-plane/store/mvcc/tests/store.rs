//! The state machine's etcd semantics: revisions, ranges, deletes, transactions, leases,
//! compaction and snapshots.

mod common;

use common::*;
use mvcc::snapshot::{SnapshotReader, SnapshotWriter};
use mvcc::*;

#[test]
fn revisions_versions_and_create_revision() {
    let mut s = Mvcc::new();
    assert_eq!(s.revision(), 1);
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "a", "2"), 3);
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b("2"));
    // Reading the past.
    assert_eq!(get_at(&s, "a", 2).unwrap().unwrap().value, b("1"));
    assert_eq!(get_at(&s, "a", 1).unwrap(), None);
    assert_eq!(get_at(&s, "a", 4), Err(Error::FutureRevision));
    // Deleting ends the incarnation; recreating starts a new one.
    let out = del(&mut s, "a", "");
    assert_eq!(out.response.deleted, 1);
    assert_eq!(out.revision, 4);
    assert_eq!(out.response.prev_kvs[0].value, b("2"));
    assert_eq!(get(&s, "a"), None);
    assert_eq!(put(&mut s, "a", "3"), 5);
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // A delete that matches nothing does not advance the revision.
    assert_eq!(del(&mut s, "zzz", "").revision, 5);
    assert_eq!(del(&mut s, "zzz", "").response.deleted, 0);
}

#[test]
fn put_options() {
    let mut s = Mvcc::new();
    let out = s
        .put(&PutRequest {
            key: b("k"),
            value: b("v"),
            prev_kv: true,
            ..PutRequest::default()
        })
        .unwrap();
    assert_eq!(out.response.prev_kv, None);
    let out = s
        .put(&PutRequest {
            key: b("k"),
            value: b("w"),
            prev_kv: true,
            ..PutRequest::default()
        })
        .unwrap();
    assert_eq!(out.response.prev_kv.unwrap().value, b("v"));
    // ignore_value keeps the value and needs the key to exist.
    s.put(&PutRequest {
        key: b("k"),
        ignore_value: true,
        ..PutRequest::default()
    })
    .unwrap();
    assert_eq!(get(&s, "k").unwrap().value, b("w"));
    assert_eq!(get(&s, "k").unwrap().version, 3);
    let missing = s.put(&PutRequest {
        key: b("nope"),
        ignore_value: true,
        ..PutRequest::default()
    });
    assert_eq!(missing, Err(Error::KeyNotFound));
    assert_eq!(put_lease(&mut s, "x", "y", 77), Err(Error::LeaseNotFound));
    assert_eq!(s.revision(), 4, "failed puts change nothing");
}

#[test]
fn ranges_limit_count_sort_and_filters() {
    let mut s = Mvcc::new();
    for (i, k) in ["b", "a", "d", "c", "e"].iter().enumerate() {
        put(&mut s, &format!("p/{k}"), &format!("{}", 9 - i));
    }
    put(&mut s, "q", "outside");
    let all = s.range(&prefix(&s, "p/")).unwrap();
    assert_eq!(keys(&all.kvs), ["p/a", "p/b", "p/c", "p/d", "p/e"]);
    assert_eq!((all.count, all.more), (5, false));

    let mut req = prefix(&s, "p/");
    req.limit = 2;
    let page = s.range(&req).unwrap();
    assert_eq!(keys(&page.kvs), ["p/a", "p/b"]);
    assert_eq!((page.count, page.more), (5, true));

    req.limit = 5;
    assert!(!s.range(&req).unwrap().more);

    let mut req = prefix(&s, "p/");
    req.count_only = true;
    let counted = s.range(&req).unwrap();
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 5);

    let mut req = prefix(&s, "p/");
    req.keys_only = true;
    assert!(
        s.range(&req)
            .unwrap()
            .kvs
            .iter()
            .all(|kv| kv.value.is_empty())
    );

    let mut req = prefix(&s, "p/");
    req.sort_order = SortOrder::Descend;
    req.limit = 2;
    let sorted = s.range(&req).unwrap();
    assert_eq!(keys(&sorted.kvs), ["p/e", "p/d"]);
    assert!(sorted.more);

    // Sorting by value with no order given sorts ascending.
    let mut req = prefix(&s, "p/");
    req.sort_target = SortTarget::Value;
    req.keys_only = true;
    let by_value = s.range(&req).unwrap();
    assert_eq!(keys(&by_value.kvs), ["p/e", "p/c", "p/d", "p/a", "p/b"]);
    assert!(by_value.kvs.iter().all(|kv| kv.value.is_empty()));

    let mut req = prefix(&s, "p/");
    req.min_mod_revision = 4;
    req.max_mod_revision = 5;
    assert_eq!(keys(&s.range(&req).unwrap().kvs), ["p/c", "p/d"]);

    // From-key ranges and "every key".
    let from = s
        .range(&RangeRequest {
            key: b("p/d"),
            range_end: b("\0"),
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(keys(&from.kvs), ["p/d", "p/e", "q"]);
    let every = s
        .range(&RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(every.count, 6);
}

#[test]
fn ranges_at_old_revisions_see_old_sets() {
    let mut s = Mvcc::new();
    put(&mut s, "a", "1");
    let r = put(&mut s, "b", "1");
    del(&mut s, "a", "");
    put(&mut s, "c", "1");
    let mut req = prefix(&s, "");
    req.range_end = b("\0");
    req.revision = r;
    assert_eq!(keys(&s.range(&req).unwrap().kvs), ["a", "b"]);
    req.revision = 0;
    assert_eq!(keys(&s.range(&req).unwrap().kvs), ["b", "c"]);
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: b(key),
        range_end: bytes::Bytes::new(),
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(key),
        value: b(value),
        ..PutRequest::default()
    })
}

#[test]
fn txn_compare_and_swap() {
    let mut s = Mvcc::new();
    let rev = put(&mut s, "k", "v1");
    let cas = |mod_rev: i64, value: &str| TxnRequest {
        compare: vec![cmp("k", CompareResult::Equal, CompareTarget::Mod(mod_rev))],
        success: vec![put_op("k", value)],
        failure: vec![RequestOp::Range(RangeRequest {
            key: b("k"),
            ..RangeRequest::default()
        })],
    };
    let out = s.txn(&cas(rev, "v2")).unwrap();
    assert!(out.response.succeeded);
    assert_eq!(out.revision, 3);
    let out = s.txn(&cas(rev, "v3")).unwrap();
    assert!(!out.response.succeeded);
    assert_eq!(
        out.revision, 3,
        "a failed compare with only reads does not advance the revision"
    );
    let ResponseOp::Range(current) = &out.response.responses[0] else {
        panic!("expected a range response")
    };
    assert_eq!(current.kvs[0].value, b("v2"));

    // A missing key compares as zeroes, but never equals a value.
    let create_if_absent = TxnRequest {
        compare: vec![cmp("new", CompareResult::Equal, CompareTarget::Create(0))],
        success: vec![put_op("new", "x")],
        failure: vec![],
    };
    assert!(s.txn(&create_if_absent).unwrap().response.succeeded);
    assert!(!s.txn(&create_if_absent).unwrap().response.succeeded);
    let value_missing = TxnRequest {
        compare: vec![cmp(
            "absent",
            CompareResult::NotEqual,
            CompareTarget::Value(b("x")),
        )],
        ..TxnRequest::default()
    };
    assert!(!s.txn(&value_missing).unwrap().response.succeeded);
    let greater = TxnRequest {
        compare: vec![cmp("k", CompareResult::Greater, CompareTarget::Version(1))],
        ..TxnRequest::default()
    };
    assert!(s.txn(&greater).unwrap().response.succeeded);
}

#[test]
fn txn_is_atomic_at_one_revision_and_sees_its_own_writes() {
    let mut s = Mvcc::new();
    put(&mut s, "a", "0");
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "1"),
            put_op("b", "1"),
            RequestOp::Range(RangeRequest {
                key: b("a"),
                range_end: b("c"),
                ..RangeRequest::default()
            }),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("c"),
                range_end: b("d"),
                prev_kv: false,
            }),
        ],
        failure: vec![],
    };
    let out = s.txn(&txn).unwrap();
    assert_eq!(out.revision, 3);
    assert_eq!(out.events.len(), 2);
    assert!(out.events.iter().all(|e| e.kv.mod_revision == 3));
    let ResponseOp::Range(seen) = &out.response.responses[2] else {
        panic!("expected a range response")
    };
    assert_eq!(keys(&seen.kvs), ["a", "b"]);
    assert_eq!(seen.kvs[0].value, b("1"));

    // A branch that would fail half-way changes nothing.
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("c", "1"),
            RequestOp::Put(PutRequest {
                key: b("d"),
                lease: 99,
                ..PutRequest::default()
            }),
        ],
        failure: vec![],
    };
    assert_eq!(s.txn(&bad), Err(Error::LeaseNotFound));
    assert_eq!(get(&s, "c"), None);
    assert_eq!(s.revision(), 3);
    let dup = TxnRequest {
        success: vec![put_op("x", "1"), put_op("x", "2")],
        ..TxnRequest::default()
    };
    assert_eq!(s.txn(&dup), Err(Error::DuplicateKey));
}

#[test]
fn leases_attach_detach_and_revoke_at_one_revision() {
    let mut s = Mvcc::new();
    s.lease_grant(7, 10).unwrap();
    assert_eq!(s.lease_grant(7, 10), Err(Error::LeaseExists));
    put_lease(&mut s, "a", "1", 7).unwrap();
    put_lease(&mut s, "b", "1", 7).unwrap();
    put_lease(&mut s, "c", "1", 7).unwrap();
    put(&mut s, "c", "detached"); // a put without the lease detaches it
    del(&mut s, "b", "");
    assert_eq!(s.lease(7).unwrap().keys.len(), 1);
    let out = s.lease_revoke(7).unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].kind, EventKind::Delete);
    assert_eq!(get(&s, "a"), None);
    assert!(get(&s, "c").is_some());
    assert_eq!(s.lease_revoke(7).map(|_| ()), Err(Error::LeaseNotFound));
    // Revoking a lease with no keys does not advance the revision.
    s.lease_grant(8, 5).unwrap();
    let before = s.revision();
    assert_eq!(s.lease_revoke(8).unwrap().revision, before);
}

#[test]
fn compaction_bounds_history_and_frees_memory() {
    let mut s = Mvcc::new();
    for i in 0..100 {
        put(&mut s, "k", &format!("{i}"));
    }
    put(&mut s, "gone", "x");
    let r = del(&mut s, "gone", "").revision;
    let size_before = s.size_bytes();
    s.compact(r).unwrap();
    assert_eq!(
        get_at(&s, "k", r - 1),
        Err(Error::Compacted {
            compact_revision: r
        })
    );
    assert_eq!(get_at(&s, "k", r).unwrap().unwrap().value, b("99"));
    assert_eq!(
        s.compact(r),
        Err(Error::Compacted {
            compact_revision: r
        })
    );
    assert_eq!(s.compact(r + 100), Err(Error::FutureRevision));
    while !s.compact_step(1) {}
    assert!(
        s.size_bytes() < size_before / 10,
        "{} vs {size_before}",
        s.size_bytes()
    );
    // The tombstone at the compaction point stays for watchers starting there...
    assert_eq!(s.key_count(), 2);
    put(&mut s, "k", "new");
    s.compact(s.revision()).unwrap();
    while !s.compact_step(100) {}
    // ...and goes once the compaction point passes it.
    assert_eq!(s.key_count(), 1);
    assert_eq!(get(&s, "k").unwrap().version, 101);
}

#[test]
fn events_since_replays_history_in_order_or_reports_compaction() {
    let mut s = Mvcc::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "a", "2"); // 4
    del(&mut s, "a", ""); // 5
    let all = KeyRange::new(&b(""), &b("\0"));
    let (events, next) = s.events_since(&all, 3, 100, 100).unwrap();
    assert_eq!(
        events.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(next, 6);
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b("2"));
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b("1"));
    let only_a = KeyRange::new(&b("a"), &b(""));
    let (events, _) = s.events_since(&only_a, 0, 100, 100).unwrap();
    assert_eq!(events.len(), 3);
    // Chunked: at most one revision per call here, continuing where it stopped.
    let (events, next) = s.events_since(&all, 2, 1, 100).unwrap();
    assert_eq!((events.len(), next), (1, 3));
    s.compact(4).unwrap();
    assert_eq!(
        s.events_since(&all, 3, 100, 100).map(|r| r.1),
        Err(Error::Compacted {
            compact_revision: 4
        })
    );
    let (events, _) = s.events_since(&all, 4, 100, 100).unwrap();
    assert_eq!(
        events.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        [4, 5]
    );
}

#[test]
fn txn_events_share_a_revision_in_order() {
    let mut s = Mvcc::new();
    put(&mut s, "x", "0");
    let out = s
        .txn(&TxnRequest {
            success: vec![
                put_op("b", "1"),
                put_op("a", "1"),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b("x"),
                    ..DeleteRangeRequest::default()
                }),
            ],
            ..TxnRequest::default()
        })
        .unwrap();
    let all = KeyRange::new(&b(""), &b("\0"));
    let (replayed, _) = s.events_since(&all, out.revision, 100, 100).unwrap();
    assert_eq!(replayed, out.events);
    assert_eq!(
        keys(&replayed.iter().map(|e| e.kv.clone()).collect::<Vec<_>>()),
        ["b", "a", "x"]
    );
}

#[test]
fn snapshot_round_trip_preserves_everything() {
    let mut s = Mvcc::new();
    s.lease_grant(3, 30).unwrap();
    for i in 0..50 {
        put(&mut s, &format!("k{}", i % 7), &format!("{i}"));
    }
    put_lease(&mut s, "leased", "v", 3).unwrap();
    del(&mut s, "k1", "");
    s.compact(20).unwrap();
    put(&mut s, "after", "compaction");
    let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
    s.write_snapshot(&mut writer).unwrap();
    let bytes = writer.finish().unwrap();

    let mut reader = SnapshotReader::new(&bytes[..]).unwrap();
    let mut restored = Mvcc::read_snapshot(&mut reader).unwrap();
    reader.finish().unwrap();
    assert_eq!(restored.revision(), s.revision());
    assert_eq!(restored.compact_revision(), 20);
    let every = RangeRequest {
        key: b("\0"),
        range_end: b("\0"),
        ..RangeRequest::default()
    };
    assert_eq!(restored.range(&every).unwrap(), s.range(&every).unwrap());
    let all = KeyRange::new(&b(""), &b("\0"));
    assert_eq!(
        restored.events_since(&all, 20, 1000, 1000).unwrap(),
        s.events_since(&all, 20, 1000, 1000).unwrap()
    );
    assert_eq!(restored.lease(3).unwrap().keys.len(), 1);
    assert_eq!(restored.size_bytes(), s.size_bytes());
    // Both continue identically.
    assert_eq!(put(&mut restored, "z", "1"), put(&mut s, "z", "1"));

    // Any flipped byte or truncation is detected.
    for at in [9, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x40;
        let result = SnapshotReader::new(&bad[..])
            .and_then(|mut r| Mvcc::read_snapshot(&mut r).and_then(|_| r.finish()));
        assert!(result.is_err(), "corruption at {at} went unnoticed");
    }
    let truncated = &bytes[..bytes.len() - 10];
    let result = SnapshotReader::new(truncated)
        .and_then(|mut r| Mvcc::read_snapshot(&mut r).and_then(|_| r.finish()));
    assert!(result.is_err());
}

#[test]
fn a_snapshot_written_in_chunks_while_writes_go_on_captures_one_revision() {
    let mut s = Mvcc::new();
    s.lease_grant(9, 60).unwrap();
    for i in 0..100 {
        put(&mut s, &format!("k{i:03}"), "before");
    }
    put_lease(&mut s, "k050", "leased", 9).unwrap();
    let every = RangeRequest {
        key: b("\0"),
        range_end: b("\0"),
        ..RangeRequest::default()
    };
    let expected = s.range(&every).unwrap();
    let at = s.revision();

    let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
    let mut cursor = s.snapshot_begin(&mut writer).unwrap();
    let mut round = 0;
    while !s.snapshot_chunk(&mut cursor, 7, &mut writer).unwrap() {
        // Between chunks the state moves on: updates, new keys, deletes and a compaction
        // whose memory reclamation must wait for the snapshot.
        put(&mut s, &format!("k{:03}", round * 3), "after");
        put(&mut s, &format!("new{round}"), "after");
        del(&mut s, &format!("k{:03}", 99 - round), "");
        s.compact(s.revision()).unwrap();
        assert!(
            !s.compact_step(1000),
            "compaction reclaims nothing while a snapshot is written"
        );
        round += 1;
    }
    drop(cursor);
    let bytes = writer.finish().unwrap();
    assert!(round > 5, "the snapshot should have taken several chunks");

    let mut reader = SnapshotReader::new(&bytes[..]).unwrap();
    let restored = Mvcc::read_snapshot(&mut reader).unwrap();
    reader.finish().unwrap();
    assert_eq!(restored.revision(), at);
    assert_eq!(restored.range(&every).unwrap(), expected);
    assert_eq!(restored.lease(9).unwrap().keys.len(), 1);
    // Once the snapshot is done, the paused compaction goes ahead.
    while !s.compact_step(1000) {}
    assert!(s.key_count() < 100 + round);
}

#[test]
fn mass_delete_of_a_thousand_keys_is_cheap() {
    let mut s = Mvcc::new();
    for i in 0..1000 {
        put(
            &mut s,
            &format!("/registry/pods/ns/p{i:04}"),
            &"x".repeat(512),
        );
    }
    let started = std::time::Instant::now();
    let out = del(&mut s, "/registry/pods/", "/registry/pods0");
    assert_eq!(out.response.deleted, 1000);
    assert_eq!(out.events.len(), 1000);
    // Generous bound for unoptimized test builds; the point is linear, not quadratic, work.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}
