//! The replicated lease table: which leases exist, their granted TTL, and the keys attached.
//!
//! Time is not here. When a lease expires is the Raft leader's business; it revokes through the
//! log like any client, so every replica deletes the same keys at the same revision.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A lease as the table knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease ID.
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
    /// Keys attached to it.
    pub keys: BTreeSet<Bytes>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseTable {
    leases: HashMap<i64, LeaseInfo>,
}

impl LeaseTable {
    pub fn grant(&mut self, id: i64, ttl: i64) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        self.leases.insert(
            id,
            LeaseInfo {
                id,
                ttl,
                keys: BTreeSet::new(),
            },
        );
        true
    }

    pub fn remove(&mut self, id: i64) -> Option<LeaseInfo> {
        self.leases.remove(&id)
    }

    pub fn get(&self, id: i64) -> Option<&LeaseInfo> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn attach(&mut self, id: i64, key: &Bytes) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.clone());
        }
    }

    pub fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &LeaseInfo> {
        self.leases.values()
    }
}
