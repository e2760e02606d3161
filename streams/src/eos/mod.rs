//! The exactly-once pool core (STREAMS.md §3.3), sans-IO: no tokio, no clock reads (time is
//! passed in), no I/O. The driver in `source.rs` turns its [`Action`]s into kafka-client calls
//! on the pool's transactional producers ("slots") and feeds the results back.
//!
//! Invariants (each checked by a test in `tests.rs`):
//! - **R1** every event is attached to the on-deck (newest, open) transaction before its
//!   handler runs; its outputs belong to that transaction;
//! - **slots** the oldest `slots` transactions each hold a producer slot; a newer one waits
//!   for a slot and buffers its records. A slot freed by a commit goes to the back of the free
//!   list, so the next transaction begins on a producer whose last EndTxn is the oldest;
//! - **R2** a transaction sends the records of input partition `p` only while it owns `p`:
//!   no older transaction holds events of `p`. Per input partition, records are sent in event
//!   order across transactions;
//! - **R4/R5** transactions commit strictly in `seq` order, and only the head (oldest) one
//!   commits, so its offsets are also *sent* after every earlier transaction's;
//! - **D2** a transaction holding offsets always commits, even with no records;
//! - **R3** the on-deck transaction closes once it holds a slot and an event, and one of:
//!   `target` events or records, half the byte limit, `linger` since its first event, a drain
//!   of one of its partitions, or (with `eager_when_idle`) no older transaction at all. Intake
//!   stops (`Attach::Full`) at the event or byte limit, so at most `slots + 1` transactions
//!   exist;
//! - **R10** a failed attempt aborts the transaction on its slot and re-sends every record of
//!   it, in order, on the same slot, at most `max_attempts` times, then the core fails; later
//!   transactions keep their slots and buffers meanwhile;
//! - a failure is reported once ([`Action::Fail`]) and the core accepts nothing after it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_client::ProducerRecord;

use crate::error::Error;

/// One attached event: its transaction, its input partition and its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct EventId {
    pub seq: u64,
    pub partition: i32,
    pub id: u64,
}

/// The core's limits (from `EosConfig`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Producer slots (`pool_size`).
    pub slots: usize,
    pub linger: Duration,
    pub target_events: usize,
    pub max_events: usize,
    pub max_bytes: usize,
    pub commit_deadline: Duration,
    pub max_attempts: u32,
    pub eager_when_idle: bool,
}

/// The answer to [`PoolCore::attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attach {
    /// Attached: run the handler, then [`PoolCore::complete`].
    Attached(EventId),
    /// The on-deck transaction is at its limit: wait for a commit, then try again.
    Full,
    /// The core failed or stopped: take no more input.
    Closed,
}

/// What a committed (or committing) transaction held, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnInfo {
    pub events: u64,
    pub records: usize,
    pub bytes: usize,
    pub partitions: usize,
    /// From its first event to its close.
    pub linger: Duration,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

/// What the driver must do next.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send these records in transaction `seq` on producer `slot`; `begin`: begin a
    /// transaction on that producer first.
    Send {
        seq: u64,
        slot: usize,
        begin: bool,
        records: Vec<ProducerRecord>,
    },
    /// Commit transaction `seq` on `slot` (begin it first if `begin`: an offset-only
    /// transaction): flush, add `offsets` (input partition → next offset), then commit.
    /// Answer with [`PoolCore::commit_done`].
    Commit {
        seq: u64,
        slot: usize,
        begin: bool,
        offsets: BTreeMap<i32, i64>,
        info: TxnInfo,
    },
    /// The core failed: abort what is open on every slot and stop the instance.
    Fail(Error),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) enum CommitResult {
    /// Committed (or found committed after an unknown outcome).
    Committed,
    /// Not committed, and the driver aborted the slot's transaction: re-send.
    Retry(String),
    /// Cannot go on.
    Fatal(Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnState {
    /// Takes events (only the newest transaction).
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
    slot: Option<usize>,
    /// A transaction is begun on the slot in this attempt.
    begun: bool,
    first_at: Option<Instant>,
    closed_at: Option<Instant>,
    events: u64,
    /// Event number → its (input partition, offset), until complete.
    incomplete: BTreeMap<u64, (i32, i64)>,
    /// Input partition → next offset (max attached offset + 1).
    offsets: BTreeMap<i32, i64>,
    /// Input partition → its events' records, in completion order.
    records: BTreeMap<i32, Vec<ProducerRecord>>,
    /// Input partition → records handed to the producer in this attempt.
    sent: BTreeMap<i32, usize>,
    n_records: usize,
    bytes: usize,
    attempts: u32,
}

impl Txn {
    fn new(seq: u64) -> Txn {
        Txn {
            seq,
            state: TxnState::Open,
            slot: None,
            begun: false,
            first_at: None,
            closed_at: None,
            events: 0,
            incomplete: BTreeMap::new(),
            offsets: BTreeMap::new(),
            records: BTreeMap::new(),
            sent: BTreeMap::new(),
            n_records: 0,
            bytes: 0,
            attempts: 0,
        }
    }

    fn add(&mut self, partition: i32, records: Vec<ProducerRecord>) {
        if records.is_empty() {
            return;
        }
        self.n_records += records.len();
        self.bytes += records.iter().map(record_bytes).sum::<usize>();
        self.records.entry(partition).or_default().extend(records);
    }

    fn unsent(&self) -> bool {
        self.records
            .iter()
            .any(|(p, rs)| self.sent.get(p).copied().unwrap_or(0) < rs.len())
    }

    fn info(&self) -> TxnInfo {
        TxnInfo {
            events: self.events,
            records: self.n_records,
            bytes: self.bytes,
            partitions: self.offsets.len(),
            linger: match (self.first_at, self.closed_at) {
                (Some(f), Some(c)) => c.saturating_duration_since(f),
                _ => Duration::ZERO,
            },
            attempts: self.attempts + 1,
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
    /// Slots no transaction holds, the longest-free first.
    free: VecDeque<usize>,
    /// Partitions whose transactions must close now (revoke, stop).
    drain: BTreeSet<i32>,
    drain_all: bool,
    failed: Option<Error>,
    fail_reported: bool,
    committed_txns: u64,
    committed_events: u64,
}

impl PoolCore {
    pub(crate) fn new(limits: Limits) -> PoolCore {
        let slots = limits.slots.max(1);
        PoolCore {
            limits: Limits { slots, ..limits },
            next_seq: 1,
            next_id: 1,
            txns: VecDeque::new(),
            free: (0..slots).collect(),
            drain: BTreeSet::new(),
            drain_all: false,
            failed: None,
            fail_reported: false,
            committed_txns: 0,
            committed_events: 0,
        }
    }

    /// R1: attaches an event of `partition` at `offset` to the on-deck transaction (opening
    /// one if needed), before its handler runs.
    pub(crate) fn attach(&mut self, partition: i32, offset: i64, now: Instant) -> Attach {
        if self.failed.is_some() {
            return Attach::Closed;
        }
        let open = matches!(self.txns.back(), Some(t) if t.state == TxnState::Open);
        if !open {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.txns.push_back(Txn::new(seq));
            self.assign_slots();
        }
        let limits = &self.limits;
        let t = self.txns.back_mut().expect("an open transaction");
        if t.events as usize >= limits.max_events || t.bytes >= limits.max_bytes {
            return Attach::Full;
        }
        let id = self.next_id;
        self.next_id += 1;
        t.events += 1;
        t.incomplete.insert(id, (partition, offset));
        t.first_at.get_or_insert(now);
        let next = offset.saturating_add(1);
        let e = t.offsets.entry(partition).or_insert(next);
        *e = (*e).max(next);
        Attach::Attached(EventId {
            seq: t.seq,
            partition,
            id,
        })
    }

    /// An attached event finished: its records join its transaction (`Err`: the event failed,
    /// and so does the core). A completion for a transaction that no longer exists (lost) is
    /// ignored.
    pub(crate) fn complete(&mut self, event: EventId, result: Result<Vec<ProducerRecord>, Error>) {
        let Some(t) = self.txns.iter_mut().find(|t| t.seq == event.seq) else {
            return;
        };
        if t.incomplete.remove(&event.id).is_none() {
            return;
        }
        match result {
            Ok(records) => t.add(event.partition, records),
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
            if t.incomplete.contains_key(&event.id) {
                t.add(event.partition, records);
            }
        }
    }

    /// The oldest `slots` transactions hold a slot each.
    fn assign_slots(&mut self) {
        let n = self.limits.slots;
        for t in self.txns.iter_mut().take(n) {
            if t.slot.is_none() {
                t.slot = self.free.pop_front();
            }
        }
    }

    fn should_close(&self, index: usize, now: Instant) -> bool {
        let l = &self.limits;
        let t = &self.txns[index];
        t.state == TxnState::Open
            && t.slot.is_some()
            && t.events > 0
            && (t.events as usize >= l.target_events
                || t.n_records >= l.target_events
                || t.bytes >= l.max_bytes / 2
                || t.first_at.is_some_and(|f| now >= f + l.linger)
                || (l.eager_when_idle && index == 0)
                || self.drain_all
                || t.offsets.keys().any(|p| self.drain.contains(p)))
    }

    /// The next thing to do, if any. Call until `None`.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(reason) = &self.failed {
            if self.fail_reported {
                return None;
            }
            self.fail_reported = true;
            return Some(Action::Fail(reason.clone()));
        }
        self.assign_slots();
        if let Some(last) = self.txns.len().checked_sub(1) {
            if self.should_close(last, now) {
                let t = &mut self.txns[last];
                t.state = TxnState::Closed;
                t.closed_at = Some(now);
            }
        }
        // R2: sends, oldest transaction first, each for the partitions it owns.
        let mut held: BTreeSet<i32> = BTreeSet::new();
        for t in self.txns.iter_mut() {
            if let Some(slot) = t.slot {
                let mut out = Vec::new();
                for (p, rs) in &t.records {
                    if held.contains(p) {
                        continue;
                    }
                    let sent = t.sent.entry(*p).or_insert(0);
                    if *sent < rs.len() {
                        out.extend_from_slice(&rs[*sent..]);
                        *sent = rs.len();
                    }
                }
                if !out.is_empty() {
                    let begin = !t.begun;
                    t.begun = true;
                    return Some(Action::Send {
                        seq: t.seq,
                        slot,
                        begin,
                        records: out,
                    });
                }
            }
            held.extend(t.offsets.keys().copied());
        }
        // R4: the head commits once closed, complete and fully sent.
        let head = self.txns.front_mut()?;
        let slot = head.slot?;
        if head.state == TxnState::Closed && head.incomplete.is_empty() && !head.unsent() {
            head.state = TxnState::Committing;
            let begin = !head.begun;
            head.begun = true;
            return Some(Action::Commit {
                seq: head.seq,
                slot,
                begin,
                offsets: head.offsets.clone(),
                info: head.info(),
            });
        }
        None
    }

    /// When [`PoolCore::handle_timeout`] must run next (and `poll_action` again).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let linger = self
            .txns
            .back()
            .filter(|t| t.state == TxnState::Open && t.slot.is_some())
            .and_then(|t| t.first_at)
            .map(|f| f + self.limits.linger);
        let deadline = self
            .txns
            .front()
            .filter(|t| t.state == TxnState::Closed && !t.incomplete.is_empty())
            .and_then(|t| t.closed_at)
            .map(|c| c + self.limits.commit_deadline);
        match (linger, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: a closed head whose events are still incomplete after `commit_deadline`
    /// fails the core.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let deadline = self.limits.commit_deadline;
        if let Some(t) = self.txns.front() {
            if t.state == TxnState::Closed
                && !t.incomplete.is_empty()
                && t.closed_at.is_some_and(|c| now >= c + deadline)
                && self.failed.is_none()
            {
                let (partition, offset) = t.incomplete.values().next().copied().unwrap_or((-1, -1));
                self.failed = Some(Error::SlowEvents {
                    seq: t.seq,
                    partition,
                    offset,
                    incomplete: t.incomplete.len(),
                    deadline,
                });
            }
        }
    }

    /// The driver's answer to [`Action::Commit`], or a failed send or begin of transaction
    /// `seq` (as `Retry` once the driver aborted its slot, or `Fatal`).
    pub(crate) fn commit_done(&mut self, seq: u64, result: CommitResult) {
        let Some(i) = self.txns.iter().position(|t| t.seq == seq) else {
            return;
        };
        match result {
            CommitResult::Committed => {
                if i != 0 || self.txns[0].state != TxnState::Committing {
                    if self.failed.is_none() {
                        self.failed = Some(Error::Commit {
                            seq,
                            attempts: self.txns[i].attempts + 1,
                            last: "reported committed out of order (a driver bug)".into(),
                        });
                    }
                    return;
                }
                let t = self.txns.pop_front().expect("head");
                if let Some(slot) = t.slot {
                    self.free.push_back(slot);
                }
                self.committed_txns += 1;
                self.committed_events += t.events;
                let held: BTreeSet<i32> = self
                    .txns
                    .iter()
                    .flat_map(|t| t.offsets.keys().copied())
                    .collect();
                self.drain.retain(|p| held.contains(p));
                self.assign_slots();
            }
            CommitResult::Retry(reason) => {
                let t = &mut self.txns[i];
                t.attempts += 1;
                if t.attempts >= self.limits.max_attempts {
                    self.failed = Some(Error::Commit {
                        seq,
                        attempts: t.attempts,
                        last: reason.into(),
                    });
                    return;
                }
                t.sent.clear();
                t.begun = false;
                if t.state == TxnState::Committing {
                    t.state = TxnState::Closed;
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

    /// R7: transactions holding these partitions close as soon as they hold a slot.
    pub(crate) fn drain(&mut self, partitions: &BTreeSet<i32>) {
        self.drain.extend(partitions.iter().copied());
    }

    /// R12: every transaction closes as soon as it holds a slot (stop).
    pub(crate) fn drain_everything(&mut self) {
        self.drain_all = true;
    }

    /// R9: everything is lost; the driver aborts every slot's open transaction. Returns the
    /// number of events dropped.
    pub(crate) fn lose_all(&mut self) -> u64 {
        let dropped = self.txns.iter().map(|t| t.events).sum();
        self.txns.clear();
        self.drain.clear();
        self.free = (0..self.limits.slots).collect();
        dropped
    }

    /// No transaction at all.
    pub(crate) fn is_idle(&self) -> bool {
        self.txns.is_empty()
    }

    /// The failure, once failed.
    pub(crate) fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Fails the core from outside (fencing, a partition that cannot be restored).
    pub(crate) fn fail(&mut self, reason: Error) {
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
