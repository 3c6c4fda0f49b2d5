//! The state machine's snapshot format: a stream of length-prefixed postcard frames with a
//! crc32c trailer over everything before it.
//!
//! The replication layer writes its own frames (applied log id, membership) through the same
//! [`SnapshotWriter`] before the store's, so one checksum covers the whole file. Frames keep
//! memory flat: a snapshot is written and read one key at a time, never as one buffer.

use std::io::{self, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::history::History;
use crate::lease::LeaseTable;
use crate::store::Mvcc;

const MAGIC: &[u8; 8] = b"BSLTSNP1";
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

/// Writes frames and the trailing checksum.
pub struct SnapshotWriter<W: Write> {
    out: W,
    crc: u32,
    scratch: Vec<u8>,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot (writes the magic header).
    pub fn new(mut out: W) -> Result<SnapshotWriter<W>, SnapshotError> {
        out.write_all(MAGIC)?;
        Ok(SnapshotWriter {
            out,
            crc: crc32c::crc32c(MAGIC),
            scratch: Vec::new(),
        })
    }

    /// Appends one frame.
    pub fn frame<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SnapshotError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; 4]);
        let mut body = postcard::to_extend(value, std::mem::take(&mut self.scratch))
            .map_err(|e| SnapshotError::Corrupt(format!("encoding a frame: {e}")))?;
        let len = u32::try_from(body.len() - 4)
            .ok()
            .filter(|len| *len <= MAX_FRAME)
            .ok_or_else(|| SnapshotError::Corrupt("frame too large".into()))?;
        body[..4].copy_from_slice(&len.to_le_bytes());
        self.crc = crc32c::crc32c_append(self.crc, &body);
        self.out.write_all(&body)?;
        self.scratch = body;
        Ok(())
    }

    /// Writes the checksum and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, SnapshotError> {
        self.out.write_all(&self.crc.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
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
    keys: u64,
    leases: Vec<(i64, i64)>,
}

impl Mvcc {
    /// Writes the whole state as frames.
    pub fn write_snapshot<W: Write>(
        &self,
        out: &mut SnapshotWriter<W>,
    ) -> Result<(), SnapshotError> {
        out.frame(&Header {
            current: self.current,
            compacted: self.compacted,
            keys: self.keys.len() as u64,
            leases: self.leases.iter().map(|l| (l.id, l.ttl)).collect(),
        })?;
        for (key, history) in &self.keys {
            out.frame(&(key, history))?;
        }
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
        for _ in 0..header.keys {
            let (key, history): (Bytes, History) = input.frame()?;
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
