//! Durable, append-only segment log: the write-ahead log under Basalt's Raft-replicated store (the
//! role etcd's WAL plays).
//!
//! The log stores opaque records `(index, payload)` with contiguous indices in segment files
//! `<dir>/<first index, 20 digits>.seg`. Appends are readable at once and acknowledged through a
//! callback once durable; one writer thread group-commits everything queued with a single
//! fdatasync. On open the segments are validated and a torn tail is cut off. See `writer.rs` for
//! the failure policy and `recovery.rs` for what counts as corruption.
//!
//! This crate knows nothing about Raft: mapping openraft's log storage onto it (and storing the
//! vote with [`write_atomic`]) is the adapter's job.
//!
//! This file owns the public API and the caller side of the shared state: validation, the tail
//! cache, and reads. Disk writes happen only on the writer thread.

mod cache;
mod error;
mod meta;
mod record;
mod recovery;
mod segment;
mod state;
mod writer;

use std::fs::{self, File, OpenOptions, TryLockError};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;
use tracing::error;

pub use error::Error;
pub use meta::{read_checked, write_atomic};
pub use record::MAX_PAYLOAD;
pub use state::AppendDone;

use cache::TailCache;
use recovery::Recovered;
use state::{Counters, Op, Reply, Shared, State};

/// Name of the file whose advisory lock keeps two handles off one directory.
const LOCK_FILE: &str = "LOCK";

/// Where and how to keep the log.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the segment files (created if missing).
    pub dir: PathBuf,
    /// A segment is finished, and a new file started, once it reaches this many bytes.
    pub segment_bytes: u64,
    /// Budget of the in-memory tail cache. Records not yet durable are always kept, even past it.
    pub cache_bytes: usize,
}

impl Config {
    /// Default [`Config::segment_bytes`]: 64 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    /// Default [`Config::cache_bytes`]: 32 MiB.
    pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

    /// A configuration for `dir` with default sizes.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Config {
            dir: dir.into(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Counters since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records accepted by [`SegmentLog::append`].
    pub records_appended: u64,
    /// Calls to [`SegmentLog::append`] that were accepted.
    pub append_calls: u64,
    /// Group commits that wrote at least one record.
    pub batches_written: u64,
    /// `write` calls on segment files.
    pub write_calls: u64,
    /// fsync/fdatasync calls on segment files, metadata files and the directory.
    pub fsyncs: u64,
    /// Bytes written to segment files, framing included.
    pub bytes_written: u64,
    /// Records [`SegmentLog::read`] served from the tail cache.
    pub records_read_from_cache: u64,
    /// Records [`SegmentLog::read`] served from segment files.
    pub records_read_from_disk: u64,
}

/// A handle to an open log. Cheap to clone, `Send + Sync`; all clones share one writer thread.
///
/// Dropping the last clone lets the writer finish everything queued and waits for it to stop
/// (except when that drop happens inside an append callback, on the writer itself), so the
/// directory can be reopened right after.
#[derive(Clone)]
pub struct SegmentLog {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.lock().shutdown = true;
        self.shared.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            // The last clone may be dropped by an append callback, i.e. on the writer itself.
            if writer.thread().id() != thread::current().id() && writer.join().is_err() {
                error!("segment log writer thread panicked");
            }
        }
    }
}

/// A part of a read served from one segment file.
struct DiskChunk {
    file: Arc<File>,
    path: Arc<Path>,
    first: u64,
    count: u64,
    start: u64,
    end: u64,
}

impl SegmentLog {
    /// Opens the log in `config.dir`, creating it if needed, and recovers it: every segment is
    /// validated, a torn tail in the last one is cut off, and corruption anywhere else fails with
    /// [`Error::Corrupt`]. Spawns the writer thread.
    pub fn open(config: Config) -> Result<SegmentLog, Error> {
        let dir = config.dir.clone();
        create_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path: dir }),
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }

        let recovered = recovery::recover(&dir)?;
        let Recovered {
            first,
            next,
            purged,
            ..
        } = recovered;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            segment_bytes: config.segment_bytes,
            state: Mutex::new(State {
                first,
                next,
                purged,
                epoch: 0,
                cache: TailCache::new(config.cache_bytes, next),
                segments: Vec::new(),
                queue: Default::default(),
                shutdown: false,
            }),
            wake: Condvar::new(),
            poisoned: AtomicBool::new(false),
            disk_epoch: AtomicU64::new(0),
            counters: Counters::default(),
            _lock: lock,
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
            #[cfg(test)]
            fail_write_in: AtomicU64::new(0),
        });
        let writer = writer::Writer::new(shared.clone(), &recovered);
        shared.state.lock().segments = recovered.segments;
        let writer = thread::Builder::new()
            .name("segment-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io(&dir, e))?;
        Ok(SegmentLog {
            inner: Arc::new(Handle {
                shared,
                writer: Some(writer),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// Index of the first record, or `None` when the log is empty.
    pub fn first_index(&self) -> Option<u64> {
        let st = self.shared().state.lock();
        (st.first < st.next).then_some(st.first)
    }

    /// Index of the last record, including appended records that are not yet durable; `None` when
    /// the log is empty.
    pub fn last_index(&self) -> Option<u64> {
        let st = self.shared().state.lock();
        (st.first < st.next).then(|| st.next - 1)
    }

    /// The index the next [`append`](Self::append) must start with.
    pub fn next_index(&self) -> u64 {
        self.shared().state.lock().next
    }

    /// The purge point: the highest `upto` passed to [`purge_upto`](Self::purge_upto) (persisted
    /// across reopen once that call resolved), or `None` if the log was never purged.
    pub fn purged(&self) -> Option<u64> {
        self.shared().state.lock().purged
    }

    /// Enqueues records for writing.
    ///
    /// The first index must be the one after [`last_index`](Self::last_index) or, when the log is
    /// empty, the one after the purge point (0 if never purged); the rest must follow on. The
    /// records are readable as soon as this returns. `done` runs on the writer thread once they are
    /// durable (fdatasync), or with the error that stopped them; it must not block on the log (for
    /// example by waiting on [`flush`](Self::flush)). If `append` itself returns an error, nothing
    /// was enqueued and `done` is dropped without being called.
    pub fn append(&self, records: Vec<(u64, Bytes)>, done: AppendDone) -> Result<(), Error> {
        let shared = self.shared();
        let n = records.len() as u64;
        {
            let mut st = shared.state.lock();
            shared.check_usable(&st)?;
            let mut expected = st.next;
            for (index, payload) in &records {
                if *index != expected {
                    return Err(Error::NotContiguous {
                        expected,
                        got: *index,
                    });
                }
                if payload.len() > MAX_PAYLOAD {
                    return Err(Error::TooLarge {
                        index: *index,
                        len: payload.len(),
                        max: MAX_PAYLOAD,
                    });
                }
                // u64::MAX itself is never accepted, so `next` cannot overflow.
                expected = index.checked_add(1).ok_or(Error::NotContiguous {
                    expected,
                    got: *index,
                })?;
            }
            for (index, payload) in &records {
                st.cache.push(*index, payload.clone());
            }
            st.next = expected;
            let epoch = st.epoch;
            st.queue.push_back(Op::Append {
                records,
                done,
                epoch,
            });
        }
        shared.wake.notify_one();
        Counters::add(&shared.counters.records_appended, n);
        Counters::add(&shared.counters.append_calls, 1);
        Ok(())
    }

    /// Records with index in `range`, clamped to what exists (so possibly fewer, or none). Recent
    /// records come from the tail cache, older ones from the segment files with one `pread` per
    /// file; payloads read from disk share that read's buffer, so holding one keeps the buffer.
    pub fn read(&self, range: Range<u64>) -> Result<Vec<(u64, Bytes)>, Error> {
        let shared = self.shared();
        loop {
            let mut chunks = Vec::new();
            let mut tail = Vec::new();
            let (start, end, epoch) = {
                let st = shared.state.lock();
                shared.check_usable(&st)?;
                let start = range.start.max(st.first);
                let end = range.end.min(st.next);
                if start >= end {
                    return Ok(Vec::new());
                }
                // Below the cache, every record is durable in its current version: see cache.rs.
                let cached_from = st.cache.first().unwrap_or(end).clamp(start, end);
                st.cache.copy_range(cached_from, end, &mut tail);
                if start < cached_from {
                    plan_disk_read(&st.segments, &shared.dir, start, cached_from, &mut chunks)?;
                }
                (start, end, shared.disk_epoch.load(Ordering::Acquire))
            };
            // Bounded so that a request for a huge range does not reserve memory up front.
            let mut out = Vec::with_capacity(((end - start) as usize).min(1 << 16));
            let result = read_chunks(&chunks, &mut out);
            if shared.disk_epoch.load(Ordering::Acquire) != epoch {
                // A truncation rewrote bytes we may have read; the retry sees the new index.
                continue;
            }
            result?;
            Counters::add(&shared.counters.records_read_disk, out.len() as u64);
            Counters::add(&shared.counters.records_read_cache, tail.len() as u64);
            out.append(&mut tail);
            return Ok(out);
        }
    }

    /// Removes every record with index greater than `last_kept` (all records for `None`).
    ///
    /// Takes effect for readers and appends at once (the next append must be `last_kept + 1`) and
    /// is ordered after appends enqueued before it. The returned future resolves once the removal is
    /// durable; the work is enqueued when this is called, not when the future is first polled.
    pub fn truncate_after(
        &self,
        last_kept: Option<u64>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.enqueue(move |st, reply| {
            let next = match last_kept {
                None => st.first,
                // Records at or below the purge point cannot come back: clamp to it.
                Some(k) => k.saturating_add(1).max(st.first),
            };
            if next < st.next {
                st.next = next;
                st.cache.truncate_from(next);
                st.epoch += 1;
            }
            Op::Truncate {
                next,
                epoch: st.epoch,
                reply,
            }
        })
    }

    /// Logically removes every record with index at most `upto` and deletes the segment files it
    /// wholly covers (a partly covered file stays; reads below the purge point return nothing).
    ///
    /// `upto` may be beyond [`last_index`](Self::last_index) (after a snapshot install): the log
    /// becomes empty and the next append must be `upto + 1`. The purge point is persisted, so after
    /// reopen `first_index()` is `upto + 1` once the returned future has resolved. Like
    /// [`truncate_after`](Self::truncate_after), the work is enqueued by the call itself.
    pub fn purge_upto(
        &self,
        upto: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.enqueue(move |st, reply| {
            if st.purged.is_none_or(|p| upto > p) {
                st.purged = Some(upto);
            }
            let first = upto.saturating_add(1);
            if first > st.first {
                st.first = first;
                st.cache.purge_below(first);
                st.next = st.next.max(first);
            }
            Op::Purge { upto, reply }
        })
    }

    /// Resolves once everything enqueued before this call is durable.
    pub fn flush(&self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.enqueue(|st, reply| Op::Flush {
            next: st.next,
            epoch: st.epoch,
            reply,
        })
    }

    fn enqueue(
        &self,
        make: impl FnOnce(&mut State, Reply) -> Op,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let shared = self.shared();
        let rx = {
            let mut st = shared.state.lock();
            shared.check_usable(&st).map(|()| {
                let (tx, rx) = oneshot::channel();
                let op = make(&mut st, tx);
                st.queue.push_back(op);
                rx
            })
        };
        shared.wake.notify_one();
        async move {
            let rx = rx?;
            rx.await.unwrap_or(Err(Error::Closed))
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let c = &self.shared().counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            records_appended: get(&c.records_appended),
            append_calls: get(&c.append_calls),
            batches_written: get(&c.batches_written),
            write_calls: get(&c.write_calls),
            fsyncs: get(&c.fsyncs),
            bytes_written: get(&c.bytes_written),
            records_read_from_cache: get(&c.records_read_cache),
            records_read_from_disk: get(&c.records_read_disk),
        }
    }
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("dir", &self.dir())
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .finish()
    }
}

/// Creates the log directory if missing, making its entry in the parent durable.
fn create_dir(dir: &Path) -> Result<(), Error> {
    match fs::metadata(dir) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, e)),
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => meta::sync_dir(parent),
        _ => Ok(()),
    }
}

/// Splits the durable records `from..to` into per-segment byte ranges.
fn plan_disk_read(
    segments: &[segment::SegmentIndex],
    dir: &Path,
    mut from: u64,
    to: u64,
    chunks: &mut Vec<DiskChunk>,
) -> Result<(), Error> {
    let mut i = segments.partition_point(|s| s.next() <= from);
    while from < to {
        let range = segments.get(i).and_then(|seg| {
            let seg_to = to.min(seg.next());
            let (start, end) = seg.byte_range(from, seg_to)?;
            Some((seg, seg_to, start, end))
        });
        let Some((seg, seg_to, start, end)) = range else {
            return Err(Error::corrupt(
                dir,
                0,
                format!("record {from} is missing from the segment index"),
            ));
        };
        chunks.push(DiskChunk {
            file: seg.file.clone(),
            path: seg.path.clone(),
            first: from,
            count: seg_to - from,
            start,
            end,
        });
        from = seg_to;
        i += 1;
    }
    Ok(())
}

/// Reads each chunk with one `pread` and slices the payloads out of it without copying.
fn read_chunks(chunks: &[DiskChunk], out: &mut Vec<(u64, Bytes)>) -> Result<(), Error> {
    for chunk in chunks {
        let mut buf = vec![0u8; (chunk.end - chunk.start) as usize];
        chunk
            .file
            .read_exact_at(&mut buf, chunk.start)
            .map_err(|e| Error::io(&chunk.path, e))?;
        let buf = Bytes::from(buf);
        let mut pos = 0usize;
        for index in chunk.first..chunk.first + chunk.count {
            let (payload, len) = record::decode(&buf[pos..], index).map_err(|invalid| {
                Error::corrupt(&chunk.path, chunk.start + pos as u64, invalid.to_string())
            })?;
            out.push((index, buf.slice(pos + payload.start..pos + payload.end)));
            pos += len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
