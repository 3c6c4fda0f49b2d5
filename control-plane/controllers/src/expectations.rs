//! Expectations: what a controller has asked the API to create and delete and not yet seen
//! in its cache. Until the cache shows them, a controller does not act on a count it knows
//! is stale (or it would create the same pods twice). Names are chosen before the create,
//! so an event can never arrive before its expectation is written.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::workers::Key;

/// How long an expectation holds if its event never comes (a lost watch event, say).
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    /// Names of objects being created.
    creates: HashSet<String>,
    /// Uids of objects being deleted.
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// Expectations of one controller, by owner uid.
#[derive(Default)]
pub struct Expectations {
    owners: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// No expectations.
    pub fn new() -> Expectations {
        Expectations::default()
    }

    /// Before asking the API: `owner` will create objects named `creates` and delete those
    /// with uids `deletes`.
    pub fn expect(&self, owner: &str, creates: &[String], deletes: &[String]) {
        let mut owners = self.owners.lock();
        let pending = owners.entry(owner.to_owned()).or_default();
        pending.creates.extend(creates.iter().cloned());
        pending.deletes.extend(deletes.iter().cloned());
        pending.since = Some(Instant::now());
    }

    /// The create of `name` failed or was not attempted: it will not be seen.
    pub fn create_failed(&self, owner: &str, name: &str) {
        if let Some(pending) = self.owners.lock().get_mut(owner) {
            pending.creates.remove(name);
        }
    }

    /// The delete of `uid` failed: it will not be seen.
    pub fn delete_failed(&self, owner: &str, uid: &str) {
        if let Some(pending) = self.owners.lock().get_mut(owner) {
            pending.deletes.remove(uid);
        }
    }

    /// The cache shows an object of `owner`: present (created) or deleting/deleted.
    pub fn observed(&self, owner: &str, name: &str, uid: &str, gone_or_going: bool) {
        let mut owners = self.owners.lock();
        let Some(pending) = owners.get_mut(owner) else {
            return;
        };
        pending.creates.remove(name);
        if gone_or_going {
            pending.deletes.remove(uid);
        }
    }

    /// Notes a change to the object `meta` (deleted, or now `meta`) for its controller, if
    /// that is a `kind` of `api_version`; returns the controller's key to look at again.
    pub fn saw(
        &self,
        meta: &ObjectMeta,
        deleted: bool,
        kind: &str,
        api_version: &str,
    ) -> Option<Key> {
        let owner = crate::pods::controller_of(meta)
            .filter(|r| r.kind == kind && r.api_version == api_version)?;
        self.observed(
            &owner.uid,
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
            deleted || meta.deletion_timestamp.is_some(),
        );
        Some(Key::namespaced(
            meta.namespace.as_deref().unwrap_or_default(),
            &owner.name,
        ))
    }

    /// Whether `owner` may act on its cache: nothing pending, or pending too long.
    pub fn satisfied(&self, owner: &str) -> bool {
        let mut owners = self.owners.lock();
        let Some(pending) = owners.get(owner) else {
            return true;
        };
        let done = pending.creates.is_empty() && pending.deletes.is_empty();
        let expired = pending.since.is_none_or(|since| since.elapsed() >= TIMEOUT);
        if done || expired {
            if expired && !done {
                tracing::warn!(
                    owner,
                    creates = pending.creates.len(),
                    deletes = pending.deletes.len(),
                    "expectations timed out"
                );
            }
            owners.remove(owner);
            return true;
        }
        false
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.owners.lock().remove(owner);
    }

    /// Forgets everything: the cache was listed afresh and is the truth again.
    pub fn clear(&self) {
        self.owners.lock().clear();
    }
}

const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A name like the API server's generateName makes: `prefix` (cut so the name fits in 63
/// characters) and five random characters.
pub fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    // Names are DNS labels (ASCII); a prefix that is not cannot be cut and is kept whole.
    let mut name = prefix.get(..58).unwrap_or(prefix).to_owned();
    for _ in 0..5 {
        name.push(char::from(
            NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())],
        ));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_deletes_must_be_seen() {
        let expectations = Expectations::new();
        assert!(expectations.satisfied("rs"));
        expectations.expect("rs", &["a".into(), "b".into()], &["uid-c".into()]);
        assert!(!expectations.satisfied("rs"));
        expectations.observed("rs", "a", "uid-a", false);
        expectations.create_failed("rs", "b");
        assert!(!expectations.satisfied("rs"));
        expectations.observed("rs", "c", "uid-c", false);
        assert!(!expectations.satisfied("rs"), "seen, but not deleting yet");
        expectations.observed("rs", "c", "uid-c", true);
        assert!(expectations.satisfied("rs"));
    }

    #[test]
    fn a_relist_clears_everything() {
        let expectations = Expectations::new();
        expectations.expect("rs", &["a".into()], &[]);
        expectations.clear();
        assert!(expectations.satisfied("rs"));
    }

    #[test]
    fn generated_names_fit() {
        let name = generate_name("web-");
        assert_eq!(name.len(), 9);
        assert!(name.starts_with("web-"));
        let long = "x".repeat(80);
        assert_eq!(generate_name(&long).len(), 63);
    }
}
