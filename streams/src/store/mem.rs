//! [`MemStore`]: an ordered in-memory key-value store, rebuilt from its changelog.
//!
//! Invariants:
//! - [`KvStore::put`] and [`KvStore::delete`] return exactly the changelog entry whose
//!   [`StateStore::apply`] redoes the change, so a fresh store fed the changelog in offset order
//!   holds the same map (property-tested below against a `BTreeMap` model; GKES's SimpleStore
//!   restored nothing, STREAMS.md D1);
//! - `apply` decodes the key and the value before touching the map: a record that does not
//!   decode is an error and leaves the store unchanged, never a silent skip.

use std::borrow::Borrow;
use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::RangeBounds;

use super::{ChangelogEntry, ChangelogRecord, Codec, KvStore, StateStore, StoreError};

/// An ordered in-memory store (`BTreeMap<K, V>`) whose keys and values go to the changelog
/// through a key codec `KC` and a value codec `VC`.
///
/// ```
/// use streams::store::{BigEndian, KvStore, MemStore, Utf8};
///
/// let mut store: MemStore<String, u64, _, _> = MemStore::new(Utf8, BigEndian);
/// let entry = store.put("clicks".to_string(), 3);
/// assert_eq!(&entry.key[..], b"clicks");
/// assert_eq!(entry.value.as_deref(), Some(&[0, 0, 0, 0, 0, 0, 0, 3][..]));
/// assert_eq!(store.get(&"clicks".to_string()), Some(&3));
/// ```
#[derive(Debug, Clone)]
pub struct MemStore<K, V, KC, VC> {
    map: BTreeMap<K, V>,
    key_codec: KC,
    value_codec: VC,
}

impl<K, V, KC, VC> MemStore<K, V, KC, VC> {
    /// An empty store that encodes keys with `key_codec` and values with `value_codec`.
    pub fn new(key_codec: KC, value_codec: VC) -> Self {
        Self {
            map: BTreeMap::new(),
            key_codec,
            value_codec,
        }
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> btree_map::Iter<'_, K, V> {
        self.map.iter()
    }

    /// The key codec.
    pub fn key_codec(&self) -> &KC {
        &self.key_codec
    }

    /// The value codec.
    pub fn value_codec(&self) -> &VC {
        &self.value_codec
    }
}

impl<K: Ord, V, KC, VC> MemStore<K, V, KC, VC> {
    /// The value of `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.get(key)
    }

    /// The entries whose keys fall in `range`, in key order (as [`BTreeMap::range`], which panics
    /// if the range starts after it ends or is empty with both ends excluded).
    pub fn range<Q, R>(&self, range: R) -> btree_map::Range<'_, K, V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        R: RangeBounds<Q>,
    {
        self.map.range(range)
    }
}

impl<K, V, KC: Default, VC: Default> Default for MemStore<K, V, KC, VC> {
    fn default() -> Self {
        Self::new(KC::default(), VC::default())
    }
}

impl<'a, K, V, KC, VC> IntoIterator for &'a MemStore<K, V, KC, VC> {
    type Item = (&'a K, &'a V);
    type IntoIter = btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K, V, KC, VC> StateStore for MemStore<K, V, KC, VC>
where
    K: Ord + Send + 'static,
    V: Send + 'static,
    KC: Codec<K>,
    VC: Codec<V>,
{
    fn apply(&mut self, record: &ChangelogRecord<'_>) -> Result<(), StoreError> {
        let decode_error = |what, source| StoreError::Decode {
            offset: record.offset,
            what,
            source,
        };
        let key = self
            .key_codec
            .decode(record.key)
            .map_err(|e| decode_error("key", e))?;
        match record.value {
            Some(bytes) => {
                let value = self
                    .value_codec
                    .decode(bytes)
                    .map_err(|e| decode_error("value", e))?;
                self.map.insert(key, value);
            }
            None => {
                self.map.remove(&key);
            }
        }
        Ok(())
    }
}

impl<K, V, KC, VC> KvStore for MemStore<K, V, KC, VC>
where
    K: Ord + Send + 'static,
    V: Send + 'static,
    KC: Codec<K>,
    VC: Codec<V>,
{
    type Key = K;
    type Value = V;

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn put(&mut self, key: K, value: V) -> ChangelogEntry {
        let entry = ChangelogEntry {
            key: self.key_codec.encode(&key),
            value: Some(self.value_codec.encode(&value)),
        };
        self.map.insert(key, value);
        entry
    }

    fn delete(&mut self, key: &K) -> ChangelogEntry {
        // A tombstone even when the key is absent: the entry records what the handler did, not
        // what the store held, and compaction drops a redundant tombstone anyway.
        self.map.remove(key);
        ChangelogEntry {
            key: self.key_codec.encode(key),
            value: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CodecError, OrderedI64, Utf8};
    use proptest::prelude::*;

    type Store = MemStore<i64, String, OrderedI64, Utf8>;

    fn store() -> Store {
        MemStore::new(OrderedI64, Utf8)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(i64, String),
        Delete(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, so puts overwrite and deletes hit; both signs, so order is exercised.
        let key = -8i64..8;
        prop_oneof![
            3 => (key.clone(), "[a-z]{0,6}").prop_map(|(k, v)| Op::Put(k, v)),
            1 => key.prop_map(Op::Delete),
        ]
    }

    fn replay(entries: &[ChangelogEntry]) -> Result<Store, StoreError> {
        let mut fresh = store();
        for (offset, e) in (0i64..).zip(entries) {
            fresh.apply(&ChangelogRecord {
                key: &e.key,
                value: e.value.as_deref(),
                offset,
            })?;
        }
        Ok(fresh)
    }

    fn contents(s: &Store) -> Vec<(i64, String)> {
        s.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn replaying_the_changelog_rebuilds_the_store_and_the_model(
            ops in proptest::collection::vec(op(), 0..64),
        ) {
            let mut original = store();
            let mut model = BTreeMap::new();
            let mut changelog = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        model.insert(k, v.clone());
                        changelog.push(original.put(k, v));
                    }
                    Op::Delete(k) => {
                        model.remove(&k);
                        let entry = original.delete(&k);
                        prop_assert_eq!(entry.value.as_ref(), None);
                        changelog.push(entry);
                    }
                }
            }
            let rebuilt = replay(&changelog).expect("our own changelog decodes");
            let model: Vec<(i64, String)> = model.into_iter().collect();
            prop_assert_eq!(contents(&original), model.clone());
            prop_assert_eq!(contents(&rebuilt), model);
            prop_assert_eq!(rebuilt.len(), original.len());
            for (k, v) in original.iter() {
                prop_assert_eq!(KvStore::get(&rebuilt, k), Some(v));
            }
        }
    }

    #[test]
    fn an_undecodable_value_is_an_error_and_changes_nothing() {
        let mut s = store();
        let _ = s.put(1, "one".to_string());
        let key = OrderedI64.encode(&1);
        let err = s
            .apply(&ChangelogRecord {
                key: &key,
                value: Some(b"\xff\xfe"),
                offset: 42,
            })
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::Decode {
                offset: 42,
                what: "value",
                source: CodecError::InvalidUtf8 { valid_up_to: 0 },
            }
        );
        assert_eq!(contents(&s), [(1, "one".to_string())]);
    }

    #[test]
    fn an_undecodable_key_is_an_error_and_changes_nothing() {
        let mut s = store();
        let _ = s.put(1, "one".to_string());
        for value in [Some(&b"x"[..]), None] {
            let err = s
                .apply(&ChangelogRecord {
                    key: b"short",
                    value,
                    offset: 7,
                })
                .unwrap_err();
            assert_eq!(
                err,
                StoreError::Decode {
                    offset: 7,
                    what: "key",
                    source: CodecError::WrongLength {
                        expected: 8,
                        got: 5
                    },
                }
            );
        }
        assert_eq!(contents(&s), [(1, "one".to_string())]);
    }

    #[test]
    fn deleting_an_absent_key_still_writes_a_tombstone() {
        let mut s = store();
        let entry = s.delete(&5);
        assert_eq!(
            entry,
            ChangelogEntry {
                key: OrderedI64.encode(&5),
                value: None
            }
        );
        assert!(s.is_empty());
    }

    #[test]
    fn a_tombstone_removes_and_iteration_is_ordered() {
        let mut s = store();
        for k in [3, -2, 10, 0] {
            let _ = s.put(k, k.to_string());
        }
        let key = OrderedI64.encode(&10);
        s.apply(&ChangelogRecord {
            key: &key,
            value: None,
            offset: 0,
        })
        .unwrap();
        let keys: Vec<i64> = s.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [-2, 0, 3]);
        let some: Vec<i64> = s.range(0..).map(|(k, _)| *k).collect();
        assert_eq!(some, [0, 3]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(&-2).map(String::as_str), Some("-2"));
    }
}
