//! The exactly-once pool core (STREAMS.md §3.3), sans-IO: no tokio, no clock reads (time is
//! passed in), no I/O. The driver in `source.rs` turns its [`Action`]s into kafka-client calls
//! and feeds the results back.
//!
//! Invariants (each checked by a test below):
//! - **R1** every event is attached to the open transaction before its handler runs; its
//!   outputs belong to that transaction;
//! - **R4** transactions commit strictly in `seq` order, and only the head (oldest) transaction
//!   sends records or offsets: later ones buffer theirs (with one producer this is R2's
//!   ownership rule);
//! - **D2** a transaction holding offsets always commits, even with no records;
//! - **R3** the open transaction closes when it has an event and one of: `target` events or
//!   records, half the byte limit, `linger` since its first event, or a drain of one of its
//!   partitions; intake stops (`Attach::Full`) at the event or byte limit;
//! - **R10** a failed attempt re-sends every record of the transaction, in order, at most
//!   `max_attempts` times, then the core fails; later transactions wait meanwhile;
//! - a failure is reported once ([`Action::Fail`]) and the core accepts nothing after it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_client::ProducerRecord;

/// One attached event: its transaction and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EventId {
    pub seq: u64,
    pub id: u64,
}

/// The core's limits (from `EosConfig`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub linger: Duration,
    pub target_events: usize,
    pub max_events: usize,
    pub max_bytes: usize,
    pub commit_deadline: Duration,
    pub max_attempts: u32,
}

/// The answer to [`PoolCore::attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attach {
    /// Attached: run the handler, then [`PoolCore::complete`].
    Attached(EventId),
    /// The open transaction is at its limit: wait for a commit, then try again.
    Full,
    /// The core failed or stopped: take no more input.
    Closed,
}

/// What the driver must do next.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send these records in transaction `seq` (begin it first if the producer has none open).
    Send {
        seq: u64,
        records: Vec<ProducerRecord>,
    },
    /// Commit transaction `seq`: add `offsets` (input partition → next offset), then commit.
    /// Answer with [`PoolCore::commit_done`].
    Commit {
        seq: u64,
        offsets: BTreeMap<i32, i64>,
        events: u64,
        records: usize,
    },
    /// The core failed: abort what is open and stop the instance.
    Fail(String),
}

/// How a commit attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommitResult {
    /// Committed (or found committed after an unknown outcome).
    Committed,
    /// Aborted or not committed (the driver aborted the producer's transaction): re-send.
    Retry(String),
    /// Cannot go on.
    Fatal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnState {
    /// Takes events.
    Open,
    /// Takes no more events; commits once its events are complete and it is the head.
    Closed,
    /// A Commit action is out.
    Committing,
}

#[derive(Debug)]
struct Txn {
    seq: u64,
    state: TxnState,
    first_at: Option<Instant>,
    closed_at: Option<Instant>,
    events: u64,
    incomplete: BTreeSet<u64>,
    /// Input partition → next offset (max attached offset + 1).
    offsets: BTreeMap<i32, i64>,
    records: Vec<ProducerRecord>,
    /// Records handed to the producer in this attempt.
    sent: usize,
    bytes: usize,
    attempts: u32,
}

impl Txn {
    fn new(seq: u64) -> Txn {
        Txn {
            seq,
            state: TxnState::Open,
            first_at: None,
            closed_at: None,
            events: 0,
            incomplete: BTreeSet::new(),
            offsets: BTreeMap::new(),
            records: Vec::new(),
            sent: 0,
            bytes: 0,
            attempts: 0,
        }
    }
}

fn record_bytes(r: &ProducerRecord) -> usize {
    r.key.as_ref().map_or(0, |k| k.len())
        + r.value.as_ref().map_or(0, |v| v.len())
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// The pool core. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct PoolCore {
    limits: Limits,
    next_seq: u64,
    next_id: u64,
    txns: VecDeque<Txn>,
    /// Partitions whose transactions must close now (revoke, stop).
    drain: BTreeSet<i32>,
    drain_all: bool,
    failed: Option<String>,
    fail_reported: bool,
    committed_txns: u64,
    committed_events: u64,
}

impl PoolCore {
    pub(crate) fn new(limits: Limits) -> PoolCore {
        PoolCore {
            limits,
            next_seq: 1,
            next_id: 1,
            txns: VecDeque::new(),
            drain: BTreeSet::new(),
            drain_all: false,
            failed: None,
            fail_reported: false,
            committed_txns: 0,
            committed_events: 0,
        }
    }

    /// R1: attaches an event of `partition` at `offset` to the open transaction (opening one
    /// if needed), before its handler runs.
    pub(crate) fn attach(&mut self, partition: i32, offset: i64, now: Instant) -> Attach {
        if self.failed.is_some() {
            return Attach::Closed;
        }
        let open = matches!(self.txns.back(), Some(t) if t.state == TxnState::Open);
        if !open {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.txns.push_back(Txn::new(seq));
        }
        let limits = &self.limits;
        let t = self.txns.back_mut().expect("an open transaction");
        if t.events as usize >= limits.max_events || t.bytes >= limits.max_bytes {
            return Attach::Full;
        }
        let id = self.next_id;
        self.next_id += 1;
        t.events += 1;
        t.incomplete.insert(id);
        t.first_at.get_or_insert(now);
        let next = offset.saturating_add(1);
        let e = t.offsets.entry(partition).or_insert(next);
        *e = (*e).max(next);
        Attach::Attached(EventId { seq: t.seq, id })
    }

    /// An attached event finished: its records join its transaction (`Err`: the event failed,
    /// and so does the core). A completion for a transaction that no longer exists (lost) is
    /// ignored.
    pub(crate) fn complete(&mut self, event: EventId, result: Result<Vec<ProducerRecord>, String>) {
        let Some(t) = self.txns.iter_mut().find(|t| t.seq == event.seq) else {
            return;
        };
        if !t.incomplete.remove(&event.id) {
            return;
        }
        match result {
            Ok(records) => {
                t.bytes += records.iter().map(record_bytes).sum::<usize>();
                t.records.extend(records);
            }
            Err(reason) => {
                if self.failed.is_none() {
                    self.failed = Some(reason);
                }
            }
        }
    }

    /// Records an event forwarded before its handler deferred it (the event stays incomplete
    /// until its completion).
    pub(crate) fn add_records(&mut self, event: EventId, records: Vec<ProducerRecord>) {
        if let Some(t) = self.txns.iter_mut().find(|t| t.seq == event.seq) {
            if t.incomplete.contains(&event.id) {
                t.bytes += records.iter().map(record_bytes).sum::<usize>();
                t.records.extend(records);
            }
        }
    }

    fn should_close(&self, t: &Txn, now: Instant) -> bool {
        let l = &self.limits;
        t.events > 0
            && (t.events as usize >= l.target_events
                || t.records.len() >= l.target_events
                || t.bytes >= l.max_bytes / 2
                || t.first_at.is_some_and(|f| now >= f + l.linger)
                || self.drain_all
                || t.offsets.keys().any(|p| self.drain.contains(p)))
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(reason) = &self.failed {
            if self.fail_reported {
                return None;
            }
            self.fail_reported = true;
            return Some(Action::Fail(reason.clone()));
        }
        let close = match self.txns.front() {
            Some(t) => t.state == TxnState::Open && self.should_close(t, now),
            None => false,
        };
        let head = self.txns.front_mut()?;
        if head.sent < head.records.len() {
            let records = head.records[head.sent..].to_vec();
            head.sent = head.records.len();
            return Some(Action::Send {
                seq: head.seq,
                records,
            });
        }
        if close {
            head.state = TxnState::Closed;
            head.closed_at = Some(now);
        }
        if head.state == TxnState::Closed && head.incomplete.is_empty() {
            head.state = TxnState::Committing;
            return Some(Action::Commit {
                seq: head.seq,
                offsets: head.offsets.clone(),
                events: head.events,
                records: head.records.len(),
            });
        }
        None
    }

    /// When [`PoolCore::handle_timeout`] must run next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let t = self.txns.front()?;
        match t.state {
            TxnState::Open => t.first_at.map(|f| f + self.limits.linger),
            TxnState::Closed if !t.incomplete.is_empty() => {
                t.closed_at.map(|c| c + self.limits.commit_deadline)
            }
            _ => None,
        }
    }

    /// Time passed: a closed transaction whose events are still incomplete after
    /// `commit_deadline` fails the core.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let deadline = self.limits.commit_deadline;
        if let Some(t) = self.txns.front() {
            if t.state == TxnState::Closed
                && !t.incomplete.is_empty()
                && t.closed_at.is_some_and(|c| now >= c + deadline)
                && self.failed.is_none()
            {
                self.failed = Some(format!(
                    "{} event(s) of transaction {} did not complete within {:?}",
                    t.incomplete.len(),
                    t.seq,
                    deadline
                ));
            }
        }
    }

    /// The driver's answer to [`Action::Commit`] (or a failed send of the head, as `Retry`).
    pub(crate) fn commit_done(&mut self, seq: u64, result: CommitResult) {
        let Some(head) = self.txns.front_mut() else {
            return;
        };
        if head.seq != seq {
            return;
        }
        match result {
            CommitResult::Committed => {
                let t = self.txns.pop_front().expect("head");
                self.committed_txns += 1;
                self.committed_events += t.events;
                let held: BTreeSet<i32> = self
                    .txns
                    .iter()
                    .flat_map(|t| t.offsets.keys().copied())
                    .collect();
                self.drain.retain(|p| held.contains(p));
            }
            CommitResult::Retry(reason) => {
                head.attempts += 1;
                if head.attempts >= self.limits.max_attempts {
                    self.failed = Some(format!(
                        "transaction {seq} failed {} times; last: {reason}",
                        head.attempts
                    ));
                    return;
                }
                head.sent = 0;
                if head.state == TxnState::Committing {
                    head.state = TxnState::Closed;
                }
            }
            CommitResult::Fatal(reason) => {
                if self.failed.is_none() {
                    self.failed = Some(reason);
                }
            }
        }
    }

    /// Whether any transaction holds events of these partitions.
    pub(crate) fn holds(&self, partitions: &BTreeSet<i32>) -> bool {
        self.txns
            .iter()
            .any(|t| t.offsets.keys().any(|p| partitions.contains(p)))
    }

    /// R7: transactions holding these partitions close at once.
    pub(crate) fn drain(&mut self, partitions: &BTreeSet<i32>) {
        self.drain.extend(partitions.iter().copied());
    }

    /// R12: every transaction closes at once (stop).
    pub(crate) fn drain_everything(&mut self) {
        self.drain_all = true;
    }

    /// R9: everything is lost; the driver aborts the producer's open transaction. Returns the
    /// number of events dropped.
    pub(crate) fn lose_all(&mut self) -> u64 {
        let dropped = self.txns.iter().map(|t| t.events).sum();
        self.txns.clear();
        self.drain.clear();
        dropped
    }

    /// No transaction at all.
    pub(crate) fn is_idle(&self) -> bool {
        self.txns.is_empty()
    }

    /// The failure, once failed.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Fails the core from outside (fencing, a partition that cannot be restored).
    pub(crate) fn fail(&mut self, reason: String) {
        if self.failed.is_none() {
            self.failed = Some(reason);
        }
    }

    /// (transactions, events) committed so far.
    pub(crate) fn committed(&self) -> (u64, u64) {
        (self.committed_txns, self.committed_events)
    }
}

#[cfg(test)]
mod tests;
