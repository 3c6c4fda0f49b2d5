//! The in-memory tail cache: the newest records, so a leader replicating recent entries never
//! touches disk, and so records are readable before they are durable.
//!
//! Invariants (maintained together with `State` in `lib.rs`):
//! - entries are contiguous and, when non-empty, end at the log's last index;
//! - every record not yet durable is in the cache (only records below `durable_next` are evicted);
//! - so any logical index below the cache's first entry is durable on disk in its current version.
//!
//! It knows nothing about files; it does not decide durability (the writer reports it).

use std::collections::VecDeque;

use bytes::Bytes;

/// Per-entry bookkeeping counted against the budget, so a flood of tiny records is bounded too.
const ENTRY_OVERHEAD: usize = 32;

#[derive(Debug)]
pub(crate) struct TailCache {
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
    cap: usize,
    /// Every cached record with an index below this is durable in its current version.
    durable_next: u64,
}

impl TailCache {
    pub(crate) fn new(cap: usize, durable_next: u64) -> Self {
        TailCache {
            entries: VecDeque::new(),
            bytes: 0,
            cap,
            durable_next,
        }
    }

    pub(crate) fn first(&self) -> Option<u64> {
        self.entries.front().map(|(i, _)| *i)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the record after the last cached one (the caller checked contiguity).
    pub(crate) fn push(&mut self, index: u64, payload: Bytes) {
        debug_assert!(self.entries.back().is_none_or(|(i, _)| *i + 1 == index));
        self.bytes += payload.len() + ENTRY_OVERHEAD;
        self.entries.push_back((index, payload));
        self.evict();
    }

    /// Drops every record with index `>= next` (a truncation).
    pub(crate) fn truncate_from(&mut self, next: u64) {
        while let Some((i, p)) = self.entries.back() {
            if *i < next {
                break;
            }
            self.bytes -= p.len() + ENTRY_OVERHEAD;
            self.entries.pop_back();
        }
        self.durable_next = self.durable_next.min(next);
    }

    /// Drops every record with index `< first` (a purge).
    pub(crate) fn purge_below(&mut self, first: u64) {
        while let Some((i, p)) = self.entries.front() {
            if *i >= first {
                break;
            }
            self.bytes -= p.len() + ENTRY_OVERHEAD;
            self.entries.pop_front();
        }
    }

    /// The writer made everything below `next` durable.
    pub(crate) fn mark_durable(&mut self, next: u64) {
        self.durable_next = self.durable_next.max(next);
        self.evict();
    }

    /// After a failed write: exactly the records below `next` are durable.
    pub(crate) fn reset_durable(&mut self, next: u64) {
        self.durable_next = next;
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.cap {
            match self.entries.front() {
                Some((i, p)) if *i < self.durable_next => {
                    self.bytes -= p.len() + ENTRY_OVERHEAD;
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Appends records `from..to` to `out`; the range must lie within the cache.
    pub(crate) fn copy_range(&self, from: u64, to: u64, out: &mut Vec<(u64, Bytes)>) {
        let Some(first) = self.first() else { return };
        let (Some(start), Some(end)) = (from.checked_sub(first), to.checked_sub(first)) else {
            return;
        };
        let (start, end) = (start as usize, (end as usize).min(self.entries.len()));
        if start < end {
            out.extend(self.entries.range(start..end).cloned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn keeps_undurable_records_past_the_budget() {
        let mut c = TailCache::new(100, 0);
        for i in 0..10 {
            c.push(i, payload(68)); // 100 bytes each with overhead
        }
        assert_eq!(c.len(), 10, "nothing durable yet, nothing evicted");
        c.mark_durable(5);
        assert_eq!(c.first(), Some(5), "evicted down to the durable boundary");
        c.mark_durable(10);
        assert_eq!(c.first(), Some(9));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn truncate_lowers_durable_boundary() {
        let mut c = TailCache::new(0, 0);
        for i in 0..4 {
            c.push(i, payload(1));
        }
        c.truncate_from(2);
        assert_eq!(c.len(), 2);
        c.push(2, payload(1));
        c.mark_durable(2);
        assert_eq!(
            c.first(),
            Some(2),
            "record 2 is the new version, not durable"
        );
    }

    #[test]
    fn copy_and_purge() {
        let mut c = TailCache::new(usize::MAX, 0);
        for i in 10..20 {
            c.push(i, Bytes::from(vec![i as u8]));
        }
        let mut out = Vec::new();
        c.copy_range(12, 15, &mut out);
        assert_eq!(
            out.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [12, 13, 14]
        );
        assert_eq!(out[0].1, Bytes::from(vec![12]));
        c.purge_below(18);
        assert_eq!(c.first(), Some(18));
        out.clear();
        c.copy_range(18, 25, &mut out);
        assert_eq!(out.len(), 2);
    }
}
