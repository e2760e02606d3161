//! Java-compatible orderings.
//!
//! Java's assignors iterate `HashMap`s and sort with `String.compareTo`; to give the same answers
//! for the same inputs we reproduce both orders here.

use std::cmp::Ordering;

/// `String.compareTo`: lexicographic over UTF-16 code units (differs from Rust's `str` order only
/// for characters above U+FFFF against U+E000..U+FFFF).
pub(crate) fn cmp_str(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `String.hashCode`.
pub(crate) fn string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The iteration order of a `java.util.HashMap` built with `new HashMap<>()` and one `put` per
/// key, in `keys` order (keys distinct). Returns indexes into `keys`.
///
/// A default map starts with 16 buckets and doubles while `size > 0.75 * buckets`; iteration
/// walks buckets in index order (`(h ^ (h >>> 16)) & (buckets - 1)`) and each bucket's chain in
/// insertion order (resizing keeps the relative order). Chains long enough to become trees (8+
/// keys in one bucket) are not modelled: with a handful of members this does not happen.
pub(crate) fn hashmap_order<S: AsRef<str>>(keys: &[S]) -> Vec<usize> {
    let n = keys.len();
    let mut buckets: usize = 16;
    while n * 4 > buckets * 3 {
        buckets *= 2;
    }
    let mut idx: Vec<(usize, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let h = string_hash(k.as_ref()) as u32;
            let spread = h ^ (h >> 16);
            ((spread as usize) & (buckets - 1), i)
        })
        .collect();
    idx.sort_unstable();
    idx.into_iter().map(|(_, i)| i).collect()
}

/// `TopicPartition.hashCode` of the Java client.
pub(crate) fn topic_partition_hash(topic: &str, partition: i32) -> i32 {
    31i32
        .wrapping_add(partition)
        .wrapping_mul(31)
        .wrapping_add(string_hash(topic))
}

/// Bucket of a hash in a Java hash table of `buckets` buckets.
fn bucket(h: i32, buckets: usize) -> usize {
    let h = h as u32;
    ((h ^ (h >> 16)) as usize) & (buckets - 1)
}

/// A `java.util.HashSet` of topic partitions reduced to what its iteration order needs: the
/// table size (grows at 0.75 load, never shrinks) and insertion order within a bucket.
#[derive(Debug, Clone)]
pub(crate) struct JavaPartitionSet {
    buckets: usize,
    seq: u64,
    entries: Vec<(crate::types::TopicPartition, u64)>,
}

impl JavaPartitionSet {
    pub(crate) fn new() -> JavaPartitionSet {
        JavaPartitionSet {
            buckets: 16,
            seq: 0,
            entries: Vec::new(),
        }
    }

    pub(crate) fn insert(&mut self, tp: crate::types::TopicPartition) {
        if self.entries.iter().any(|(e, _)| *e == tp) {
            return;
        }
        self.entries.push((tp, self.seq));
        self.seq += 1;
        while self.entries.len() * 4 > self.buckets * 3 {
            self.buckets *= 2;
        }
    }

    pub(crate) fn remove(&mut self, tp: &crate::types::TopicPartition) {
        self.entries.retain(|(e, _)| e != tp);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `iterator().next()`.
    pub(crate) fn first(&self) -> Option<&crate::types::TopicPartition> {
        self.entries
            .iter()
            .min_by_key(|(tp, seq)| {
                (
                    bucket(topic_partition_hash(&tp.topic, tp.partition), self.buckets),
                    *seq,
                )
            })
            .map(|(tp, _)| tp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_known_values() {
        assert_eq!(string_hash(""), 0);
        assert_eq!(string_hash("a"), 97);
        // "hello".hashCode() in Java.
        assert_eq!(string_hash("hello"), 99_162_322);
        // Overflowing: "consumer-1".hashCode().
        let h = string_hash("polygenelubricants");
        assert_eq!(h, i32::MIN);
    }

    #[test]
    fn order_small_map() {
        // "a" (97) -> bucket 1, "b" (98) -> 2, "q" (113) -> 1: a, q, b.
        assert_eq!(hashmap_order(&["a", "b", "q"]), vec![0, 2, 1]);
    }
}
