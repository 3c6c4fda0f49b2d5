//! Transaction rules that do not depend on the store's state: compare evaluation on one
//! key-value, and the check that a transaction does not write a key twice.

use std::collections::HashSet;

use bytes::Bytes;

use crate::error::Error;
use crate::key_range::KeyRange;
use crate::types::{Compare, CompareResult, CompareTarget, KeyValue, RequestOp, TxnRequest};

/// Refuses transactions that write one key twice, in either branch (a put twice, or a put
/// inside a deleted range), as etcd does: the result would depend on operation order.
pub fn validate_txn(req: &TxnRequest) -> Result<(), Error> {
    writes(&req.success)?;
    writes(&req.failure)?;
    Ok(())
}

/// The deleted ranges and put keys of a branch, checked for conflicts.
fn writes(ops: &[RequestOp]) -> Result<(Vec<KeyRange>, HashSet<Bytes>), Error> {
    let mut deletes = Vec::new();
    let mut puts = HashSet::new();
    for op in ops {
        match op {
            RequestOp::Put(put) => {
                if !puts.insert(put.key.clone()) {
                    return Err(Error::DuplicateKey);
                }
            }
            RequestOp::DeleteRange(delete) => {
                deletes.push(KeyRange::new(&delete.key, &delete.range_end))
            }
            RequestOp::Txn(txn) => {
                // Only one nested branch runs, so its two branches may touch the same keys; both
                // must stay clear of the outer branch's puts.
                let (success_deletes, success_puts) = writes(&txn.success)?;
                let (failure_deletes, failure_puts) = writes(&txn.failure)?;
                for key in success_puts.iter().chain(&failure_puts) {
                    if puts.contains(key) {
                        return Err(Error::DuplicateKey);
                    }
                }
                puts.extend(success_puts);
                puts.extend(failure_puts);
                deletes.extend(success_deletes);
                deletes.extend(failure_deletes);
            }
            RequestOp::Range(_) => {}
        }
    }
    if puts
        .iter()
        .any(|key| deletes.iter().any(|range| range.contains(key)))
    {
        return Err(Error::DuplicateKey);
    }
    Ok((deletes, puts))
}

/// Whether one key-value satisfies a compare.
pub(crate) fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &compare.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
    };
    match compare.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DeleteRangeRequest, PutRequest};

    fn put(key: &'static str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: Bytes::from_static(key.as_bytes()),
            ..PutRequest::default()
        })
    }

    fn delete(key: &'static str, end: &'static str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(key.as_bytes()),
            range_end: Bytes::from_static(end.as_bytes()),
            prev_kv: false,
        })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_writes_are_refused() {
        assert!(validate_txn(&txn(vec![put("a"), put("b")], vec![put("a")])).is_ok());
        assert_eq!(
            validate_txn(&txn(vec![put("a"), put("a")], vec![])),
            Err(Error::DuplicateKey)
        );
        assert_eq!(
            validate_txn(&txn(vec![delete("a", "c"), put("b")], vec![])),
            Err(Error::DuplicateKey)
        );
        assert!(
            validate_txn(&txn(
                vec![delete("a", "c"), delete("b", "d"), put("d")],
                vec![]
            ))
            .is_ok()
        );
        let nested = RequestOp::Txn(txn(vec![put("x")], vec![put("x")]));
        assert!(validate_txn(&txn(vec![nested.clone(), put("y")], vec![])).is_ok());
        assert_eq!(
            validate_txn(&txn(vec![nested, put("x")], vec![])),
            Err(Error::DuplicateKey)
        );
    }
}
