//! The crate's error type.
//!
//! Owns the error vocabulary shared by every module; it does not decide which failures poison the
//! log (that is the writer's job, see `writer.rs`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything that can go wrong in the segment log.
///
/// `Clone` so that one failed group commit can fail every callback in the batch with the same
/// error; I/O errors are therefore held behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An operating-system call on `path` failed.
    #[error("i/o error on {}: {source}", .path.display())]
    Io {
        /// The file or directory the call was made on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Data read from disk is invalid somewhere it cannot be a torn tail.
    #[error("corrupt log data in {} at offset {offset}: {reason}", .path.display())]
    Corrupt {
        /// The file holding the bad data.
        path: PathBuf,
        /// Byte offset of the bad record (or 0 when the whole file is at fault).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An append did not continue the log.
    #[error("records are not contiguous: expected index {expected}, got {got}")]
    NotContiguous {
        /// The index the log expected next.
        expected: u64,
        /// The index the caller supplied.
        got: u64,
    },
    /// A record payload is larger than [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
    #[error("record {index} has a payload of {len} bytes, above the limit of {max}")]
    TooLarge {
        /// Index of the offending record.
        index: u64,
        /// Its payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An fsync (or an equally uncertain operation) failed earlier; the on-disk state is unknown
    /// until the log is reopened and re-validated from disk.
    #[error("log is poisoned by an earlier failed sync; reopen it to recover")]
    Poisoned,
    /// The log's writer has stopped.
    #[error("log is closed")]
    Closed,
    /// Another `SegmentLog` (in this or another process) holds the directory.
    #[error("log directory {} is locked by another process or handle", .path.display())]
    Locked {
        /// The log directory.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(path: impl AsRef<Path>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.as_ref().to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}
