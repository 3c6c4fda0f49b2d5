//! Small constructors shared by the store and watch tests.
#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use mvcc::*;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn put(store: &mut Mvcc, key: &str, value: &str) -> i64 {
    store
        .put(&PutRequest {
            key: b(key),
            value: b(value),
            ..PutRequest::default()
        })
        .unwrap()
        .revision
}

pub fn put_lease(store: &mut Mvcc, key: &str, value: &str, lease: i64) -> Result<i64, Error> {
    store
        .put(&PutRequest {
            key: b(key),
            value: b(value),
            lease,
            ..PutRequest::default()
        })
        .map(|o| o.revision)
}

pub fn get(store: &Mvcc, key: &str) -> Option<KeyValue> {
    store
        .range(&RangeRequest {
            key: b(key),
            ..RangeRequest::default()
        })
        .unwrap()
        .kvs
        .pop()
}

pub fn get_at(store: &Mvcc, key: &str, revision: i64) -> Result<Option<KeyValue>, Error> {
    store
        .range(&RangeRequest {
            key: b(key),
            revision,
            ..RangeRequest::default()
        })
        .map(|mut r| r.kvs.pop())
}

pub fn prefix(store: &Mvcc, p: &str) -> RangeRequest {
    let _ = store;
    RangeRequest {
        key: b(p),
        range_end: prefix_end(p),
        ..RangeRequest::default()
    }
}

pub fn prefix_end(p: &str) -> Bytes {
    let mut end = p.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

pub fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

pub fn del(store: &mut Mvcc, key: &str, end: &str) -> WriteOutcome<DeleteRangeResponse> {
    store
        .delete_range(&DeleteRangeRequest {
            key: b(key),
            range_end: b(end),
            prev_kv: true,
        })
        .unwrap()
}
