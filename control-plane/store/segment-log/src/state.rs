//! State shared by the public handle (any thread) and the writer thread.
//!
//! One mutex guards the logical log (first/next index, tail cache), the queue of operations for the
//! writer, and the segment index readers use. It is only ever held for bookkeeping, never across
//! I/O. This module defines the data; the rules for changing it live with the code that does
//! (`lib.rs` for the caller side, `writer.rs` for the disk side).

use std::collections::VecDeque;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;
use tracing::error;

use crate::Error;
use crate::cache::TailCache;
use crate::segment::SegmentIndex;

/// Completion callback of an append; see [`SegmentLog::append`](crate::SegmentLog::append).
pub type AppendDone = Box<dyn FnOnce(Result<(), Error>) + Send>;

pub(crate) type Reply = oneshot::Sender<Result<(), Error>>;

/// Work for the writer, in the order callers issued it.
pub(crate) enum Op {
    Append {
        records: Vec<(u64, Bytes)>,
        done: AppendDone,
        /// Truncation epoch at enqueue time; see [`State::epoch`].
        epoch: u64,
    },
    /// Resolve once everything before it is durable. `next` and `epoch` are the log's at enqueue
    /// time: once the flush resolves, every record below `next` is durable.
    Flush {
        next: u64,
        epoch: u64,
        reply: Reply,
    },
    /// Remove every record with index `>= next`. `epoch` is the one the truncation started.
    Truncate {
        next: u64,
        epoch: u64,
        reply: Reply,
    },
    Purge {
        upto: u64,
        reply: Reply,
    },
}

impl Op {
    /// Completes the operation with `err` without doing it.
    pub(crate) fn reject(self, err: Error) {
        match self {
            Op::Append { done, .. } => call(done, Err(err)),
            Op::Flush { reply, .. } | Op::Truncate { reply, .. } | Op::Purge { reply, .. } => {
                // The caller may have dropped its future; nobody left to tell.
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// Runs an append callback, containing a panic so that one bad callback cannot kill the writer
/// and strand every later caller.
pub(crate) fn call(done: AppendDone, result: Result<(), Error>) {
    if catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
        error!("segment log append callback panicked");
    }
}

pub(crate) struct State {
    /// First index that logically exists (purge point + 1, or 0).
    pub first: u64,
    /// Index the next append must carry; the log is empty when `first == next`.
    pub next: u64,
    pub purged: Option<u64>,
    /// Bumped whenever records are logically removed from the tail (truncation, or rollback after a
    /// failed write). The writer only reports durability to the cache for appends of the current
    /// epoch: an older append's completion must not vouch for a newer record with the same index.
    pub epoch: u64,
    pub cache: TailCache,
    /// Durable records on disk, by segment, oldest first. Updated only by the writer.
    pub segments: Vec<SegmentIndex>,
    pub queue: VecDeque<Op>,
    pub shutdown: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub records_appended: AtomicU64,
    pub append_calls: AtomicU64,
    pub batches_written: AtomicU64,
    pub write_calls: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes_written: AtomicU64,
    pub records_read_cache: AtomicU64,
    pub records_read_disk: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) struct Shared {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub state: Mutex<State>,
    /// Signalled when `state.queue` gains work or `shutdown` is set.
    pub wake: Condvar,
    /// Set by the writer when the on-disk state became unknown (failed fsync and the like).
    pub poisoned: AtomicBool,
    /// Bumped by the writer before it destroys bytes readers might be reading (truncation), so a
    /// reader that raced with it retries instead of reporting corruption.
    pub disk_epoch: AtomicU64,
    pub counters: Counters,
    /// Holds the directory's advisory lock for as long as anything uses the log.
    pub _lock: File,
    /// Test hook: makes the next fsync of a segment fail, to exercise poisoning.
    #[cfg(test)]
    pub fail_next_sync: AtomicBool,
    /// Test hook: when `n > 0`, the `n`th segment write from now lands half its bytes and then
    /// fails with ENOSPC.
    #[cfg(test)]
    pub fail_write_in: AtomicU64,
}

impl Shared {
    /// Error for new operations, if the log cannot take them.
    pub(crate) fn check_usable(&self, state: &State) -> Result<(), Error> {
        if self.poisoned.load(Ordering::Acquire) {
            Err(Error::Poisoned)
        } else if state.shutdown {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}
