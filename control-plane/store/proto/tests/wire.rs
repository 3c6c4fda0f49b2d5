//! Wire-compatibility checks for the generated etcd v3 types.
//!
//! Field numbers and service names are the contract with real etcd clients,
//! so these tests pin them with hand-built bytes instead of only
//! round-tripping through our own encoder.

use bytes::Bytes;
use prost::Message;
use store_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    auth_server, cluster_server, compare, kv_server, lease_server, maintenance_server, request_op,
    watch_create_request, watch_request, watch_server,
};

#[test]
fn put_request_matches_etcd_field_numbers() {
    let req = PutRequest {
        key: Bytes::from_static(b"a"),
        value: Bytes::from_static(b"b"),
        lease: 5,
        ..Default::default()
    };
    // key = field 1 (len), value = field 2 (len), lease = field 3 (varint).
    let expected = [0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x18, 0x05];
    assert_eq!(req.encode_to_vec(), expected);
    assert_eq!(PutRequest::decode(&expected[..]).unwrap(), req);

    // prev_kv = 4, ignore_value = 5, ignore_lease = 6, all bools.
    let flags = [0x20, 0x01, 0x28, 0x01, 0x30, 0x01];
    let decoded = PutRequest::decode(&flags[..]).unwrap();
    assert!(decoded.prev_kv && decoded.ignore_value && decoded.ignore_lease);
}

#[test]
fn watch_create_request_round_trips() {
    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: Bytes::from_static(b"/registry/"),
                range_end: Bytes::from_static(b"/registry0"),
                start_revision: 42,
                progress_notify: true,
                filters: vec![watch_create_request::FilterType::Nodelete as i32],
                prev_kv: true,
                watch_id: 7,
                fragment: true,
            },
        )),
    };
    let encoded = req.encode_to_vec();
    // create_request is field 1 of WatchRequest, length-delimited.
    assert_eq!(encoded[0], 0x0a);
    assert_eq!(WatchRequest::decode(encoded.as_slice()).unwrap(), req);

    // Hand-built: WatchRequest{create_request{key:"k", start_revision:3, watch_id:9}}.
    let hand = [0x0a, 0x07, 0x0a, 0x01, b'k', 0x18, 0x03, 0x38, 0x09];
    let Some(watch_request::RequestUnion::CreateRequest(create)) =
        WatchRequest::decode(&hand[..]).unwrap().request_union
    else {
        panic!("expected a create request");
    };
    assert_eq!(create.key, Bytes::from_static(b"k"));
    assert_eq!(create.start_revision, 3);
    assert_eq!(create.watch_id, 9);
}

#[test]
fn txn_request_round_trips() {
    let req = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: Bytes::from_static(b"k"),
            target_union: Some(compare::TargetUnion::ModRevision(12)),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: Bytes::from_static(b"k"),
                ..Default::default()
            })),
        }],
    };
    let encoded = req.encode_to_vec();
    assert_eq!(TxnRequest::decode(encoded.as_slice()).unwrap(), req);

    // Hand-built Compare{target: MOD, key:"k", mod_revision: 12, range_end:"z"}:
    // range_end is field 64, whose tag needs a two-byte varint (0x82 0x04).
    let hand = [
        0x10, 0x02, 0x1a, 0x01, b'k', 0x30, 0x0c, 0x82, 0x04, 0x01, b'z',
    ];
    let cmp = Compare::decode(&hand[..]).unwrap();
    assert_eq!(cmp.target(), compare::CompareTarget::Mod);
    assert_eq!(cmp.result(), compare::CompareResult::Equal);
    assert_eq!(
        cmp.target_union,
        Some(compare::TargetUnion::ModRevision(12))
    );
    assert_eq!(cmp.range_end, Bytes::from_static(b"z"));
}

#[test]
fn service_names_match_etcd() {
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(auth_server::SERVICE_NAME, "etcdserverpb.Auth");
}
