//! [`Backend`] on the store member running in this process: no network hop, no encoding.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use mvcc::watch::WatchSpec;
use mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, KeyValue, PutRequest,
    RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use store_raft::{Op, OpResponse, StoreError, StoreNode, Watcher};

use crate::{
    Backend, Change, ChangeKind, Kv, ListRequest, ListResult, StorageError, WatchItem, WatchStream,
    prefix_end,
};

/// The in-process store member as the API server's storage.
#[derive(Clone)]
pub struct LocalBackend {
    node: StoreNode,
}

impl LocalBackend {
    /// Serves storage from `node`.
    pub fn new(node: StoreNode) -> LocalBackend {
        LocalBackend { node }
    }

    /// One key, linearizable or from this member's applied state.
    async fn read_key(&self, key: &str, serializable: bool) -> Result<Option<Kv>, StorageError> {
        let (response, _) = self
            .node
            .range(&key_only(key), serializable)
            .await
            .map_err(from_store)?;
        Ok(response.kvs.into_iter().next().map(kv))
    }

    async fn txn(&self, txn: TxnRequest) -> Result<(i64, TxnResponse), StorageError> {
        let outcome = self.node.propose(Op::Txn(txn)).await.map_err(from_store)?;
        match outcome.response {
            OpResponse::Txn(response) => Ok((outcome.revision, response)),
            other => Err(StorageError::Internal(format!(
                "a transaction answered {other:?}"
            ))),
        }
    }
}

fn key_only(key: &str) -> RangeRequest {
    RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..RangeRequest::default()
    }
}

fn mod_revision_is(key: &str, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Mod(revision),
        key: Bytes::copy_from_slice(key.as_bytes()),
        range_end: Bytes::new(),
    }
}

/// The current value a failed compare-and-swap read in its failure branch.
fn current_of(response: TxnResponse) -> Option<Kv> {
    response.responses.into_iter().find_map(|op| match op {
        ResponseOp::Range(range) => range.kvs.into_iter().next().map(kv),
        _ => None,
    })
}

fn kv(kv: KeyValue) -> Kv {
    Kv {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
    }
}

fn from_store(error: StoreError) -> StorageError {
    match error {
        StoreError::Mvcc(mvcc::Error::Compacted { compact_revision }) => StorageError::Compacted {
            requested: 0,
            compacted: compact_revision,
        },
        StoreError::Mvcc(mvcc::Error::FutureRevision) => StorageError::FutureRevision(0),
        StoreError::NoSpace => StorageError::NoSpace(error.to_string()),
        StoreError::NoLeader
        | StoreError::NotLeader
        | StoreError::LeaderChanged
        | StoreError::Timeout
        | StoreError::Stopped => StorageError::Unavailable(error.to_string()),
        other => StorageError::Internal(other.to_string()),
    }
}

/// Fills in the revision a compacted or future-revision error was about.
fn at_revision(error: StorageError, requested: i64) -> StorageError {
    match error {
        StorageError::Compacted { compacted, .. } => StorageError::Compacted {
            requested,
            compacted,
        },
        StorageError::FutureRevision(_) => StorageError::FutureRevision(requested),
        other => other,
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn get(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        self.read_key(key, false).await
    }

    async fn get_serializable(&self, key: &str) -> Result<Option<Kv>, StorageError> {
        self.read_key(key, true).await
    }

    async fn list(&self, request: &ListRequest) -> Result<ListResult, StorageError> {
        let start = if request.start.is_empty() {
            &request.prefix
        } else {
            &request.start
        };
        let range = RangeRequest {
            key: Bytes::copy_from_slice(start.as_bytes()),
            range_end: prefix_end(request.prefix.as_bytes()),
            limit: i64::try_from(request.limit).unwrap_or(i64::MAX),
            revision: request.revision,
            ..RangeRequest::default()
        };
        let (response, current) = self
            .node
            .range(&range, request.serializable)
            .await
            .map_err(|e| at_revision(from_store(e), request.revision))?;
        let returned = response.kvs.len() as i64;
        Ok(ListResult {
            kvs: response.kvs.into_iter().map(kv).collect(),
            revision: if request.revision > 0 {
                request.revision
            } else {
                current
            },
            more: response.more,
            remaining: if response.more {
                response.count - returned
            } else {
                0
            },
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64, StorageError> {
        let (revision, response) = self
            .txn(TxnRequest {
                compare: vec![mod_revision_is(key, 0)],
                success: vec![RequestOp::Put(PutRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    value,
                    ..PutRequest::default()
                })],
                failure: vec![],
            })
            .await?;
        if response.succeeded {
            Ok(revision)
        } else {
            Err(StorageError::AlreadyExists {
                key: key.to_owned(),
            })
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected: i64) -> Result<i64, StorageError> {
        let (revision, response) = self
            .txn(TxnRequest {
                compare: vec![mod_revision_is(key, expected)],
                success: vec![RequestOp::Put(PutRequest {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    value,
                    ..PutRequest::default()
                })],
                failure: vec![RequestOp::Range(key_only(key))],
            })
            .await?;
        if response.succeeded {
            return Ok(revision);
        }
        match current_of(response) {
            Some(current) => Err(StorageError::Conflict {
                key: key.to_owned(),
                current: Box::new(current),
            }),
            None => Err(StorageError::NotFound {
                key: key.to_owned(),
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> Result<(i64, Kv), StorageError> {
        let delete = RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::new(),
            prev_kv: true,
        });
        let (revision, response) = self
            .txn(TxnRequest {
                compare: expected
                    .map(|expected| vec![mod_revision_is(key, expected)])
                    .unwrap_or_default(),
                success: vec![delete],
                failure: vec![RequestOp::Range(key_only(key))],
            })
            .await?;
        let not_found = || StorageError::NotFound {
            key: key.to_owned(),
        };
        if !response.succeeded {
            return Err(match current_of(response) {
                Some(current) => StorageError::Conflict {
                    key: key.to_owned(),
                    current: Box::new(current),
                },
                None => not_found(),
            });
        }
        let deleted = response.responses.into_iter().find_map(|op| match op {
            ResponseOp::DeleteRange(deleted) => deleted.prev_kvs.into_iter().next(),
            _ => None,
        });
        deleted
            .map(|prev| (revision, kv(prev)))
            .ok_or_else(not_found)
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<Box<dyn WatchStream>, StorageError> {
        let prefix = Bytes::copy_from_slice(prefix.as_bytes());
        let end = prefix_end(&prefix);
        let start_revision = after + 1;
        let watcher = self
            .node
            .watch(WatchSpec {
                range: KeyRange::new(&prefix, &end),
                start_revision,
                prev_kv: true,
                no_put: false,
                no_delete: false,
            })
            .map_err(|e| at_revision(from_store(e), start_revision))?;
        Ok(Box::new(LocalWatch { watcher }))
    }

    async fn revision(&self) -> Result<i64, StorageError> {
        self.node.linearize().await.map_err(from_store)?;
        Ok(self.node.revision())
    }

    async fn compact(&self, revision: i64) -> Result<(), StorageError> {
        self.node
            .propose(Op::Compact(revision))
            .await
            .map_err(|e| at_revision(from_store(e), revision))?;
        Ok(())
    }
}

struct LocalWatch {
    watcher: Watcher,
}

#[async_trait]
impl WatchStream for LocalWatch {
    async fn next(&mut self, idle: Duration) -> Result<WatchItem, StorageError> {
        loop {
            // `Watcher::next` is cancel-safe: it only awaits while its mailbox is empty.
            tokio::select! {
                batch = self.watcher.next() => {
                    let batch = batch.map_err(|e| from_store(e.into()))?;
                    return Ok(WatchItem::Changes(batch.events.into_iter().map(change).collect()));
                }
                () = tokio::time::sleep(idle) => {
                    if let Some(revision) = self.watcher.progress() {
                        return Ok(WatchItem::Progress(revision));
                    }
                }
            }
        }
    }
}

fn change(event: mvcc::Event) -> Change {
    Change {
        kind: match event.kind {
            mvcc::EventKind::Put => ChangeKind::Put,
            mvcc::EventKind::Delete => ChangeKind::Delete,
        },
        kv: kv(event.kv),
        prev: event.prev_kv.map(kv),
    }
}
