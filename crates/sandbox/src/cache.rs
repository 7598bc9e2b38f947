//! A cache bounded by bytes, least recently used out first: compiled code is
//! kept by digest, and what bounds it is the memory it takes, not how many
//! entries there are (one large component weighs more than a thousand tiny
//! modules).

use std::collections::{BTreeMap, HashMap};

pub struct ByteCache<V> {
    entries: HashMap<String, Entry<V>>,
    /// Keys by last use, oldest first.
    by_use: BTreeMap<u64, String>,
    bytes: usize,
    max_bytes: usize,
    clock: u64,
}

struct Entry<V> {
    value: V,
    bytes: usize,
    used: u64,
}

impl<V: Clone> ByteCache<V> {
    pub fn new(max_bytes: usize) -> Self {
        ByteCache {
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            clock: 0,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<V> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        self.by_use.remove(&entry.used);
        entry.used = self.clock;
        self.by_use.insert(self.clock, key.to_string());
        Some(entry.value.clone())
    }

    /// Keeps `value`, weighing `bytes`, dropping the least recently used
    /// entries to make room. A value heavier than the whole cache is not kept.
    pub fn insert(&mut self, key: String, value: V, bytes: usize) {
        self.remove(&key);
        if bytes > self.max_bytes {
            return;
        }
        while self.bytes + bytes > self.max_bytes {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some(old) = self.entries.remove(&oldest) {
                self.bytes -= old.bytes;
            }
        }
        self.clock += 1;
        self.by_use.insert(self.clock, key.clone());
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                value,
                bytes,
                used: self.clock,
            },
        );
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.by_use.remove(&old.used);
            self.bytes -= old.bytes;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_past_its_bytes() {
        let mut cache = ByteCache::new(10);
        cache.insert("a".into(), 1, 4);
        cache.insert("b".into(), 2, 4);
        assert_eq!(cache.get("a"), Some(1));
        // `b` is the oldest use now: it goes to make room.
        cache.insert("c".into(), 3, 4);
        assert_eq!(cache.get("b"), None);
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("c"), Some(3));
        // Too heavy to keep at all; nothing else is dropped for it.
        cache.insert("huge".into(), 4, 11);
        assert_eq!(cache.get("huge"), None);
        assert_eq!(cache.len(), 2);
        // Replacing a key does not count it twice.
        cache.insert("a".into(), 5, 4);
        cache.insert("a".into(), 6, 4);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("a"), Some(6));
    }
}
