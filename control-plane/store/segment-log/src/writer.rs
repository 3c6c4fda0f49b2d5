//! The writer thread: group commit, segment rolling, and the on-disk half of truncate and purge.
//!
//! Each round drains the whole queue, encodes every queued record into one reusable buffer, writes
//! it with one call per segment file, issues one fdatasync, and only then completes the callbacks.
//! This module owns the failure policy:
//! - a failed `write` (ENOSPC, EIO on write) is recoverable: the file is cut back to the last durable
//!   record, the batch and everything queued behind it fail, and the log goes on from that record;
//! - a failed fsync (or directory fsync, truncate, purge) leaves the disk state unknown — after a
//!   failed fsync the kernel may have dropped the dirty pages and a retry would falsely succeed — so
//!   the log is poisoned until reopened, when recovery re-validates from disk.
//!
//! It does not validate appends (the caller side does, under the state lock) or read records.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::{error, warn};

use crate::meta;
use crate::record;
use crate::recovery;
use crate::segment::{self, SegmentIndex};
use crate::state::{AppendDone, Counters, Op, Reply, Shared, call};
use crate::{Error, Recovered};

/// Buffers larger than this are dropped after a round instead of being kept for reuse, so one huge
/// batch does not pin its memory forever.
const MAX_RETAINED_BUF: usize = 16 << 20;

/// The segment new records go to.
struct Active {
    first: u64,
    /// Durable records in the file.
    count: u64,
    /// Durable length of the file: where the next write goes, and where a failed one is cut back to.
    len: u64,
    file: Arc<File>,
    path: Arc<Path>,
}

impl Active {
    fn from_index(seg: &SegmentIndex) -> Self {
        Active {
            first: seg.first,
            count: seg.count(),
            len: seg.end,
            file: seg.file.clone(),
            path: seg.path.clone(),
        }
    }
}

enum Waiter {
    Append {
        last: Option<u64>,
        epoch: u64,
        done: AppendDone,
    },
    Flush {
        next: u64,
        epoch: u64,
        reply: Reply,
    },
}

#[cfg_attr(not(test), allow(dead_code))]
enum Fault {
    Write,
    Sync,
}

enum Failure {
    /// Nothing uncertain reached the disk; the log can go on from its last durable record.
    Recoverable(Error),
    /// The disk state is unknown: poison.
    Fatal(Error),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: Option<Active>,
    /// Index of the next record to stage.
    next: u64,
    /// Every record below this index is durable.
    durable: u64,
    persisted_purge: Option<u64>,
    /// Encoded records not yet written, all destined for `active`.
    buf: Vec<u8>,
    /// File offsets of the records in `buf`.
    offsets: Vec<u64>,
    waiters: Vec<Waiter>,
    poisoned: bool,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, recovered: &Recovered) -> Self {
        Writer {
            active: recovered.segments.last().map(Active::from_index),
            next: recovered.next,
            durable: recovered.next,
            persisted_purge: recovered.purged,
            shared,
            buf: Vec::new(),
            offsets: Vec::new(),
            waiters: Vec::new(),
            poisoned: false,
        }
    }

    pub(crate) fn run(mut self) {
        let _guard = ExitGuard(self.shared.clone());
        let mut ops = VecDeque::new();
        loop {
            {
                let mut st = self.shared.state.lock();
                while st.queue.is_empty() && !st.shutdown {
                    self.shared.wake.wait(&mut st);
                }
                if st.queue.is_empty() {
                    return;
                }
                // Swap rather than take so both queues keep their capacity.
                std::mem::swap(&mut st.queue, &mut ops);
            }
            self.process(&mut ops);
        }
    }

    /// One group-commit round over `ops` (which may grow if a failure drains the shared queue).
    fn process(&mut self, ops: &mut VecDeque<Op>) {
        let mut failed: Option<Error> = None;
        loop {
            while let Some(op) = ops.pop_front() {
                if self.poisoned {
                    op.reject(Error::Poisoned);
                    continue;
                }
                match op {
                    Op::Append {
                        records,
                        done,
                        epoch,
                    } => {
                        if let Some(e) = &failed {
                            call(done, Err(e.clone()));
                            continue;
                        }
                        self.waiters.push(Waiter::Append {
                            last: records.last().map(|(i, _)| *i),
                            epoch,
                            done,
                        });
                        if let Err(f) = self.stage(&records) {
                            let e = self.fail(f, ops);
                            failed.get_or_insert(e);
                        }
                    }
                    Op::Flush { next, epoch, reply } => match &failed {
                        Some(e) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        None => self.waiters.push(Waiter::Flush { next, epoch, reply }),
                    },
                    Op::Truncate { next, epoch, reply } => {
                        // Appends queued before the truncation are ordered before it.
                        if let Err(f) = self.commit() {
                            let e = self.fail(f, ops);
                            failed.get_or_insert(e);
                        }
                        let result = self.fatal_if_err(|w| w.truncate(next));
                        if result.is_ok() {
                            let mut st = self.shared.state.lock();
                            if st.epoch == epoch {
                                // What is left below the cut is durable and current: let the
                                // cache evict it even if no append follows.
                                st.cache.mark_durable(next);
                            }
                        }
                        let _ = reply.send(result);
                    }
                    Op::Purge { upto, reply } => {
                        if let Err(f) = self.commit() {
                            let e = self.fail(f, ops);
                            failed.get_or_insert(e);
                        }
                        let result = self.fatal_if_err(|w| w.purge(upto));
                        let _ = reply.send(result);
                    }
                }
            }
            match self.commit() {
                Ok(()) => return,
                Err(f) => {
                    let e = self.fail(f, ops);
                    failed.get_or_insert(e);
                }
            }
        }
    }

    /// Runs a disk operation whose failure leaves the disk in an unknown state.
    fn fatal_if_err(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        f(self).inspect_err(|e| self.poison(e))
    }

    /// Encodes records into the buffer, rolling to a new segment where the current one is full.
    fn stage(&mut self, records: &[(u64, Bytes)]) -> Result<(), Failure> {
        let segment_bytes = self.shared.segment_bytes;
        for (index, payload) in records {
            if *index != self.next {
                // The caller side validated contiguity under the lock; this is a bug, and the disk
                // may not match what readers were told.
                return Err(Failure::Fatal(Error::NotContiguous {
                    expected: self.next,
                    got: *index,
                }));
            }
            let roll = match &self.active {
                None => true,
                Some(a) => {
                    let records = a.count + self.offsets.len() as u64;
                    if records == 0 && a.first != *index {
                        // An empty file must be named after the record it will start with.
                        return Err(Failure::Fatal(Error::corrupt(
                            &a.path,
                            0,
                            format!("empty segment cannot take record {index}"),
                        )));
                    }
                    records > 0 && a.len + self.buf.len() as u64 >= segment_bytes
                }
            };
            if roll {
                self.roll(*index)?;
            }
            let Some(a) = &self.active else {
                return Err(Failure::Fatal(Error::Closed));
            };
            self.offsets.push(a.len + self.buf.len() as u64);
            record::encode_into(&mut self.buf, *index, payload);
            self.next += 1;
        }
        Ok(())
    }

    /// Finishes the active segment (write, full fsync) and creates the next one, named `first`.
    fn roll(&mut self, first: u64) -> Result<(), Failure> {
        if self.active.is_some() {
            self.write_staged()?;
            // sync_all, not sync_data: the file's final size must be durable before any record
            // lands in the next file, or a crash could leave a gap between them.
            self.sync(true)?;
            self.publish();
        }
        let dir = self.shared.dir.as_path();
        let path: Arc<Path> = segment::segment_path(dir, first).into();
        let file = Arc::new(segment::create(&path).map_err(Failure::Recoverable)?);
        meta::sync_dir(dir).map_err(Failure::Fatal)?;
        Counters::add(&self.shared.counters.fsyncs, 1);
        self.shared.state.lock().segments.push(SegmentIndex {
            first,
            path: path.clone(),
            file: file.clone(),
            offsets: Vec::new(),
            end: 0,
        });
        self.active = Some(Active {
            first,
            count: 0,
            len: 0,
            file,
            path,
        });
        Ok(())
    }

    /// Writes the staged buffer at the end of the active segment with one call.
    fn write_staged(&mut self) -> Result<(), Failure> {
        let Some(a) = &self.active else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let counters = &self.shared.counters;
        Counters::add(&counters.write_calls, 1);
        let result = if self.injected(Fault::Write) {
            let half = &self.buf[..self.buf.len() / 2];
            a.file
                .write_all_at(half, a.len)
                .and(Err(std::io::Error::from_raw_os_error(28)))
        } else {
            a.file.write_all_at(&self.buf, a.len)
        };
        if let Err(e) = result {
            // Part of the buffer may have landed. Cut it off so the file ends at the last durable
            // record; if even that fails we no longer know what the file holds.
            if let Err(e2) = a.file.set_len(a.len) {
                return Err(Failure::Fatal(Error::io(&a.path, e2)));
            }
            return Err(Failure::Recoverable(Error::io(&a.path, e)));
        }
        Counters::add(&counters.bytes_written, self.buf.len() as u64);
        Ok(())
    }

    fn sync(&mut self, full: bool) -> Result<(), Failure> {
        let Some(a) = &self.active else {
            return Ok(());
        };
        Counters::add(&self.shared.counters.fsyncs, 1);
        let result = if self.injected(Fault::Sync) {
            Err(std::io::Error::other("injected sync failure"))
        } else if full {
            a.file.sync_all()
        } else {
            a.file.sync_data()
        };
        result.map_err(|e| Failure::Fatal(Error::io(&a.path, e)))
    }

    /// Fault injection for the crate's unit tests; always `false` in real builds.
    #[cfg(test)]
    fn injected(&self, fault: Fault) -> bool {
        match fault {
            Fault::Write => self
                .shared
                .fail_write_in
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok_and(|n| n == 1),
            Fault::Sync => self.shared.fail_next_sync.swap(false, Ordering::AcqRel),
        }
    }

    #[cfg(not(test))]
    fn injected(&self, _fault: Fault) -> bool {
        false
    }

    /// Records that everything staged is now durable: extends the readers' index.
    fn publish(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if !self.offsets.is_empty() {
            a.len += self.buf.len() as u64;
            a.count += self.offsets.len() as u64;
            let mut st = self.shared.state.lock();
            if let Some(seg) = st.segments.last_mut()
                && seg.first == a.first
            {
                seg.offsets.extend_from_slice(&self.offsets);
                seg.end = a.len;
            }
        }
        self.durable = self.next;
        self.clear_staged();
    }

    fn clear_staged(&mut self) {
        self.offsets.clear();
        if self.buf.capacity() > MAX_RETAINED_BUF {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Writes and fsyncs whatever is staged, then completes the waiters.
    fn commit(&mut self) -> Result<(), Failure> {
        if !self.buf.is_empty() {
            self.write_staged()?;
            self.sync(false)?;
            self.publish();
            Counters::add(&self.shared.counters.batches_written, 1);
        }
        if self.waiters.is_empty() {
            return Ok(());
        }
        {
            let mut st = self.shared.state.lock();
            let epoch = st.epoch;
            let durable_next = self
                .waiters
                .iter()
                .filter_map(|w| match w {
                    Waiter::Append {
                        last: Some(last),
                        epoch: e,
                        ..
                    } if *e == epoch => Some(last + 1),
                    Waiter::Flush { next, epoch: e, .. } if *e == epoch => Some(*next),
                    _ => None,
                })
                .max();
            if let Some(next) = durable_next {
                st.cache.mark_durable(next);
            }
        }
        for w in self.waiters.drain(..) {
            match w {
                Waiter::Append { done, .. } => call(done, Ok(())),
                Waiter::Flush { reply, .. } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        Ok(())
    }

    /// Handles a failed round; returns the error that fails the rest of it.
    fn fail(&mut self, failure: Failure, ops: &mut VecDeque<Op>) -> Error {
        self.next = self.durable;
        self.clear_staged();
        match failure {
            Failure::Fatal(e) => {
                self.poison(&e);
                self.fail_waiters(&Error::Poisoned);
                Error::Poisoned
            }
            Failure::Recoverable(e) => {
                warn!(error = %e, durable_next = self.durable, "log write failed; rolled back to the last durable record");
                let mut st = self.shared.state.lock();
                // Everything queued was validated against records that now will not exist; it
                // fails with this batch. Truncations and purges among it still apply, so the
                // logical log is what the disk will hold once they have run.
                ops.extend(st.queue.drain(..));
                let mut next = self.durable;
                for op in ops.iter() {
                    if let Op::Truncate { next: t, .. } = op {
                        next = next.min(*t);
                    }
                }
                let next = next.max(st.first);
                st.next = next;
                st.cache.truncate_from(next);
                st.cache.reset_durable(self.durable.min(next));
                st.epoch += 1;
                drop(st);
                self.fail_waiters(&e);
                e
            }
        }
    }

    /// Completes the waiters of a failed round. Appends whose records all became durable before the
    /// failure (in a segment finished by a roll) still succeed.
    fn fail_waiters(&mut self, err: &Error) {
        let durable = self.durable;
        for w in self.waiters.drain(..) {
            match w {
                Waiter::Append {
                    last: Some(last),
                    done,
                    ..
                } if last < durable => call(done, Ok(())),
                Waiter::Append { done, .. } => call(done, Err(err.clone())),
                Waiter::Flush { reply, .. } => {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    fn poison(&mut self, cause: &Error) {
        error!(error = %cause, "segment log poisoned: its on-disk state is unknown until it is reopened");
        self.poisoned = true;
        self.shared.poisoned.store(true, Ordering::Release);
    }

    /// Removes every record with index `>= target` from disk.
    fn truncate(&mut self, target: u64) -> Result<(), Error> {
        if target >= self.next {
            return Ok(());
        }
        // Readers that planned a read of the doomed bytes will notice and retry.
        self.shared.disk_epoch.fetch_add(1, Ordering::AcqRel);
        let (removed, partial, active) = {
            let mut st = self.shared.state.lock();
            let keep = st.segments.partition_point(|s| s.first < target);
            let removed = st.segments.split_off(keep);
            let mut partial = None;
            if let Some(seg) = st.segments.last_mut() {
                let keep_records = (target - seg.first) as usize;
                if let Some(&end) = seg.offsets.get(keep_records) {
                    seg.offsets.truncate(keep_records);
                    seg.end = end;
                    partial = Some((seg.file.clone(), seg.path.clone(), end));
                }
            }
            let active = st.segments.last().map(Active::from_index);
            (removed, partial, active)
        };
        // Newest first, each deletion durable before the next: a crash at any point leaves a
        // gap-free prefix of the log rather than a hole.
        let dir = self.shared.dir.as_path();
        for seg in removed.iter().rev() {
            fs::remove_file(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
            meta::sync_dir(dir)?;
            Counters::add(&self.shared.counters.fsyncs, 1);
        }
        if let Some((file, path, end)) = partial {
            file.set_len(end).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
            Counters::add(&self.shared.counters.fsyncs, 1);
        }
        self.active = active;
        self.next = target;
        self.durable = target;
        Ok(())
    }

    /// Persists the purge point, then deletes every segment it wholly covers.
    fn purge(&mut self, upto: u64) -> Result<(), Error> {
        if self.persisted_purge.is_some_and(|p| p >= upto) {
            return Ok(());
        }
        // The point goes first: after a crash, recovery deletes covered files it finds, whereas
        // files deleted before the point was durable would look like lost records.
        let dir = self.shared.dir.as_path();
        meta::write_atomic(&recovery::purge_path(dir), &upto.to_le_bytes())?;
        Counters::add(&self.shared.counters.fsyncs, 2);
        self.persisted_purge = Some(upto);
        let removed: Vec<SegmentIndex> = {
            let mut st = self.shared.state.lock();
            let n = st
                .segments
                .iter()
                .take_while(|s| s.covered_by_purge(upto))
                .count();
            st.segments.drain(..n).collect()
        };
        for seg in &removed {
            fs::remove_file(&seg.path).map_err(|e| Error::io(&seg.path, e))?;
        }
        if !removed.is_empty() {
            meta::sync_dir(dir)?;
            Counters::add(&self.shared.counters.fsyncs, 1);
        }
        if let Some(a) = &self.active
            && removed.iter().any(|s| s.first == a.first)
        {
            self.active = None;
        }
        let first = upto.saturating_add(1);
        if self.next < first {
            self.next = first;
            self.durable = first;
        }
        Ok(())
    }
}

/// Makes sure nobody waits forever if the writer stops, whether it returns or panics: marks the log
/// closed and fails whatever is still queued.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let queued: Vec<Op> = {
            let mut st = self.0.state.lock();
            st.shutdown = true;
            st.queue.drain(..).collect()
        };
        if std::thread::panicking() {
            error!("segment log writer thread panicked; the log is closed");
        }
        for op in queued {
            op.reject(Error::Closed);
        }
    }
}
