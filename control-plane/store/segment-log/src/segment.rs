//! Segment files: naming, listing, and the in-memory index of where each durable record lives.
//!
//! A segment is `<dir>/<first index, 20 digits>.seg`, holding contiguous records starting at that
//! index. This module owns the per-segment offset index used by reads; it does not write records
//! (`writer.rs`) or validate them on open (`recovery.rs`).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::Error;

const SUFFIX: &str = ".seg";
const DIGITS: usize = 20;

/// Durable records of one segment file, as far as readers are concerned.
#[derive(Debug)]
pub(crate) struct SegmentIndex {
    /// Index of the segment's first record (also its file name).
    pub first: u64,
    /// `Arc` so that readers can carry it into error messages without allocating.
    pub path: Arc<Path>,
    /// Shared with readers so they can `pread` without holding the state lock. On Unix an
    /// unlinked file stays readable through an open descriptor, so purges never break a read.
    pub file: Arc<File>,
    /// File offset of each durable record; `offsets[i]` is record `first + i`. A `Vec` rather than
    /// a search structure because records are fixed by index: lookups are one subtraction.
    pub offsets: Vec<u64>,
    /// End of the last durable record.
    pub end: u64,
}

impl SegmentIndex {
    pub(crate) fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index one past the last record.
    pub(crate) fn next(&self) -> u64 {
        self.first + self.count()
    }

    /// Byte range covering records `from..to` (which must lie within this segment).
    pub(crate) fn byte_range(&self, from: u64, to: u64) -> Option<(u64, u64)> {
        let start = *self
            .offsets
            .get(usize::try_from(from.checked_sub(self.first)?).ok()?)?;
        let to_rel = usize::try_from(to.checked_sub(self.first)?).ok()?;
        let end = match to_rel.cmp(&self.offsets.len()) {
            std::cmp::Ordering::Less => self.offsets[to_rel],
            std::cmp::Ordering::Equal => self.end,
            std::cmp::Ordering::Greater => return None,
        };
        Some((start, end))
    }

    /// Whether a purge up to and including `upto` covers every record of this segment, so the file
    /// can go. An empty segment named `upto + 1` is exactly where the next append lands: keep it.
    pub(crate) fn covered_by_purge(&self, upto: u64) -> bool {
        match self.count() {
            0 => self.first <= upto,
            n => self.first + n - 1 <= upto,
        }
    }
}

pub(crate) fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:0DIGITS$}{SUFFIX}"))
}

/// Parses a segment file name. `Some(Err)` for names that end in `.seg` but are malformed: such a
/// file is not ours to ignore.
fn parse_name(name: &str) -> Option<Result<u64, ()>> {
    let stem = name.strip_suffix(SUFFIX)?;
    if stem.len() != DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(stem.parse().map_err(|_| ()))
}

/// All segment files in `dir`, sorted by first index.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_name(name) {
            None => {}
            Some(Ok(first)) => out.push((first, entry.path())),
            Some(Err(())) => {
                return Err(Error::corrupt(
                    entry.path(),
                    0,
                    "malformed segment file name",
                ));
            }
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

pub(crate) fn open_rw(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Creates a new, empty segment file. Never clobbers: an existing file of that name means the
/// in-memory view and the directory disagree, which must surface as an error.
pub(crate) fn create(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/x");
        let p = segment_path(dir, 42);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_name(name), Some(Ok(42)));
        assert_eq!(
            parse_name(
                segment_path(dir, u64::MAX)
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
            ),
            Some(Ok(u64::MAX))
        );
        assert_eq!(parse_name("LOCK"), None);
        assert_eq!(parse_name("42.seg"), Some(Err(())));
        assert_eq!(parse_name("99999999999999999999.seg"), Some(Err(())));
    }

    #[test]
    fn byte_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 10);
        let seg = SegmentIndex {
            first: 10,
            file: Arc::new(create(&path).unwrap()),
            path: path.into(),
            offsets: vec![0, 20, 50],
            end: 70,
        };
        assert_eq!(seg.byte_range(10, 13), Some((0, 70)));
        assert_eq!(seg.byte_range(11, 12), Some((20, 50)));
        assert_eq!(seg.byte_range(9, 11), None);
        assert_eq!(seg.byte_range(12, 14), None);
        assert!(seg.covered_by_purge(12));
        assert!(!seg.covered_by_purge(11));
    }
}
