//! One key's history: every put and delete since the compaction point, oldest first.
//!
//! This is the per-key half of the store's index (the other half, the revision log, orders the
//! changes of all keys). Reading "the key at revision R" is a binary search here.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{KeyValue, Revision};

/// One change to a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Version {
    pub rev: Revision,
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
    /// `None` is a tombstone: the key was deleted at `rev`.
    pub value: Option<Bytes>,
}

/// A key's changes in revision order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct History {
    pub versions: Vec<Version>,
}

impl History {
    /// The newest change at or before `main`.
    pub fn at(&self, main: i64) -> Option<&Version> {
        let idx = self.versions.partition_point(|v| v.rev.main <= main);
        idx.checked_sub(1).map(|i| &self.versions[i])
    }

    /// The live (non-deleted) state at or before `main`.
    pub fn live_at(&self, main: i64) -> Option<&Version> {
        self.at(main).filter(|v| v.value.is_some())
    }

    /// The newest change, live or not.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// The change made exactly at `rev`, and the state just before it.
    pub fn change_at(&self, rev: Revision) -> Option<(&Version, Option<&Version>)> {
        let idx = self.versions.binary_search_by(|v| v.rev.cmp(&rev)).ok()?;
        let prev = idx
            .checked_sub(1)
            .map(|i| &self.versions[i])
            .filter(|v| v.value.is_some());
        Some((&self.versions[idx], prev))
    }

    /// Drops what no read at a revision `>= compact_main` can see: every change older than the
    /// newest change before `compact_main`, and that one too if it is a tombstone. Changes at or
    /// after `compact_main` stay so that watches starting there can replay them. Returns the
    /// bytes freed, as counted by [`Version::size`].
    pub fn compact(&mut self, key_len: usize, compact_main: i64) -> usize {
        let newer = self.versions.partition_point(|v| v.rev.main < compact_main);
        if newer == 0 {
            return 0;
        }
        let keep_from = if self.versions[newer - 1].value.is_some() {
            newer - 1
        } else {
            newer
        };
        let freed = self.versions[..keep_from]
            .iter()
            .map(|v| v.size(key_len))
            .sum();
        self.versions.drain(..keep_from);
        freed
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

impl Version {
    /// The key-value as clients see it.
    pub fn to_kv(&self, key: &Bytes, keys_only: bool) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.rev.main,
            version: self.version,
            value: match (&self.value, keys_only) {
                (Some(value), false) => value.clone(),
                _ => Bytes::new(),
            },
            lease: self.lease,
        }
    }

    /// An approximation of the space this change takes, for the store's size accounting.
    pub fn size(&self, key_len: usize) -> usize {
        const OVERHEAD: usize = 48;
        key_len + self.value.as_ref().map_or(0, Bytes::len) + OVERHEAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(main: i64, value: &'static str) -> Version {
        Version {
            rev: Revision { main, sub: 0 },
            create_revision: 1,
            version: 1,
            lease: 0,
            value: Some(Bytes::from_static(value.as_bytes())),
        }
    }

    fn tomb(main: i64) -> Version {
        Version {
            value: None,
            ..put(main, "")
        }
    }

    #[test]
    fn reads_at_revision() {
        let h = History {
            versions: vec![put(2, "a"), put(4, "b"), tomb(6), put(8, "c")],
        };
        assert!(h.at(1).is_none());
        assert_eq!(h.at(3).map(|v| v.rev.main), Some(2));
        assert_eq!(h.at(4).map(|v| v.rev.main), Some(4));
        assert!(h.live_at(7).is_none());
        assert_eq!(h.live_at(100).map(|v| v.rev.main), Some(8));
    }

    #[test]
    fn compaction_keeps_what_reads_need() {
        let mut h = History {
            versions: vec![put(2, "a"), put(4, "b"), tomb(6), put(8, "c")],
        };
        h.compact(1, 5);
        assert_eq!(
            h.versions.iter().map(|v| v.rev.main).collect::<Vec<_>>(),
            vec![4, 6, 8]
        );
        h.compact(1, 7);
        // The tombstone before 7 hides nothing any more.
        assert_eq!(
            h.versions.iter().map(|v| v.rev.main).collect::<Vec<_>>(),
            vec![8]
        );
        h.compact(1, 8);
        assert_eq!(h.versions.len(), 1);
        let mut dead = History {
            versions: vec![put(2, "a"), tomb(3)],
        };
        dead.compact(1, 4);
        assert!(dead.is_empty());
    }
}
