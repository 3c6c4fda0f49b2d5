//! Group commit at the Raft level: requests that arrive while earlier batches are in flight
//! are gathered into one log entry.
//!
//! A bounded number of batches may be in flight; while all slots are busy, new requests queue
//! and form the next, larger batch. Under light load a request is proposed alone and at once,
//! under heavy load hundreds share one append, one fsync and one replication round.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::StoreError;
use crate::forward::{ForwardRequest, ForwardResponse};
use crate::node::Inner;
use crate::types::*;

/// A request waiting to be proposed.
pub struct Pending {
    pub op: Op,
    pub size: usize,
    pub reply: oneshot::Sender<Result<OpOutcome, StoreError>>,
}

/// Approximate bytes an op adds to a log entry, for batch sizing.
pub fn op_size(op: &Op) -> usize {
    fn request_ops(ops: &[mvcc::RequestOp]) -> usize {
        ops.iter()
            .map(|op| match op {
                mvcc::RequestOp::Put(p) => p.key.len() + p.value.len(),
                mvcc::RequestOp::DeleteRange(d) => d.key.len() + d.range_end.len(),
                mvcc::RequestOp::Range(r) => r.key.len() + r.range_end.len(),
                mvcc::RequestOp::Txn(t) => request_ops(&t.success) + request_ops(&t.failure),
            })
            .sum()
    }
    64 + match op {
        Op::Put(p) => p.key.len() + p.value.len(),
        Op::DeleteRange(d) => d.key.len() + d.range_end.len(),
        Op::Txn(t) => request_ops(&t.success) + request_ops(&t.failure),
        _ => 0,
    }
}

/// Takes requests from `queue` and proposes them in batches until the queue closes.
pub async fn run(inner: Arc<Inner>, mut queue: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(inner.config.max_inflight_batches.max(1)));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < inner.config.max_batch_ops && bytes < inner.config.max_batch_bytes {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.size;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let (ops, replies): (Vec<Op>, Vec<_>) =
                batch.into_iter().map(|p| (p.op, p.reply)).unzip();
            let result = inner
                .on_leader(ForwardRequest::Propose(Proposal { ops }))
                .await;
            drop(slot);
            match result {
                Ok(ForwardResponse::Proposed(result)) if result.results.len() == replies.len() => {
                    for (reply, result) in replies.into_iter().zip(result.results) {
                        let _ = reply.send(result.map_err(StoreError::from));
                    }
                }
                Ok(other) => {
                    let error =
                        StoreError::Internal(format!("unexpected proposal answer {other:?}"));
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
