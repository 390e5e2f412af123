//! An in-process cache of small blobs, keyed by sha256.
//!
//! Blobs are content-addressed and never change, so a cached blob can never be stale: the journal
//! still decides *which* sha256 a read returns (one query per read, on every replica), and the
//! cache only replaces the storage round trip for bytes it has seen before. Bounded by total
//! bytes (S3-FIFO eviction, from `quick_cache`); blobs larger than [`BlobCache::max_item_bytes`]
//! are never cached, so archives and big assets stream from storage as before.

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

#[derive(Clone, Copy, Default)]
struct ByLength;

impl Weighter<String, Bytes> for ByLength {
    fn weight(&self, key: &String, val: &Bytes) -> u64 {
        // The key and bookkeeping cost ~100 B; count them so a cache of tiny blobs stays bounded.
        (val.len() + key.len() + 64) as u64
    }
}

/// A byte-bounded cache of immutable blobs (see the module docs).
pub struct BlobCache {
    cache: Cache<String, Bytes, ByLength>,
    capacity: u64,
    max_item: u64,
}

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCache")
            .field("capacity", &self.capacity)
            .field("max_item", &self.max_item)
            .field("len", &self.cache.len())
            .field("weight", &self.cache.weight())
            .finish()
    }
}

/// Blobs above this size are never cached, whatever the capacity.
const MAX_ITEM_CEILING: u64 = 1 << 20;

impl BlobCache {
    /// A cache holding up to `capacity_bytes`; `None` when the capacity is 0 (caching off).
    pub fn new(capacity_bytes: u64) -> Option<BlobCache> {
        if capacity_bytes == 0 {
            return None;
        }
        // One item may take at most 1/16 of the cache (and never more than 1 MiB), so a few large
        // files cannot flush the lessons everyone reads.
        let max_item = (capacity_bytes / 16).clamp(1, MAX_ITEM_CEILING);
        // quick_cache sizes its tables from an item estimate; lessons average a few KB.
        let estimated_items = usize::try_from(capacity_bytes / 8192)
            .unwrap_or(usize::MAX)
            .clamp(16, 1 << 20);
        Some(BlobCache {
            cache: Cache::with_weighter(estimated_items, capacity_bytes, ByLength),
            capacity: capacity_bytes,
            max_item,
        })
    }

    /// The largest blob this cache keeps.
    pub fn max_item_bytes(&self) -> u64 {
        self.max_item
    }

    /// The cached bytes of `sha256`, if present.
    pub fn get(&self, sha256: &str) -> Option<Bytes> {
        let hit = self.cache.get(sha256);
        // Looked up per call: engines may open before the metrics recorder is installed.
        metrics::counter!(
            "panaversityfs_blob_cache_requests_total",
            "result" => if hit.is_some() { "hit" } else { "miss" }
        )
        .increment(1);
        hit
    }

    /// Remember `bytes` as the content of `sha256` (ignored when larger than the item limit).
    /// The caller guarantees `sha256` is the hash of `bytes` (they come from the journal/storage
    /// pair the engine keeps consistent, or from a write that just hashed them).
    pub fn insert(&self, sha256: &str, bytes: &Bytes) {
        if bytes.len() as u64 > self.max_item {
            return;
        }
        self.cache.insert(sha256.to_string(), bytes.clone());
    }

    /// Bytes held now (keys and bookkeeping included).
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    /// Blobs held now.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_capacity_means_off() {
        assert!(BlobCache::new(0).is_none());
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let c = BlobCache::new(64 * 1024).expect("cache");
        assert_eq!(c.max_item_bytes(), 4096);
        for i in 0..1000 {
            let b = Bytes::from(vec![b'x'; 3000]);
            c.insert(&format!("{i:064x}"), &b);
        }
        assert!(c.weight() <= 64 * 1024, "weight {}", c.weight());
        assert!(!c.is_empty());
        assert!(c.len() < 1000);
    }

    #[test]
    fn big_items_are_not_cached() {
        let c = BlobCache::new(64 * 1024).expect("cache");
        c.insert("a", &Bytes::from(vec![0u8; 5000]));
        assert!(c.get("a").is_none());
        c.insert("b", &Bytes::from(vec![0u8; 4096]));
        assert_eq!(c.get("b").map(|b| b.len()), Some(4096));
    }
}
