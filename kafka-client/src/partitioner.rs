//! Choosing a partition for a record, the way Java's producer does.
//!
//! - Records with a key: `(murmur2(key) & 0x7fffffff) % partitions` ([`partition_for_key`]), so
//!   Java and Rust producers agree on where a key lives. All partitions count, available or not.
//! - Records without a key (or with keys ignored): the uniform sticky partitioner of KIP-480 and
//!   KIP-794 ([`StickyPartitioner`]): stay on one partition until about `batch.size` bytes went to
//!   it and its batch is full, then move on to a random available partition, weighted towards
//!   short queues when adaptive partitioning is on.
//! - [`PartitionerChoice::RoundRobin`]: one partition after the other, over the available ones.
//!
//! Sans-IO: metadata and queue sizes come in as a [`PartitionLoad`], randomness through a
//! [`RandomSource`].

use crate::config::{PartitionerChoice, ProducerConfig};
use crate::metadata::TopicMap;
use crate::rng::RandomSource;

/// Java's `Utils.murmur2`: MurmurHash2, 32 bit, seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java takes the length as an int; keys are far below 2^31 bytes, and wrapping matches Java
    // for longer inputs too.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Java's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Java's producer picks for `key` among `num_partitions`; `None` when the topic
/// has no partitions.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> Option<i32> {
    (num_partitions > 0).then(|| to_positive(murmur2(key)) % num_partitions)
}

/// What the partitioner knows about a topic's partitions.
#[derive(Debug, Clone, Copy)]
pub struct PartitionLoad<'a> {
    /// Partitions of the topic (all of them, with or without a leader).
    pub num_partitions: i32,
    /// Partitions that have a leader and are not excluded by
    /// `partitioner.availability.timeout.ms`, in ascending order. Empty: any partition.
    pub available: &'a [i32],
    /// KIP-794: batches queued per partition, aligned with `available`. `None` (or a length
    /// other than `available`'s) disables the weighting.
    pub queue_sizes: Option<&'a [u32]>,
}

impl<'a> PartitionLoad<'a> {
    /// A topic with `num_partitions` partitions, all available, no queue information.
    pub fn uniform(num_partitions: i32) -> PartitionLoad<'static> {
        PartitionLoad {
            num_partitions,
            available: &[],
            queue_sizes: None,
        }
    }
}

/// Where a record goes and whether the sticky partitioner chose it (then report the append with
/// [`Partitioner::record_appended`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionChoice {
    pub partition: i32,
    pub sticky: bool,
}

#[derive(Debug, Clone, Copy)]
struct StickyState {
    partition: i32,
    produced_bytes: usize,
}

/// The uniform sticky partitioner (KIP-480, KIP-794) for records without a key.
#[derive(Debug, Clone)]
pub struct StickyPartitioner {
    batch_size: usize,
    adaptive: bool,
    topics: TopicMap<StickyState>,
}

impl StickyPartitioner {
    /// Switches partition after `batch_size` bytes (Java's `batch.size`); `adaptive` weights
    /// the choice by queue sizes (`partitioner.adaptive.partitioning.enable`).
    pub fn new(batch_size: usize, adaptive: bool) -> StickyPartitioner {
        StickyPartitioner {
            batch_size,
            adaptive,
            topics: TopicMap::default(),
        }
    }

    /// The partition for the next unkeyed record of `topic`; `None` when the topic has no
    /// partitions.
    pub fn partition(
        &mut self,
        topic: &str,
        load: &PartitionLoad<'_>,
        rng: &mut dyn RandomSource,
    ) -> Option<i32> {
        if load.num_partitions <= 0 {
            return None;
        }
        if let Some(state) = self.topics.get(topic) {
            // The topic may have been re-created with fewer partitions.
            if state.partition < load.num_partitions {
                return Some(state.partition);
            }
        }
        let partition = self.next_partition(load, rng)?;
        self.topics.insert(
            topic.to_string(),
            StickyState {
                partition,
                produced_bytes: 0,
            },
        );
        Some(partition)
    }

    /// Reports that `bytes` were appended to `partition` of `topic` for a record placed by
    /// [`partition`](Self::partition). `batch_full`: the partition's open batch is now full (all
    /// its batches are), so switching does not split a batch. The partition switches once
    /// `batch.size` bytes went to it and the batch is full, or after twice `batch.size` in any
    /// case.
    pub fn record_appended(
        &mut self,
        topic: &str,
        partition: i32,
        bytes: usize,
        batch_full: bool,
        load: &PartitionLoad<'_>,
        rng: &mut dyn RandomSource,
    ) {
        if self.batch_size == 0 {
            return;
        }
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        // Another thread of control already moved on (Java checks the same).
        if state.partition != partition {
            return;
        }
        state.produced_bytes = state.produced_bytes.saturating_add(bytes);
        let produced = state.produced_bytes;
        let limit = self.batch_size;
        if (produced >= limit && batch_full) || produced >= limit.saturating_mul(2) {
            if let Some(next) = self.next_partition(load, rng) {
                self.topics.insert(
                    topic.to_string(),
                    StickyState {
                        partition: next,
                        produced_bytes: 0,
                    },
                );
            }
        }
    }

    /// Forgets a topic's sticky state.
    pub fn forget_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    fn next_partition(&self, load: &PartitionLoad<'_>, rng: &mut dyn RandomSource) -> Option<i32> {
        if load.num_partitions <= 0 {
            return None;
        }
        let random = rng.next_u64();
        if self.adaptive {
            if let Some(p) = weighted_choice(load, random) {
                return Some(p);
            }
        }
        if load.available.is_empty() {
            Some((random % load.num_partitions as u64) as i32)
        } else {
            let idx = (random % load.available.len() as u64) as usize;
            load.available.get(idx).copied()
        }
    }
}

/// KIP-794: choose among the available partitions with weights `max_queue + 1 - queue`, so a
/// partition with a long queue (a slow broker) gets fewer new batches. `None` when there is no
/// usable queue information or all queues are equal (then the choice is uniform).
fn weighted_choice(load: &PartitionLoad<'_>, random: u64) -> Option<i32> {
    let sizes = load.queue_sizes?;
    if sizes.is_empty() || sizes.len() != load.available.len() {
        return None;
    }
    let max = u64::from(*sizes.iter().max()?);
    let all_equal = sizes.iter().all(|&s| u64::from(s) == max);
    if all_equal {
        return None;
    }
    // Cumulative weights; u64 cannot overflow: at most len * 2^32.
    let mut cumulative = Vec::with_capacity(sizes.len());
    let mut total = 0u64;
    for &s in sizes {
        total += max + 1 - u64::from(s);
        cumulative.push(total);
    }
    let r = random % total;
    // The first index whose cumulative weight exceeds r.
    let idx = cumulative.partition_point(|&c| c <= r);
    load.available.get(idx).copied()
}

/// The producer's partitioner: keys by murmur2, unkeyed records sticky, or round-robin, as
/// configured.
#[derive(Debug, Clone)]
pub struct Partitioner {
    choice: PartitionerChoice,
    ignore_keys: bool,
    sticky: StickyPartitioner,
    round_robin: TopicMap<u32>,
}

impl Partitioner {
    /// A partitioner for `config` (`partitioner.class`, `partitioner.ignore.keys`,
    /// `partitioner.adaptive.partitioning.enable`, `batch.size`).
    pub fn new(config: &ProducerConfig) -> Partitioner {
        Partitioner {
            choice: config.partitioner,
            ignore_keys: config.partitioner_ignore_keys,
            sticky: StickyPartitioner::new(config.batch_size, config.partitioner_adaptive),
            round_robin: TopicMap::default(),
        }
    }

    /// The partition of a record of `topic` with `key`; `None` when the topic has no partitions.
    pub fn partition(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        load: &PartitionLoad<'_>,
        rng: &mut dyn RandomSource,
    ) -> Option<PartitionChoice> {
        if load.num_partitions <= 0 {
            return None;
        }
        match self.choice {
            PartitionerChoice::RoundRobin => {
                let counter = self.round_robin.entry(topic.to_string()).or_insert(0);
                let n = to_positive(*counter as i32);
                *counter = counter.wrapping_add(1);
                let partition = if load.available.is_empty() {
                    n % load.num_partitions
                } else {
                    load.available[n as usize % load.available.len()]
                };
                Some(PartitionChoice {
                    partition,
                    sticky: false,
                })
            }
            PartitionerChoice::Default | PartitionerChoice::UniformSticky => {
                let use_key = self.choice == PartitionerChoice::Default && !self.ignore_keys;
                match key {
                    Some(key) if use_key => {
                        partition_for_key(key, load.num_partitions).map(|partition| {
                            PartitionChoice {
                                partition,
                                sticky: false,
                            }
                        })
                    }
                    _ => self
                        .sticky
                        .partition(topic, load, rng)
                        .map(|partition| PartitionChoice {
                            partition,
                            sticky: true,
                        }),
                }
            }
        }
    }

    /// Reports an append of a record placed by the sticky partitioner; see
    /// [`StickyPartitioner::record_appended`]. Does nothing for other choices.
    pub fn record_appended(
        &mut self,
        topic: &str,
        choice: PartitionChoice,
        bytes: usize,
        batch_full: bool,
        load: &PartitionLoad<'_>,
        rng: &mut dyn RandomSource,
    ) {
        if choice.sticky {
            self.sticky
                .record_appended(topic, choice.partition, bytes, batch_full, load, rng);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SeededRng;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn murmur2_known_values() {
        // Values computed with Java's Utils.murmur2 (the integration test checks 10,000 more).
        assert_eq!(murmur2(b""), 275646681);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(partition_for_key(b"x", 0), None);
        assert_eq!(partition_for_key(b"x", -3), None);
    }

    proptest! {
        #[test]
        fn key_partition_in_range(key in proptest::collection::vec(any::<u8>(), 0..64), n in 1i32..10_000) {
            let p = partition_for_key(&key, n).unwrap();
            prop_assert!((0..n).contains(&p));
        }

        #[test]
        fn sticky_stays_in_available(seed in any::<u64>(), sizes in proptest::collection::vec(0u32..20, 1..8)) {
            let available: Vec<i32> = (0..sizes.len() as i32).map(|i| i * 2).collect();
            let load = PartitionLoad { num_partitions: 16, available: &available, queue_sizes: Some(&sizes) };
            let mut rng = SeededRng::new(seed);
            let mut s = StickyPartitioner::new(100, true);
            for _ in 0..50 {
                let p = s.partition("t", &load, &mut rng).unwrap();
                prop_assert!(available.contains(&p));
                s.record_appended("t", p, 60, true, &load, &mut rng);
            }
        }
    }

    #[test]
    fn sticky_switches_after_batch_size_and_full_batch() {
        let mut rng = SeededRng::new(3);
        let load = PartitionLoad::uniform(1000);
        let mut s = StickyPartitioner::new(100, false);
        let first = s.partition("t", &load, &mut rng).unwrap();
        // Below batch.size: stays.
        s.record_appended("t", first, 99, true, &load, &mut rng);
        assert_eq!(s.partition("t", &load, &mut rng), Some(first));
        // At batch.size but the batch is not full: stays.
        s.record_appended("t", first, 1, false, &load, &mut rng);
        assert_eq!(s.partition("t", &load, &mut rng), Some(first));
        // Batch full: switches (with 1000 partitions a repeat is possible but not with this seed,
        // and the state is reset either way).
        s.record_appended("t", first, 1, true, &load, &mut rng);
        let second = s.partition("t", &load, &mut rng).unwrap();
        assert_ne!(second, first);
        // Twice batch.size switches even without a full batch.
        s.record_appended("t", second, 200, false, &load, &mut rng);
        assert_ne!(s.partition("t", &load, &mut rng), Some(second));
        // Appends for a stale partition are ignored.
        let cur = s.partition("t", &load, &mut rng).unwrap();
        s.record_appended("t", cur + 1, 10_000, true, &load, &mut rng);
        assert_eq!(s.partition("t", &load, &mut rng), Some(cur));
    }

    #[test]
    fn sticky_spreads_uniformly_over_available() {
        let mut rng = SeededRng::new(11);
        let available = [1, 3, 5, 7];
        let load = PartitionLoad {
            num_partitions: 8,
            available: &available,
            queue_sizes: None,
        };
        let mut s = StickyPartitioner::new(10, false);
        let mut counts = HashMap::new();
        for _ in 0..4000 {
            let p = s.partition("t", &load, &mut rng).unwrap();
            *counts.entry(p).or_insert(0) += 1;
            s.record_appended("t", p, 10, true, &load, &mut rng);
        }
        assert_eq!(counts.len(), 4);
        for (p, c) in counts {
            assert!(available.contains(&p));
            assert!((800..1200).contains(&c), "partition {p}: {c}");
        }
    }

    #[test]
    fn adaptive_prefers_short_queues() {
        let available = [0, 1, 2];
        // Weights: max 9 + 1 - size = 10, 1, 10.
        let sizes = [0, 9, 0];
        let load = PartitionLoad {
            num_partitions: 3,
            available: &available,
            queue_sizes: Some(&sizes),
        };
        let mut rng = SeededRng::new(5);
        let mut s = StickyPartitioner::new(1, true);
        let mut counts = [0u32; 3];
        for _ in 0..21_000 {
            let p = s.partition("t", &load, &mut rng).unwrap();
            counts[p as usize] += 1;
            s.record_appended("t", p, 1, true, &load, &mut rng);
        }
        // Expected 10k, 1k, 10k.
        assert!((9_000..11_000).contains(&counts[0]), "{counts:?}");
        assert!((600..1_400).contains(&counts[1]), "{counts:?}");
        assert!((9_000..11_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn weighted_choice_boundaries() {
        let available = [10, 20];
        let sizes = [1, 0];
        // Weights 1, 2: cumulative [1, 3]: r=0 -> 10, r=1,2 -> 20.
        let load = PartitionLoad {
            num_partitions: 30,
            available: &available,
            queue_sizes: Some(&sizes),
        };
        assert_eq!(weighted_choice(&load, 0), Some(10));
        assert_eq!(weighted_choice(&load, 1), Some(20));
        assert_eq!(weighted_choice(&load, 2), Some(20));
        assert_eq!(weighted_choice(&load, 3), Some(10));
        let mismatched = PartitionLoad {
            queue_sizes: Some(&[1]),
            ..load
        };
        assert_eq!(weighted_choice(&mismatched, 0), None);
        let equal = PartitionLoad {
            queue_sizes: Some(&[4, 4]),
            ..load
        };
        assert_eq!(weighted_choice(&equal, 0), None);
    }

    #[test]
    fn partitioner_modes() {
        let mut rng = SeededRng::new(1);
        let load = PartitionLoad::uniform(7);
        let mut cfg = ProducerConfig::default();
        let mut p = Partitioner::new(&cfg);
        let keyed = p.partition("t", Some(b"key"), &load, &mut rng).unwrap();
        assert_eq!(
            keyed,
            PartitionChoice {
                partition: partition_for_key(b"key", 7).unwrap(),
                sticky: false
            }
        );
        assert!(p.partition("t", None, &load, &mut rng).unwrap().sticky);
        assert!(p
            .partition("t", Some(b"k"), &PartitionLoad::uniform(0), &mut rng)
            .is_none());

        cfg.partitioner_ignore_keys(true);
        let mut p = Partitioner::new(&cfg);
        assert!(
            p.partition("t", Some(b"key"), &load, &mut rng)
                .unwrap()
                .sticky
        );

        cfg.partitioner(PartitionerChoice::RoundRobin);
        let mut p = Partitioner::new(&cfg);
        let available = [2, 4, 6];
        let load = PartitionLoad {
            num_partitions: 7,
            available: &available,
            queue_sizes: None,
        };
        let got: Vec<i32> = (0..6)
            .map(|_| {
                p.partition("t", Some(b"k"), &load, &mut rng)
                    .unwrap()
                    .partition
            })
            .collect();
        assert_eq!(got, vec![2, 4, 6, 2, 4, 6]);
    }

    #[test]
    fn sticky_repicks_when_partition_count_shrinks() {
        let mut rng = SeededRng::new(9);
        let mut s = StickyPartitioner::new(100, false);
        let mut p = s
            .partition("t", &PartitionLoad::uniform(100), &mut rng)
            .unwrap();
        while p < 2 {
            s.forget_topic("t");
            p = s
                .partition("t", &PartitionLoad::uniform(100), &mut rng)
                .unwrap();
        }
        let q = s
            .partition("t", &PartitionLoad::uniform(2), &mut rng)
            .unwrap();
        assert!(q < 2);
    }
}
