//! The state machine's snapshot format: a stream of length-prefixed postcard frames with a
//! crc32c trailer over everything before it.
//!
//! The replication layer writes its own frames (applied log id, membership) through the same
//! [`SnapshotWriter`] before the store's, so one checksum covers the whole file.
//!
//! A snapshot is written from the live state, not from a copy: [`Mvcc::snapshot_begin`] fixes
//! the revision and pins physical compaction, then [`Mvcc::snapshot_chunk`] encodes a bounded
//! number of keys at a time — only their versions up to that revision — into the writer's
//! buffer. The caller holds its read lock for each chunk only and writes the buffer to disk
//! outside it, so writers are never blocked for long and memory stays flat.

use std::io::{self, Read, Write};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::history::History;
use crate::lease::LeaseTable;
use crate::store::Mvcc;

const MAGIC: &[u8; 8] = b"BSLTSNP2";
/// A frame larger than this is corruption, not data (values are capped far below it).
const MAX_FRAME: u32 = 256 << 20;

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The underlying reader or writer failed.
    #[error("snapshot i/o: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid snapshot.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
}

/// Encodes frames into a buffer and writes it out on [`SnapshotWriter::flush`], so that
/// encoding can happen under a lock and I/O outside it; the trailing checksum covers all.
pub struct SnapshotWriter<W: Write> {
    out: W,
    crc: u32,
    pending: Vec<u8>,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot (the magic header is the first buffered bytes).
    pub fn new(out: W) -> Result<SnapshotWriter<W>, SnapshotError> {
        Ok(SnapshotWriter {
            out,
            crc: crc32c::crc32c(MAGIC),
            pending: MAGIC.to_vec(),
        })
    }

    /// Encodes one frame into the buffer.
    pub fn frame<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SnapshotError> {
        let start = self.pending.len();
        self.pending.extend_from_slice(&[0; 4]);
        self.pending = postcard::to_extend(value, std::mem::take(&mut self.pending))
            .map_err(|e| SnapshotError::Corrupt(format!("encoding a frame: {e}")))?;
        let len = u32::try_from(self.pending.len() - start - 4)
            .ok()
            .filter(|len| *len <= MAX_FRAME)
            .ok_or_else(|| SnapshotError::Corrupt("frame too large".into()))?;
        self.pending[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, &self.pending[start..]);
        Ok(())
    }

    /// Writes the buffered frames out.
    pub fn flush(&mut self) -> Result<(), SnapshotError> {
        self.out.write_all(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// Writes what is buffered and the checksum, and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, SnapshotError> {
        self.flush()?;
        self.out.write_all(&self.crc.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A snapshot being written from live state: the revision it captures and where the next
/// chunk starts. While it lives, physical compaction is paused so no version it still has to
/// write can disappear.
pub struct SnapshotCursor {
    revision: i64,
    next: Option<Bytes>,
    done: bool,
    pins: Arc<AtomicUsize>,
}

impl Drop for SnapshotCursor {
    fn drop(&mut self) {
        self.pins.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A key's history as a snapshot frame carries it: the versions up to the snapshot's revision.
#[derive(Serialize)]
struct HistoryFrame<'a> {
    versions: &'a [crate::history::Version],
}

/// One key frame, or the end of the keys.
#[derive(Serialize, Deserialize)]
enum KeyFrame<K, H> {
    Key(K, H),
    End,
}

/// Reads frames and verifies the trailing checksum.
pub struct SnapshotReader<R: Read> {
    input: R,
    crc: u32,
    buf: Vec<u8>,
}

impl<R: Read> SnapshotReader<R> {
    /// Opens a snapshot stream (checks the magic header).
    pub fn new(mut input: R) -> Result<SnapshotReader<R>, SnapshotError> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(eof_is_corrupt)?;
        if &magic != MAGIC {
            return Err(SnapshotError::Corrupt(
                "not a basalt snapshot (bad magic)".into(),
            ));
        }
        Ok(SnapshotReader {
            input,
            crc: crc32c::crc32c(MAGIC),
            buf: Vec::new(),
        })
    }

    /// Reads the next frame.
    pub fn frame<T: DeserializeOwned>(&mut self) -> Result<T, SnapshotError> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(eof_is_corrupt)?;
        let n = u32::from_le_bytes(len);
        if n > MAX_FRAME {
            return Err(SnapshotError::Corrupt(format!(
                "frame length {n} exceeds the limit"
            )));
        }
        self.buf.resize(n as usize, 0);
        self.input
            .read_exact(&mut self.buf)
            .map_err(eof_is_corrupt)?;
        self.crc = crc32c::crc32c_append(self.crc, &len);
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        postcard::from_bytes(&self.buf)
            .map_err(|e| SnapshotError::Corrupt(format!("decoding a frame: {e}")))
    }

    /// Verifies the checksum; call after the last frame.
    pub fn finish(mut self) -> Result<(), SnapshotError> {
        let mut trailer = [0u8; 4];
        self.input
            .read_exact(&mut trailer)
            .map_err(eof_is_corrupt)?;
        if u32::from_le_bytes(trailer) != self.crc {
            return Err(SnapshotError::Corrupt("checksum mismatch".into()));
        }
        Ok(())
    }
}

fn eof_is_corrupt(e: io::Error) -> SnapshotError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SnapshotError::Corrupt("truncated".into())
    } else {
        SnapshotError::Io(e)
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    current: i64,
    compacted: i64,
    leases: Vec<(i64, i64)>,
}

impl Mvcc {
    /// Starts a snapshot of the state as of now: writes the header frame and returns the
    /// cursor for [`Mvcc::snapshot_chunk`].
    pub fn snapshot_begin<W: Write>(
        &self,
        out: &mut SnapshotWriter<W>,
    ) -> Result<SnapshotCursor, SnapshotError> {
        out.frame(&Header {
            current: self.current,
            compacted: self.compacted,
            leases: self.leases.iter().map(|l| (l.id, l.ttl)).collect(),
        })?;
        self.snapshot_pins.fetch_add(1, Ordering::AcqRel);
        Ok(SnapshotCursor {
            revision: self.current,
            next: None,
            done: false,
            pins: self.snapshot_pins.clone(),
        })
    }

    /// Encodes up to `max_keys` more keys (their versions up to the cursor's revision) into
    /// `out`'s buffer. Returns `true` once every key is written and the end marked.
    pub fn snapshot_chunk<W: Write>(
        &self,
        cursor: &mut SnapshotCursor,
        max_keys: usize,
        out: &mut SnapshotWriter<W>,
    ) -> Result<bool, SnapshotError> {
        if cursor.done {
            return Ok(true);
        }
        let start = match &cursor.next {
            Some(key) => Bound::Included(key.clone()),
            None => Bound::Unbounded,
        };
        let mut written = 0;
        for (key, history) in self.keys.range((start, Bound::Unbounded)) {
            if written == max_keys {
                cursor.next = Some(key.clone());
                return Ok(false);
            }
            let visible = history
                .versions
                .partition_point(|v| v.rev.main <= cursor.revision);
            if visible > 0 {
                let versions = &history.versions[..visible];
                out.frame(&KeyFrame::Key(key, HistoryFrame { versions }))?;
                written += 1;
            }
        }
        out.frame(&KeyFrame::<(), ()>::End)?;
        cursor.done = true;
        Ok(true)
    }

    /// Writes the whole state in one go (for callers without concurrent writers).
    pub fn write_snapshot<W: Write>(
        &self,
        out: &mut SnapshotWriter<W>,
    ) -> Result<(), SnapshotError> {
        let mut cursor = self.snapshot_begin(out)?;
        self.snapshot_chunk(&mut cursor, usize::MAX, out)?;
        Ok(())
    }

    /// Rebuilds a state written by [`Mvcc::write_snapshot`].
    pub fn read_snapshot<R: Read>(input: &mut SnapshotReader<R>) -> Result<Mvcc, SnapshotError> {
        let header: Header = input.frame()?;
        let mut store = Mvcc::new();
        store.current = header.current;
        store.compacted = header.compacted;
        let mut leases = LeaseTable::default();
        for (id, ttl) in header.leases {
            leases.grant(id, ttl);
        }
        let mut changes = Vec::new();
        let mut previous: Option<Bytes> = None;
        loop {
            let (key, history): (Bytes, History) = match input.frame()? {
                KeyFrame::Key(key, history) => (key, history),
                KeyFrame::End => break,
            };
            if previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(SnapshotError::Corrupt("keys out of order".into()));
            }
            if history.versions.windows(2).any(|w| w[0].rev >= w[1].rev) {
                return Err(SnapshotError::Corrupt(
                    "a key's history is out of order".into(),
                ));
            }
            for version in &history.versions {
                store.size += version.size(key.len());
                if version.rev.main >= store.compacted {
                    changes.push((version.rev, key.clone()));
                }
            }
            if let Some(latest) = history.latest()
                && latest.value.is_some()
                && latest.lease != 0
            {
                leases.attach(latest.lease, &key);
            }
            previous = Some(key.clone());
            store.keys.insert(key, history);
        }
        changes.sort_unstable();
        store.revlog = changes.into();
        store.leases = leases;
        store.compact_cursor = (store.compacted > 0).then(Bytes::new);
        Ok(store)
    }
}
