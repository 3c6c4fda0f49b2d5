//! How one store member is configured, and how member IDs are derived.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A TLS identity and the CA its peers' certificates must chain to (PEM).
#[derive(Clone)]
pub struct Tls {
    /// This side's certificate chain.
    pub cert: Vec<u8>,
    /// This side's private key.
    pub key: Vec<u8>,
    /// The CA that signs the other side's certificates.
    pub ca: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("Tls { .. }")
    }
}

impl Tls {
    /// Reads the three PEM files.
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> std::io::Result<Tls> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        Ok(Tls {
            cert: read(cert)?,
            key: read(key)?,
            ca: read(ca)?,
        })
    }
}

/// Whether a member starts a new cluster or joins a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Form a new cluster from `initial_cluster`.
    New,
    /// Join a cluster that already added this member (`member add`).
    Existing,
}

/// Everything a store member needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Human-readable member name.
    pub name: String,
    /// Where the log, snapshots and metadata live.
    pub data_dir: PathBuf,
    /// Where the peer protocol listens.
    pub listen_peer: SocketAddr,
    /// The peer URL other members use to reach this one.
    pub advertise_peer_url: String,
    /// The client URLs this member publishes in the member list.
    pub advertise_client_urls: Vec<String>,
    /// The founding members' names and peer URLs (ignored when joining).
    pub initial_cluster: Vec<(String, String)>,
    /// New cluster or joining.
    pub cluster_state: ClusterState,
    /// Mixed into member IDs so separate clusters built from the same URLs do not collide.
    pub cluster_token: String,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Raft election timeout (the randomised range is `[election, 2 × election)`).
    pub election_timeout: Duration,
    /// Entries applied between snapshots.
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot for slow followers; further behind, they get the snapshot.
    pub catch_up_entries: u64,
    /// How long a client request may wait for a leader, replication and apply.
    pub request_timeout: Duration,
    /// Events a watcher's mailbox holds before the watcher falls back to catching up.
    pub watch_mailbox: usize,
    /// Ops batched into one log entry at most.
    pub max_batch_ops: usize,
    /// Approximate bytes batched into one log entry at most.
    pub max_batch_bytes: usize,
    /// Batches in flight at once before new requests queue up (and batch together).
    pub max_inflight_batches: usize,
    /// Refuse writes once the store holds this many bytes (0 = no quota).
    pub quota_bytes: u64,
    /// Refuse writes while the data directory's filesystem has less free space (0 = no check).
    pub disk_reserve_bytes: u64,
    /// Mutual TLS between members: both sides present certificates signed by the CA. `None`
    /// is plain text, for tests and loopback only.
    pub peer_tls: Option<Tls>,
}

impl NodeConfig {
    /// A configuration with etcd-like defaults for everything but the addresses.
    pub fn new(
        name: &str,
        data_dir: PathBuf,
        listen_peer: SocketAddr,
        advertise_peer_url: &str,
    ) -> NodeConfig {
        NodeConfig {
            name: name.to_owned(),
            data_dir,
            listen_peer,
            advertise_peer_url: advertise_peer_url.to_owned(),
            advertise_client_urls: Vec::new(),
            initial_cluster: vec![(name.to_owned(), advertise_peer_url.to_owned())],
            cluster_state: ClusterState::New,
            cluster_token: "basalt".to_owned(),
            heartbeat: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            snapshot_entries: 10_000,
            catch_up_entries: 5_000,
            request_timeout: Duration::from_secs(7),
            watch_mailbox: 4096,
            max_batch_ops: 1024,
            max_batch_bytes: 4 << 20,
            max_inflight_batches: 8,
            quota_bytes: 8 << 30,
            disk_reserve_bytes: 64 << 20,
            peer_tls: None,
        }
    }

    /// This member's ID.
    pub fn member_id(&self) -> u64 {
        member_id(&self.advertise_peer_url, &self.cluster_token)
    }
}

/// A member's ID: a hash of its peer URL and the cluster token, so the member adding a peer and
/// the peer itself agree on the ID without talking. Never 0 (etcd reserves 0 for "none").
pub fn member_id(peer_url: &str, cluster_token: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, which std's hashers do not promise.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in cluster_token.bytes().chain([0]).chain(peer_url.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_stable_and_distinct() {
        let a = member_id("http://127.0.0.1:2380", "t");
        assert_eq!(a, member_id("http://127.0.0.1:2380", "t"));
        assert_ne!(a, member_id("http://127.0.0.2:2380", "t"));
        assert_ne!(a, member_id("http://127.0.0.1:2380", "u"));
        assert_ne!(a, 0);
    }
}
