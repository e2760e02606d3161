//! What a handler sees: its partition's store, the record, and the ways to emit outputs and
//! state changes into the event's transaction.

use std::sync::{Arc, Mutex};

use kafka_client::{ConsumerRecord, ProducerRecord};

use crate::eos::{EventId, PoolCore};
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

/// Where [`EventContext::defer`] takes its completion from (absent in tests that do not
/// support it).
pub(crate) struct DeferSlot {
    pub core: Arc<Mutex<PoolCore>>,
    pub wake: Arc<tokio::sync::Notify>,
    pub event: EventId,
    pub taken: bool,
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
    /// event's transaction cannot commit. Panics if called twice for one event.
    pub fn defer(&mut self) -> Completion {
        let slot = self
            .defer
            .as_mut()
            .expect("defer is not available in this context");
        assert!(!slot.taken, "defer called twice for one event");
        slot.taken = true;
        Completion {
            core: Some(slot.core.clone()),
            wake: slot.wake.clone(),
            event: slot.event,
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
    core: Option<Arc<Mutex<PoolCore>>>,
    wake: Arc<tokio::sync::Notify>,
    event: EventId,
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
        self.finish(Err(reason.to_string()));
    }

    fn finish(&mut self, result: Result<Vec<ProducerRecord>, String>) {
        if let Some(core) = self.core.take() {
            core.lock().unwrap().complete(self.event, result);
            self.wake.notify_one();
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.finish(Err("a deferred event's Completion was dropped".to_string()));
    }
}
