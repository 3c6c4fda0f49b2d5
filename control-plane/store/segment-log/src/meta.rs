//! Small checked metadata files written atomically (the purge point here; the Raft vote and
//! committed log id in the storage adapter).
//!
//! Owns the file format (magic, length, CRC-32C, data) and the write-temp/fsync/rename/fsync-dir
//! dance. It does not serialise concurrent writers to the same path: callers do that.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::Error;

const MAGIC: [u8; 4] = *b"BSM1";
const HEADER_LEN: usize = 12;

/// Durably replaces the file at `path` with `data`.
///
/// Writes `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the directory, so after a
/// crash `path` holds either the old or the new contents, never a mix. The contents carry a
/// checksum that [`read_checked`] verifies. Concurrent calls for the same `path` must be serialised
/// by the caller (they share the temporary file name).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(data.len())
        .map_err(|_| Error::io(path, io::Error::other("metadata blob larger than 4 GiB")))?;
    let tmp = tmp_path(path);
    let mut buf = Vec::with_capacity(HEADER_LEN + data.len());
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    buf.extend_from_slice(data);

    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    file.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_dir(parent_dir(path))
}

/// Reads a file written by [`write_atomic`]. `Ok(None)` if it does not exist;
/// [`Error::Corrupt`] if its header or checksum does not match.
pub fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let Some((head, data)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "metadata file is {} bytes, shorter than its header",
                bytes.len()
            ),
        ));
    };
    let [m0, m1, m2, m3, l0, l1, l2, l3, c0, c1, c2, c3] = *head;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(Error::corrupt(path, 0, "bad metadata magic"));
    }
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    if len != data.len() {
        return Err(Error::corrupt(
            path,
            4,
            format!(
                "metadata length {len} does not match the {} bytes present",
                data.len()
            ),
        ));
    }
    let stored = u32::from_le_bytes([c0, c1, c2, c3]);
    let computed = crc32c::crc32c(data);
    if stored != computed {
        return Err(Error::corrupt(
            path,
            8,
            format!(
                "metadata checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        ));
    }
    Ok(Some(data.to_vec()))
}

/// Name of the temporary file [`write_atomic`] uses for `path`; recovery removes leftovers.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// fsyncs a directory so that creations, deletions and renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vote");
        assert_eq!(read_checked(&path).unwrap(), None);
        write_atomic(&path, b"first").unwrap();
        assert_eq!(read_checked(&path).unwrap().as_deref(), Some(&b"first"[..]));
        write_atomic(&path, b"").unwrap();
        assert_eq!(read_checked(&path).unwrap().as_deref(), Some(&b""[..]));
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vote");
        write_atomic(&path, b"term=3 node=1").unwrap();
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            assert!(
                matches!(read_checked(&path), Err(Error::Corrupt { .. })),
                "byte {i}"
            );
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(read_checked(&path), Err(Error::Corrupt { .. })));
        fs::write(&path, &good[..5]).unwrap();
        assert!(matches!(read_checked(&path), Err(Error::Corrupt { .. })));
    }
}
