//! The coordinator side of the transactional producer as a sans-IO state machine.
//!
//! [`TxnManager`] decides which transaction requests are sent (FindCoordinator, InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn), to whom and when; a driver
//! moves the bytes, and the accumulator ([`super::core::Core`]) writes the records. It never
//! touches a socket, a clock or a random source of its own: every input carries `now`, and the
//! backoff jitter comes from a seeded generator.
//!
//! # Method taxonomy (quinn-proto style)
//!
//! - Commands, each answering `Err` at once when not allowed in the current state:
//!   [`TxnManager::init`], [`TxnManager::begin`], [`TxnManager::add_partition`],
//!   [`TxnManager::add_offsets`], [`TxnManager::commit`], [`TxnManager::abort`].
//! - Inputs: [`TxnManager::handle_response`] (the decoded answer to the request last taken from
//!   [`TxnManager::poll_request`]), [`TxnManager::handle_transport_error`] (that request got no
//!   answer: connection lost, or the driver's own timeout), [`TxnManager::handle_timeout`] (the
//!   instant from [`TxnManager::poll_timeout`] has passed), and what the accumulator reports:
//!   [`TxnManager::set_flushed`], [`TxnManager::abortable_error`], [`TxnManager::fatal_error`].
//! - Queries for the accumulator: [`TxnManager::may_send`], [`TxnManager::producer_id`]; for
//!   the driver: [`TxnManager::in_flight_request`] (a request given up on must not be answered
//!   late).
//! - Outputs, polled after every input in this order: [`TxnManager::poll_event`] until `None`,
//!   then [`TxnManager::poll_request`] until `None`, then [`TxnManager::poll_timeout`].
//!
//! At most one request is in flight at a time. [`Target`] says where it goes: any broker
//! (FindCoordinator), the transaction coordinator, or the group coordinator (TxnOffsetCommit).
//! A driver that reconnects must drop answers that arrive on a connection it has already
//! reported broken.
//!
//! # States
//!
//! ```text
//!   Uninitialized
//!        | init
//!        v
//!   Initializing ---- fenced, unauthorized, unexpected ----> FatalError
//!        | InitProducerId ok               ^                 (terminal: every
//!        v                                 | fencing,        command fails)
//!      Ready <----------------------+      | INVALID_TXN_STATE, ...
//!        | begin                    |      |
//!        v                          |      |
//!   InTransaction --commit/abort--> Ending{Committing | Aborting} --EndTxn ok--> Ready
//!        |                          ^   |         (v1 abort needing a bump: Initializing)
//!        | batch or request failed  |   | EndTxn failed for good (its deadline,
//!        v                  abort   |   | UNKNOWN_SERVER_ERROR), or an abort refused
//!   AbortableError -----------------+   v (KIP-588): Initializing with the current
//!   (commit refused)               Initializing   id/epoch (KIP-360), then Ready
//! ```
//!
//! A commit that meets an abortable error while it waits (its flush, its AddPartitionsToTxn,
//! its offsets, or its deadline before EndTxn could go) goes to `AbortableError` too.
//!
//! `Ending` first waits for what the transaction still needs (AddPartitionsToTxn of partitions
//! with batches, the offsets of [`TxnManager::add_offsets`]) and for [`TxnManager::set_flushed`]
//! (every batch of the transaction answered), then sends EndTxn. A transaction that touched
//! nothing (no partition, no offsets) completes at once and sends nothing.
//!
//! # Errors
//!
//! - **Retriable** (the same request again, after a jittered backoff growing from
//!   `retry_backoff`): COORDINATOR_LOAD_IN_PROGRESS, UNKNOWN_TOPIC_OR_PARTITION, REQUEST_TIMED_OUT
//!   and every other code Kafka marks retriable; CONCURRENT_TRANSACTIONS uses a short backoff
//!   growing from 20 ms (SEMANTICS.md). COORDINATOR_NOT_AVAILABLE and NOT_COORDINATOR first find
//!   the coordinator again. A transport error does both: the coordinator is found again.
//! - **Abortable** (the transaction must be aborted; [`TxnEvent::AbortableError`], then
//!   `commit` fails with that error and `abort` is allowed): TRANSACTION_ABORTABLE,
//!   TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, UNKNOWN_MEMBER_ID,
//!   ILLEGAL_GENERATION, FENCED_INSTANCE_ID of TxnOffsetCommit, a failed batch reported by the
//!   driver, and unexpected codes of the in-transaction requests. UNKNOWN_PRODUCER_ID and
//!   INVALID_PRODUCER_ID_MAPPING are abortable and need an epoch bump: with transactions v1 the
//!   abort is followed by InitProducerId carrying the current id and epoch (KIP-360).
//! - **Refused epoch** (KIP-588, below): PRODUCER_FENCED and INVALID_PRODUCER_EPOCH to a request
//!   of the open transaction (AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, and EndTxn of
//!   a commit, with INVALID_TXN_STATE) make it abortable with TRANSACTION_ABORTABLE; to
//!   EndTxn(abort) they start the KIP-588 check.
//! - **Fatal** ([`TxnEvent::Fatal`]; every later command fails with it): PRODUCER_FENCED,
//!   INVALID_PRODUCER_EPOCH and TRANSACTION_COORDINATOR_FENCED to InitProducerId (as
//!   [`Error::Fenced`]: a takeover, confirmed by the coordinator), TRANSACTION_COORDINATOR_FENCED
//!   elsewhere, TRANSACTIONAL_ID_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED,
//!   INVALID_TXN_STATE (but to a commit, see above), INVALID_TRANSACTION_TIMEOUT, unexpected
//!   codes of InitProducerId and EndTxn, and an epoch bump that the negotiated InitProducerId
//!   version (< 3) cannot express.
//!
//! # Bounded ends, and an EndTxn without an answer (SEMANTICS.md, KAFKA-17754)
//!
//! A commit is reported only on an EndTxn answer without error. When an EndTxn gets no answer
//! (connection lost, timed out), the same EndTxn is sent again (the coordinator answers a retry
//! idempotently). Every commit and abort has a deadline, `end_txn_timeout`
//! (`transaction.end.timeout.ms`) after the command, which [`TxnManager::poll_timeout`]
//! includes (see [`TxnManager::handle_timeout`] for what happens there). When the EndTxn fails
//! for good (that deadline with its answer unknown, or UNKNOWN_SERVER_ERROR), the outcome is
//! reported at once, [`TxnEvent::Aborted`] for an abort and [`TxnEvent::OutcomeUnknown`] for a
//! commit (treat it as not committed: rewind to the committed offsets, read with
//! `read_committed`), and the manager bumps the epoch with InitProducerId carrying the current
//! id and epoch: the coordinator then completes or aborts the transaction and fences any
//! delayed request of ours. The next transaction begins once the bump is done.
//!
//! # The coordinator aborted the transaction (KIP-588)
//!
//! A transaction that outlives `transaction.timeout.ms` (a slow caller, a coordinator outage)
//! is aborted by the coordinator itself, which bumps the epoch. Our next request of it is
//! refused: a Produce with INVALID_PRODUCER_EPOCH (the marker carries the new epoch), an
//! AddPartitionsToTxn or EndTxn with PRODUCER_FENCED (v1), an EndTxn(commit) with
//! INVALID_TXN_STATE (v2). The transaction fails (abortable); the caller aborts. With v2 the
//! coordinator answers that EndTxn(abort) as a retry, with the bumped epoch. With v1 it refuses
//! it with PRODUCER_FENCED, exactly as it would after another producer took over; the manager
//! then sends InitProducerId with the current id and epoch (as Java's epoch bump and franz-go's
//! KIP-588 recovery do): after a timeout abort the coordinator's last epoch is ours, so it
//! answers the bumped epoch and the abort is reported; after a takeover it answers
//! PRODUCER_FENCED, which is fatal. Fencing stays permanent; the coordinator decides.
//!
//! # Transactions v2 (KIP-890 part 2)
//!
//! Chosen once, at construction, from [`TxnVersions::transactions_v2`]: EndTxn v5 or later and
//! Produce v12 or later (a driver that reads the finalized `transaction.version` feature should
//! also require it to be at least 2, and lower the versions it passes otherwise). Then:
//! - no AddPartitionsToTxn: a Produce v12+ adds its partition, so [`TxnManager::may_send`] is
//!   true for a partition as soon as it is added;
//! - no AddOffsetsToTxn when TxnOffsetCommit v5+ is available (it adds the group itself);
//! - every EndTxn answer carries a new epoch (or producer id), adopted at once and reported as
//!   [`TxnEvent::EpochBumped`]; an abort needs no separate bump.
//!
//! # How a driver uses it
//!
//! 1. `init`, then drive requests until [`TxnEvent::Initialized`]: hand the producer id and
//!    epoch to the accumulator.
//! 2. `begin`; for every record, `add_partition` of its partition before appending; the
//!    accumulator sends a partition's batches only while `may_send` is true.
//! 3. `add_offsets` for consumed offsets; [`TxnEvent::OffsetsCommitted`] completes it.
//! 4. `commit` or `abort`; flush the accumulator (an abort drops batches not yet sent) and call
//!    `set_flushed` once every batch of the transaction is answered; wait for
//!    [`TxnEvent::Committed`], [`TxnEvent::Aborted`] or [`TxnEvent::OutcomeUnknown`].
//! 5. A batch that fails: `abortable_error` (with `bump_epoch` when its partition has a
//!    sequence the broker never acknowledged). [`TxnEvent::EpochBumped`] at any point means:
//!    give the accumulator the new id and epoch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_wire::messages::add_partitions_to_txn::AddPartitionsToTxnTopic;
use kafka_wire::messages::txn_offset_commit::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_wire::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, InitProducerIdRequest, InitProducerIdResponse, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_wire::{ErrorCode, KString};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::error::{BrokerError, Error};
use crate::group::member::Coordinator;
use crate::rng::SeededRng;
use crate::types::TopicPartition;

/// FindCoordinator key type of a group.
const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// The highest AddPartitionsToTxn version a client sends: v4+ batch transactions for brokers.
const MAX_CLIENT_ADD_PARTITIONS: i16 = 3;
/// The highest TxnOffsetCommit version we build: v6 names topics by id only.
const MAX_TXN_OFFSET_COMMIT: i16 = 5;

/// Settings of the transaction manager.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transactional.id`: stable across restarts, so a new instance fences the old one.
    pub transactional_id: String,
    /// `transaction.timeout.ms`, sent with InitProducerId; default 60 s.
    pub transaction_timeout: Duration,
    /// `request.timeout.ms`: a request without an answer by then counts as a transport error;
    /// default 30 s.
    pub request_timeout: Duration,
    /// `retry.backoff.ms`: first wait after a retriable error; default 100 ms.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: largest wait; default 1 s.
    pub retry_backoff_max: Duration,
    /// `transaction.end.timeout.ms`: how long a commit or abort may take from the command; an
    /// EndTxn still unanswered then is given up (the outcome reported, the epoch bumped);
    /// default 60 s.
    pub end_txn_timeout: Duration,
}

impl TxnConfig {
    /// A configuration for `transactional_id` with the defaults above.
    pub fn new(transactional_id: impl Into<String>) -> TxnConfig {
        TxnConfig {
            transactional_id: transactional_id.into(),
            transaction_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            end_txn_timeout: Duration::from_secs(60),
        }
    }
}

/// API versions negotiated with the brokers, set by the driver before construction.
/// Defaults: the highest versions a Kafka 4.x broker offers that this manager uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnVersions {
    /// FindCoordinator (v4+ batches keys).
    pub find_coordinator: i16,
    /// InitProducerId (v3+ carries the current id and epoch for a KIP-360 bump).
    pub init_producer_id: i16,
    /// AddPartitionsToTxn (capped at 3: later versions are for brokers).
    pub add_partitions_to_txn: i16,
    /// AddOffsetsToTxn.
    pub add_offsets_to_txn: i16,
    /// TxnOffsetCommit (v3+ carries the group metadata of KIP-447; capped at 5).
    pub txn_offset_commit: i16,
    /// EndTxn (v5+: transactions v2, a new epoch per transaction).
    pub end_txn: i16,
    /// Produce (v12+: adds partitions to the transaction implicitly).
    pub produce: i16,
}

impl Default for TxnVersions {
    fn default() -> Self {
        TxnVersions {
            find_coordinator: 6,
            init_producer_id: 5,
            add_partitions_to_txn: 3,
            add_offsets_to_txn: 4,
            txn_offset_commit: 5,
            end_txn: 5,
            produce: 12,
        }
    }
}

impl TxnVersions {
    /// Whether these versions allow transactions v2 (KIP-890 part 2): EndTxn v5+ and Produce
    /// v12+.
    pub fn transactions_v2(&self) -> bool {
        self.end_txn >= 5 && self.produce >= 12
    }

    /// Whether v2 TxnOffsetCommit adds the group itself, so AddOffsetsToTxn is skipped.
    fn implicit_add_offsets(&self) -> bool {
        self.transactions_v2() && self.txn_offset_commit >= 5
    }
}

/// The consumer group metadata sent with the offsets (KIP-447), so the group coordinator can
/// reject offsets of a member that has been fenced by a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// The generation (classic protocol) or member epoch (KIP-848); -1 if unknown.
    pub generation_id: i32,
    /// The member id; empty if unknown.
    pub member_id: String,
    /// `group.instance.id` (static membership), if any.
    pub instance_id: Option<String>,
}

/// One consumed offset to commit in the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOffset {
    /// The input partition.
    pub partition: TopicPartition,
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, -1 if unknown.
    pub leader_epoch: i32,
    /// Metadata stored with the offset, if any.
    pub metadata: Option<String>,
}

/// Where a [`TxnRequest`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any broker (FindCoordinator).
    AnyBroker,
    /// The transaction coordinator of our transactional id.
    TransactionCoordinator(Coordinator),
    /// The coordinator of the consumer group whose offsets are committed.
    GroupCoordinator(Coordinator),
}

/// The body of a [`TxnRequest`].
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TxnRequestBody {
    FindCoordinator(FindCoordinatorRequest),
    InitProducerId(InitProducerIdRequest),
    AddPartitionsToTxn(AddPartitionsToTxnRequest),
    AddOffsetsToTxn(AddOffsetsToTxnRequest),
    TxnOffsetCommit(TxnOffsetCommitRequest),
    EndTxn(EndTxnRequest),
}

/// A request to send, built for `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnRequest {
    /// Where to send it.
    pub target: Target,
    /// The API version it was built for.
    pub version: i16,
    /// The request.
    pub body: TxnRequestBody,
}

/// A decoded answer to the request last polled.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TxnResponse {
    FindCoordinator(FindCoordinatorResponse),
    InitProducerId(InitProducerIdResponse),
    AddPartitionsToTxn(AddPartitionsToTxnResponse),
    AddOffsetsToTxn(AddOffsetsToTxnResponse),
    TxnOffsetCommit(TxnOffsetCommitResponse),
    EndTxn(EndTxnResponse),
}

/// What the manager tells its driver.
#[derive(Debug, Clone)]
pub enum TxnEvent {
    /// [`TxnManager::init`] finished: the producer id and epoch to hand to the accumulator.
    Initialized {
        /// The producer id.
        producer_id: i64,
        /// The epoch.
        epoch: i16,
    },
    /// The producer id or epoch changed after init (transactions v2 EndTxn, or a KIP-360 bump):
    /// hand them to the accumulator, whose sequences restart.
    EpochBumped {
        /// The producer id.
        producer_id: i64,
        /// The epoch.
        epoch: i16,
    },
    /// The offsets of one [`TxnManager::add_offsets`] call are in the transaction.
    OffsetsCommitted {
        /// Their group.
        group_id: String,
    },
    /// The transaction is committed.
    Committed,
    /// The transaction is aborted.
    Aborted,
    /// A commit whose EndTxn never got a definite answer: it may have committed or aborted.
    /// Never a commit to rely on; the manager is ready for a new transaction.
    OutcomeUnknown {
        /// Why the outcome is unknown.
        error: Error,
    },
    /// The transaction failed and can only be aborted; a pending commit fails with this error.
    AbortableError(Error),
    /// The manager cannot go on; every later command fails with this error.
    Fatal(Error),
}

/// The request in flight, or what the next one waits for.
#[derive(Debug, Clone, PartialEq)]
enum Io {
    /// Nothing in flight; the next request may go now.
    Idle,
    /// No request before this instant (backoff).
    Wait(Instant),
    /// A request is in flight; it counts as failed at `deadline`.
    InFlight { kind: Kind, deadline: Instant },
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    FindTxnCoordinator,
    FindGroupCoordinator(String),
    InitProducerId,
    AddPartitions(BTreeSet<TopicPartition>),
    AddOffsets(String),
    TxnOffsetCommit(String),
    EndTxn,
}

/// The work of one `add_offsets` call.
#[derive(Debug, Clone)]
struct OffsetsTask {
    group: GroupMetadata,
    /// Offsets not yet accepted by the group coordinator.
    offsets: BTreeMap<TopicPartition, TxnOffset>,
    /// AddOffsetsToTxn still has to be sent (transactions v1).
    needs_add: bool,
}

/// What the current transaction holds.
#[derive(Debug, Default)]
struct Txn {
    /// Partitions the coordinator knows to be in the transaction (v2: added implicitly).
    added: BTreeSet<TopicPartition>,
    /// Partitions that still need AddPartitionsToTxn (v1).
    pending: BTreeSet<TopicPartition>,
    /// Groups added with AddOffsetsToTxn.
    groups: BTreeSet<String>,
    /// `add_offsets` calls not finished, in order.
    offsets: VecDeque<OffsetsTask>,
    /// The coordinator may have something of this transaction, so ending it needs EndTxn.
    touched: bool,
    /// Every batch of the transaction is answered ([`TxnManager::set_flushed`]).
    flushed: bool,
}

#[derive(Debug)]
enum State {
    Uninitialized,
    /// Awaiting InitProducerId. `bump`: the current id and epoch (KIP-360); `report`: the
    /// outcome of the transaction that needed the bump, reported once it is done.
    Initializing {
        bump: Option<(i64, i16)>,
        report: Option<TxnEvent>,
    },
    Ready,
    InTransaction(Txn),
    /// The transaction failed; only an abort is allowed.
    AbortableError {
        txn: Txn,
        error: Error,
        bump: bool,
    },
    /// Committing or aborting. `unknown`: an EndTxn was sent without a definite answer;
    /// `deadline`: when the commit or abort gives up (`end_txn_timeout` after the command; an
    /// abort that reached it before its EndTxn could go gets a new one when the EndTxn goes);
    /// `end_sent`: an EndTxn of this transaction has been sent.
    Ending {
        txn: Txn,
        commit: bool,
        bump: bool,
        unknown: Option<Error>,
        deadline: Option<Instant>,
        end_sent: bool,
    },
    FatalError(Error),
}

/// How an error code is handled.
enum Class {
    Ok,
    Refind,
    Retry,
    Concurrent,
    Abortable { error: Error, bump: bool },
    Fatal(Error),
}

fn ks(s: &str) -> KString {
    KString::from(s)
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// The classification shared by every coordinator answer; `unexpected_fatal` decides codes
/// outside the known sets (fatal for InitProducerId and EndTxn, abortable otherwise).
fn classify(code: ErrorCode, txn_id: &str, unexpected_fatal: bool) -> Class {
    let err = || BrokerError::new(code).with_group(txn_id);
    match code {
        ErrorCode::NONE => Class::Ok,
        ErrorCode::COORDINATOR_NOT_AVAILABLE | ErrorCode::NOT_COORDINATOR => Class::Refind,
        ErrorCode::CONCURRENT_TRANSACTIONS => Class::Concurrent,
        // A request of the open transaction whose epoch the coordinator refuses: it may have
        // aborted the transaction by itself (KIP-588). The abort finds out (`recover_epoch`).
        c if epoch_refused(c) && !unexpected_fatal => Class::Abortable {
            error: refused_error(c, txn_id, "a request of the transaction"),
            bump: true,
        },
        // From a coordinator, INVALID_PRODUCER_EPOCH means a newer epoch exists: fenced.
        ErrorCode::PRODUCER_FENCED
        | ErrorCode::INVALID_PRODUCER_EPOCH
        | ErrorCode::TRANSACTION_COORDINATOR_FENCED => Class::Fatal(Error::Fenced(err())),
        ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        | ErrorCode::CLUSTER_AUTHORIZATION_FAILED
        | ErrorCode::INVALID_TXN_STATE
        | ErrorCode::INVALID_TRANSACTION_TIMEOUT => Class::Fatal(err().into()),
        ErrorCode::UNKNOWN_PRODUCER_ID | ErrorCode::INVALID_PRODUCER_ID_MAPPING => {
            Class::Abortable {
                error: err().into(),
                bump: true,
            }
        }
        ErrorCode::TRANSACTION_ABORTABLE
        | ErrorCode::TOPIC_AUTHORIZATION_FAILED
        | ErrorCode::GROUP_AUTHORIZATION_FAILED
        | ErrorCode::UNKNOWN_MEMBER_ID
        | ErrorCode::ILLEGAL_GENERATION
        | ErrorCode::FENCED_INSTANCE_ID => Class::Abortable {
            error: err().into(),
            bump: false,
        },
        c if c.is_retriable() => Class::Retry,
        _ if unexpected_fatal => Class::Fatal(err().into()),
        _ => Class::Abortable {
            error: err().into(),
            bump: false,
        },
    }
}

/// Whether `code` says the coordinator refuses our producer epoch.
fn epoch_refused(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::PRODUCER_FENCED | ErrorCode::INVALID_PRODUCER_EPOCH
    )
}

/// The abortable error of a request whose epoch (or transaction) the coordinator refused. It
/// carries TRANSACTION_ABORTABLE, not the fencing code, since fencing is not established yet:
/// the abort asks the coordinator (KIP-588).
fn refused_error(code: ErrorCode, txn_id: &str, what: &str) -> Error {
    BrokerError::new(ErrorCode::TRANSACTION_ABORTABLE)
        .with_group(txn_id)
        .with_message(format!(
            "{what} answered {}: the coordinator no longer holds the transaction at our epoch \
             (it aborted it after transaction.timeout.ms, or another producer took over); abort \
             the transaction",
            code.name().unwrap_or("an error")
        ))
        .into()
}

/// Orders classes by how much they decide: a fatal error wins over an abortable one, which
/// wins over a coordinator move, which wins over a plain retry.
fn severity(c: &Class) -> u8 {
    match c {
        Class::Ok => 0,
        Class::Retry => 1,
        Class::Concurrent => 2,
        Class::Refind => 3,
        Class::Abortable { .. } => 4,
        Class::Fatal(_) => 5,
    }
}

fn worst(a: Class, b: Class) -> Class {
    if severity(&b) > severity(&a) {
        b
    } else {
        a
    }
}

/// The transactional producer's coordinator side. See the [module docs](self).
pub struct TxnManager {
    cfg: TxnConfig,
    versions: TxnVersions,
    v2: bool,
    state: State,
    io: Io,
    producer: Option<(i64, i16)>,
    txn_coordinator: Option<Coordinator>,
    /// The coordinator of one group: (group id, coordinator).
    group_coordinator: Option<(String, Coordinator)>,
    retry: Backoff,
    concurrent: Backoff,
    rng: SeededRng,
    events: VecDeque<TxnEvent>,
    last_now: Instant,
    /// Requests polled so far (names the one in flight, [`TxnManager::in_flight_request`]).
    requests: u64,
}

impl std::fmt::Debug for TxnManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnManager")
            .field("transactional_id", &self.cfg.transactional_id)
            .field("v2", &self.v2)
            .field("state", &self.state_name())
            .field("producer", &self.producer)
            .field("io", &self.io)
            .finish()
    }
}

impl TxnManager {
    /// A manager that has not been initialized. Transactions v2 is used when `versions`
    /// allow it ([`TxnVersions::transactions_v2`]); `seed` drives the backoff jitter.
    pub fn new(cfg: TxnConfig, versions: TxnVersions, seed: u64, now: Instant) -> TxnManager {
        let retry = BackoffPolicy {
            initial: cfg.retry_backoff,
            max: cfg.retry_backoff_max.max(cfg.retry_backoff),
            ..BackoffPolicy::default()
        };
        TxnManager {
            v2: versions.transactions_v2(),
            versions,
            state: State::Uninitialized,
            io: Io::Idle,
            producer: None,
            txn_coordinator: None,
            group_coordinator: None,
            retry: Backoff::new(retry),
            concurrent: Backoff::new(BackoffPolicy::concurrent_transactions()),
            rng: SeededRng::new(seed),
            events: VecDeque::new(),
            last_now: now,
            requests: 0,
            cfg,
        }
    }

    /// Whether transactions v2 (KIP-890 part 2) is in use.
    pub fn is_v2(&self) -> bool {
        self.v2
    }

    /// The number of the request in flight (counted from 1 by [`TxnManager::poll_request`]),
    /// if one is. A driver that still waits for an answer after an input must drop that wait
    /// when this no longer names its request: the manager gave up on it (a commit's or abort's
    /// deadline passed), and an answer arriving later must not be handed in.
    pub fn in_flight_request(&self) -> Option<u64> {
        match &self.io {
            Io::InFlight { .. } => Some(self.requests),
            _ => None,
        }
    }

    /// The producer id and epoch, once initialized.
    #[cfg(test)]
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.producer
    }

    /// The transaction coordinator, once found.
    #[cfg(test)]
    pub fn coordinator(&self) -> Option<&Coordinator> {
        self.txn_coordinator.as_ref()
    }

    /// The state's name, for logs and tests.
    pub fn state_name(&self) -> &'static str {
        match &self.state {
            State::Uninitialized => "Uninitialized",
            State::Initializing { .. } => "Initializing",
            State::Ready => "Ready",
            State::InTransaction(_) => "InTransaction",
            State::AbortableError { .. } => "AbortableError",
            State::Ending { commit: true, .. } => "Committing",
            State::Ending { commit: false, .. } => "Aborting",
            State::FatalError(_) => "FatalError",
        }
    }

    /// The fatal error, if the manager has one.
    pub fn fatal(&self) -> Option<&Error> {
        match &self.state {
            State::FatalError(e) => Some(e),
            _ => None,
        }
    }

    /// Whether a transaction is open (begun and not ended yet, failed or not).
    pub fn in_transaction(&self) -> bool {
        matches!(
            self.state,
            State::InTransaction(_) | State::AbortableError { .. } | State::Ending { .. }
        )
    }

    /// Whether records may be produced now: only inside a transaction that has not failed and
    /// is not ending. The error says why not (the abortable or fatal error, or the state).
    pub fn check_send(&self) -> Result<(), Error> {
        match self.state {
            State::InTransaction(_) => Ok(()),
            _ => Err(self.refuse("send")),
        }
    }

    /// Whether [`TxnEvent::Initialized`] has been reported and no bump is under way: a
    /// transaction may begin.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// `Some(true)` while a commit is under way, `Some(false)` while an abort is, else `None`.
    pub fn ending(&self) -> Option<bool> {
        match &self.state {
            State::Ending { commit, .. } => Some(*commit),
            _ => None,
        }
    }

    /// Whether the manager waits for [`TxnManager::set_flushed`] before it can send EndTxn.
    pub fn awaiting_flush(&self) -> bool {
        matches!(&self.state, State::Ending { txn, .. } if !txn.flushed)
    }

    fn refuse(&self, what: &str) -> Error {
        match &self.state {
            State::FatalError(e) => e.clone(),
            State::AbortableError { error, .. } => error.clone(),
            _ => Error::Misuse(format!(
                "{what} is not allowed in state {}",
                self.state_name()
            )),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Commands

    /// Starts InitProducerId (after finding the coordinator). Allowed once, on a new manager.
    pub fn init(&mut self, now: Instant) -> Result<(), Error> {
        self.last_now = now;
        match self.state {
            State::Uninitialized => {
                self.state = State::Initializing {
                    bump: None,
                    report: None,
                };
                Ok(())
            }
            _ => Err(self.refuse("init")),
        }
    }

    /// Begins a transaction (local only: nothing is sent until a partition or offsets join).
    pub fn begin(&mut self) -> Result<(), Error> {
        match self.state {
            State::Ready => {
                self.state = State::InTransaction(Txn::default());
                Ok(())
            }
            _ => Err(self.refuse("begin")),
        }
    }

    /// Records that `tp` gets records in this transaction. With transactions v1 it is added
    /// with AddPartitionsToTxn before [`TxnManager::may_send`] lets its first batch go.
    pub fn add_partition(&mut self, tp: &TopicPartition) -> Result<(), Error> {
        let v2 = self.v2;
        let in_flight = self.sending_partitions();
        match &mut self.state {
            State::InTransaction(txn) => {
                if txn.added.contains(tp) || txn.pending.contains(tp) || in_flight.contains(tp) {
                    return Ok(());
                }
                if v2 {
                    // Produce v12+ adds the partition itself; the coordinator may hold it from
                    // the first batch on, so ending needs EndTxn.
                    txn.added.insert(tp.clone());
                    txn.touched = true;
                } else {
                    txn.pending.insert(tp.clone());
                }
                Ok(())
            }
            _ => Err(self.refuse("add_partition")),
        }
    }

    /// Whether the accumulator may send batches of `tp` now: the partition is in the
    /// transaction (AddPartitionsToTxn answered, or v2) and the transaction is not failing or
    /// aborting.
    pub fn may_send(&self, tp: &TopicPartition) -> bool {
        match &self.state {
            State::InTransaction(txn)
            | State::Ending {
                txn, commit: true, ..
            } => txn.added.contains(tp),
            _ => false,
        }
    }

    /// Adds consumed offsets of `group` to the transaction: AddOffsetsToTxn (v1), then
    /// TxnOffsetCommit to the group coordinator with the group metadata (KIP-447).
    /// [`TxnEvent::OffsetsCommitted`] tells when it is done.
    pub fn add_offsets(
        &mut self,
        now: Instant,
        group: GroupMetadata,
        offsets: Vec<TxnOffset>,
    ) -> Result<(), Error> {
        self.last_now = now;
        let implicit = self.versions.implicit_add_offsets();
        match &mut self.state {
            State::InTransaction(txn) => {
                if offsets.is_empty() {
                    self.events.push_back(TxnEvent::OffsetsCommitted {
                        group_id: group.group_id,
                    });
                    return Ok(());
                }
                let needs_add = !implicit && !txn.groups.contains(&group.group_id);
                txn.offsets.push_back(OffsetsTask {
                    offsets: offsets
                        .into_iter()
                        .map(|o| (o.partition.clone(), o))
                        .collect(),
                    group,
                    needs_add,
                });
                Ok(())
            }
            _ => Err(self.refuse("add_offsets")),
        }
    }

    /// Commits the transaction: waits for pending partitions and offsets and for
    /// [`TxnManager::set_flushed`], then sends EndTxn. An empty transaction completes at once
    /// with [`TxnEvent::Committed`]. Refused after an abortable error (with that error).
    pub fn commit(&mut self, now: Instant) -> Result<(), Error> {
        self.last_now = now;
        match std::mem::replace(&mut self.state, State::Ready) {
            State::InTransaction(txn) => {
                self.state = State::Ending {
                    txn,
                    commit: true,
                    bump: false,
                    unknown: None,
                    deadline: Some(now + self.cfg.end_txn_timeout),
                    end_sent: false,
                };
                self.settle();
                Ok(())
            }
            other => {
                self.state = other;
                Err(self.refuse("commit"))
            }
        }
    }

    /// Aborts the transaction: partitions and offsets not sent yet are dropped (the driver
    /// fails whatever waited for those offsets), requests in flight are answered first, then
    /// EndTxn(abort) once [`TxnManager::set_flushed`]. Allowed after an abortable error. An
    /// empty transaction completes at once.
    pub fn abort(&mut self, now: Instant) -> Result<(), Error> {
        self.last_now = now;
        let (mut txn, bump) = match std::mem::replace(&mut self.state, State::Ready) {
            State::InTransaction(txn) => (txn, false),
            State::AbortableError { txn, bump, .. } => (txn, bump),
            other => {
                self.state = other;
                return Err(self.refuse("abort"));
            }
        };
        txn.pending.clear();
        txn.offsets.clear();
        self.state = State::Ending {
            txn,
            commit: false,
            bump,
            unknown: None,
            deadline: Some(now + self.cfg.end_txn_timeout),
            end_sent: false,
        };
        self.settle();
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Inputs from the accumulator

    /// Every batch of the ending transaction is answered (or, for an abort, dropped): EndTxn
    /// may go. Ignored outside `commit`/`abort`.
    pub fn set_flushed(&mut self, now: Instant) {
        self.last_now = now;
        if let State::Ending { txn, .. } = &mut self.state {
            txn.flushed = true;
        }
    }

    /// A batch of the transaction failed (or another abortable condition): the transaction
    /// can only be aborted. `bump_epoch`: the epoch must be bumped after the abort (a sequence
    /// the broker never acknowledged; only needed with transactions v1).
    pub fn abortable_error(&mut self, now: Instant, error: Error, bump_epoch: bool) {
        self.last_now = now;
        self.enter_abortable(error, bump_epoch);
        self.settle();
    }

    /// The accumulator met an error that ends the producer (a fencing Produce answer).
    pub fn fatal_error(&mut self, now: Instant, error: Error) {
        self.last_now = now;
        self.enter_fatal(error);
    }

    // ---------------------------------------------------------------------------------------
    // Outputs

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// When [`TxnManager::handle_timeout`] must be called next: the end of a backoff, the
    /// deadline of the request in flight, or the deadline of a commit or abort.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let io = match &self.io {
            Io::Idle => None,
            Io::Wait(t) => Some(*t),
            Io::InFlight { deadline, .. } => Some(*deadline),
        };
        let end = match &self.state {
            State::Ending { deadline, .. } => *deadline,
            _ => None,
        };
        match (io, end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next request to send (at most one is in flight).
    pub fn poll_request(&mut self) -> Option<TxnRequest> {
        let now = self.last_now;
        match self.io {
            Io::Idle => {}
            Io::Wait(t) if now >= t => self.io = Io::Idle,
            _ => return None,
        }
        let (kind, target, version, body) = self.next_request()?;
        self.requests += 1;
        self.io = Io::InFlight {
            kind,
            deadline: now + self.cfg.request_timeout,
        };
        Some(TxnRequest {
            target,
            version,
            body,
        })
    }

    // ---------------------------------------------------------------------------------------
    // Inputs from the network and the clock

    /// Time has passed: ends backoffs, expires a request in flight (as a transport error), and
    /// ends a commit or abort whose deadline (`end_txn_timeout`) passed:
    /// - once its EndTxn was sent, the outcome is reported at once ([`TxnEvent::OutcomeUnknown`]
    ///   for a commit, [`TxnEvent::Aborted`] for an abort: EndTxn(commit) never went, so nothing
    ///   of it can commit) and the epoch is bumped in the background (KIP-360/KIP-588), which
    ///   fences whatever of ours is still in flight; an EndTxn still in flight is abandoned;
    /// - a commit whose EndTxn could not go yet (batches, partitions or offsets unanswered)
    ///   fails with [`TxnEvent::AbortableError`] ([`Error::Timeout`]): nothing committed, the
    ///   caller aborts;
    /// - an abort whose EndTxn could not go yet keeps going (it cannot be hurried: batches in
    ///   flight must be answered first); its deadline restarts when its EndTxn goes.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        match &self.io {
            Io::Wait(t) if now >= *t => self.io = Io::Idle,
            Io::InFlight { deadline, .. } if now >= *deadline => self.handle_transport_error(now),
            _ => {}
        }
        let State::Ending {
            commit,
            deadline,
            end_sent,
            ..
        } = &mut self.state
        else {
            return;
        };
        if deadline.is_none_or(|d| now < d) {
            return;
        }
        match (*end_sent, *commit) {
            (true, commit) => {
                tracing::debug!(
                    commit,
                    "transaction end deadline passed with EndTxn unanswered"
                );
                self.give_up_end(None);
            }
            (false, true) => {
                let error = Error::Timeout {
                    what: "the commit's batches and offsets (transaction.end.timeout.ms)",
                    after: self.cfg.end_txn_timeout,
                };
                self.enter_abortable(error, false);
            }
            (false, false) => *deadline = None,
        }
    }

    /// The request in flight failed without an answer (connection lost or timed out).
    pub fn handle_transport_error(&mut self, now: Instant) {
        self.last_now = now;
        let Io::InFlight { kind, .. } = std::mem::replace(&mut self.io, Io::Idle) else {
            return;
        };
        tracing::debug!(?kind, "transaction request failed without an answer");
        match kind {
            Kind::FindTxnCoordinator | Kind::FindGroupCoordinator(_) => {}
            Kind::TxnOffsetCommit(_) => self.group_coordinator = None,
            Kind::InitProducerId | Kind::AddOffsets(_) => self.txn_coordinator = None,
            Kind::AddPartitions(parts) => {
                self.txn_coordinator = None;
                self.requeue_partitions(parts);
            }
            Kind::EndTxn => {
                self.txn_coordinator = None;
                let error = Error::Timeout {
                    what: "EndTxn",
                    after: self.cfg.request_timeout,
                };
                if let State::Ending { unknown, .. } = &mut self.state {
                    unknown.get_or_insert(error);
                }
                if self.end_deadline_passed(now) {
                    self.give_up_end(None);
                    return;
                }
            }
        }
        self.backoff(now, false);
        self.settle();
    }

    /// The answer to the request last polled. Answers that do not match it are ignored.
    pub fn handle_response(&mut self, now: Instant, response: TxnResponse) {
        self.last_now = now;
        let (kind, deadline) = match std::mem::replace(&mut self.io, Io::Idle) {
            Io::InFlight { kind, deadline } => (kind, deadline),
            other => {
                tracing::debug!(?response, "ignoring a transaction answer nothing waits for");
                self.io = other;
                return;
            }
        };
        match (kind, response) {
            (Kind::FindTxnCoordinator, TxnResponse::FindCoordinator(r)) => {
                self.on_find_coordinator(now, None, r)
            }
            (Kind::FindGroupCoordinator(g), TxnResponse::FindCoordinator(r)) => {
                self.on_find_coordinator(now, Some(g), r)
            }
            (Kind::InitProducerId, TxnResponse::InitProducerId(r)) => self.on_init(now, r),
            (Kind::AddPartitions(parts), TxnResponse::AddPartitionsToTxn(r)) => {
                self.on_add_partitions(now, parts, r)
            }
            (Kind::AddOffsets(g), TxnResponse::AddOffsetsToTxn(r)) => {
                self.on_add_offsets(now, g, r)
            }
            (Kind::TxnOffsetCommit(g), TxnResponse::TxnOffsetCommit(r)) => {
                self.on_txn_offset_commit(now, g, r)
            }
            (Kind::EndTxn, TxnResponse::EndTxn(r)) => self.on_end_txn(now, r),
            (kind, response) => {
                tracing::debug!(?response, "ignoring an unexpected transaction answer");
                self.io = Io::InFlight { kind, deadline };
            }
        }
        self.settle();
    }

    // ---------------------------------------------------------------------------------------
    // Internals

    /// Ends a transaction that reached the coordinator with nothing: no EndTxn is needed once
    /// no request of it is in flight and nothing of it is pending.
    fn settle(&mut self) {
        if self.txn_request_in_flight() {
            return;
        }
        if let State::Ending {
            txn, commit, bump, ..
        } = &self.state
        {
            if !txn.touched && txn.pending.is_empty() && txn.offsets.is_empty() {
                let (commit, bump) = (*commit, *bump);
                self.finish(commit, bump);
            }
        }
    }

    fn sending_partitions(&self) -> BTreeSet<TopicPartition> {
        match &self.io {
            Io::InFlight {
                kind: Kind::AddPartitions(p),
                ..
            } => p.clone(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether a request of the current transaction is in flight (its answer may touch it).
    fn txn_request_in_flight(&self) -> bool {
        matches!(
            &self.io,
            Io::InFlight {
                kind: Kind::AddPartitions(_) | Kind::AddOffsets(_) | Kind::TxnOffsetCommit(_),
                ..
            }
        )
    }

    fn txn_mut(&mut self) -> Option<&mut Txn> {
        match &mut self.state {
            State::InTransaction(txn)
            | State::AbortableError { txn, .. }
            | State::Ending { txn, .. } => Some(txn),
            _ => None,
        }
    }

    /// Whether requests of the transaction still make sense (not failing, not aborting).
    fn txn_live(&self) -> bool {
        matches!(
            self.state,
            State::InTransaction(_) | State::Ending { commit: true, .. }
        )
    }

    fn requeue_partitions(&mut self, parts: BTreeSet<TopicPartition>) {
        if self.txn_live() {
            if let Some(txn) = self.txn_mut() {
                txn.pending.extend(parts);
            }
        }
    }

    fn backoff(&mut self, now: Instant, concurrent: bool) {
        let at = if concurrent {
            self.concurrent.fail(now, &mut self.rng)
        } else {
            self.retry.fail(now, &mut self.rng)
        };
        self.io = Io::Wait(at);
    }

    fn succeed(&mut self) {
        self.retry.succeed();
        self.concurrent.succeed();
    }

    fn end_deadline_passed(&self, now: Instant) -> bool {
        matches!(
            &self.state,
            State::Ending {
                unknown: Some(_),
                deadline: Some(d),
                ..
            } if now >= *d
        )
    }

    /// Applies a retriable class; returns false for the others.
    fn retry_class(&mut self, now: Instant, class: &Class, group: Option<&str>) -> bool {
        match class {
            Class::Refind => {
                match group {
                    Some(_) => self.group_coordinator = None,
                    None => self.txn_coordinator = None,
                }
                self.backoff(now, false);
                true
            }
            Class::Retry => {
                self.backoff(now, false);
                true
            }
            Class::Concurrent => {
                self.backoff(now, true);
                true
            }
            _ => false,
        }
    }

    fn enter_fatal(&mut self, error: Error) {
        if matches!(self.state, State::FatalError(_)) {
            return;
        }
        tracing::warn!(%error, "transactional producer failed fatally");
        self.io = Io::Idle;
        self.state = State::FatalError(error.clone());
        self.events.push_back(TxnEvent::Fatal(error));
    }

    fn enter_abortable(&mut self, error: Error, bump_epoch: bool) {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::InTransaction(mut txn)
            | State::Ending {
                mut txn,
                commit: true,
                ..
            } => {
                tracing::debug!(%error, "transaction must be aborted");
                txn.pending.clear();
                txn.offsets.clear();
                self.state = State::AbortableError {
                    txn,
                    error: error.clone(),
                    bump: bump_epoch,
                };
                self.events.push_back(TxnEvent::AbortableError(error));
            }
            State::AbortableError { txn, error, bump } => {
                self.state = State::AbortableError {
                    txn,
                    error,
                    bump: bump || bump_epoch,
                };
            }
            State::Ending {
                txn,
                commit: false,
                bump,
                unknown,
                deadline,
                end_sent,
            } => {
                self.state = State::Ending {
                    txn,
                    commit: false,
                    bump: bump || bump_epoch,
                    unknown,
                    deadline,
                    end_sent,
                };
            }
            other => self.state = other,
        }
    }

    /// The transaction is over (`commit`: committed, else aborted). A bump still needed
    /// (transactions v1) runs first and reports the outcome when done.
    fn finish(&mut self, commit: bool, bump: bool) {
        let event = if commit {
            TxnEvent::Committed
        } else {
            TxnEvent::Aborted
        };
        if bump && !self.v2 {
            self.start_bump(Some(event));
        } else {
            self.state = State::Ready;
            self.events.push_back(event);
        }
    }

    /// InitProducerId with the current id and epoch (KIP-360), then `report` (if any) once it
    /// is done.
    fn start_bump(&mut self, report: Option<TxnEvent>) {
        if self.versions.init_producer_id < 3 {
            self.enter_fatal(
                BrokerError::new(ErrorCode::UNSUPPORTED_VERSION)
                    .with_group(&self.cfg.transactional_id)
                    .with_message("an epoch bump needs InitProducerId v3 or later")
                    .into(),
            );
            return;
        }
        self.state = State::Initializing {
            bump: self.producer,
            report,
        };
    }

    /// An EndTxn failed for good (the deadline passed with its answer unknown, or
    /// UNKNOWN_SERVER_ERROR): the outcome is reported at once, [`TxnEvent::OutcomeUnknown`] for
    /// a commit and [`TxnEvent::Aborted`] for an abort (the coordinator aborts what is still
    /// open: an EndTxn(commit) was never sent), and the epoch is bumped in the background with
    /// InitProducerId carrying the current id and epoch, which completes the transaction on
    /// the coordinator and fences any delayed request of ours (KAFKA-17754). A request still
    /// in flight is abandoned. `begin` waits for the bump (the manager is `Initializing`).
    fn give_up_end(&mut self, error: Option<Error>) {
        let State::Ending {
            commit, unknown, ..
        } = std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        let error = error.or(unknown).unwrap_or(Error::Timeout {
            what: "EndTxn (transaction.end.timeout.ms)",
            after: self.cfg.end_txn_timeout,
        });
        tracing::warn!(%error, commit, "EndTxn failed for good; bumping the epoch");
        if matches!(self.io, Io::InFlight { .. }) {
            self.io = Io::Idle;
        }
        self.events.push_back(if commit {
            TxnEvent::OutcomeUnknown { error }
        } else {
            TxnEvent::Aborted
        });
        self.start_bump(None);
    }

    /// KIP-588. The transaction coordinator refused our epoch (PRODUCER_FENCED,
    /// INVALID_PRODUCER_EPOCH) to an EndTxn(abort). Either another producer with our
    /// transactional id took over, or the coordinator aborted our transaction by itself
    /// because it outlived `transaction.timeout.ms` (it bumps the epoch when it does, for
    /// example during a coordinator outage). InitProducerId with the current id and epoch tells
    /// the two apart: after a timeout abort the coordinator accepts it (the epoch it bumped
    /// from is its last epoch) and answers the bumped epoch; after a takeover it answers
    /// PRODUCER_FENCED, which is then fatal. Recovered, the abort is reported.
    fn recover_epoch(&mut self, code: ErrorCode) {
        let fenced = Error::Fenced(BrokerError::new(code).with_group(&self.cfg.transactional_id));
        if self.versions.init_producer_id < 3 {
            // No way to ask: fencing it is.
            self.enter_fatal(fenced);
            return;
        }
        tracing::info!(
            ?code,
            "the coordinator refused our epoch; asking whether it aborted the transaction itself (KIP-588)"
        );
        if matches!(self.io, Io::InFlight { .. }) {
            self.io = Io::Idle;
        }
        self.start_bump(Some(TxnEvent::Aborted));
    }

    fn find(&self, group: Option<&str>) -> (Kind, Target, i16, TxnRequestBody) {
        let v = self.versions.find_coordinator;
        let (key, key_type, kind) = match group {
            Some(g) => (g, KEY_TYPE_GROUP, Kind::FindGroupCoordinator(g.to_owned())),
            None => (
                self.cfg.transactional_id.as_str(),
                KEY_TYPE_TRANSACTION,
                Kind::FindTxnCoordinator,
            ),
        };
        let mut request = FindCoordinatorRequest {
            key_type,
            ..Default::default()
        };
        if v >= 4 {
            request.coordinator_keys = vec![ks(key)];
        } else {
            request.key = ks(key);
        }
        (
            kind,
            Target::AnyBroker,
            v,
            TxnRequestBody::FindCoordinator(request),
        )
    }

    /// The request the current state needs next, if any.
    fn next_request(&mut self) -> Option<(Kind, Target, i16, TxnRequestBody)> {
        let txn_id = ks(&self.cfg.transactional_id);
        let (pid, epoch) = self.producer.unwrap_or((-1, -1));
        let v = self.versions;
        // What the current state needs sent next, if anything.
        enum Want {
            Init(Option<(i64, i16)>),
            AddPartitions(BTreeSet<TopicPartition>),
            AddOffsets(String),
            Commit(OffsetsTask),
            End(bool),
        }
        let ending = match &self.state {
            State::Ending { commit, .. } => Some(*commit),
            _ => None,
        };
        let want = match &mut self.state {
            State::Uninitialized
            | State::Ready
            | State::FatalError(_)
            | State::AbortableError { .. } => return None,
            State::Initializing { bump, .. } => Want::Init(*bump),
            State::InTransaction(txn) | State::Ending { txn, .. } => {
                if !txn.pending.is_empty() {
                    Want::AddPartitions(std::mem::take(&mut txn.pending))
                } else if let Some(task) = txn.offsets.front() {
                    if task.needs_add {
                        Want::AddOffsets(task.group.group_id.clone())
                    } else {
                        Want::Commit(task.clone())
                    }
                } else {
                    match ending {
                        Some(commit) if txn.touched && txn.flushed => Want::End(commit),
                        _ => return None,
                    }
                }
            }
        };
        // Requests to the group coordinator.
        if let Want::Commit(task) = &want {
            let group = task.group.group_id.as_str();
            let coordinator = match &self.group_coordinator {
                Some((g, c)) if g == group => c.clone(),
                _ => return Some(self.find(Some(group))),
            };
            if self.v2 {
                // TxnOffsetCommit v5+ adds the group to the transaction itself.
                if let Some(txn) = self.txn_mut() {
                    txn.touched = true;
                }
            }
            let version = v.txn_offset_commit.min(MAX_TXN_OFFSET_COMMIT);
            let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
            for o in task.offsets.values() {
                topics.entry(o.partition.topic.as_str()).or_default().push(
                    TxnOffsetCommitRequestPartition {
                        partition_index: o.partition.partition,
                        committed_offset: o.offset,
                        committed_leader_epoch: o.leader_epoch,
                        committed_metadata: Some(o.metadata.as_deref().map(ks).unwrap_or_default()),
                        ..Default::default()
                    },
                );
            }
            let mut request = TxnOffsetCommitRequest {
                transactional_id: txn_id,
                group_id: ks(group),
                producer_id: pid,
                producer_epoch: epoch,
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| TxnOffsetCommitRequestTopic {
                        name: ks(name),
                        partitions,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            if version >= 3 {
                // KIP-447: the group coordinator fences offsets of a stale member.
                request.generation_id_or_member_epoch = task.group.generation_id;
                request.member_id = ks(&task.group.member_id);
                request.group_instance_id = task.group.instance_id.as_deref().map(ks);
            }
            return Some((
                Kind::TxnOffsetCommit(group.to_owned()),
                Target::GroupCoordinator(coordinator),
                version,
                TxnRequestBody::TxnOffsetCommit(request),
            ));
        }
        // Requests to the transaction coordinator.
        let Some(coordinator) = self.txn_coordinator.clone() else {
            if let Want::AddPartitions(parts) = want {
                self.requeue_partitions(parts);
            }
            return Some(self.find(None));
        };
        let target = Target::TransactionCoordinator(coordinator);
        Some(match want {
            Want::Init(bump) => {
                let mut request = InitProducerIdRequest {
                    transactional_id: Some(txn_id),
                    transaction_timeout_ms: millis(self.cfg.transaction_timeout),
                    producer_id: -1,
                    producer_epoch: -1,
                    ..Default::default()
                };
                if let Some((id, e)) = bump {
                    request.producer_id = id;
                    request.producer_epoch = e;
                }
                (
                    Kind::InitProducerId,
                    target,
                    v.init_producer_id,
                    TxnRequestBody::InitProducerId(request),
                )
            }
            Want::AddPartitions(parts) => {
                let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for tp in &parts {
                    topics
                        .entry(tp.topic.as_str())
                        .or_default()
                        .push(tp.partition);
                }
                let request = AddPartitionsToTxnRequest {
                    v3_and_below_transactional_id: txn_id,
                    v3_and_below_producer_id: pid,
                    v3_and_below_producer_epoch: epoch,
                    v3_and_below_topics: topics
                        .into_iter()
                        .map(|(name, partitions)| AddPartitionsToTxnTopic {
                            name: ks(name),
                            partitions,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                (
                    Kind::AddPartitions(parts),
                    target,
                    v.add_partitions_to_txn.min(MAX_CLIENT_ADD_PARTITIONS),
                    TxnRequestBody::AddPartitionsToTxn(request),
                )
            }
            Want::AddOffsets(group) => {
                let request = AddOffsetsToTxnRequest {
                    transactional_id: txn_id,
                    producer_id: pid,
                    producer_epoch: epoch,
                    group_id: ks(&group),
                    ..Default::default()
                };
                (
                    Kind::AddOffsets(group),
                    target,
                    v.add_offsets_to_txn,
                    TxnRequestBody::AddOffsetsToTxn(request),
                )
            }
            Want::End(commit) => {
                let now = self.last_now;
                let timeout = self.cfg.end_txn_timeout;
                if let State::Ending {
                    deadline, end_sent, ..
                } = &mut self.state
                {
                    deadline.get_or_insert(now + timeout);
                    *end_sent = true;
                }
                let request = EndTxnRequest {
                    transactional_id: txn_id,
                    producer_id: pid,
                    producer_epoch: epoch,
                    committed: commit,
                    ..Default::default()
                };
                (
                    Kind::EndTxn,
                    target,
                    v.end_txn,
                    TxnRequestBody::EndTxn(request),
                )
            }
            Want::Commit(_) => return None,
        })
    }

    fn on_find_coordinator(
        &mut self,
        now: Instant,
        group: Option<String>,
        r: FindCoordinatorResponse,
    ) {
        let key = group
            .as_deref()
            .unwrap_or(self.cfg.transactional_id.as_str());
        let (code, node_id, host, port) =
            crate::proto::coordinator_in(&r, self.versions.find_coordinator, key);
        if code == ErrorCode::NONE && node_id >= 0 {
            let c = Coordinator {
                node_id,
                host,
                port,
            };
            tracing::debug!(?c, group, "coordinator found");
            match group {
                Some(g) => self.group_coordinator = Some((g, c)),
                None => self.txn_coordinator = Some(c),
            }
            return;
        }
        let code = if code == ErrorCode::NONE {
            ErrorCode::COORDINATOR_NOT_AVAILABLE
        } else {
            code
        };
        match classify(code, key, group.is_none()) {
            Class::Ok => {}
            Class::Refind | Class::Retry | Class::Concurrent => self.backoff(now, false),
            Class::Abortable { error, bump } => self.enter_abortable(error, bump),
            Class::Fatal(e) => self.enter_fatal(e),
        }
    }

    fn on_init(&mut self, now: Instant, r: InitProducerIdResponse) {
        let class = classify(ErrorCode(r.error_code), &self.cfg.transactional_id, true);
        if self.retry_class(now, &class, None) {
            return;
        }
        let State::Initializing { report, .. } = std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        match class {
            Class::Ok => {
                self.succeed();
                let (producer_id, epoch) = (r.producer_id, r.producer_epoch);
                let first = self.producer.is_none();
                self.producer = Some((producer_id, epoch));
                if first {
                    self.events
                        .push_back(TxnEvent::Initialized { producer_id, epoch });
                } else {
                    self.events
                        .push_back(TxnEvent::EpochBumped { producer_id, epoch });
                }
                if let Some(event) = report {
                    self.events.push_back(event);
                }
            }
            Class::Abortable { error, .. } | Class::Fatal(error) => self.enter_fatal(error),
            Class::Refind | Class::Retry | Class::Concurrent => {}
        }
    }

    fn on_add_partitions(
        &mut self,
        now: Instant,
        parts: BTreeSet<TopicPartition>,
        r: AddPartitionsToTxnResponse,
    ) {
        let txn_id = self.cfg.transactional_id.clone();
        let live = self.txn_live();
        let mut codes: BTreeMap<TopicPartition, ErrorCode> = BTreeMap::new();
        for t in &r.results_by_topic_v3_and_below {
            for p in &t.results_by_partition {
                codes.insert(
                    TopicPartition::new(t.name.as_str(), p.partition_index),
                    ErrorCode(p.partition_error_code),
                );
            }
        }
        let top = ErrorCode(r.error_code);
        let mut class = Class::Ok;
        let mut retry = BTreeSet::new();
        for tp in parts {
            let code = if top != ErrorCode::NONE {
                top
            } else {
                // A partition missing from the answer was not added: try it again.
                codes
                    .get(&tp)
                    .copied()
                    .unwrap_or(ErrorCode::OPERATION_NOT_ATTEMPTED)
            };
            let c = match code {
                ErrorCode::NONE => {
                    if let Some(txn) = self.txn_mut() {
                        txn.touched = true;
                        txn.added.insert(tp);
                    }
                    continue;
                }
                // Not tried because another partition failed: follows that one's fate.
                ErrorCode::OPERATION_NOT_ATTEMPTED => Class::Retry,
                code => match classify(code, &txn_id, false) {
                    c @ Class::Abortable { .. } if epoch_refused(code) => c,
                    Class::Abortable { bump, .. } => Class::Abortable {
                        error: BrokerError::new(code)
                            .with_group(txn_id.clone())
                            .with_partition(tp.topic.clone(), tp.partition)
                            .into(),
                        bump,
                    },
                    other => other,
                },
            };
            retry.insert(tp);
            class = worst(class, c);
        }
        match class {
            Class::Ok => self.succeed(),
            Class::Fatal(e) => self.enter_fatal(e),
            Class::Abortable { error, bump } => self.enter_abortable(error, bump),
            other => {
                if live {
                    self.requeue_partitions(retry);
                }
                self.retry_class(now, &other, None);
            }
        }
    }

    fn on_add_offsets(&mut self, now: Instant, group: String, r: AddOffsetsToTxnResponse) {
        let class = classify(ErrorCode(r.error_code), &self.cfg.transactional_id, false);
        if self.retry_class(now, &class, None) {
            return;
        }
        match class {
            Class::Ok => {
                self.succeed();
                if let Some(txn) = self.txn_mut() {
                    txn.touched = true;
                    txn.groups.insert(group.clone());
                    for task in txn.offsets.iter_mut() {
                        if task.group.group_id == group {
                            task.needs_add = false;
                        }
                    }
                }
            }
            Class::Abortable { error, bump } => self.enter_abortable(error, bump),
            Class::Fatal(e) => self.enter_fatal(e),
            Class::Refind | Class::Retry | Class::Concurrent => {}
        }
    }

    fn on_txn_offset_commit(&mut self, now: Instant, group: String, r: TxnOffsetCommitResponse) {
        let txn_id = self.cfg.transactional_id.clone();
        let mut class = Class::Ok;
        let mut done = Vec::new();
        for t in &r.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                let code = ErrorCode(p.error_code);
                let c = match code {
                    ErrorCode::NONE => {
                        done.push(tp);
                        continue;
                    }
                    // The group coordinator moved or did not answer in time.
                    ErrorCode::REQUEST_TIMED_OUT => Class::Refind,
                    code => match classify(code, &txn_id, false) {
                        c @ (Class::Retry | Class::Concurrent | Class::Refind) => {
                            tracing::debug!(%tp, ?code, "TxnOffsetCommit partition will be retried");
                            c
                        }
                        c @ Class::Abortable { .. } if epoch_refused(code) => c,
                        Class::Abortable { bump, .. } => Class::Abortable {
                            error: BrokerError::new(code)
                                .with_group(group.clone())
                                .with_partition(tp.topic.clone(), tp.partition)
                                .into(),
                            bump,
                        },
                        other => other,
                    },
                };
                class = worst(class, c);
            }
        }
        let mut finished = false;
        if let Some(txn) = self.txn_mut() {
            if let Some(task) = txn.offsets.front_mut() {
                if task.group.group_id == group {
                    for tp in &done {
                        task.offsets.remove(tp);
                    }
                    if task.offsets.is_empty() {
                        txn.offsets.pop_front();
                        finished = true;
                    }
                }
            }
        }
        match class {
            Class::Fatal(e) => self.enter_fatal(e),
            Class::Abortable { error, bump } => self.enter_abortable(error, bump),
            Class::Ok if !finished && self.txn_live() => {
                // Partitions we asked for are missing from the answer: ask again.
                self.backoff(now, false);
            }
            Class::Ok => {
                self.succeed();
                if finished {
                    self.events
                        .push_back(TxnEvent::OffsetsCommitted { group_id: group });
                }
            }
            other => {
                self.retry_class(now, &other, Some(&group));
            }
        }
    }

    fn on_end_txn(&mut self, now: Instant, r: EndTxnResponse) {
        let code = ErrorCode(r.error_code);
        let class = classify(code, &self.cfg.transactional_id, true);
        let State::Ending {
            commit,
            bump,
            unknown,
            ..
        } = &self.state
        else {
            return;
        };
        let (commit, bump, unknown) = (*commit, *bump, unknown.is_some());
        // KIP-588: the coordinator no longer holds the transaction at our epoch. It aborted it
        // by itself (it outlived transaction.timeout.ms; with transactions v2 a commit then gets
        // INVALID_TXN_STATE, with v1 PRODUCER_FENCED), or another producer took over.
        if epoch_refused(code) || (commit && code == ErrorCode::INVALID_TXN_STATE) {
            if !commit {
                self.recover_epoch(code);
            } else if unknown && code != ErrorCode::INVALID_TXN_STATE {
                // An earlier EndTxn(commit) went unanswered and may have committed before a
                // takeover: the outcome is unknown. The bump asks the coordinator whether we
                // are fenced.
                self.give_up_end(Some(refused_error(
                    code,
                    &self.cfg.transactional_id,
                    "EndTxn(commit)",
                )));
            } else {
                // Refused, so not committed: the caller aborts, and the abort finds out
                // whether we are fenced (`recover_epoch`).
                let error = refused_error(code, &self.cfg.transactional_id, "EndTxn(commit)");
                self.enter_abortable(error, true);
            }
            return;
        }
        match class {
            Class::Ok => {
                self.succeed();
                if self.v2 && r.producer_id >= 0 && r.producer_epoch >= 0 {
                    // KIP-890: the coordinator bumped the epoch (or, at its end, gave a new
                    // producer id) to end this transaction; the next one uses it.
                    let (producer_id, epoch) = (r.producer_id, r.producer_epoch);
                    if self.producer != Some((producer_id, epoch)) {
                        self.producer = Some((producer_id, epoch));
                        self.events
                            .push_back(TxnEvent::EpochBumped { producer_id, epoch });
                    }
                }
                self.finish(commit, bump);
            }
            Class::Refind | Class::Retry | Class::Concurrent => {
                if self.end_deadline_passed(now) {
                    self.give_up_end(Some(BrokerError::new(code).into()));
                } else {
                    self.retry_class(now, &class, None);
                }
            }
            Class::Fatal(e) if code == ErrorCode::UNKNOWN_SERVER_ERROR || code.name().is_none() => {
                // The coordinator may or may not have written the outcome.
                self.give_up_end(Some(e));
            }
            Class::Fatal(e) => self.enter_fatal(e),
            Class::Abortable { error, bump } if commit => {
                self.enter_abortable(error, bump);
            }
            Class::Abortable { .. } => {
                // An abort the coordinator cannot take as is (UNKNOWN_PRODUCER_ID,
                // INVALID_PRODUCER_ID_MAPPING): the bump aborts it.
                if matches!(self.io, Io::InFlight { .. }) {
                    self.io = Io::Idle;
                }
                self.start_bump(Some(TxnEvent::Aborted));
            }
        }
    }
}

#[cfg(test)]
mod tests;
