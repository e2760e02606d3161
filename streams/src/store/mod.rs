//! State stores: one per assigned input partition, rebuilt from a compacted changelog topic.
//!
//! Invariants:
//! - every change a handler makes through [`KvStore::put`] / [`KvStore::delete`] returns the
//!   [`ChangelogEntry`] that the event's transaction writes to the changelog (same partition
//!   number as the input), so the store and its changelog cannot drift apart;
//! - [`StateStore::apply`] of the changelog, in offset order, rebuilds the same store (tested
//!   against a model); a value the store cannot decode is an error that fails the partition,
//!   never a silent skip (GKES's SimpleStore restored nothing, STREAMS.md D1).

mod codec;
mod mem;
mod restore;

use bytes::Bytes;

pub use codec::{BigEndian, Codec, CodecError, OrderedI64, Raw, Utf8};
pub use mem::MemStore;
pub(crate) use restore::{Restore, RestoreProgress};

/// One record of a changelog partition, as read back during a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangelogRecord<'a> {
    /// The record's key (a changelog record always has one).
    pub key: &'a [u8],
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<&'a [u8]>,
    /// Its offset in the changelog partition.
    pub offset: i64,
}

/// A change to write to the changelog in the event's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogEntry {
    /// The encoded key.
    pub key: Bytes,
    /// The encoded value; `None` writes a tombstone.
    pub value: Option<Bytes>,
}

/// Why a store refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A key or value that does not decode.
    #[error("changelog offset {offset}: {what}: {source}")]
    Decode {
        /// The changelog offset (-1 when not from the changelog).
        offset: i64,
        /// `key` or `value`.
        what: &'static str,
        /// The codec's complaint.
        source: CodecError,
    },
    /// A changelog record without a key.
    #[error("changelog offset {0}: a record without a key")]
    NoKey(i64),
    /// Anything else the store reports.
    #[error("{0}")]
    Other(String),
}

/// The state of one input partition. Implementations are owned by that partition's worker task
/// (no locking needed) and must be deterministic: applying the same changelog gives the same
/// state.
pub trait StateStore: Send + 'static {
    /// Applies one changelog record during a restore (in offset order).
    fn apply(&mut self, record: &ChangelogRecord<'_>) -> Result<(), StoreError>;

    /// The partition was revoked or lost; the store is dropped right after. Default: nothing.
    fn revoked(&mut self) {}
}

/// A key-value store whose changes are logged: what `EventContext::put` / `delete` use.
pub trait KvStore: StateStore {
    /// The key type.
    type Key;
    /// The value type.
    type Value;

    /// The value of `key`, if any.
    fn get(&self, key: &Self::Key) -> Option<&Self::Value>;

    /// Sets `key` to `value` and returns the changelog entry that records it.
    fn put(&mut self, key: Self::Key, value: Self::Value) -> ChangelogEntry;

    /// Removes `key` and returns the tombstone that records it.
    fn delete(&mut self, key: &Self::Key) -> ChangelogEntry;
}
