//! The transactional producer: the public transaction API of [`Producer`] and the task that
//! drives the [`TxnManager`] (the coordinator side, see [`super::txn`]).
//!
//! ```text
//!   begin_transaction / send / send_offsets_to_transaction / commit_transaction / abort_transaction
//!        |  commands under the manager's lock (taken before the accumulator's)
//!   TxnManager (sans-IO)  <-- txn driver task: one coordinator request at a time, events
//!        |  may_send(tp) gates the accumulator; failed batches make the transaction abortable
//!   Core + produce driver (records carry the producer id and epoch the manager hands over)
//! ```
//!
//! Rules, as Java's producer keeps them:
//! - records are accepted only between `begin_transaction` and the end of the transaction, and
//!   not once it has failed: `send` then answers the transaction's error;
//! - a partition's batches go out only once the coordinator has added it to the transaction
//!   (AddPartitionsToTxn; implicit with transactions v2);
//! - a commit first sends everything buffered (no linger) and waits for every batch's answer,
//!   then sends EndTxn; a batch that failed turns the commit into an error, and the caller must
//!   abort;
//! - an abort drops the batches not sent yet (their records fail with [`Error::Aborted`]),
//!   waits for the batches in flight, then sends EndTxn(abort);
//! - a commit or an abort returns within about `transaction.end.timeout.ms` (60 s): a commit
//!   whose EndTxn got no definite answer by then fails with [`Error::OutcomeUnknown`] (it may or
//!   may not have committed; the epoch is bumped in the background, which settles it);
//! - the coordinator may abort a transaction by itself when it outlives
//!   `transaction.timeout.ms` (bumping the epoch, KIP-588): the transaction then fails, and the
//!   abort recovers the producer with InitProducerId carrying the current id and epoch;
//! - the commit and abort futures are cancel-safe: see [`Producer::commit_transaction`];
//! - fencing (another producer with the same transactional id) is fatal: every later call fails
//!   with [`Error::Fenced`] and buffered records fail with it;
//! - `close` aborts a transaction still open.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_wire::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest,
    InitProducerIdRequest, ProduceRequest, TxnOffsetCommitRequest,
};
use kafka_wire::ErrorCode;
use tokio::sync::Notify;

use super::txn::{
    GroupMetadata, Target, TxnConfig, TxnEvent, TxnManager, TxnOffset, TxnRequest, TxnRequestBody,
    TxnResponse, TxnVersions,
};
use super::{Producer, Shared};
use crate::client::{Client, Purpose};
use crate::config::ProducerConfig;
use crate::error::{Error, Result};
use crate::net::Connection;
use crate::rng::{OsRandom, RandomSource};

/// Events kept for waiters; older ones are dropped (a waiter looks only at events after the
/// command it issued, and commands are far fewer than this between two looks).
const LOG_LEN: usize = 256;

/// The transactional side of a producer's shared state.
pub(super) struct TxnShared {
    pub state: Mutex<TxnState>,
    /// Wakes the transaction driver (a command changed the manager).
    pub wake: Notify,
    /// Signalled (to all waiters) when an event was logged.
    pub events: Notify,
    /// The upper bound of a wait for offsets (a safety net: the manager's own deadlines end
    /// it first).
    pub max_wait: Duration,
    /// The upper bound of a commit or abort wait: `transaction.end.timeout.ms` and a little
    /// slack for the driver (the manager itself reports at that deadline).
    pub end_wait: Duration,
    /// `max.block.ms`: how long `init_transactions` and `begin_transaction` wait for the
    /// producer id.
    pub max_block: Duration,
}

pub(super) struct TxnState {
    pub mgr: TxnManager,
    /// Number of events logged so far.
    seq: u64,
    log: VecDeque<(u64, TxnEvent)>,
    /// The accumulator mark a commit or abort waits for before `set_flushed`.
    flush_mark: Option<u64>,
    /// The commit or abort whose caller has not seen its outcome yet (its future was dropped,
    /// or its wait ran out): the next call of the same kind resumes waiting for it.
    pending: Option<PendingEnd>,
    /// The transaction driver stopped.
    stopped: bool,
}

/// A commit or abort in progress, for the calls that resume it.
#[derive(Debug, Clone, Copy)]
struct PendingEnd {
    commit: bool,
    /// The event number when it was issued: its outcome is a later event.
    start: u64,
}

/// Slack added to `transaction.end.timeout.ms` for the caller's wait: the manager reports at
/// the deadline itself, this only covers the driver's step.
const END_WAIT_SLACK: Duration = Duration::from_secs(2);

impl TxnShared {
    /// The manager for `config` (which has a transactional id), with versions negotiated on one
    /// broker connection. Transactions v2 needs the cluster's finalized `transaction.version`
    /// to be at least 2; otherwise v1 is used even if the versions would allow v2.
    pub async fn new(client: &Client, config: &ProducerConfig) -> Result<(TxnShared, bool)> {
        let Some(id) = config.get_transactional_id().clone() else {
            return Err(Error::Misuse("not a transactional producer".to_string()));
        };
        // A broker going away while we start is not fatal: try again (any broker will do)
        // until max.block.ms.
        let deadline = Instant::now() + *config.get_max_block();
        let conn = loop {
            match client.any_connection(Purpose::Group).await {
                Ok(c) => break c,
                Err(e) if e.is_retriable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "no broker for the transactional producer yet");
                    tokio::time::sleep(*config.client().get_retry_backoff()).await;
                }
                Err(e) => return Err(e),
            }
        };
        let versions = negotiate(&conn);
        let mut cfg = TxnConfig::new(id);
        cfg.transaction_timeout = *config.get_transaction_timeout();
        cfg.request_timeout = *config.client().get_request_timeout();
        cfg.retry_backoff = *config.client().get_retry_backoff();
        cfg.retry_backoff_max = *config.client().get_retry_backoff_max();
        cfg.end_txn_timeout = *config.get_transaction_end_timeout();
        let mut mgr = TxnManager::new(cfg.clone(), versions, OsRandom.next_u64(), Instant::now());
        let v2 = mgr.is_v2();
        tracing::debug!(transactional_id = %cfg.transactional_id, v2, ?versions, "transactional producer");
        mgr.init(Instant::now())?;
        let max_wait =
            (*config.get_delivery_timeout()).max(cfg.end_txn_timeout) + cfg.request_timeout * 2;
        let end_wait = cfg.end_txn_timeout + END_WAIT_SLACK;
        Ok((
            TxnShared {
                state: Mutex::new(TxnState {
                    mgr,
                    seq: 0,
                    log: VecDeque::new(),
                    flush_mark: None,
                    pending: None,
                    stopped: false,
                }),
                wake: Notify::new(),
                events: Notify::new(),
                max_wait,
                end_wait,
                max_block: *config.get_max_block(),
            },
            v2,
        ))
    }
}

/// The manager's versions: its defaults capped by what `conn` speaks, and v2 only when the
/// cluster has finalized `transaction.version` 2 or later.
fn negotiate(conn: &Connection) -> TxnVersions {
    let d = TxnVersions::default();
    let cap = |v: Option<i16>, default: i16| v.map_or(default, |v| v.min(default));
    let mut v = TxnVersions {
        find_coordinator: cap(conn.version::<FindCoordinatorRequest>(), d.find_coordinator),
        init_producer_id: cap(conn.version::<InitProducerIdRequest>(), d.init_producer_id),
        add_partitions_to_txn: cap(
            conn.version::<AddPartitionsToTxnRequest>(),
            d.add_partitions_to_txn,
        ),
        add_offsets_to_txn: cap(
            conn.version::<AddOffsetsToTxnRequest>(),
            d.add_offsets_to_txn,
        ),
        txn_offset_commit: cap(
            conn.version::<TxnOffsetCommitRequest>(),
            d.txn_offset_commit,
        ),
        end_txn: cap(conn.version::<EndTxnRequest>(), d.end_txn),
        produce: cap(conn.version::<ProduceRequest>(), d.produce),
    };
    if conn.finalized_feature("transaction.version").unwrap_or(0) < 2 {
        v.end_txn = v.end_txn.min(4);
        v.produce = v.produce.min(11);
    }
    v
}

impl Producer {
    fn txn(&self) -> Result<&TxnShared> {
        self.shared.txn.as_ref().ok_or_else(|| {
            Error::Misuse("a transaction API on a producer without transactional.id".to_string())
        })
    }

    /// Waits until the producer id of the transactional id is initialized (InitProducerId,
    /// which also fences older producers with the same transactional id and completes their
    /// open transaction). The producer starts this itself; calling it is optional, as
    /// [`Producer::begin_transaction`] waits too. Waits up to `max.block.ms`.
    pub async fn init_transactions(&self) -> Result<()> {
        self.wait_ready().await
    }

    async fn wait_ready(&self) -> Result<()> {
        let txn = self.txn()?;
        let what = "the transactional producer id (max.block.ms)";
        self.wait_until(txn.max_block, what, |st| {
            (st.mgr.is_ready() || st.mgr.in_transaction()).then_some(Ok(()))
        })
        .await
    }

    /// Begins a transaction (after waiting for the producer id, up to `max.block.ms`). Records
    /// are accepted until [`commit_transaction`](Self::commit_transaction) or
    /// [`abort_transaction`](Self::abort_transaction).
    ///
    /// Errors: [`Error::Misuse`] while another transaction is open (also one whose commit or
    /// abort future was dropped and is still ending: call that method again to wait for it),
    /// the fatal error once fenced.
    pub async fn begin_transaction(&self) -> Result<()> {
        self.wait_ready().await?;
        let txn = self.txn()?;
        let mut st = txn.state.lock().unwrap();
        if let Some(p) = st.pending {
            if st.mgr.ending().is_some() {
                let call = if p.commit {
                    "commit_transaction"
                } else {
                    "abort_transaction"
                };
                return Err(Error::Misuse(format!(
                    "the previous transaction is still ending (its {call} future was dropped or \
                     timed out): call {call} again to wait for its outcome"
                )));
            }
            // It ended meanwhile; a new transaction discards the outcome nobody asked for.
            st.pending = None;
        }
        st.mgr.begin()
    }

    /// Adds the consumer's offsets to the transaction (AddOffsetsToTxn, then TxnOffsetCommit
    /// carrying `group`'s generation and member id, so a member fenced by a rebalance cannot
    /// commit: KIP-447). They are committed with the transaction. Returns once the group
    /// coordinator has accepted them.
    ///
    /// Errors: the transaction's error if it failed (abort it then), [`Error::Misuse`] outside
    /// a transaction.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: Vec<TxnOffset>,
        group: GroupMetadata,
    ) -> Result<()> {
        let txn = self.txn()?;
        let group_id = group.group_id.clone();
        let start = {
            let mut st = txn.state.lock().unwrap();
            st.mgr.add_offsets(Instant::now(), group, offsets)?;
            st.seq
        };
        txn.wake.notify_one();
        self.wait_event(start, |e| match e {
            TxnEvent::OffsetsCommitted { group_id: g } if *g == group_id => Some(Ok(())),
            TxnEvent::AbortableError(e) | TxnEvent::Fatal(e) => Some(Err(e.clone())),
            _ => None,
        })
        .await
    }

    /// Commits the transaction: sends everything buffered, waits for every batch's answer and
    /// for the offsets, then EndTxn. Returns once the coordinator has answered, and within about
    /// `transaction.end.timeout.ms` (60 s) in any case.
    ///
    /// Errors: a batch or offset error of the transaction (the transaction must then be
    /// aborted with [`abort_transaction`](Self::abort_transaction)); [`Error::Timeout`] when
    /// the batches or offsets were still unanswered at that deadline (nothing was committed:
    /// abort); [`Error::OutcomeUnknown`] when EndTxn got no definite answer by then (the
    /// transaction may or may not have committed; the producer bumps its epoch, which settles
    /// it on the coordinator and fences anything of it still in flight, and is then ready for
    /// a new transaction); an abortable error carrying TRANSACTION_ABORTABLE when the
    /// coordinator had aborted the transaction by itself (it outlived `transaction.timeout.ms`:
    /// abort, which recovers the producer, KIP-588); the fatal error once fenced.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not stop the commit: the producer's task finishes it (EndTxn,
    /// its retries and the deadline above) and keeps its outcome. The next `commit_transaction`
    /// call resumes waiting for that same commit and returns its outcome instead of starting
    /// another; `begin_transaction` and `abort_transaction` fail with [`Error::Misuse`] while it
    /// is still ending. The same holds when this call's own wait ends with [`Error::Timeout`]
    /// before the producer reported an outcome.
    pub async fn commit_transaction(&self) -> Result<()> {
        let txn = self.txn()?;
        let start = {
            let mut st = txn.state.lock().unwrap();
            match st.pending {
                Some(PendingEnd {
                    commit: true,
                    start,
                }) => start,
                Some(PendingEnd { commit: false, .. }) if st.mgr.ending().is_some() => {
                    return Err(Error::Misuse(
                        "an abort is under way (its abort_transaction future was dropped or timed \
                         out): call abort_transaction to wait for it"
                            .to_string(),
                    ));
                }
                _ => {
                    st.pending = None;
                    st.mgr.commit(Instant::now())?;
                    let mark = self.shared.core.lock().unwrap().flush();
                    st.flush_mark = Some(mark);
                    let start = st.seq;
                    st.pending = Some(PendingEnd {
                        commit: true,
                        start,
                    });
                    start
                }
            }
        };
        txn.wake.notify_one();
        self.shared.wake.notify_one();
        let outcome = self
            .wait_end(start, |e| match e {
                TxnEvent::Committed => Some(Ok(())),
                TxnEvent::Aborted => Some(Err(Error::Aborted)),
                TxnEvent::OutcomeUnknown { error } => {
                    Some(Err(Error::OutcomeUnknown(Arc::new(error.clone()))))
                }
                TxnEvent::AbortableError(e) | TxnEvent::Fatal(e) => Some(Err(e.clone())),
                _ => None,
            })
            .await;
        // The transaction's records were answered before EndTxn; their callbacks have returned
        // when the commit does.
        self.shared.callbacks_done();
        outcome
    }

    /// Aborts the transaction: records not sent yet fail with [`Error::Aborted`], batches in
    /// flight are answered first, then EndTxn(abort). Allowed after the transaction failed.
    /// Returns within about `transaction.end.timeout.ms` (60 s).
    ///
    /// If the coordinator refuses our epoch (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH: it
    /// aborted the transaction by itself after `transaction.timeout.ms`, or another producer
    /// took over), the producer asks it with InitProducerId carrying the current id and epoch
    /// (KIP-588): after a timeout abort that recovers the producer (the abort succeeds, with
    /// the bumped epoch), after a takeover it fails with [`Error::Fenced`].
    ///
    /// Errors: [`Error::Timeout`] when batches in flight are still unanswered at the deadline
    /// (the abort goes on: call again to wait for it; nothing of the transaction commits); the
    /// fatal error once fenced. An EndTxn(abort) still unanswered at the deadline reports the
    /// abort done and bumps the epoch in the background (`begin_transaction` waits for it).
    ///
    /// # Cancel safety
    ///
    /// As for [`commit_transaction`](Self::commit_transaction): dropping the future does not
    /// stop the abort, and the next `abort_transaction` call resumes waiting for it.
    pub async fn abort_transaction(&self) -> Result<()> {
        let txn = self.txn()?;
        let start = {
            // The callbacks of the dropped records run after the state is unlocked (a callback
            // may ask the producer about its transaction); lock order: callbacks, state, core.
            let _callbacks = self.shared.callbacks.lock().unwrap();
            let (start, dropped) = {
                let mut st = txn.state.lock().unwrap();
                match st.pending {
                    Some(PendingEnd {
                        commit: false,
                        start,
                    }) => (start, Vec::new()),
                    Some(PendingEnd { commit: true, .. }) if st.mgr.ending().is_some() => {
                        return Err(Error::Misuse(
                            "a commit is under way (its commit_transaction future was dropped or \
                             timed out): call commit_transaction to wait for its outcome"
                                .to_string(),
                        ));
                    }
                    _ => {
                        st.pending = None;
                        let now = Instant::now();
                        st.mgr.abort(now)?;
                        let mut core = self.shared.core.lock().unwrap();
                        if core.abort_unsent(&Error::Aborted) {
                            // A dropped batch had been sent before: the broker may hold its
                            // sequence.
                            st.mgr.abortable_error(now, Error::Aborted, true);
                        }
                        // Flushed once the batches in flight are answered.
                        st.flush_mark = Some(core.last_batch_id());
                        let start = st.seq;
                        st.pending = Some(PendingEnd {
                            commit: false,
                            start,
                        });
                        (start, core.take_completed())
                    }
                }
            };
            super::run_callbacks(dropped);
            start
        };
        self.shared.progress.notify_waiters();
        txn.wake.notify_one();
        self.shared.wake.notify_one();
        self.wait_end(start, |e| match e {
            TxnEvent::Aborted => Some(Ok(())),
            TxnEvent::Fatal(e) => Some(Err(e.clone())),
            _ => None,
        })
        .await
    }

    /// Whether a transaction is open (begun, not yet committed or aborted).
    pub fn in_transaction(&self) -> bool {
        self.shared
            .txn
            .as_ref()
            .is_some_and(|t| t.state.lock().unwrap().mgr.in_transaction())
    }

    /// Waits for the first event logged after `start` that `pick` answers.
    async fn wait_event<T>(
        &self,
        start: u64,
        pick: impl Fn(&TxnEvent) -> Option<Result<T>>,
    ) -> Result<T> {
        let txn = self.txn()?;
        self.wait_until(txn.max_wait, "the transaction's coordinator", |st| {
            st.log
                .iter()
                .filter(|(seq, _)| *seq > start)
                .find_map(|(_, e)| pick(e))
        })
        .await
    }

    /// Waits (up to `transaction.end.timeout.ms` and a little slack) for the outcome of the
    /// commit or abort issued at event `start`; once this call has it, nobody waits for that
    /// end any more. A wait that ends without an outcome leaves it pending for the next call.
    async fn wait_end(
        &self,
        start: u64,
        pick: impl Fn(&TxnEvent) -> Option<Result<()>>,
    ) -> Result<()> {
        let txn = self.txn()?;
        let waited = self
            .wait_until(
                txn.end_wait,
                "the end of the transaction (transaction.end.timeout.ms)",
                |st| {
                    st.log
                        .iter()
                        .filter(|(seq, _)| *seq > start)
                        .find_map(|(_, e)| pick(e))
                        .map(Ok)
                },
            )
            .await;
        let outcome = match waited {
            // No outcome yet: the end stays pending for the next call.
            Err(e @ Error::Timeout { .. }) => return Err(e),
            Ok(outcome) => outcome,
            Err(e) => Err(e),
        };
        let mut st = txn.state.lock().unwrap();
        if st.pending.is_some_and(|p| p.start == start) {
            st.pending = None;
        }
        outcome
    }

    /// Waits (up to `limit`) until `done` answers, looking again at every logged event; a fatal
    /// error or a stopped driver ends the wait first.
    async fn wait_until<T>(
        &self,
        limit: Duration,
        what: &'static str,
        done: impl Fn(&TxnState) -> Option<Result<T>>,
    ) -> Result<T> {
        let txn = self.txn()?;
        let deadline = Instant::now() + limit;
        loop {
            let notified = txn.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = txn.state.lock().unwrap();
                if let Some(r) = done(&st) {
                    return r;
                }
                if let Some(e) = st.mgr.fatal() {
                    return Err(e.clone());
                }
                if st.stopped {
                    return Err(Error::Closed);
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(Error::Timeout { what, after: limit });
            }
        }
    }
}

/// Whether a batch error is a fencing one (another producer took over the transactional id).
/// INVALID_PRODUCER_EPOCH on a Produce is not: since KIP-588 the coordinator answers a newer
/// producer's takeover with PRODUCER_FENCED, and an epoch bumped by the coordinator itself (it
/// aborted a transaction that outlived `transaction.timeout.ms`, e.g. during a coordinator
/// outage) only dooms the current transaction: it is aborted, and the epoch bumped.
fn fencing(e: &Error) -> bool {
    matches!(
        e.broker_code(),
        Some(ErrorCode::PRODUCER_FENCED) | Some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    ) || matches!(e, Error::Fenced(_))
}

/// Applies what the accumulator reported and the manager's events; returns the request to
/// send (with its number, [`TxnManager::in_flight_request`]) and when to look again.
fn step(sh: &Shared, txn: &TxnShared) -> (Option<(TxnRequest, u64)>, Option<Instant>) {
    let now = Instant::now();
    let mut st = txn.state.lock().unwrap();
    let st = &mut *st;
    let mut logged = false;
    {
        let mut core = sh.core.lock().unwrap();
        for (e, had_seq) in core.take_failures() {
            if fencing(&e) {
                let fenced = match e.broker_code() {
                    Some(code) if code != ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED => {
                        Error::Fenced(crate::error::BrokerError::new(code))
                    }
                    _ => e,
                };
                st.mgr.fatal_error(now, fenced);
            } else {
                st.mgr.abortable_error(now, e, had_seq);
            }
        }
        if st.mgr.awaiting_flush() {
            if let Some(mark) = st.flush_mark {
                if core.flushed(mark) {
                    st.flush_mark = None;
                    st.mgr.set_flushed(now);
                }
            }
        }
        st.mgr.handle_timeout(now);
        while let Some(event) = st.mgr.poll_event() {
            match &event {
                TxnEvent::Initialized { producer_id, epoch }
                | TxnEvent::EpochBumped { producer_id, epoch } => {
                    core.set_producer_id(*producer_id, *epoch);
                }
                TxnEvent::Fatal(e) => {
                    core.fail_all(e);
                }
                _ => {}
            }
            tracing::debug!(?event, "transaction event");
            st.seq += 1;
            st.log.push_back((st.seq, event));
            if st.log.len() > LOG_LEN {
                st.log.pop_front();
            }
            logged = true;
        }
    }
    let req = st
        .mgr
        .poll_request()
        .map(|r| (r, st.mgr.in_flight_request().unwrap_or(0)));
    let timeout = st.mgr.poll_timeout();
    if logged {
        txn.events.notify_waiters();
        sh.progress.notify_waiters();
        sh.wake.notify_one();
    }
    (req, timeout)
}

/// The transaction driver: moves the manager's requests to the coordinators and back.
pub(super) async fn drive_txn(sh: Arc<Shared>) {
    let Some(txn) = sh.txn.as_ref() else {
        return;
    };
    loop {
        let progress = sh.progress.notified();
        tokio::pin!(progress);
        progress.as_mut().enable();
        let (req, timeout) = step(&sh, txn);
        if sh.driver_done.load(Ordering::SeqCst) || sh.client.is_closed() {
            break;
        }
        if let Some((req, number)) = req {
            let what = request_name(&req.body);
            let sent = Instant::now();
            let reply = send(&sh.client, req);
            tokio::pin!(reply);
            // The manager's deadlines run while the request is out: at a commit's or abort's
            // deadline it gives up on an EndTxn still unanswered; the answer is then dropped
            // (with the future), never handed in late.
            let result = loop {
                let wake_at = txn.state.lock().unwrap().mgr.poll_timeout();
                let far = Instant::now() + Duration::from_secs(3600);
                tokio::select! {
                    r = &mut reply => break Some(r),
                    _ = tokio::time::sleep_until(wake_at.unwrap_or(far).into()) => {
                        let mut st = txn.state.lock().unwrap();
                        st.mgr.handle_timeout(Instant::now());
                        if st.mgr.in_flight_request() != Some(number) {
                            break None;
                        }
                    }
                }
            };
            let now = Instant::now();
            tracing::trace!(
                request = what,
                ms = now.duration_since(sent).as_secs_f64() * 1e3,
                answered = result.as_ref().is_some_and(|r| r.is_ok()),
                "transaction request done"
            );
            match result {
                Some(Ok(resp)) => txn.state.lock().unwrap().mgr.handle_response(now, resp),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "transaction request failed");
                    txn.state.lock().unwrap().mgr.handle_transport_error(now);
                }
                None => tracing::debug!(request = what, "transaction request abandoned"),
            }
            sh.wake.notify_one();
            continue;
        }
        let until = timeout
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = txn.wake.notified() => {}
            _ = &mut progress => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
    txn.state.lock().unwrap().stopped = true;
    txn.events.notify_waiters();
}

fn request_name(body: &TxnRequestBody) -> &'static str {
    match body {
        TxnRequestBody::FindCoordinator(_) => "FindCoordinator",
        TxnRequestBody::InitProducerId(_) => "InitProducerId",
        TxnRequestBody::AddPartitionsToTxn(_) => "AddPartitionsToTxn",
        TxnRequestBody::AddOffsetsToTxn(_) => "AddOffsetsToTxn",
        TxnRequestBody::TxnOffsetCommit(_) => "TxnOffsetCommit",
        TxnRequestBody::EndTxn(_) => "EndTxn",
    }
}

async fn connection_to(client: &Client, target: &Target) -> Result<Connection> {
    let c = match target {
        Target::AnyBroker => return client.any_connection(Purpose::Group).await,
        Target::TransactionCoordinator(c) | Target::GroupCoordinator(c) => c,
    };
    if !client.metadata().brokers.contains_key(&c.node_id) {
        client.apply_node_endpoint(c.node_id, &c.host, c.port, None);
    }
    client.connection(c.node_id, Purpose::Group).await
}

async fn send(client: &Client, req: TxnRequest) -> Result<TxnResponse> {
    let conn = connection_to(client, &req.target).await?;
    let v = req.version;
    Ok(match req.body {
        TxnRequestBody::FindCoordinator(r) => TxnResponse::FindCoordinator(conn.send(v, r).await?),
        TxnRequestBody::InitProducerId(r) => TxnResponse::InitProducerId(conn.send(v, r).await?),
        TxnRequestBody::AddPartitionsToTxn(r) => {
            TxnResponse::AddPartitionsToTxn(conn.send(v, r).await?)
        }
        TxnRequestBody::AddOffsetsToTxn(r) => TxnResponse::AddOffsetsToTxn(conn.send(v, r).await?),
        TxnRequestBody::TxnOffsetCommit(r) => TxnResponse::TxnOffsetCommit(conn.send(v, r).await?),
        TxnRequestBody::EndTxn(r) => TxnResponse::EndTxn(conn.send(v, r).await?),
    })
}
