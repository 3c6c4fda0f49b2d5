//! etcd's conventions for turning `(key, range_end)` into a set of keys.

use std::ops::Bound;

use bytes::Bytes;

/// The keys a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Bytes),
    /// Keys in `[start, end)`.
    Span(Bytes, Bytes),
    /// Every key `>= start` (`range_end` is `\0`; with an empty or `\0` key, every key).
    From(Bytes),
}

impl KeyRange {
    /// Interprets a request's `key` and `range_end` as etcd does.
    pub fn new(key: &Bytes, range_end: &Bytes) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.clone())
        } else if range_end.as_ref() == [0] {
            KeyRange::From(key.clone())
        } else {
            KeyRange::Span(key.clone(), range_end.clone())
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_ref() == key,
            KeyRange::Span(start, end) => start.as_ref() <= key && key < end.as_ref(),
            KeyRange::From(start) => start.as_ref() <= key,
        }
    }

    /// Whether the range can hold no key at all (`end <= start`).
    pub fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Span(start, end) if end <= start)
    }

    /// Whether two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let (a_start, a_end) = self.bounds_ref();
        let (b_start, b_end) = other.bounds_ref();
        let a_before_b_ends = match b_end {
            Bound::Excluded(end) => a_start < end,
            Bound::Included(end) => a_start <= end,
            Bound::Unbounded => true,
        };
        let b_before_a_ends = match a_end {
            Bound::Excluded(end) => b_start < end,
            Bound::Included(end) => b_start <= end,
            Bound::Unbounded => true,
        };
        a_before_b_ends && b_before_a_ends
    }

    /// The first key of the range.
    pub fn start(&self) -> &Bytes {
        match self {
            KeyRange::Single(k) | KeyRange::Span(k, _) | KeyRange::From(k) => k,
        }
    }

    /// Bounds for a `BTreeMap<Bytes, _>` range scan.
    pub fn bounds(&self) -> (Bound<Bytes>, Bound<Bytes>) {
        match self {
            KeyRange::Single(k) => (Bound::Included(k.clone()), Bound::Included(k.clone())),
            KeyRange::Span(start, end) => {
                (Bound::Included(start.clone()), Bound::Excluded(end.clone()))
            }
            KeyRange::From(start) => (Bound::Included(start.clone()), Bound::Unbounded),
        }
    }

    fn bounds_ref(&self) -> (&[u8], Bound<&[u8]>) {
        match self {
            KeyRange::Single(k) => (k, Bound::Included(k)),
            KeyRange::Span(start, end) => (start, Bound::Excluded(end)),
            KeyRange::From(start) => (start, Bound::Unbounded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: &'static str, end: &'static str) -> KeyRange {
        KeyRange::new(
            &Bytes::from_static(key.as_bytes()),
            &Bytes::from_static(end.as_bytes()),
        )
    }

    #[test]
    fn conventions() {
        assert_eq!(r("a", ""), KeyRange::Single(Bytes::from_static(b"a")));
        assert!(matches!(r("a", "\0"), KeyRange::From(_)));
        assert!(r("", "\0").contains(b""));
        assert!(r("", "\0").contains(b"zzz"));
        assert!(r("a", "c").contains(b"b"));
        assert!(!r("a", "c").contains(b"c"));
        assert!(r("c", "a").is_empty());
    }

    #[test]
    fn overlap() {
        assert!(r("a", "c").overlaps(&r("b", "")));
        assert!(!r("a", "c").overlaps(&r("c", "")));
        assert!(r("a", "").overlaps(&r("a", "")));
        assert!(!r("a", "").overlaps(&r("b", "")));
        assert!(r("b", "\0").overlaps(&r("a", "c")));
        assert!(!r("d", "\0").overlaps(&r("a", "c")));
        assert!(!r("c", "a").overlaps(&r("a", "z")));
    }
}
