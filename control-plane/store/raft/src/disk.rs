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
    last: Mutex<Option<(Instant, bool)>>,
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free on the filesystem of `path` (0 disables it).
    pub fn new(path: PathBuf, reserve: u64) -> DiskGuard {
        DiskGuard {
            path,
            reserve,
            last: Mutex::new(None),
        }
    }

    /// Whether writes that grow the store may proceed.
    pub fn has_room(&self) -> bool {
        if self.reserve == 0 {
            return true;
        }
        let mut last = self.last.lock();
        if let Some((at, room)) = *last
            && at.elapsed() < RECHECK
        {
            return room;
        }
        let room = match nix::sys::statvfs::statvfs(&self.path) {
            Ok(stat) => stat.blocks_available().saturating_mul(stat.fragment_size()) > self.reserve,
            // If the filesystem cannot be asked, let the log be the judge.
            Err(_) => true,
        };
        *last = Some((Instant::now(), room));
        room
    }
}
