//! [`Restore`]: the sans-IO machine that replays a changelog partition into a store.
//!
//! The driver (the partition's restore task) reads the changelog with `ReadCommitted` from the
//! start position and hands each polled batch to [`Restore::apply_batch`] together with the
//! consumer's position after it; the machine answers [`RestoreProgress::NeedMore`] or
//! [`RestoreProgress::Done`]. No tokio, no clock, no I/O.
//!
//! Invariants:
//! - records are applied in offset order, each at most once: a record below the current
//!   position (a re-fetched duplicate) is ignored;
//! - the position never moves back; it advances past every applied record and to the
//!   consumer's position after each batch, which may lie past trailing control records or
//!   aborted data that return no record, so a trailing commit marker counts as progress and
//!   cannot hang a restore (STREAMS.md §1.4; GKES waited for a marker of its own instead);
//! - the restore is done once the position reaches the target (the changelog's end offset read
//!   before the restore began); a target at or below the start is done at once;
//! - an `apply` error is returned as is and fails the partition, never a skip (STREAMS.md D1).
//!   After an error the machine is not meant to be fed again.

use super::{ChangelogRecord, StateStore, StoreError};

/// Where a restore stands after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestoreProgress {
    /// The position is below the target: poll again.
    NeedMore {
        /// How many offsets remain to the target (> 0). Offsets, not records: control records
        /// and aborted data count too.
        lag: i64,
    },
    /// The store holds everything up to the target.
    Done,
}

/// Replays one changelog partition, from a start position up to a target end offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restore {
    /// The changelog's end offset when the restore began.
    target: i64,
    /// The next offset to apply.
    position: i64,
    /// How many records were applied (duplicates not counted).
    applied: u64,
}

impl Restore {
    /// A restore that starts at `start_position` (the first offset to read, e.g. the earliest
    /// offset) and is done once the position reaches `target_end`.
    pub(crate) fn new(start_position: i64, target_end: i64) -> Self {
        Self {
            target: target_end,
            position: start_position,
            applied: 0,
        }
    }

    /// Applies one polled batch to `store`, in order, skipping records below the position, then
    /// moves the position to `position_after` (the consumer's position after the batch) if that
    /// is further. Every record of the batch is applied, including any at or past the target.
    ///
    /// An `apply` error is returned at once; the records before it stay applied and the
    /// position stays at the failed record.
    pub(crate) fn apply_batch<'a, S: StateStore>(
        &mut self,
        store: &mut S,
        records: impl IntoIterator<Item = ChangelogRecord<'a>>,
        position_after: i64,
    ) -> Result<RestoreProgress, StoreError> {
        for record in records {
            if record.offset < self.position {
                continue;
            }
            store.apply(&record)?;
            self.applied += 1;
            self.position = record.offset.saturating_add(1);
        }
        self.position = self.position.max(position_after);
        Ok(self.progress())
    }

    /// Where the restore stands, without feeding it.
    pub(crate) fn progress(&self) -> RestoreProgress {
        if self.position >= self.target {
            RestoreProgress::Done
        } else {
            RestoreProgress::NeedMore {
                lag: self.target.saturating_sub(self.position),
            }
        }
    }

    /// How many records were applied so far (ignored duplicates not counted).
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// The next changelog offset the restore expects.
    // Only the tests read it for now; the driver reads the consumer's position.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn position(&self) -> i64 {
        self.position
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Codec, KvStore, MemStore, OrderedI64, Utf8};
    use proptest::prelude::*;

    type Store = MemStore<i64, String, OrderedI64, Utf8>;

    fn store() -> Store {
        MemStore::new(OrderedI64, Utf8)
    }

    /// An owned changelog record, for building batches.
    #[derive(Debug, Clone)]
    struct Owned {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        offset: i64,
    }

    impl Owned {
        fn put(offset: i64, key: i64, value: &str) -> Self {
            Self {
                key: OrderedI64.encode(&key).to_vec(),
                value: Some(value.as_bytes().to_vec()),
                offset,
            }
        }

        fn tombstone(offset: i64, key: i64) -> Self {
            Self {
                key: OrderedI64.encode(&key).to_vec(),
                value: None,
                offset,
            }
        }

        fn borrow(&self) -> ChangelogRecord<'_> {
            ChangelogRecord {
                key: &self.key,
                value: self.value.as_deref(),
                offset: self.offset,
            }
        }
    }

    fn batch(records: &[Owned]) -> impl Iterator<Item = ChangelogRecord<'_>> {
        records.iter().map(Owned::borrow)
    }

    fn contents(s: &Store) -> Vec<(i64, String)> {
        s.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    #[test]
    fn an_empty_changelog_is_done_at_once() {
        let mut s = store();
        for (start, target) in [(0, 0), (5, 5), (7, 3)] {
            let mut r = Restore::new(start, target);
            assert_eq!(r.progress(), RestoreProgress::Done);
            assert_eq!(
                r.apply_batch(&mut s, batch(&[]), start),
                Ok(RestoreProgress::Done)
            );
            assert_eq!(r.applied(), 0);
        }
        assert!(s.is_empty());
    }

    #[test]
    fn an_empty_poll_is_no_progress_and_no_hang() {
        let mut s = store();
        let mut r = Restore::new(0, 3);
        // The consumer's position may be unknown and reported as the start: still NeedMore.
        assert_eq!(
            r.apply_batch(&mut s, batch(&[]), 0),
            Ok(RestoreProgress::NeedMore { lag: 3 })
        );
    }

    #[test]
    fn a_trailing_control_record_completes_the_restore() {
        // Offsets 0 and 1 are data, 2 is the transaction's commit marker: the end offset is 3
        // but no record at offset 2 is ever returned.
        let mut s = store();
        let mut r = Restore::new(0, 3);
        let records = [Owned::put(0, 1, "a"), Owned::put(1, 2, "b")];
        assert_eq!(
            r.apply_batch(&mut s, batch(&records), 2),
            Ok(RestoreProgress::NeedMore { lag: 1 })
        );
        assert_eq!(
            r.apply_batch(&mut s, batch(&[]), 3),
            Ok(RestoreProgress::Done)
        );
        assert_eq!((r.applied(), r.position()), (2, 3));
        assert_eq!(contents(&s), [(1, "a".into()), (2, "b".into())]);
    }

    #[test]
    fn a_changelog_of_only_aborted_data_and_markers_completes() {
        let mut s = store();
        let mut r = Restore::new(10, 20);
        assert_eq!(
            r.apply_batch(&mut s, batch(&[]), 20),
            Ok(RestoreProgress::Done)
        );
        assert_eq!(r.applied(), 0);
    }

    #[test]
    fn tombstones_delete() {
        let mut s = store();
        let mut r = Restore::new(0, 4);
        let records = [
            Owned::put(0, 1, "a"),
            Owned::put(1, 2, "b"),
            Owned::tombstone(2, 1),
            Owned::tombstone(3, 9),
        ];
        assert_eq!(
            r.apply_batch(&mut s, batch(&records), 4),
            Ok(RestoreProgress::Done)
        );
        assert_eq!(r.applied(), 4);
        assert_eq!(contents(&s), [(2, "b".into())]);
    }

    #[test]
    fn refetched_duplicates_are_ignored() {
        let mut s = store();
        let mut r = Restore::new(0, 4);
        let first = [Owned::put(0, 1, "a"), Owned::put(1, 1, "b")];
        assert_eq!(
            r.apply_batch(&mut s, batch(&first), 2),
            Ok(RestoreProgress::NeedMore { lag: 2 })
        );
        // A re-fetch returns offsets 0 and 1 again: applying offset 0 again would bring back "a".
        let again = [
            Owned::put(0, 1, "a"),
            Owned::put(1, 1, "b"),
            Owned::put(2, 2, "c"),
            Owned::put(3, 3, "d"),
        ];
        assert_eq!(
            r.apply_batch(&mut s, batch(&again), 4),
            Ok(RestoreProgress::Done)
        );
        assert_eq!(r.applied(), 4);
        assert_eq!(
            contents(&s),
            [(1, "b".into()), (2, "c".into()), (3, "d".into())]
        );
    }

    #[test]
    fn the_position_never_moves_back() {
        let mut s = store();
        let mut r = Restore::new(5, 10);
        let records = [Owned::put(5, 1, "a"), Owned::put(6, 1, "b")];
        // A stale consumer position below the applied records does not rewind the machine.
        assert_eq!(
            r.apply_batch(&mut s, batch(&records), 0),
            Ok(RestoreProgress::NeedMore { lag: 3 })
        );
        assert_eq!(r.position(), 7);
    }

    #[test]
    fn an_apply_error_propagates() {
        let mut s = store();
        let mut r = Restore::new(0, 3);
        let records = [
            Owned::put(0, 1, "a"),
            Owned {
                key: OrderedI64.encode(&2).to_vec(),
                value: Some(vec![0xff]),
                offset: 1,
            },
            Owned::put(2, 3, "c"),
        ];
        let err = r.apply_batch(&mut s, batch(&records), 3).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Decode {
                offset: 1,
                what: "value",
                ..
            }
        ));
        // Nothing after the failed record was applied, and the position did not pass it.
        assert_eq!((r.applied(), r.position()), (1, 1));
        assert_eq!(contents(&s), [(1, "a".into())]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However the changelog is cut into batches, and whatever each poll re-fetches, the
        /// restored store equals the one applied in a single pass.
        #[test]
        fn batches_with_refetches_restore_the_same_store(
            ops in proptest::collection::vec((-4i64..4, proptest::option::of("[a-c]{1,3}")), 0..40),
            cuts in proptest::collection::vec((1usize..8, 0usize..4), 1..40),
            trailing_markers in 0i64..3,
        ) {
            // The changelog, written through the store so it is one a handler could produce.
            let mut writer = store();
            let records: Vec<Owned> = (0i64..)
                .zip(&ops)
                .map(|(offset, (k, v))| {
                    let e = match v {
                        Some(v) => writer.put(*k, v.clone()),
                        None => writer.delete(k),
                    };
                    Owned {
                        key: e.key.to_vec(),
                        value: e.value.map(|v| v.to_vec()),
                        offset,
                    }
                })
                .collect();
            let end = records.len() as i64 + trailing_markers;
            let mut s = store();
            let mut r = Restore::new(0, end);
            let mut next = 0usize;
            let mut done = false;
            for &(take, refetch) in cuts.iter().cycle().take(records.len() + 3) {
                let from = next.saturating_sub(refetch);
                let to = (next + take).min(records.len());
                let position_after = if to == records.len() { end } else { to as i64 };
                let progress = r
                    .apply_batch(&mut s, batch(&records[from..to]), position_after)
                    .expect("our own changelog applies");
                next = to;
                if progress == RestoreProgress::Done {
                    done = true;
                    break;
                }
                prop_assert_eq!(progress, RestoreProgress::NeedMore { lag: end - to as i64 });
            }
            prop_assert!(done);
            prop_assert_eq!(r.applied(), records.len() as u64);
            prop_assert_eq!(contents(&s), contents(&writer));
        }
    }
}
