//! Run a handler on a store without a broker, and see what it did: the records it forwarded,
//! the changes it logged, and its outcome (also for deferred events).
//!
//! ```
//! use streams::store::{BigEndian, MemStore, Utf8};
//! use streams::testing::{self, Record};
//! use streams::{EventContext, Outcome};
//!
//! type Counts = MemStore<String, u64, Utf8, BigEndian>;
//!
//! fn count(ctx: &mut EventContext<'_, Counts>, page: String) -> Outcome {
//!     let n = ctx.get(&page).copied().unwrap_or(0) + 1;
//!     ctx.put(page, n);
//!     Outcome::Complete
//! }
//!
//! let mut store = Counts::new(Utf8, BigEndian);
//! let record = Record::new("clicks").offset(7).value("home").build();
//! let run = testing::run(&mut store, &record, "home".to_string(), &count);
//! assert!(run.is_complete());
//! assert_eq!(run.changes.len(), 1);
//! assert_eq!(store.get(&"home".to_string()), Some(&1));
//! ```

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka_client::types::{Header, TimestampType};
use kafka_client::{ConsumerRecord, ProducerRecord};

use crate::context::{DeferSlot, EventContext, ResultCell, Target};
use crate::error::Error;
use crate::route::{DecodeError, Decoder, Handler, Outcome};

/// The changelog topic name the records in [`TestRun::changes`] carry.
pub const CHANGELOG: &str = "test-changelog";

/// What one handler call did.
#[derive(Debug)]
pub struct TestRun {
    /// What the handler returned.
    pub outcome: Outcome,
    /// Records it forwarded, in order (outputs and dead letters).
    pub forwarded: Vec<ProducerRecord>,
    /// Changelog records it wrote (topic [`CHANGELOG`], the input's partition), in order.
    pub changes: Vec<ProducerRecord>,
    /// Set when the handler deferred the event ([`EventContext::defer`]).
    pub deferred: Option<Deferred>,
}

impl TestRun {
    /// Whether the handler returned [`Outcome::Complete`].
    pub fn is_complete(&self) -> bool {
        matches!(self.outcome, Outcome::Complete)
    }
}

/// A deferred event's result, once its [`Completion`](crate::Completion) finished.
#[derive(Debug, Clone)]
pub struct Deferred(ResultCell);

impl Deferred {
    /// `None` while incomplete; then the records forwarded through the completion, or the
    /// failure (also when the completion was dropped unfinished).
    pub fn result(&self) -> Option<Result<Vec<ProducerRecord>, Error>> {
        self.0.lock().unwrap().clone()
    }
}

/// Runs `handler` for the decoded `event` of `record` against `store`. A panic in the
/// handler is not caught (the test sees it).
pub fn run<S, E, H>(store: &mut S, record: &ConsumerRecord, event: E, handler: &H) -> TestRun
where
    H: Handler<S, E>,
{
    let cell = Arc::new(Mutex::new(None));
    let slot = DeferSlot {
        target: Target::Cell(cell.clone()),
        taken: false,
    };
    let mut out = Vec::new();
    let (outcome, deferred) = {
        let mut ctx = EventContext::new(store, record, CHANGELOG, &mut out, Some(slot));
        let outcome = handler.handle(&mut ctx, event);
        (outcome, ctx.deferred())
    };
    let (changes, forwarded) = out.into_iter().partition(|r| &*r.topic == CHANGELOG);
    TestRun {
        outcome,
        forwarded,
        changes,
        deferred: deferred.then(|| Deferred(cell)),
    }
}

/// Decodes `record` with `decoder`, then [`run`]s `handler`.
pub fn run_decoded<S, E, D, H>(
    store: &mut S,
    record: &ConsumerRecord,
    decoder: &D,
    handler: &H,
) -> Result<TestRun, DecodeError>
where
    D: Decoder<E>,
    H: Handler<S, E>,
{
    let event = decoder.decode(record)?;
    Ok(run(store, record, event, handler))
}

/// Builds a [`ConsumerRecord`] for tests: partition 0, offset 0, no key, value or headers
/// unless set.
#[derive(Debug, Clone)]
pub struct Record(ConsumerRecord);

impl Record {
    /// A record of `topic`.
    pub fn new(topic: &str) -> Record {
        Record(ConsumerRecord {
            topic: Arc::from(topic),
            partition: 0,
            offset: 0,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: None,
            headers: Vec::new(),
            leader_epoch: None,
        })
    }

    /// Its partition.
    pub fn partition(mut self, partition: i32) -> Record {
        self.0.partition = partition;
        self
    }

    /// Its offset.
    pub fn offset(mut self, offset: i64) -> Record {
        self.0.offset = offset;
        self
    }

    /// Its timestamp (ms since the epoch).
    pub fn timestamp(mut self, ms: i64) -> Record {
        self.0.timestamp = ms;
        self
    }

    /// Its key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.0.key = Some(key.into());
        self
    }

    /// Its value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Record {
        self.0.value = Some(value.into());
        self
    }

    /// Adds a header (e.g. the routing header `__grt__`).
    pub fn header(mut self, key: &str, value: impl Into<Bytes>) -> Record {
        self.0.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    /// The record.
    pub fn build(self) -> ConsumerRecord {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BigEndian, KvStore, MemStore, Utf8};
    use crate::Completion;

    type Balances = MemStore<String, i64, Utf8, BigEndian>;

    fn withdraw(ctx: &mut EventContext<'_, Balances>, amount: i64) -> Outcome {
        let key = "acct".to_string();
        let b = ctx.get(&key).copied().unwrap_or(0);
        if b < amount {
            return Outcome::Fail("insufficient funds".into());
        }
        ctx.put(key, b - amount);
        ctx.forward(ProducerRecord::new("out").value(format!("{}", b - amount)));
        Outcome::Complete
    }

    #[test]
    fn forwards_changes_and_outcomes_are_captured() {
        let mut store = Balances::new(Utf8, BigEndian);
        store.put("acct".into(), 10);
        let r = Record::new("in").partition(3).offset(9).build();
        let run = run(&mut store, &r, 4, &withdraw);
        assert!(run.is_complete());
        assert_eq!(run.forwarded.len(), 1);
        assert_eq!(run.changes.len(), 1);
        assert_eq!(run.changes[0].partition, Some(3));
        assert_eq!(
            run.changes[0].value.as_deref(),
            Some(&6i64.to_be_bytes()[..])
        );
        let again = super::run(&mut store, &r, 7, &withdraw);
        assert!(matches!(again.outcome, Outcome::Fail(_)));
        assert!(again.changes.is_empty() && again.forwarded.is_empty());
        assert_eq!(store.get(&"acct".to_string()), Some(&6));
    }

    #[test]
    fn a_deferred_event_reports_its_completion() {
        let slot: Arc<Mutex<Option<Completion>>> = Arc::default();
        let keep = slot.clone();
        let handler = move |ctx: &mut EventContext<'_, Balances>, _: ()| {
            *keep.lock().unwrap() = Some(ctx.defer());
            Outcome::Incomplete
        };
        let mut store = Balances::new(Utf8, BigEndian);
        let r = Record::new("in").offset(5).build();
        let run = run(&mut store, &r, (), &handler);
        let d = run.deferred.clone().expect("deferred");
        assert!(d.result().is_none());
        let mut c = slot.lock().unwrap().take().unwrap();
        c.forward(ProducerRecord::new("out").value("later"));
        c.complete();
        assert_eq!(d.result().unwrap().unwrap().len(), 1);

        // Dropped without completing: the event fails, naming its offset.
        let run = super::run(&mut store, &r, (), &handler);
        drop(slot.lock().unwrap().take());
        match run.deferred.unwrap().result() {
            Some(Err(Error::Processing { offset: 5, .. })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_decoded_reports_decode_errors() {
        let decoder = |r: &ConsumerRecord| -> Result<i64, DecodeError> {
            std::str::from_utf8(r.value.as_deref().unwrap_or_default())
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| DecodeError::new("not a number"))
        };
        let mut store = Balances::new(Utf8, BigEndian);
        let bad = Record::new("in").value("x").build();
        assert!(run_decoded(&mut store, &bad, &decoder, &withdraw).is_err());
        let good = Record::new("in").value("0").build();
        assert!(run_decoded(&mut store, &good, &decoder, &withdraw)
            .unwrap()
            .is_complete());
    }
}
