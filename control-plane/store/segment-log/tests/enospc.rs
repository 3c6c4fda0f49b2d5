//! A real full disk: a tiny tmpfs mounted for the test (needs root; skipped, loudly, otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use common::*;
use segment_log::Error;

const ENOSPC: i32 = 28;

/// A tmpfs mounted for the lifetime of the value; always unmounted on drop, panics included.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let path = std::env::temp_dir().join(format!("segment-log-enospc-{}", std::process::id()));
        std::fs::create_dir_all(&path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let _ = std::fs::remove_dir(&path);
            return None;
        }
        Some(Tmpfs { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn big(index: u64) -> Bytes {
    Bytes::from(vec![index as u8; 4096])
}

fn batch(start: u64) -> Vec<(u64, Bytes)> {
    (start..start + 8).map(|i| (i, big(i))).collect()
}

fn assert_all(dir: &Path, n: u64) {
    let log = open(dir, 1 << 30);
    assert_eq!(log.next_index(), n);
    let got = log.read(0..n).unwrap();
    assert_eq!(got.len() as u64, n);
    for (i, p) in got {
        assert_eq!(p, big(i));
    }
}

#[test]
fn enospc_fails_the_batch_cuts_the_file_back_and_stays_usable() {
    let Some(fs) = Tmpfs::mount("512k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    let dir = fs.path.join("log");
    let filler = fs.path.join("filler");
    std::fs::write(&filler, vec![1u8; 128 << 10]).unwrap();
    {
        let log = open(&dir, 1 << 30);
        let mut next = 0;
        let err = loop {
            match append_sync(&log, batch(next)) {
                Ok(()) => next += 8,
                Err(e) => break e,
            }
            assert!(next < 10_000, "never ran out of space");
        };
        match &err {
            Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(ENOSPC), "{err}"),
            other => panic!("expected ENOSPC, got {other:?}"),
        }
        assert!(next > 0);
        assert_eq!(
            log.next_index(),
            next,
            "rolled back to the last durable record"
        );
        let seg = segment_files(&dir).pop().unwrap();
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            next * (16 + 4096),
            "partial write cut off"
        );
        // Still full: fails again, still usable.
        assert!(matches!(
            append_sync(&log, batch(next)),
            Err(Error::Io { .. })
        ));
        assert_eq!(log.next_index(), next);

        std::fs::remove_file(&filler).unwrap();
        for _ in 0..3 {
            append_sync(&log, batch(next)).unwrap();
            next += 8;
        }
        block_on(log.flush()).unwrap();
        drop(log);
        assert_all(&dir, next);
    }
}
