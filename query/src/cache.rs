//! [`ByteLru`]: a map bounded by the bytes of what it holds, least recently used out first. The
//! store keeps decoded Parquet files and values derived from whole files in two of them: files
//! never change once written, so nothing kept goes stale.

use std::collections::HashMap;
use std::hash::Hash;

/// Values of about `bytes` each, at most `budget` bytes in all. Eviction drops the older half
/// at once, so an insert costs O(1) amortised however many entries there are.
#[derive(Debug)]
pub(crate) struct ByteLru<K, V> {
    entries: HashMap<K, Entry<V>>,
    budget: usize,
    bytes: usize,
    tick: u64,
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    bytes: usize,
    used: u64,
}

impl<K: Hash + Eq, V: Clone> ByteLru<K, V> {
    /// An empty cache holding at most `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        Self { entries: HashMap::new(), budget, bytes: 0, tick: 0 }
    }

    /// The value under `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|e| {
            e.used = tick;
            e.value.clone()
        })
    }

    /// Keeps `value` (about `bytes` bytes) under `key`. A value over a quarter of the budget is
    /// not kept: one huge entry would flush everything else.
    pub(crate) fn put(&mut self, key: K, value: V, bytes: usize) {
        if bytes > self.budget / 4 {
            return;
        }
        if self.bytes + bytes > self.budget && !self.entries.is_empty() {
            let mut used: Vec<u64> = self.entries.values().map(|e| e.used).collect();
            let half = used.len() / 2;
            let (_, median, _) = used.select_nth_unstable(half);
            let cut = *median;
            self.entries.retain(|_, e| e.used > cut);
            self.bytes = self.entries.values().map(|e| e.bytes).sum();
        }
        self.tick += 1;
        self.bytes += bytes;
        if let Some(old) = self.entries.insert(key, Entry { value, bytes, used: self.tick }) {
            self.bytes -= old.bytes;
        }
    }

    /// Forgets `key`.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &K) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_used() {
        let mut c: ByteLru<u32, u32> = ByteLru::new(100 << 20);
        c.put(0, 0, 1 << 20);
        for i in 1..10_000 {
            c.put(i, i, 1 << 20);
            // Entry 0 is read all the time: it survives every eviction.
            assert_eq!(c.get(&0), Some(0), "after {i} puts");
            assert!(c.bytes() <= 100 << 20, "{} bytes after {i} puts", c.bytes());
        }
        assert_eq!(c.get(&9_999), Some(9_999));
        assert_eq!(c.get(&1), None, "the oldest unread entry went first");
        assert!(c.len() >= 50, "an eviction keeps the newer half: {}", c.len());
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count() {
        let mut c: ByteLru<&str, u8> = ByteLru::new(1_000);
        c.put("a", 1, 100);
        c.put("a", 2, 50);
        assert_eq!((c.get(&"a"), c.bytes()), (Some(2), 50));
        c.remove(&"a");
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // Over a quarter of the budget: not kept.
        c.put("huge", 3, 251);
        assert!(c.is_empty());
    }
}
