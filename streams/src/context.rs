//! What a handler sees: its partition's store, the record, and the ways to emit outputs and
//! state changes into the event's transaction.

use std::sync::{Arc, Mutex};

use kafka_client::{ConsumerRecord, ProducerRecord};

use crate::eos::{EventId, PoolCore};
use crate::error::Error;
use crate::store::{ChangelogEntry, KvStore};

/// The handler's view of one event. Everything forwarded or recorded here is written in the
/// event's transaction: committed with its input offset, or not at all.
pub struct EventContext<'a, S> {
    store: &'a mut S,
    record: &'a ConsumerRecord,
    changelog: &'a str,
    out: &'a mut Vec<ProducerRecord>,
    defer: Option<DeferSlot>,
}

/// Where [`EventContext::defer`] takes its completion from.
pub(crate) struct DeferSlot {
    pub target: Target,
    pub taken: bool,
}

/// A deferred event's result, once known.
pub(crate) type ResultCell = Arc<Mutex<Option<Result<Vec<ProducerRecord>, Error>>>>;

/// Where a [`Completion`] delivers its result.
#[derive(Clone)]
pub(crate) enum Target {
    /// The event source's pool: the event's transaction.
    Pool {
        core: Arc<Mutex<PoolCore>>,
        wake: Arc<tokio::sync::Notify>,
        event: EventId,
    },
    /// A test run ([`crate::testing`]): a cell the test reads.
    Cell(ResultCell),
}

impl<'a, S> EventContext<'a, S> {
    pub(crate) fn new(
        store: &'a mut S,
        record: &'a ConsumerRecord,
        changelog: &'a str,
        out: &'a mut Vec<ProducerRecord>,
        defer: Option<DeferSlot>,
    ) -> EventContext<'a, S> {
        EventContext {
            store,
            record,
            changelog,
            out,
            defer,
        }
    }

    pub(crate) fn record_ref(&self) -> &ConsumerRecord {
        self.record
    }

    /// Whether [`EventContext::defer`] was called.
    pub(crate) fn deferred(&self) -> bool {
        self.defer.as_ref().is_some_and(|d| d.taken)
    }

    /// The partition's store.
    pub fn store(&self) -> &S {
        self.store
    }

    /// The partition's store, to change it. Changes made this way are **not** logged: record
    /// them with [`EventContext::record_change`], or use [`EventContext::put`] /
    /// [`EventContext::delete`], which do both.
    pub fn store_mut(&mut self) -> &mut S {
        self.store
    }

    /// The input record.
    pub fn record(&self) -> &ConsumerRecord {
        self.record
    }

    /// The input record's offset.
    pub fn offset(&self) -> i64 {
        self.record.offset
    }

    /// The input partition (the store's and the changelog's partition too).
    pub fn partition(&self) -> i32 {
        self.record.partition
    }

    /// Sends `record` in the event's transaction.
    pub fn forward(&mut self, record: ProducerRecord) {
        self.out.push(record);
    }

    /// Writes a change to the changelog (same partition as the input) in the event's
    /// transaction. The store itself is not touched: for stores changed through
    /// [`EventContext::store_mut`].
    pub fn record_change(&mut self, entry: ChangelogEntry) {
        let mut r = ProducerRecord::new(self.changelog)
            .partition(self.record.partition)
            .key(entry.key);
        r.value = entry.value;
        self.out.push(r);
    }

    /// Finishes this event later: the handler returns [`Outcome::Incomplete`](crate::Outcome)
    /// and the returned [`Completion`] completes (or fails) it, from any task. Until then the
    /// event's transaction cannot commit. Panics if called twice for one event (a handler
    /// panic fails the event, like [`Outcome::Fail`](crate::Outcome)).
    pub fn defer(&mut self) -> Completion {
        let slot = self
            .defer
            .as_mut()
            .expect("defer is not available in this context");
        assert!(!slot.taken, "defer called twice for one event");
        slot.taken = true;
        Completion {
            target: Some(slot.target.clone()),
            partition: self.record.partition,
            offset: self.record.offset,
            out: Vec::new(),
        }
    }
}

impl<S: KvStore> EventContext<'_, S> {
    /// The value of `key` in the store.
    pub fn get(&self, key: &S::Key) -> Option<&S::Value> {
        self.store.get(key)
    }

    /// Sets `key` to `value` in the store **and** writes the change to the changelog.
    pub fn put(&mut self, key: S::Key, value: S::Value) {
        let entry = self.store.put(key, value);
        self.record_change(entry);
    }

    /// Deletes `key` from the store **and** writes a tombstone to the changelog.
    pub fn delete(&mut self, key: &S::Key) {
        let entry = self.store.delete(key);
        self.record_change(entry);
    }
}

/// Finishes an event whose handler returned [`Outcome::Incomplete`](crate::Outcome). Dropping
/// it without [`Completion::complete`] fails the event (and so the instance): an event is never
/// silently lost.
pub struct Completion {
    target: Option<Target>,
    partition: i32,
    offset: i64,
    out: Vec<ProducerRecord>,
}

impl Completion {
    /// Adds an output record to the event's transaction.
    pub fn forward(&mut self, record: ProducerRecord) {
        self.out.push(record);
    }

    /// Completes the event with the records forwarded through this handle.
    pub fn complete(mut self) {
        let out = std::mem::take(&mut self.out);
        self.finish(Ok(out));
    }

    /// Fails the event: the instance goes unhealthy and stops.
    pub fn fail(mut self, reason: impl std::fmt::Display) {
        let e = self.error(format!("handler failed: {reason}"));
        self.finish(Err(e));
    }

    fn error(&self, reason: String) -> Error {
        Error::Processing {
            partition: self.partition,
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn finish(&mut self, result: Result<Vec<ProducerRecord>, Error>) {
        match self.target.take() {
            Some(Target::Pool { core, wake, event }) => {
                core.lock().unwrap().complete(event, result);
                wake.notify_one();
            }
            Some(Target::Cell(cell)) => *cell.lock().unwrap() = Some(result),
            None => {}
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.target.is_some() {
            let e = self.error("a deferred event's Completion was dropped".into());
            self.finish(Err(e));
        }
    }
}
