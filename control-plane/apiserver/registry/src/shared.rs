//! Objects shared by every watcher of one change: a change fanned out to a thousand watchers
//! is decoded once and encoded to JSON once, not once per watcher.
//!
//! The cache is keyed by (key, revision) and holds the most recent changes only; a watcher
//! that misses (it lags far behind) decodes for itself. **Does not** know selectors or event
//! types: each watcher still decides whether and how a change concerns it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use apiserver_storage::Kv;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::object::Object;

/// How many decoded changes are kept.
const CAPACITY: usize = 4096;

/// A decoded object and, once asked for, its JSON encoding.
#[derive(Debug)]
pub struct SharedObject {
    object: Object,
    json: OnceLock<Bytes>,
}

impl PartialEq for SharedObject {
    fn eq(&self, other: &SharedObject) -> bool {
        self.object == other.object
    }
}

impl SharedObject {
    /// Shares `object`.
    pub fn new(object: Object) -> Arc<SharedObject> {
        Arc::new(SharedObject {
            object,
            json: OnceLock::new(),
        })
    }

    /// The object.
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// Its JSON encoding, made by the first caller.
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            // A JSON map of JSON values always encodes.
            Bytes::from(serde_json::to_vec(&self.object).unwrap_or_default())
        })
    }

    /// The object itself, copied only if others still share it.
    pub fn into_object(self: Arc<SharedObject>) -> Object {
        match Arc::try_unwrap(self) {
            Ok(shared) => shared.object,
            Err(shared) => shared.object.clone(),
        }
    }
}

/// Which decoding of a stored value: its key, the revision it is shown at, and whether it is
/// the last state of a deleted object (shown at the delete's revision).
type CacheKey = (Bytes, i64, bool);

/// Recently decoded changes.
#[derive(Default)]
pub(crate) struct EventCache {
    inner: Mutex<Recent>,
}

/// The decodings kept, and the order they came in (the oldest leaves first).
#[derive(Default)]
struct Recent {
    map: HashMap<CacheKey, Arc<SharedObject>>,
    order: VecDeque<CacheKey>,
}

impl EventCache {
    /// The shared decoding of `kv` shown at `revision`, made by `decode` on a miss.
    pub(crate) fn get_or_decode<E>(
        &self,
        kv: &Kv,
        revision: i64,
        deleted: bool,
        decode: impl FnOnce() -> Result<Object, E>,
    ) -> Result<Arc<SharedObject>, E> {
        let key = (kv.key.clone(), revision, deleted);
        if let Some(found) = self.inner.lock().map.get(&key) {
            return Ok(found.clone());
        }
        // Decoded outside the lock; two watchers racing on one change both decode, once.
        let shared = SharedObject::new(decode()?);
        let mut recent = self.inner.lock();
        let Recent { map, order } = &mut *recent;
        if let Some(found) = map.get(&key) {
            return Ok(found.clone());
        }
        map.insert(key.clone(), shared.clone());
        order.push_back(key);
        while order.len() > CAPACITY {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
        Ok(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(key: &str, revision: i64) -> Kv {
        Kv {
            key: Bytes::from(key.to_owned()),
            value: Bytes::new(),
            create_revision: revision,
            mod_revision: revision,
        }
    }

    #[test]
    fn a_change_is_decoded_and_encoded_once() {
        let cache = EventCache::default();
        let decodes = std::cell::Cell::new(0);
        let decode = || {
            decodes.set(decodes.get() + 1);
            Ok::<_, ()>(json!({"a": 1}).as_object().cloned().unwrap_or_default())
        };
        let first = cache.get_or_decode(&kv("/k", 5), 5, false, decode).unwrap();
        let second = cache.get_or_decode(&kv("/k", 5), 5, false, decode).unwrap();
        assert_eq!(decodes.get(), 1);
        assert!(Arc::ptr_eq(&first, &second));
        assert!(std::ptr::eq(first.json(), second.json()));
        assert_eq!(&first.json()[..], br#"{"a":1}"#);
        // The same value shown as deleted is another decoding.
        cache.get_or_decode(&kv("/k", 5), 6, true, decode).unwrap();
        assert_eq!(decodes.get(), 2);
        drop(second);
        assert_eq!(first.into_object()["a"], 1);
    }

    #[test]
    fn the_cache_keeps_only_recent_changes() {
        let cache = EventCache::default();
        let decode = || Ok::<_, ()>(Object::new());
        for revision in 0..(CAPACITY as i64 + 10) {
            cache
                .get_or_decode(&kv("/k", revision), revision, false, decode)
                .unwrap();
        }
        let recent = cache.inner.lock();
        assert_eq!(recent.map.len(), CAPACITY);
        assert!(!recent.map.contains_key(&(Bytes::from("/k"), 0, false)));
    }
}
