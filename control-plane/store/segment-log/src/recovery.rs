//! Recovery on open: rebuilds the segment index from disk and repairs a torn tail.
//!
//! Owns the policy for invalid data: the first invalid record of the *last* segment is a torn
//! write from a crash (never acknowledged, because acknowledgement waits for fdatasync), so the file
//! is cut there; anything invalid earlier is corruption of acknowledged data and fails the open.
//! It does not decide where new records go (`writer.rs`).

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use crate::Error;
use crate::meta;
use crate::record::{HEADER_LEN, Header, Invalid};
use crate::segment::{self, SegmentIndex};

/// Name of the checked file holding the purge point (`upto` of the last durable purge).
pub(crate) const PURGE_FILE: &str = "purge.meta";

/// Large enough that scanning is sequential I/O, small enough not to matter in memory.
const SCAN_BUF: usize = 1 << 20;

/// What is on disk after recovery.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentIndex>,
    pub purged: Option<u64>,
    /// First index that logically exists (purge point + 1, or 0).
    pub first: u64,
    /// Index the next append must carry.
    pub next: u64,
}

pub(crate) fn purge_path(dir: &Path) -> PathBuf {
    dir.join(PURGE_FILE)
}

pub(crate) fn recover(dir: &Path) -> Result<Recovered, Error> {
    let purge_path = purge_path(dir);
    let purged = match meta::read_checked(&purge_path)? {
        None => None,
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
                Error::corrupt(&purge_path, 0, "purge point is not an 8-byte integer")
            })?;
            Some(u64::from_le_bytes(bytes))
        }
    };
    let tmp = meta::tmp_path(&purge_path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&tmp, e)),
    }
    let floor = match purged {
        None => 0,
        Some(p) => p
            .checked_add(1)
            .ok_or_else(|| Error::corrupt(&purge_path, 0, "purge point is u64::MAX"))?,
    };

    let mut names = segment::list_segments(dir)?;
    // The purge point is persisted before files are deleted, so files wholly below it may remain
    // after a crash. A segment's last index is the next file's first index minus one.
    let mut removed = false;
    while names.len() >= 2 && names[1].0 <= floor {
        let (_, path) = names.remove(0);
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        removed = true;
    }

    let count = names.len();
    let mut segments: Vec<SegmentIndex> = Vec::with_capacity(count);
    for (i, (first, path)) in names.into_iter().enumerate() {
        match segments.last() {
            None if first > floor => {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "first segment starts at index {first} but the log starts at {floor}: records are missing"
                    ),
                ));
            }
            Some(prev) if prev.next() != first => {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "segment starts at index {first} but the previous segment ends before {}",
                        prev.next()
                    ),
                ));
            }
            _ => {}
        }
        let is_last = i + 1 == count;
        let seg = scan_segment(path, first, is_last)?;
        if !is_last && seg.offsets.is_empty() {
            return Err(Error::corrupt(
                &seg.path,
                0,
                "segment other than the last holds no records",
            ));
        }
        segments.push(seg);
    }

    if let (Some(last), Some(p)) = (segments.last(), purged)
        && last.covered_by_purge(p)
    {
        fs::remove_file(&last.path).map_err(|e| Error::io(&last.path, e))?;
        segments.pop();
        removed = true;
    }
    if removed {
        meta::sync_dir(dir)?;
    }
    let next = segments.last().map_or(floor, SegmentIndex::next).max(floor);
    Ok(Recovered {
        segments,
        purged,
        first: floor,
        next,
    })
}

/// Validates every record of one segment and builds its offset index. In the last segment the
/// first invalid record is cut off (with everything after it).
fn scan_segment(path: PathBuf, first: u64, is_last: bool) -> Result<SegmentIndex, Error> {
    let file = segment::open_rw(&path)?;
    let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
    let mut reader = BufReader::with_capacity(SCAN_BUF, &file);
    let mut offsets = Vec::new();
    let mut off = 0u64;
    let mut index = first;
    let invalid = loop {
        if off == len {
            break None;
        }
        match scan_record(&mut reader, len - off, index) {
            Ok(Ok(record_len)) => {
                offsets.push(off);
                off += record_len;
                index = index
                    .checked_add(1)
                    .ok_or_else(|| Error::corrupt(&path, off, "record index overflows u64"))?;
            }
            Ok(Err(invalid)) => break Some(invalid),
            Err(e) => return Err(Error::io(&path, e)),
        }
    };
    drop(reader);

    if let Some(invalid) = invalid {
        if !is_last {
            return Err(Error::corrupt(&path, off, invalid.to_string()));
        }
        warn!(
            path = %path.display(),
            offset = off,
            bytes_cut = len - off,
            valid_records = offsets.len(),
            reason = %invalid,
            "truncating torn tail of the last log segment"
        );
        file.set_len(off).map_err(|e| Error::io(&path, e))?;
    }
    if is_last {
        // A previous process may have died between a write and its fdatasync, leaving valid but
        // unsynced records in the page cache. Make what we accept durable (and the cut, if any)
        // before anything is appended after it. Earlier segments were synced when they rolled.
        file.sync_all().map_err(|e| Error::io(&path, e))?;
    }
    Ok(SegmentIndex {
        first,
        path: path.into(),
        file: Arc::new(file),
        offsets,
        end: off,
    })
}

/// Reads and validates the record at the reader's position, `available` bytes before EOF.
/// The payload is checksummed straight out of the read buffer, so no record is ever allocated, and
/// the length is bounded by `available` and `MAX_PAYLOAD` before anything is read.
fn scan_record(
    reader: &mut impl BufRead,
    available: u64,
    expected_index: u64,
) -> io::Result<Result<u64, Invalid>> {
    if available < HEADER_LEN as u64 {
        return Ok(Err(Invalid::ShortHeader { available }));
    }
    let mut head = [0u8; HEADER_LEN];
    reader.read_exact(&mut head)?;
    let header = Header::parse(&head);
    if let Err(invalid) = header.check_len(available) {
        return Ok(Err(invalid));
    }
    let mut crc = crc32c::crc32c(&header.index.to_le_bytes());
    let mut remaining = header.len as usize;
    while remaining > 0 {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = chunk.len().min(remaining);
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        reader.consume(n);
        remaining -= n;
    }
    Ok(header
        .check_body(crc, expected_index)
        .map(|()| (HEADER_LEN + header.len as usize) as u64))
}
