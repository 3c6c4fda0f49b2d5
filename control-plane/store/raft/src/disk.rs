//! Free space on the data directory's filesystem, checked before writes are accepted.
//!
//! A write that reaches the log on a full disk fails deep inside Raft, which must then stop
//! (it cannot know what reached the disk). Refusing writes while a reserve is still free keeps
//! that from happening in practice: clients get etcd's "database space exceeded", reads go on,
//! and deletes — which free space once compacted — are still accepted.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a free-space reading is trusted; statvfs on every write would be waste.
const RECHECK: Duration = Duration::from_millis(250);

/// Watches free space against a reserve.
pub struct DiskGuard {
    path: PathBuf,
    reserve: u64,
    reading: Mutex<Option<Reading>>,
}

/// The last statvfs reading, what was admitted since, and whether the last write was refused.
struct Reading {
    at: Instant,
    free: u64,
    admitted: u64,
    refusing: bool,
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free on the filesystem of `path` (0 disables it).
    pub fn new(path: PathBuf, reserve: u64) -> DiskGuard {
        DiskGuard {
            path,
            reserve,
            reading: Mutex::new(None),
        }
    }

    /// Whether a write of about `bytes` may proceed. Counts it against the free space, so
    /// that a fast writer cannot outrun a stale reading; the reading is refreshed when it is
    /// old or a quarter of the reserve has been admitted since.
    pub fn admit(&self, bytes: u64) -> bool {
        if self.reserve == 0 {
            return true;
        }
        let mut reading = self.reading.lock();
        let stale = reading
            .as_ref()
            .is_none_or(|r| r.at.elapsed() >= RECHECK || r.admitted >= self.reserve / 4);
        if stale {
            match nix::sys::statvfs::statvfs(&self.path) {
                Ok(stat) => {
                    let refusing = reading.as_ref().is_some_and(|r| r.refusing);
                    *reading = Some(Reading {
                        at: Instant::now(),
                        free: stat.blocks_available().saturating_mul(stat.fragment_size()),
                        admitted: 0,
                        refusing,
                    });
                }
                // If the filesystem cannot be asked, let the log be the judge.
                Err(_) => return true,
            }
        }
        let Some(reading) = reading.as_mut() else {
            return true;
        };
        if reading.free.saturating_sub(reading.admitted) <= self.reserve.saturating_add(bytes) {
            reading.refusing = true;
            return false;
        }
        reading.admitted += bytes;
        if bytes > 0 {
            reading.refusing = false;
        }
        true
    }

    /// Whether writes are currently refused (for status and alarms): the free space is within
    /// the reserve, or the last write was refused.
    pub fn is_full(&self) -> bool {
        let room = self.admit(0);
        !room || self.reading.lock().as_ref().is_some_and(|r| r.refusing)
    }
}
