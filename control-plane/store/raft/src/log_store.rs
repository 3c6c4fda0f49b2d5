//! openraft's log storage over the durable segment log.
//!
//! Entries are postcard-encoded records in `segment-log`, which does the group commit (one
//! fdatasync for every append queued meanwhile) and torn-tail recovery. Beside it, three small
//! files in the metadata directory: the vote (fsynced before `save_vote` returns — Raft's
//! safety depends on it), the log id of the last purged entry (fsynced), and the committed log
//! id (written without fsync: it only saves re-application work after a restart, and is
//! validated against the log when read back).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use parking_lot::Mutex;
use segment_log::SegmentLog;
use serde::{Serialize, de::DeserializeOwned};

use crate::types::*;

const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";
const COMMITTED_FILE: &str = "committed";
/// The committed record is rewritten in place; it fits in one sector, so it is never torn.
const COMMITTED_RECORD: usize = 64;
/// Recent entries kept in memory. Appends are applied and replicated within milliseconds, so
/// a few MiB cover the hot tail even at tens of thousands of writes a second; a follower
/// further behind reads the segment files.
const TAIL_CACHE_BYTES: usize = 8 << 20;

/// The Raft log and vote of one member.
#[derive(Clone)]
pub struct LogStore {
    log: SegmentLog,
    meta_dir: PathBuf,
    inner: Arc<Mutex<Meta>>,
    committed_file: Arc<File>,
}

struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    last_log_id: Option<LogId>,
}

impl LogStore {
    /// Opens the log in `log_dir` and the metadata in `meta_dir`, recovering both.
    pub fn open(log_dir: &Path, meta_dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(meta_dir)?;
        let mut config = segment_log::Config::new(log_dir);
        config.cache_bytes = TAIL_CACHE_BYTES;
        let log = SegmentLog::open(config).map_err(io::Error::other)?;
        let vote = read_meta(&meta_dir.join(VOTE_FILE))?;
        let last_purged: Option<LogId> = read_meta(&meta_dir.join(PURGED_FILE))?;
        let last_log_id = match log.last_index() {
            Some(index) => Some(read_entry(&log, index)?.log_id),
            None => last_purged,
        };
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(meta_dir.join(COMMITTED_FILE))?;
        Ok(LogStore {
            log,
            meta_dir: meta_dir.to_path_buf(),
            inner: Arc::new(Mutex::new(Meta {
                vote,
                last_purged,
                last_log_id,
            })),
            committed_file: Arc::new(committed_file),
        })
    }

    /// The underlying segment log (for statistics).
    pub fn segment_log(&self) -> &SegmentLog {
        &self.log
    }

    fn read_committed_record(&self) -> io::Result<Option<LogId>> {
        let mut buf = [0u8; COMMITTED_RECORD];
        let n = self.committed_file.read_at(&mut buf, 0)?;
        if n < 8 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let Some(body) = buf.get(8..8 + len) else {
            return Ok(None);
        };
        if crc32c::crc32c(body) != crc {
            return Ok(None);
        }
        // Written as `Option<LogId>` by `save_committed`; decoding it as anything else would
        // read garbage as a log position.
        Ok(postcard::from_bytes::<Option<LogId>>(body).ok().flatten())
    }
}

fn read_meta<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match segment_log::read_checked(path).map_err(io::Error::other)? {
        None => Ok(None),
        Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
    }
}

fn write_meta<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = postcard::to_allocvec(value).map_err(io::Error::other)?;
    segment_log::write_atomic(path, &bytes).map_err(io::Error::other)
}

fn decode(index: u64, payload: &[u8]) -> io::Result<Entry> {
    postcard::from_bytes(payload).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("log entry {index} does not decode: {e}"),
        )
    })
}

fn read_entry(log: &SegmentLog, index: u64) -> io::Result<Entry> {
    let records = log.read(index..index + 1).map_err(io::Error::other)?;
    let (index, payload) = records.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("log entry {index} is missing"),
        )
    })?;
    decode(index, &payload)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let records = self.log.read(start..end).map_err(io::Error::other)?;
        records
            .iter()
            .map(|(index, payload)| decode(*index, payload))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let meta = self.inner.lock();
        Ok(LogState {
            last_purged_log_id: meta.last_purged,
            last_log_id: meta.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let path = self.meta_dir.join(VOTE_FILE);
        let vote = *vote;
        tokio::task::spawn_blocking(move || write_meta(&path, &vote))
            .await
            .map_err(io::Error::other)??;
        self.inner.lock().vote = Some(vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let body = postcard::to_allocvec(&committed).map_err(io::Error::other)?;
        let mut record = [0u8; COMMITTED_RECORD];
        if body.len() + 8 > COMMITTED_RECORD {
            return Err(io::Error::other("committed log id does not fit its record"));
        }
        record[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        record[4..8].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        record[8..8 + body.len()].copy_from_slice(&body);
        self.committed_file.write_all_at(&record, 0)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let Some(committed) = self.read_committed_record()? else {
            return Ok(None);
        };
        let (last, purged) = {
            let meta = self.inner.lock();
            (meta.last_log_id, meta.last_purged)
        };
        // The record is not fsynced, so after a power loss it may be ahead of the durable log:
        // everything the log still holds up to there was committed, but no further.
        match last {
            Some(last) if committed.index > last.index => return Ok(Some(last)),
            None => return Ok(None),
            Some(_) => {}
        }
        if purged.is_some_and(|p| committed.index <= p.index) {
            return Ok(purged);
        }
        let at = read_entry(&self.log, committed.index)?;
        Ok((at.log_id == committed).then_some(committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut records = Vec::new();
        let mut last = None;
        for entry in entries {
            let payload = postcard::to_allocvec(&entry).map_err(io::Error::other)?;
            last = Some(entry.log_id);
            records.push((entry.log_id.index, Bytes::from(payload)));
        }
        if records.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        self.log
            .append(
                records,
                Box::new(move |result| callback.io_completed(result.map_err(io::Error::other))),
            )
            .map_err(io::Error::other)?;
        self.inner.lock().last_log_id = last;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.log
            .truncate_after(last_log_id.map(|id| id.index))
            .await
            .map_err(io::Error::other)?;
        let mut meta = self.inner.lock();
        meta.last_log_id = last_log_id.or(meta.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let path = self.meta_dir.join(PURGED_FILE);
        tokio::task::spawn_blocking(move || write_meta(&path, &log_id))
            .await
            .map_err(io::Error::other)??;
        {
            let mut meta = self.inner.lock();
            meta.last_purged = Some(log_id);
            if meta
                .last_log_id
                .is_none_or(|last| last.index < log_id.index)
            {
                meta.last_log_id = Some(log_id);
            }
        }
        self.log
            .purge_upto(log_id.index)
            .await
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::storage::IOFlushed;
    use openraft::{EntryPayload, RaftLogReader};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
            index,
        )
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry::new(log_id(term, index), EntryPayload::Blank)
    }

    async fn append(store: &mut LogStore, entries: Vec<Entry>) {
        store.append(entries, IOFlushed::noop()).await.unwrap();
        store.segment_log().flush().await.unwrap();
    }

    #[tokio::test]
    async fn committed_is_read_back_as_written_and_never_beyond_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let open = || LogStore::open(&dir.path().join("log"), &dir.path().join("meta")).unwrap();
        let mut store = open();
        assert_eq!(store.read_committed().await.unwrap(), None);
        append(&mut store, (0..10).map(|i| entry(1, i)).collect()).await;
        store.save_committed(Some(log_id(1, 6))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 6)));
        drop(store);

        // After a restart the saved position comes back exactly, not the last entry.
        let mut store = open();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 6)));
        let last = store.get_log_state().await.unwrap().last_log_id;
        assert_eq!(last, Some(log_id(1, 9)));

        // A committed position the log no longer reaches (its tail was lost) is clamped.
        store.save_committed(Some(log_id(1, 20))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 9)));
        // One naming a different entry at that index (a stale leader's) is not trusted.
        store.save_committed(Some(log_id(2, 5))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
        store.save_committed(None).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), None);
        let read = store.try_get_log_entries(3..5).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.index()).collect::<Vec<_>>(),
            vec![3, 4]
        );
    }
}
