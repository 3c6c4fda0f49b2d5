//! Snapshot files on disk: where they live, how a finished one replaces the last, and how
//! one is opened for sending or restoring.
//!
//! A snapshot is written to a temporary file, fsynced, renamed to its final name and the
//! directory fsynced; only then are older snapshots deleted. So a crash at any point leaves at
//! least one complete snapshot (or none, before the first), never a half-written one under a
//! final name.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";

/// An open snapshot file. Holding the handle keeps it readable even if a newer snapshot
/// replaces (deletes) it while it is being sent to a follower.
#[derive(Debug)]
pub struct SnapshotFile {
    /// The open file, positioned anywhere; readers seek to the start.
    pub file: File,
    /// Where it lives (a temporary path for one still being received).
    pub path: PathBuf,
}

/// The directory of snapshot files.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    next_tmp: AtomicU64,
}

impl SnapshotStore {
    /// Opens (creating) the directory and removes temporary files a crash left behind.
    pub fn open(dir: &Path) -> io::Result<SnapshotStore> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                fs::remove_file(&path)?;
            }
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            next_tmp: AtomicU64::new(0),
        })
    }

    /// A fresh path for a snapshot being written or received.
    pub fn temp_path(&self) -> PathBuf {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("incoming-{}-{n}{TMP_SUFFIX}", std::process::id()))
    }

    /// Makes a complete temporary snapshot the current one, named by the last log index it
    /// covers, and deletes older ones.
    pub fn commit(&self, tmp: &Path, last_index: u64) -> io::Result<PathBuf> {
        File::open(tmp)?.sync_all()?;
        let final_path = self.dir.join(format!("{last_index:020}{SUFFIX}"));
        if tmp != final_path {
            fs::rename(tmp, &final_path)?;
        }
        File::open(&self.dir)?.sync_all()?;
        for old in self.list()? {
            if old != final_path {
                fs::remove_file(&old)?;
            }
        }
        Ok(final_path)
    }

    /// The newest complete snapshot, if any.
    pub fn current(&self) -> io::Result<Option<PathBuf>> {
        Ok(self.list()?.into_iter().max())
    }

    /// Whether `path` is a committed snapshot of this store.
    pub fn is_committed(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path()) && path.to_string_lossy().ends_with(SUFFIX)
    }

    fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(SUFFIX) {
                found.push(path);
            }
        }
        Ok(found)
    }
}
