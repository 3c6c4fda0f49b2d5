//! The state machine proper: every key's history, the revision log, leases and compaction.
//!
//! Reads take `&self`, writes `&mut self`; the caller decides the locking. Every write returns
//! the events it produced so the caller can hand them to the watch hub while it still holds the
//! write side, which is what keeps watchers from missing or reordering changes.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::error::Error;
use crate::history::{History, Version};
use crate::key_range::KeyRange;
use crate::lease::{LeaseInfo, LeaseTable};
use crate::types::*;

/// Revisions start at 1, as etcd's do: the first write is revision 2.
const INITIAL_REVISION: i64 = 1;

/// The result of a write: the response, the store revision after it, and its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome<T> {
    /// What the request returns.
    pub response: T,
    /// The store's revision once the write is done (unchanged if nothing changed).
    pub revision: i64,
    /// The changes, in revision order.
    pub events: Vec<Event>,
}

/// etcd-compatible multi-version key-value state.
#[derive(Debug)]
pub struct Mvcc {
    pub(crate) keys: BTreeMap<Bytes, History>,
    /// Every change with `main >= compacted`, in revision order: the index watch catch-up reads.
    pub(crate) revlog: VecDeque<(Revision, Bytes)>,
    pub(crate) current: i64,
    pub(crate) compacted: i64,
    pub(crate) leases: LeaseTable,
    /// Keys whose history still holds versions a finished compaction made unreachable; the
    /// physical cleanup runs in bounded steps so one compaction never stalls writers.
    pub(crate) compact_cursor: Option<Bytes>,
    pub(crate) size: usize,
    /// Snapshots being written from this state; physical compaction waits while any is.
    pub(crate) snapshot_pins: Arc<AtomicUsize>,
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc::new()
    }
}

/// A write in progress: everything it changes gets revision `main` with increasing `sub`.
struct WriteCtx {
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl WriteCtx {
    fn next(&mut self) -> Revision {
        let rev = Revision {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }
}

impl Mvcc {
    /// An empty store at revision 1.
    pub fn new() -> Mvcc {
        Mvcc {
            keys: BTreeMap::new(),
            revlog: VecDeque::new(),
            current: INITIAL_REVISION,
            compacted: 0,
            leases: LeaseTable::default(),
            compact_cursor: None,
            size: 0,
            snapshot_pins: Arc::default(),
        }
    }

    /// The newest revision.
    pub fn revision(&self) -> i64 {
        self.current
    }

    /// The revision the store is compacted to (0 if never).
    pub fn compact_revision(&self) -> i64 {
        self.compacted
    }

    /// Approximate bytes held by keys, values and their history.
    pub fn size_bytes(&self) -> usize {
        self.size
    }

    /// Number of keys with any history (live or deleted but not yet compacted).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Whether a compaction still has memory to reclaim with [`Mvcc::compact_step`].
    pub fn compaction_pending(&self) -> bool {
        self.compact_cursor.is_some()
    }

    /// Reads a range at a revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let rev = self.read_revision(req.revision)?;
        Ok(self.range_at(req, rev))
    }

    /// A checksum of every live key-value at `revision` (0 = newest), for comparing replicas.
    /// Returns it with the revision it covers.
    pub fn hash_at(&self, revision: i64) -> Result<(u32, i64), Error> {
        let rev = self.read_revision(revision)?;
        let mut crc = 0u32;
        for (key, history) in &self.keys {
            if let Some(v) = history.live_at(rev) {
                crc = crc32c::crc32c_append(crc, key);
                crc = crc32c::crc32c_append(crc, v.value.as_deref().unwrap_or_default());
                for n in [v.create_revision, v.rev.main, v.version, v.lease] {
                    crc = crc32c::crc32c_append(crc, &n.to_le_bytes());
                }
            }
        }
        Ok((crc, rev))
    }

    /// Creates or replaces a key.
    pub fn put(&mut self, req: &PutRequest) -> Result<WriteOutcome<PutResponse>, Error> {
        self.check_put(req)?;
        self.write(|store, ctx| Ok(store.put_in(ctx, req)))
    }

    /// Deletes every key of a range.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<WriteOutcome<DeleteRangeResponse>, Error> {
        self.write(|store, ctx| Ok(store.delete_in(ctx, req)))
    }

    /// Runs a transaction atomically at one revision.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<WriteOutcome<TxnResponse>, Error> {
        crate::txn::validate_txn(req)?;
        self.write(|store, ctx| store.txn_in(ctx, req))
    }

    /// Discards history before `revision`. Reads and watches below it fail with
    /// [`Error::Compacted`] from now on; memory is reclaimed by [`Mvcc::compact_step`].
    pub fn compact(&mut self, revision: i64) -> Result<(), Error> {
        if revision <= self.compacted {
            return Err(Error::Compacted {
                compact_revision: self.compacted,
            });
        }
        if revision > self.current {
            return Err(Error::FutureRevision);
        }
        self.compacted = revision;
        let drop = self.revlog.partition_point(|(rev, _)| rev.main < revision);
        self.revlog.drain(..drop);
        self.compact_cursor = Some(Bytes::new());
        Ok(())
    }

    /// Reclaims the history of up to `budget` keys that the last compaction made unreachable.
    /// Returns `true` when nothing is left to reclaim.
    pub fn compact_step(&mut self, budget: usize) -> bool {
        if self.snapshot_pins.load(Ordering::Acquire) > 0 {
            return self.compact_cursor.is_none();
        }
        let Some(cursor) = self.compact_cursor.take() else {
            return true;
        };
        let compacted = self.compacted;
        let mut emptied = Vec::new();
        let mut freed = 0;
        let mut next = None;
        for (n, (key, history)) in self.keys.range_mut(cursor..).enumerate() {
            if n == budget {
                next = Some(key.clone());
                break;
            }
            freed += history.compact(key.len(), compacted);
            if history.is_empty() {
                emptied.push(key.clone());
            }
        }
        for key in emptied {
            self.keys.remove(&key);
        }
        self.size = self.size.saturating_sub(freed);
        self.compact_cursor = next;
        self.compact_cursor.is_none()
    }

    /// Creates a lease.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), Error> {
        if id <= 0 {
            return Err(Error::InvalidArgument(format!(
                "lease id {id} must be positive"
            )));
        }
        if !self.leases.grant(id, ttl) {
            return Err(Error::LeaseExists);
        }
        Ok(())
    }

    /// Removes a lease and deletes its keys, all at one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<WriteOutcome<()>, Error> {
        let lease = self.leases.remove(id).ok_or(Error::LeaseNotFound)?;
        self.write(|store, ctx| {
            for key in &lease.keys {
                store.delete_key(ctx, key, false);
            }
            Ok(())
        })
    }

    /// A lease and its keys.
    pub fn lease(&self, id: i64) -> Option<&LeaseInfo> {
        self.leases.get(id)
    }

    /// Every lease.
    pub fn leases(&self) -> impl Iterator<Item = &LeaseInfo> {
        self.leases.iter()
    }

    /// The changes to keys in `range` from revision `from` on, for a watcher catching up.
    ///
    /// Returns at most about `max_events` events, never splitting a revision, after scanning
    /// at most about `max_scan` changes; and the revision to continue from. Fails with
    /// [`Error::Compacted`] if `from` is below the compaction point.
    pub fn events_since(
        &self,
        range: &KeyRange,
        from: i64,
        max_events: usize,
        max_scan: usize,
    ) -> Result<(Vec<Event>, i64), Error> {
        if from < self.compacted {
            return Err(Error::Compacted {
                compact_revision: self.compacted,
            });
        }
        let start = self.revlog.partition_point(|(rev, _)| rev.main < from);
        let mut events = Vec::new();
        let mut last_main = None;
        for (scanned, (rev, key)) in self.revlog.range(start..).enumerate() {
            if last_main != Some(rev.main) && (events.len() >= max_events || scanned >= max_scan) {
                return Ok((events, rev.main));
            }
            last_main = Some(rev.main);
            if !range.contains(key) {
                continue;
            }
            if let Some(event) = self.keys.get(key).and_then(|h| event_at(key, h, *rev)) {
                events.push(event);
            }
        }
        Ok((events, self.current.max(from - 1) + 1))
    }

    /// Resolves a requested read revision (0 = newest) and checks it is in history.
    fn read_revision(&self, requested: i64) -> Result<i64, Error> {
        if requested <= 0 {
            return Ok(self.current);
        }
        if requested > self.current {
            return Err(Error::FutureRevision);
        }
        if requested < self.compacted {
            return Err(Error::Compacted {
                compact_revision: self.compacted,
            });
        }
        Ok(requested)
    }

    fn range_at(&self, req: &RangeRequest, rev: i64) -> RangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        if range.is_empty() {
            return RangeResponse::default();
        }
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let sort_order = match (req.sort_order, req.sort_target) {
            (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => {
                SortOrder::None
            }
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        // Unsorted, unfiltered ranges stop collecting at limit+1 (the extra one sets `more`);
        // the rest need every key before they can sort and truncate.
        let collect = if req.count_only {
            0
        } else if req.limit > 0 && sort_order == SortOrder::None && !filtered {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        } else {
            usize::MAX
        };
        let keep_values = !req.keys_only || req.sort_target == SortTarget::Value;
        let mut count = 0i64;
        let mut kvs = Vec::new();
        for (key, history) in self.keys.range(range.bounds()) {
            let Some(version) = history.live_at(rev) else {
                continue;
            };
            count += 1;
            if kvs.len() < collect {
                kvs.push(version.to_kv(key, !keep_values));
            }
        }
        if filtered {
            kvs.retain(|kv| {
                (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
            });
        }
        if sort_order != SortOrder::None {
            sort_kvs(&mut kvs, req.sort_target, sort_order);
        }
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit)
            && limit > 0
            && kvs.len() > limit
        {
            kvs.truncate(limit);
            more = true;
        }
        if req.keys_only && keep_values {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        RangeResponse { kvs, more, count }
    }

    /// Runs `body` as one write transaction at revision `current + 1`; the revision only
    /// advances if `body` changed something.
    fn write<T>(
        &mut self,
        body: impl FnOnce(&mut Mvcc, &mut WriteCtx) -> Result<T, Error>,
    ) -> Result<WriteOutcome<T>, Error> {
        let mut ctx = WriteCtx {
            main: self.current + 1,
            sub: 0,
            events: Vec::new(),
        };
        let response = body(self, &mut ctx)?;
        if ctx.sub > 0 {
            self.current = ctx.main;
        }
        Ok(WriteOutcome {
            response,
            revision: self.current,
            events: ctx.events,
        })
    }

    /// The checks a put must pass before anything changes, so a failing transaction changes
    /// nothing.
    fn check_put(&self, req: &PutRequest) -> Result<(), Error> {
        let existing = self.latest_live(&req.key);
        if (req.ignore_value || req.ignore_lease) && existing.is_none() {
            return Err(Error::KeyNotFound);
        }
        let lease = match (req.ignore_lease, existing) {
            (true, Some(v)) => v.lease,
            _ => req.lease,
        };
        if lease != 0 && !self.leases.contains(lease) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    fn latest_live(&self, key: &[u8]) -> Option<&Version> {
        self.keys.get(key)?.latest().filter(|v| v.value.is_some())
    }

    fn put_in(&mut self, ctx: &mut WriteCtx, req: &PutRequest) -> PutResponse {
        let rev = ctx.next();
        let Mvcc {
            keys,
            revlog,
            leases,
            size,
            ..
        } = self;
        if !keys.contains_key(&req.key[..]) {
            // Copy so the stored key does not pin the network buffer it arrived in.
            keys.insert(Bytes::copy_from_slice(&req.key), History::default());
        }
        let bound = Bound::Included(&req.key[..]);
        let Some((key, history)) = keys.range_mut::<[u8], _>((bound, bound)).next() else {
            return PutResponse::default();
        };
        let prev = history.latest().filter(|v| v.value.is_some());
        let value = match (prev, req.ignore_value) {
            (Some(prev), true) => prev.value.clone().unwrap_or_default(),
            _ => Bytes::copy_from_slice(&req.value),
        };
        let lease = match (prev, req.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => req.lease,
        };
        let prev_kv = prev.map(|p| p.to_kv(key, false));
        let prev_lease = prev.map_or(0, |p| p.lease);
        let version = Version {
            rev,
            create_revision: prev.map_or(rev.main, |p| p.create_revision),
            version: prev.map_or(1, |p| p.version + 1),
            lease,
            value: Some(value),
        };
        *size += version.size(key.len());
        let kv = version.to_kv(key, false);
        history.versions.push(version);
        if prev_lease != 0 && prev_lease != lease {
            leases.detach(prev_lease, key);
        }
        if lease != 0 {
            leases.attach(lease, key);
        }
        revlog.push_back((rev, key.clone()));
        ctx.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev_kv.clone(),
        });
        PutResponse {
            prev_kv: if req.prev_kv { prev_kv } else { None },
        }
    }

    fn delete_in(&mut self, ctx: &mut WriteCtx, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let range = KeyRange::new(&req.key, &req.range_end);
        if range.is_empty() {
            return DeleteRangeResponse::default();
        }
        let doomed: Vec<Bytes> = self
            .keys
            .range(range.bounds())
            .filter(|(_, history)| history.latest().is_some_and(|v| v.value.is_some()))
            .map(|(key, _)| key.clone())
            .collect();
        let mut response = DeleteRangeResponse {
            deleted: i64::try_from(doomed.len()).unwrap_or(i64::MAX),
            prev_kvs: Vec::new(),
        };
        for key in doomed {
            if let Some(prev) = self.delete_key(ctx, &key, req.prev_kv) {
                response.prev_kvs.push(prev);
            }
        }
        response
    }

    /// Writes a tombstone for a live key; returns its previous state if `want_prev`.
    fn delete_key(&mut self, ctx: &mut WriteCtx, key: &Bytes, want_prev: bool) -> Option<KeyValue> {
        let history = self.keys.get_mut(key)?;
        let prev = history.latest().filter(|v| v.value.is_some())?.clone();
        let rev = ctx.next();
        let tombstone = Version {
            rev,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: None,
        };
        self.size += tombstone.size(key.len());
        history.versions.push(tombstone);
        if prev.lease != 0 {
            self.leases.detach(prev.lease, key);
        }
        self.revlog.push_back((rev, key.clone()));
        let prev_kv = prev.to_kv(key, false);
        ctx.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..KeyValue::default()
            },
            prev_kv: Some(prev_kv.clone()),
        });
        want_prev.then_some(prev_kv)
    }

    fn txn_in(&mut self, ctx: &mut WriteCtx, req: &TxnRequest) -> Result<TxnResponse, Error> {
        // Compares and reads inside a transaction see its own earlier writes.
        let succeeded = req.compare.iter().all(|c| self.compare(c, ctx.main));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        self.check_ops(ops, ctx.main)?;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(range) => {
                    let rev = if range.revision <= 0 {
                        ctx.main
                    } else {
                        self.read_revision(range.revision)?
                    };
                    ResponseOp::Range(self.range_at(range, rev))
                }
                RequestOp::Put(put) => ResponseOp::Put(self.put_in(ctx, put)),
                RequestOp::DeleteRange(delete) => {
                    ResponseOp::DeleteRange(self.delete_in(ctx, delete))
                }
                RequestOp::Txn(txn) => ResponseOp::Txn(self.txn_in(ctx, txn)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    /// Everything that could make a branch fail half-way is checked before it runs.
    fn check_ops(&self, ops: &[RequestOp], working: i64) -> Result<(), Error> {
        for op in ops {
            match op {
                RequestOp::Put(put) => self.check_put(put)?,
                RequestOp::Range(range) if range.revision > 0 => {
                    self.read_revision(range.revision)?;
                }
                RequestOp::Txn(txn) => {
                    let succeeded = txn.compare.iter().all(|c| self.compare(c, working));
                    self.check_ops(
                        if succeeded {
                            &txn.success
                        } else {
                            &txn.failure
                        },
                        working,
                    )?;
                }
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
            }
        }
        Ok(())
    }

    fn compare(&self, compare: &Compare, rev: i64) -> bool {
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let mut any = false;
        let mut all = true;
        for (key, history) in self.keys.range(range.bounds()) {
            if let Some(version) = history.live_at(rev) {
                any = true;
                all &= crate::txn::compare_kv(compare, &version.to_kv(key, false));
                if !all {
                    break;
                }
            }
        }
        if any {
            return all;
        }
        // A missing key compares as all zeroes, except that no value equals a missing one.
        !matches!(compare.target, CompareTarget::Value(_))
            && crate::txn::compare_kv(compare, &KeyValue::default())
    }
}

fn event_at(key: &Bytes, history: &History, rev: Revision) -> Option<Event> {
    let (version, prev) = history.change_at(rev)?;
    let prev_kv = prev.map(|p| p.to_kv(key, false));
    Some(match version.value {
        Some(_) => Event {
            kind: EventKind::Put,
            kv: version.to_kv(key, false),
            prev_kv,
        },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..KeyValue::default()
            },
            prev_kv,
        },
    })
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    match target {
        SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}
