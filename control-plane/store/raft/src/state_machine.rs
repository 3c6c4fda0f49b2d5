//! The Raft state machine: applies committed proposals to the MVCC store, publishes their
//! events to watchers, and builds and installs snapshots.
//!
//! The state is in memory and made durable by the Raft log plus snapshots (openraft's
//! "persistent snapshot" pattern): on restart the newest snapshot is installed and the log
//! after it re-applied. Readers share the state through [`Shared`]; the apply task is its only
//! writer, and it publishes events while still holding the write lock — the ordering contract
//! the watch hub relies on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use mvcc::snapshot::{SnapshotError, SnapshotReader, SnapshotWriter};
use mvcc::watch::WatchHub;
use mvcc::{Event, Mvcc};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::snapshot_store::{SnapshotFile, SnapshotStore};
use crate::types::*;

/// How many keys one apply step reclaims after a compaction, bounding the write-lock hold.
const COMPACT_STEP_KEYS: usize = 10_000;

/// Everything the store has applied, shared between the apply task and readers.
pub struct StoreState {
    /// The key-value state.
    pub mvcc: Mvcc,
    /// Watchers; locked on its own so registration needs only the read side of the state.
    pub hub: Mutex<WatchHub>,
    /// The last applied log position.
    pub last_applied: Option<LogId>,
    /// The membership as of the last applied membership entry.
    pub membership: StoredMembership,
    /// Names and client URLs members published.
    pub members: BTreeMap<u64, MemberAttrs>,
    /// The cluster's ID, named by its first leader (0 until then).
    pub cluster_id: u64,
    /// Counts snapshot installs: a snapshot being written from the state notices the state was
    /// replaced under it.
    pub generation: u64,
}

/// The state behind its lock.
pub struct Shared {
    /// The lock.
    pub state: RwLock<StoreState>,
    /// The last applied log index, for readers waiting on a read index.
    applied: watch::Sender<u64>,
}

impl Shared {
    /// An empty state whose watcher mailboxes hold `watch_capacity` events each, and a
    /// receiver of the applied log index.
    pub fn new(watch_capacity: usize) -> (Arc<Shared>, watch::Receiver<u64>) {
        let (applied, applied_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            applied,
            state: RwLock::new(StoreState {
                mvcc: Mvcc::new(),
                hub: Mutex::new(WatchHub::new(watch_capacity)),
                last_applied: None,
                membership: StoredMembership::default(),
                members: BTreeMap::new(),
                cluster_id: 0,
                generation: 0,
            }),
        });
        (shared, applied_rx)
    }

    fn set_applied(&self, last: Option<LogId>) {
        self.applied.send_replace(last.map_or(0, |id| id.index));
    }
}

impl StoreState {
    fn apply_proposal(&mut self, proposal: Proposal, events: &mut Vec<Event>) -> ProposalResult {
        ProposalResult {
            results: proposal
                .ops
                .into_iter()
                .map(|op| self.apply_op(op, events))
                .collect(),
        }
    }

    fn apply_op(&mut self, op: Op, events: &mut Vec<Event>) -> OpResult {
        let mvcc = &mut self.mvcc;
        let done = |mvcc: &Mvcc| OpOutcome {
            revision: mvcc.revision(),
            response: OpResponse::Done,
        };
        macro_rules! write {
            ($outcome:expr, $variant:ident) => {{
                let outcome = $outcome?;
                events.extend(outcome.events);
                Ok(OpOutcome {
                    revision: outcome.revision,
                    response: OpResponse::$variant(outcome.response),
                })
            }};
        }
        match op {
            Op::Put(req) => write!(mvcc.put(&req), Put),
            Op::DeleteRange(req) => write!(mvcc.delete_range(&req), DeleteRange),
            Op::Txn(req) => write!(mvcc.txn(&req), Txn),
            Op::Compact(revision) => {
                mvcc.compact(revision)?;
                Ok(done(mvcc))
            }
            Op::LeaseGrant { id, ttl } => {
                mvcc.lease_grant(id, ttl)?;
                Ok(done(mvcc))
            }
            Op::LeaseRevoke { id } => {
                let outcome = mvcc.lease_revoke(id)?;
                events.extend(outcome.events);
                Ok(done(mvcc))
            }
            Op::PublishMember { id, attrs } => {
                if self.membership.membership().get_node(&id).is_some() {
                    self.members.insert(id, attrs);
                }
                Ok(done(mvcc))
            }
            Op::SetClusterId(id) => {
                if self.cluster_id == 0 {
                    self.cluster_id = id;
                }
                Ok(done(mvcc))
            }
        }
    }
}

/// What a snapshot file holds before the key-value frames.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta,
    members: BTreeMap<u64, MemberAttrs>,
    cluster_id: u64,
}

/// openraft's handle on the state machine.
pub struct StateMachine {
    shared: Arc<Shared>,
    snapshots: Arc<SnapshotStore>,
}

impl StateMachine {
    /// A state machine over shared state, with snapshots in `snapshots`.
    pub fn new(shared: Arc<Shared>, snapshots: Arc<SnapshotStore>) -> StateMachine {
        StateMachine { shared, snapshots }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.shared.state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let entries: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut replies = Vec::with_capacity(entries.len());
        let last_applied = {
            let mut guard = self.shared.state.write();
            let state = &mut *guard;
            let mut events = Vec::new();
            for (entry, responder) in entries {
                let result = match entry.payload {
                    EntryPayload::Blank => ProposalResult::default(),
                    EntryPayload::Normal(proposal) => state.apply_proposal(proposal, &mut events),
                    EntryPayload::Membership(membership) => {
                        state
                            .members
                            .retain(|id, _| membership.get_node(id).is_some());
                        state.membership = StoredMembership::new(Some(entry.log_id), membership);
                        ProposalResult::default()
                    }
                };
                state.last_applied = Some(entry.log_id);
                if let Some(responder) = responder {
                    replies.push((responder, result));
                }
            }
            state.hub.get_mut().publish(&events);
            if state.mvcc.compaction_pending() {
                state.mvcc.compact_step(COMPACT_STEP_KEYS);
            }
            state.last_applied
        };
        self.shared.set_applied(last_applied);
        for (responder, result) in replies {
            responder.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let SnapshotFile { file, path } = snapshot;
        let (header, mvcc, file) = tokio::task::spawn_blocking(move || {
            let (header, mvcc) = read_snapshot(&file)?;
            Ok::<_, io::Error>((header, mvcc, file))
        })
        .await
        .map_err(io::Error::other)??;
        if header.meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot file covers {:?} but was installed as {:?}",
                    header.meta.last_log_id, meta.last_log_id
                ),
            ));
        }
        {
            let mut guard = self.shared.state.write();
            let state = &mut *guard;
            let resume_from = state.mvcc.revision() + 1;
            state.mvcc = mvcc;
            state.last_applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
            state.members = header.members;
            state.cluster_id = header.cluster_id;
            state.generation += 1;
            state.hub.get_mut().lag_all(resume_from);
        }
        self.shared.set_applied(meta.last_log_id);
        if !self.snapshots.is_committed(&path) {
            let index = meta.last_log_id.map_or(0, |id| id.index);
            tracing::info!(index, "snapshot received from the leader and installed");
            let snapshots = self.snapshots.clone();
            tokio::task::spawn_blocking(move || snapshots.commit(&path, index))
                .await
                .map_err(io::Error::other)??;
        }
        drop(file);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(path) = self.snapshots.current()? else {
            return Ok(None);
        };
        let snapshot = tokio::task::spawn_blocking(move || open_snapshot(path))
            .await
            .map_err(io::Error::other)??;
        Ok(Some(snapshot))
    }
}

/// Builds a snapshot from a copy of the state taken under the read lock, so writers are
/// blocked only for the copy, not for the file I/O.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let shared = self.shared.clone();
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || {
            let tmp = snapshots.temp_path();
            let written = write_snapshot_file(&shared, &tmp);
            let meta = match written {
                Ok(meta) => meta,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let index = meta.last_log_id.map_or(0, |id| id.index);
            let path = snapshots.commit(&tmp, index)?;
            tracing::info!(index, path = %path.display(), "snapshot built");
            open_snapshot(path)
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Keys encoded per hold of the read lock while a snapshot is written.
const SNAPSHOT_CHUNK_KEYS: usize = 2048;

/// Writes a snapshot of the shared state as of now to `path` (not fsynced: the caller decides
/// about durability) and returns its metadata. The state is read a chunk of keys at a time
/// under the read lock, and written to the file outside it.
pub(crate) fn write_snapshot_file(
    shared: &Shared,
    path: &std::path::Path,
) -> io::Result<SnapshotMeta> {
    let mut writer = SnapshotWriter::new(BufWriter::new(File::create(path)?)).map_err(into_io)?;
    let (meta, mut cursor, generation) = {
        let state = shared.state.read();
        let header = SnapshotHeader {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
            },
            members: state.members.clone(),
            cluster_id: state.cluster_id,
        };
        writer.frame(&header).map_err(into_io)?;
        let cursor = state.mvcc.snapshot_begin(&mut writer).map_err(into_io)?;
        (header.meta, cursor, state.generation)
    };
    loop {
        writer.flush().map_err(into_io)?;
        let state = shared.state.read();
        if state.generation != generation {
            return Err(io::Error::other(
                "an installed snapshot replaced the state while this snapshot was being written",
            ));
        }
        if state
            .mvcc
            .snapshot_chunk(&mut cursor, SNAPSHOT_CHUNK_KEYS, &mut writer)
            .map_err(into_io)?
        {
            break;
        }
    }
    writer
        .finish()
        .map_err(into_io)?
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(meta)
}

/// Opens a committed snapshot and reads its metadata.
fn open_snapshot(path: std::path::PathBuf) -> io::Result<Snapshot> {
    let file = File::open(&path)?;
    let mut reader = SnapshotReader::new(BufReader::new(file.try_clone()?)).map_err(into_io)?;
    let header: SnapshotHeader = reader.frame().map_err(into_io)?;
    Ok(Snapshot {
        meta: header.meta,
        snapshot: SnapshotFile { file, path },
    })
}

/// Reads and fully verifies a snapshot file.
fn read_snapshot(file: &File) -> io::Result<(SnapshotHeader, Mvcc)> {
    let mut file = file.try_clone()?;
    file.seek(SeekFrom::Start(0))?;
    let mut reader = SnapshotReader::new(BufReader::new(file)).map_err(into_io)?;
    let header: SnapshotHeader = reader.frame().map_err(into_io)?;
    let mvcc = Mvcc::read_snapshot(&mut reader).map_err(into_io)?;
    reader.finish().map_err(into_io)?;
    Ok((header, mvcc))
}

fn into_io(e: SnapshotError) -> io::Error {
    match e {
        SnapshotError::Io(e) => e,
        SnapshotError::Corrupt(reason) => io::Error::new(io::ErrorKind::InvalidData, reason),
    }
}
