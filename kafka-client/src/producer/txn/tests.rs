//! Deterministic tests of the transaction manager: no broker, no sleeps, a virtual clock.

use std::time::{Duration, Instant};

use kafka_wire::messages::add_partitions_to_txn::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_wire::messages::find_coordinator::Coordinator as WireCoordinator;
use kafka_wire::messages::txn_offset_commit::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_wire::messages::{
    AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, EndTxnResponse, FindCoordinatorResponse,
    InitProducerIdResponse, TxnOffsetCommitResponse,
};
use kafka_wire::{ErrorCode, KString};

use super::*;

const TXN_ID: &str = "txn-1";
const PID: i64 = 7;

fn v1() -> TxnVersions {
    TxnVersions {
        end_txn: 4,
        produce: 11,
        txn_offset_commit: 4,
        ..TxnVersions::default()
    }
}

fn v2() -> TxnVersions {
    TxnVersions::default()
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("out", p)
}

struct H {
    m: TxnManager,
    now: Instant,
}

impl H {
    fn new(versions: TxnVersions) -> H {
        H::with_config(TxnConfig::new(TXN_ID), versions)
    }

    fn with_config(cfg: TxnConfig, versions: TxnVersions) -> H {
        let now = Instant::now();
        H {
            m: TxnManager::new(cfg, versions, 42, now),
            now,
        }
    }

    /// A manager that is initialized with (PID, 0) and knows coordinator 1.
    fn ready(versions: TxnVersions) -> H {
        let mut h = H::new(versions);
        h.m.init(h.now).expect("init");
        h.find_txn(1);
        let r = h.req();
        assert!(matches!(r.body, TxnRequestBody::InitProducerId(_)));
        h.answer(TxnResponse::InitProducerId(init_ok(PID, 0)));
        let ev = h.events();
        assert!(
            matches!(
                ev.as_slice(),
                [TxnEvent::Initialized {
                    producer_id: PID,
                    epoch: 0
                }]
            ),
            "{ev:?}"
        );
        h
    }

    fn req(&mut self) -> TxnRequest {
        self.m
            .poll_request()
            .unwrap_or_else(|| panic!("expected a request in state {}", self.m.state_name()))
    }

    fn no_req(&mut self) {
        if let Some(r) = self.m.poll_request() {
            panic!("expected no request, got {r:?}");
        }
    }

    fn answer(&mut self, r: TxnResponse) {
        self.m.handle_response(self.now, r);
    }

    fn events(&mut self) -> Vec<TxnEvent> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.m.handle_timeout(self.now);
    }

    /// Waits out the pending backoff; returns how long it was.
    fn wait_backoff(&mut self) -> Duration {
        let at = self.m.poll_timeout().expect("a backoff is pending");
        let d = at - self.now;
        self.advance(d);
        d
    }

    /// Expects FindCoordinator for the transactional id and answers it with `node`.
    fn find_txn(&mut self, node: i32) {
        let r = self.req();
        assert_eq!(r.target, Target::AnyBroker);
        let TxnRequestBody::FindCoordinator(f) = &r.body else {
            panic!("expected FindCoordinator, got {r:?}");
        };
        assert_eq!(f.key_type, 1, "transaction key type");
        assert_eq!(f.coordinator_keys, vec![KString::from(TXN_ID)]);
        self.answer(TxnResponse::FindCoordinator(find_ok(TXN_ID, node)));
    }

    /// Expects EndTxn and returns (committed, producer id, epoch).
    fn end_txn(&mut self) -> (bool, i64, i16, i16) {
        let r = self.req();
        let TxnRequestBody::EndTxn(e) = &r.body else {
            panic!("expected EndTxn, got {r:?}");
        };
        assert!(matches!(r.target, Target::TransactionCoordinator(_)));
        (e.committed, e.producer_id, e.producer_epoch, r.version)
    }
}

fn coord(node: i32) -> Coordinator {
    Coordinator {
        node_id: node,
        host: format!("b{node}"),
        port: 9092,
    }
}

fn find_ok(key: &str, node: i32) -> FindCoordinatorResponse {
    FindCoordinatorResponse {
        coordinators: vec![WireCoordinator {
            key: KString::from(key),
            node_id: node,
            host: KString::from(format!("b{node}")),
            port: 9092,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn init_ok(pid: i64, epoch: i16) -> InitProducerIdResponse {
    InitProducerIdResponse {
        producer_id: pid,
        producer_epoch: epoch,
        ..Default::default()
    }
}

fn init_err(code: ErrorCode) -> InitProducerIdResponse {
    InitProducerIdResponse {
        error_code: code.0,
        ..Default::default()
    }
}

fn add_parts_resp(parts: &[(TopicPartition, ErrorCode)]) -> AddPartitionsToTxnResponse {
    AddPartitionsToTxnResponse {
        results_by_topic_v3_and_below: parts
            .iter()
            .map(|(tp, code)| AddPartitionsToTxnTopicResult {
                name: KString::from(tp.topic.as_str()),
                results_by_partition: vec![AddPartitionsToTxnPartitionResult {
                    partition_index: tp.partition,
                    partition_error_code: code.0,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn end_ok() -> EndTxnResponse {
    EndTxnResponse::default()
}

fn end_err(code: ErrorCode) -> EndTxnResponse {
    EndTxnResponse {
        error_code: code.0,
        ..Default::default()
    }
}

/// The partitions of an AddPartitionsToTxn request.
fn added(r: &TxnRequest) -> Vec<TopicPartition> {
    let TxnRequestBody::AddPartitionsToTxn(a) = &r.body else {
        panic!("expected AddPartitionsToTxn, got {r:?}");
    };
    assert!(
        r.version <= 3,
        "clients send AddPartitionsToTxn v3 or lower"
    );
    assert_eq!(a.v3_and_below_transactional_id.as_str(), TXN_ID);
    a.v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| TopicPartition::new(t.name.as_str(), *p))
        })
        .collect()
}

fn is_fenced(e: &Error) -> bool {
    matches!(e, Error::Fenced(_))
}

#[test]
fn init_happy_path() {
    let mut h = H::new(v1());
    assert_eq!(h.m.state_name(), "Uninitialized");
    h.no_req();
    h.m.init(h.now).unwrap();
    assert_eq!(h.m.state_name(), "Initializing");
    h.find_txn(1);
    assert_eq!(h.m.coordinator(), Some(&coord(1)));
    let r = h.req();
    assert_eq!(r.target, Target::TransactionCoordinator(coord(1)));
    let TxnRequestBody::InitProducerId(i) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(i.transactional_id.as_deref(), Some(TXN_ID));
    assert_eq!(i.transaction_timeout_ms, 60_000);
    assert_eq!((i.producer_id, i.producer_epoch), (-1, -1));
    h.no_req();
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 3)));
    let ev = h.events();
    assert!(
        matches!(
            ev.as_slice(),
            [TxnEvent::Initialized {
                producer_id: PID,
                epoch: 3
            }]
        ),
        "{ev:?}"
    );
    assert_eq!(h.m.state_name(), "Ready");
    assert_eq!(h.m.producer_id(), Some((PID, 3)));
    h.no_req();
    assert!(h.m.init(h.now).is_err(), "init runs once");
}

#[test]
fn coordinator_moves_during_init() {
    let mut h = H::new(v1());
    h.m.init(h.now).unwrap();
    h.find_txn(1);
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::NOT_COORDINATOR,
    )));
    h.no_req();
    assert!(h.m.coordinator().is_none(), "NOT_COORDINATOR forgets it");
    h.wait_backoff();
    h.find_txn(2);
    let r = h.req();
    assert_eq!(r.target, Target::TransactionCoordinator(coord(2)));
    // The connection to the new coordinator breaks: find it again.
    h.m.handle_transport_error(h.now);
    h.no_req();
    h.wait_backoff();
    h.find_txn(3);
    let r = h.req();
    assert_eq!(r.target, Target::TransactionCoordinator(coord(3)));
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::COORDINATOR_NOT_AVAILABLE,
    )));
    h.wait_backoff();
    h.find_txn(3);
    let r = h.req();
    assert!(matches!(r.body, TxnRequestBody::InitProducerId(_)));
    // The request times out: treated like a broken connection.
    let deadline = h.m.poll_timeout().expect("request deadline");
    assert_eq!(deadline - h.now, Duration::from_secs(30));
    h.advance(Duration::from_secs(30));
    h.no_req();
    h.wait_backoff();
    h.find_txn(1);
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 0)));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::Initialized { .. }]
    ));
}

#[test]
fn concurrent_transactions_retried_with_backoff() {
    let mut h = H::new(v1());
    h.m.init(h.now).unwrap();
    h.find_txn(1);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let r = h.req();
        assert_eq!(r.target, Target::TransactionCoordinator(coord(1)));
        h.answer(TxnResponse::InitProducerId(init_err(
            ErrorCode::CONCURRENT_TRANSACTIONS,
        )));
        h.no_req();
        let at = h.m.poll_timeout().expect("backoff");
        delays.push(at - h.now);
        // Not a moment early.
        h.advance(at - h.now - Duration::from_millis(1));
        h.no_req();
        h.wait_backoff();
    }
    // 20 ms growing (jitter 20 %), with the coordinator kept.
    assert!(
        delays[0] >= Duration::from_millis(16) && delays[0] <= Duration::from_millis(24),
        "{delays:?}"
    );
    assert!(delays[1] > delays[0] && delays[2] > delays[1], "{delays:?}");
    assert!(delays[2] <= Duration::from_millis(96), "{delays:?}");
    // COORDINATOR_LOAD_IN_PROGRESS uses the ordinary retry backoff (100 ms).
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
    )));
    let d = h.wait_backoff();
    assert!(d >= Duration::from_millis(80), "{d:?}");
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 0)));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::Initialized { .. }]
    ));
}

fn assert_everything_fails(h: &mut H, check: fn(&Error) -> bool) {
    let now = h.now;
    let errs = [
        h.m.init(now).unwrap_err(),
        h.m.begin().unwrap_err(),
        h.m.add_partition(&tp(0)).unwrap_err(),
        h.m.commit(now).unwrap_err(),
        h.m.abort(now).unwrap_err(),
        h.m.add_offsets(
            now,
            GroupMetadata {
                group_id: "g".into(),
                generation_id: 1,
                member_id: "m".into(),
                instance_id: None,
            },
            vec![],
        )
        .unwrap_err(),
    ];
    for e in &errs {
        assert!(check(e), "{e:?}");
    }
    assert!(check(h.m.fatal().expect("fatal error kept")));
    assert_eq!(h.m.state_name(), "FatalError");
    h.no_req();
    assert!(!h.m.may_send(&tp(0)));
}

/// Whether `e` is the abortable error of a request whose epoch the coordinator refused.
fn is_refused(e: &Error) -> bool {
    e.broker_code() == Some(ErrorCode::TRANSACTION_ABORTABLE) && !e.is_fatal()
}

#[test]
fn fencing_is_fatal_and_sticks() {
    // Refused by AddPartitionsToTxn in a transaction: the transaction fails, and the abort
    // asks the coordinator (KIP-588), which confirms the fencing.
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    let _ = h.req();
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::PRODUCER_FENCED,
    )])));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)] if is_refused(e)),
        "{ev:?}"
    );
    assert!(h.m.commit(h.now).is_err());
    h.m.abort(h.now).unwrap();
    // Nothing was added, so no EndTxn: the bump asks at once.
    let r = h.req();
    assert!(
        matches!(&r.body, TxnRequestBody::InitProducerId(i) if (i.producer_id, i.producer_epoch) == (PID, 0)),
        "{r:?}"
    );
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::PRODUCER_FENCED,
    )));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::Fatal(e)] if is_fenced(e)),
        "{ev:?}"
    );
    assert_everything_fails(&mut h, is_fenced);
    h.set_flushed_and_settle();
    assert!(h.events().is_empty(), "one Fatal event only");

    // INVALID_PRODUCER_EPOCH from the coordinator during init: fenced too.
    let mut h = H::new(v1());
    h.m.init(h.now).unwrap();
    h.find_txn(1);
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::INVALID_PRODUCER_EPOCH,
    )));
    assert!(matches!(h.events().as_slice(), [TxnEvent::Fatal(e)] if is_fenced(e)));
    assert_everything_fails(&mut h, is_fenced);

    // An authorization failure of the transactional id is fatal, not fencing.
    let mut h = H::new(v1());
    h.m.init(h.now).unwrap();
    h.find_txn(1);
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    )));
    fn auth(e: &Error) -> bool {
        e.broker_code() == Some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            && !matches!(e, Error::Fenced(_))
    }
    assert!(matches!(h.events().as_slice(), [TxnEvent::Fatal(e)] if auth(e)));
    assert_everything_fails(&mut h, auth);

    // PRODUCER_FENCED on EndTxn(commit): never committed; the abort's EndTxn is refused too,
    // and the coordinator refuses the KIP-588 bump: fenced for good.
    let mut h = H::ready(v2());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    h.m.commit(h.now).unwrap();
    h.m.set_flushed(h.now);
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)] if is_refused(e)),
        "{ev:?}"
    );
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let (committed, ..) = h.end_txn();
    assert!(!committed);
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    assert!(h.events().is_empty());
    assert!(matches!(&h.req().body, TxnRequestBody::InitProducerId(i) if i.producer_epoch == 0));
    // Kafka answers InitProducerId below v4 with INVALID_PRODUCER_EPOCH for fencing.
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::INVALID_PRODUCER_EPOCH,
    )));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::Fatal(e)] if is_fenced(e)),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, TxnEvent::Committed)));
    assert_everything_fails(&mut h, is_fenced);
}

impl H {
    fn set_flushed_and_settle(&mut self) {
        self.m.set_flushed(self.now);
        self.no_req();
    }
}

#[test]
fn v1_adds_each_partition_once_per_transaction_then_commits() {
    let mut h = H::ready(v1());
    assert!(!h.m.is_v2());
    assert!(h.m.add_partition(&tp(0)).is_err(), "no transaction yet");
    for round in 0..2 {
        h.m.begin().unwrap();
        assert!(h.m.begin().is_err(), "one transaction at a time");
        h.m.add_partition(&tp(0)).unwrap();
        h.m.add_partition(&tp(1)).unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        assert!(!h.m.may_send(&tp(0)), "not before AddPartitionsToTxn");
        let r = h.req();
        assert_eq!(r.target, Target::TransactionCoordinator(coord(1)));
        assert_eq!(added(&r), vec![tp(0), tp(1)], "round {round}");
        let TxnRequestBody::AddPartitionsToTxn(a) = &r.body else {
            unreachable!()
        };
        assert_eq!(
            (a.v3_and_below_producer_id, a.v3_and_below_producer_epoch),
            (PID, 0)
        );
        h.no_req();
        // Added while the first request is in flight: goes in the next one.
        h.m.add_partition(&tp(2)).unwrap();
        h.m.add_partition(&tp(1)).unwrap();
        h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[
            (tp(0), ErrorCode::NONE),
            (tp(1), ErrorCode::NONE),
        ])));
        assert!(h.m.may_send(&tp(0)) && h.m.may_send(&tp(1)));
        assert!(!h.m.may_send(&tp(2)));
        let r = h.req();
        assert_eq!(added(&r), vec![tp(2)]);
        // CONCURRENT_TRANSACTIONS on an add: retried after a short backoff.
        h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
            tp(2),
            ErrorCode::CONCURRENT_TRANSACTIONS,
        )])));
        h.no_req();
        h.wait_backoff();
        let r = h.req();
        assert_eq!(added(&r), vec![tp(2)]);
        h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
            tp(2),
            ErrorCode::NONE,
        )])));
        assert!(h.m.may_send(&tp(2)));
        h.m.add_partition(&tp(2)).unwrap();
        h.no_req();
        h.m.commit(h.now).unwrap();
        assert_eq!(h.m.state_name(), "Committing");
        assert!(
            h.m.add_partition(&tp(3)).is_err(),
            "no adds while committing"
        );
        assert!(h.m.awaiting_flush());
        h.no_req();
        assert!(h.events().is_empty());
        h.m.set_flushed(h.now);
        let (committed, pid, epoch, version) = h.end_txn();
        assert!(committed);
        assert_eq!((pid, epoch, version), (PID, 0, 4));
        h.no_req();
        assert!(h.events().is_empty(), "nothing before the answer");
        h.answer(TxnResponse::EndTxn(end_ok()));
        let ev = h.events();
        assert!(matches!(ev.as_slice(), [TxnEvent::Committed]), "{ev:?}");
        assert_eq!(h.m.state_name(), "Ready");
        assert_eq!(h.m.producer_id(), Some((PID, 0)), "v1 keeps the epoch");
        assert!(!h.m.may_send(&tp(0)), "outside a transaction");
    }
}

#[test]
fn v2_sends_no_add_partitions_and_adopts_the_epoch_from_end_txn() {
    let mut h = H::ready(v2());
    assert!(h.m.is_v2());
    for epoch in 0..3i16 {
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        h.m.add_partition(&tp(1)).unwrap();
        assert!(h.m.may_send(&tp(0)) && h.m.may_send(&tp(1)));
        h.no_req();
        h.m.commit(h.now).unwrap();
        h.no_req();
        h.m.set_flushed(h.now);
        let (committed, pid, sent_epoch, version) = h.end_txn();
        assert!(committed);
        assert_eq!((pid, sent_epoch, version), (PID, epoch, 5));
        h.answer(TxnResponse::EndTxn(EndTxnResponse {
            producer_id: PID,
            producer_epoch: epoch + 1,
            ..Default::default()
        }));
        let ev = h.events();
        assert!(
            matches!(
                ev.as_slice(),
                [TxnEvent::EpochBumped { producer_id: PID, epoch: e }, TxnEvent::Committed]
                    if *e == epoch + 1
            ),
            "{ev:?}"
        );
        assert_eq!(h.m.producer_id(), Some((PID, epoch + 1)));
    }
    // An abort adopts the new epoch as well; a new producer id (epoch exhausted) too.
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let (committed, _, epoch, _) = h.end_txn();
    assert!(!committed);
    assert_eq!(epoch, 3);
    h.answer(TxnResponse::EndTxn(EndTxnResponse {
        producer_id: PID + 1,
        producer_epoch: 0,
        ..Default::default()
    }));
    assert!(matches!(
        h.events().as_slice(),
        [
            TxnEvent::EpochBumped {
                producer_id: 8,
                epoch: 0
            },
            TxnEvent::Aborted
        ]
    ));
}

#[test]
fn empty_transactions_send_nothing() {
    for versions in [v1(), v2()] {
        let mut h = H::ready(versions);
        h.m.begin().unwrap();
        h.m.commit(h.now).unwrap();
        assert!(matches!(h.events().as_slice(), [TxnEvent::Committed]));
        h.no_req();
        assert_eq!(h.m.state_name(), "Ready");
        h.m.begin().unwrap();
        h.m.abort(h.now).unwrap();
        assert!(matches!(h.events().as_slice(), [TxnEvent::Aborted]));
        h.no_req();
        // Offsets with no entries add nothing either.
        h.m.begin().unwrap();
        h.m.add_offsets(h.now, group(), vec![]).unwrap();
        h.m.commit(h.now).unwrap();
        assert!(matches!(
            h.events().as_slice(),
            [TxnEvent::OffsetsCommitted { .. }, TxnEvent::Committed]
        ));
        h.no_req();
        assert!(h.m.commit(h.now).is_err(), "no transaction to commit");
    }
    // v1: a partition added then dropped by an abort before its AddPartitionsToTxn went out.
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    h.m.abort(h.now).unwrap();
    assert!(matches!(h.events().as_slice(), [TxnEvent::Aborted]));
    h.no_req();
}

#[test]
fn abort_after_an_abortable_error() {
    for versions in [v1(), v2()] {
        let mut h = H::ready(versions);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        if !h.m.is_v2() {
            let _ = h.req();
            h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
                tp(0),
                ErrorCode::NONE,
            )])));
        }
        assert!(h.m.may_send(&tp(0)));
        let failed: Error = BrokerError::new(ErrorCode::MESSAGE_TOO_LARGE)
            .with_partition("out", 0)
            .into();
        h.m.abortable_error(h.now, failed, false);
        let ev = h.events();
        assert!(
            matches!(ev.as_slice(), [TxnEvent::AbortableError(e)]
                if e.broker_code() == Some(ErrorCode::MESSAGE_TOO_LARGE)),
            "{ev:?}"
        );
        assert_eq!(h.m.state_name(), "AbortableError");
        assert!(!h.m.may_send(&tp(0)), "nothing more is sent");
        assert!(h.m.add_partition(&tp(1)).is_err());
        h.no_req();
        h.m.abort(h.now).unwrap();
        assert_eq!(h.m.state_name(), "Aborting");
        h.no_req();
        h.m.set_flushed(h.now);
        let (committed, _, _, _) = h.end_txn();
        assert!(!committed);
        h.answer(TxnResponse::EndTxn(EndTxnResponse {
            producer_id: PID,
            producer_epoch: 1,
            ..Default::default()
        }));
        let ev = h.events();
        assert!(matches!(ev.last(), Some(TxnEvent::Aborted)), "{ev:?}");
        assert_eq!(h.m.state_name(), "Ready");
        h.m.begin().unwrap();
    }
}

#[test]
fn v1_abort_that_needs_an_epoch_bump_sends_init_producer_id_with_the_current_epoch() {
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    let _ = h.req();
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::NONE,
    )])));
    h.m.abortable_error(
        h.now,
        BrokerError::new(ErrorCode::UNKNOWN_PRODUCER_ID).into(),
        true,
    );
    let _ = h.events();
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_ok()));
    assert!(h.events().is_empty(), "the bump comes before the outcome");
    let r = h.req();
    let TxnRequestBody::InitProducerId(i) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!((i.producer_id, i.producer_epoch), (PID, 0));
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
    assert!(matches!(
        h.events().as_slice(),
        [
            TxnEvent::EpochBumped {
                producer_id: PID,
                epoch: 1
            },
            TxnEvent::Aborted
        ]
    ));
    assert_eq!(h.m.state_name(), "Ready");
}

#[test]
fn commit_refused_after_an_abortable_error() {
    for versions in [v1(), v2()] {
        let mut h = H::ready(versions);
        h.m.begin().unwrap();
        h.m.add_partition(&tp(0)).unwrap();
        h.m.abortable_error(
            h.now,
            BrokerError::new(ErrorCode::TRANSACTION_ABORTABLE).into(),
            false,
        );
        let _ = h.events();
        let e = h.m.commit(h.now).unwrap_err();
        assert_eq!(e.broker_code(), Some(ErrorCode::TRANSACTION_ABORTABLE));
        assert_eq!(
            h.m.state_name(),
            "AbortableError",
            "a refused commit changes nothing"
        );
        h.no_req();
        h.m.abort(h.now).unwrap();
    }
    // An error while the commit waits for its flush fails the commit: abort then.
    let mut h = H::ready(v2());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    h.m.commit(h.now).unwrap();
    h.m.abortable_error(
        h.now,
        BrokerError::new(ErrorCode::MESSAGE_TOO_LARGE).into(),
        false,
    );
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::AbortableError(_)]
    ));
    h.m.set_flushed(h.now);
    h.no_req();
    assert!(h.m.commit(h.now).is_err());
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let (committed, _, _, _) = h.end_txn();
    assert!(!committed);
    // A partition the coordinator refuses (v1) makes the transaction abortable as well.
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    let _ = h.req();
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::TOPIC_AUTHORIZATION_FAILED,
    )])));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)]
            if e.broker_code() == Some(ErrorCode::TOPIC_AUTHORIZATION_FAILED)),
        "{ev:?}"
    );
    assert!(h.m.commit(h.now).is_err());
    // Nothing was added: the abort ends at once.
    h.m.abort(h.now).unwrap();
    assert!(matches!(h.events().as_slice(), [TxnEvent::Aborted]));
}

fn committing(versions: TxnVersions, cfg: TxnConfig) -> H {
    let mut h = committing_unflushed(versions, cfg);
    h.m.set_flushed(h.now);
    h
}

/// A commit of one partition (added) whose batches are not answered yet.
fn committing_unflushed(versions: TxnVersions, cfg: TxnConfig) -> H {
    let mut h = H::with_config(cfg, versions);
    h.m.init(h.now).unwrap();
    h.find_txn(1);
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 0)));
    let _ = h.events();
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    if !h.m.is_v2() {
        let _ = h.req();
        h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
            tp(0),
            ErrorCode::NONE,
        )])));
    }
    h.m.commit(h.now).unwrap();
    h
}

#[test]
fn end_txn_without_an_answer_is_retried_and_never_reported_committed_early() {
    for versions in [v1(), v2()] {
        let mut h = committing(versions, TxnConfig::new(TXN_ID));
        let first = h.end_txn();
        assert!(first.0);
        // The connection breaks.
        h.m.handle_transport_error(h.now);
        assert!(h.events().is_empty(), "not committed without an answer");
        h.no_req();
        h.wait_backoff();
        h.find_txn(2);
        assert_eq!(h.end_txn(), first, "the same EndTxn again");
        // No answer before the request timeout.
        h.advance(Duration::from_secs(30));
        assert!(h.events().is_empty());
        h.wait_backoff();
        h.find_txn(2);
        assert_eq!(h.end_txn(), first);
        // The coordinator is still completing the first one.
        h.answer(TxnResponse::EndTxn(end_err(
            ErrorCode::CONCURRENT_TRANSACTIONS,
        )));
        assert!(h.events().is_empty());
        h.wait_backoff();
        assert_eq!(h.end_txn(), first);
        assert_eq!(h.m.state_name(), "Committing");
        h.answer(TxnResponse::EndTxn(EndTxnResponse {
            producer_id: PID,
            producer_epoch: 1,
            ..Default::default()
        }));
        let ev = h.events();
        assert!(matches!(ev.last(), Some(TxnEvent::Committed)), "{ev:?}");
    }
}

#[test]
fn end_txn_that_fails_for_good_bumps_the_epoch_and_reports_no_commit() {
    for versions in [v1(), v2()] {
        let mut cfg = TxnConfig::new(TXN_ID);
        cfg.end_txn_timeout = Duration::from_secs(5);
        cfg.request_timeout = Duration::from_secs(2);
        let mut h = committing(versions, cfg);
        let t0 = h.now;
        let mut sent = 0;
        let mut ev = Vec::new();
        // Every EndTxn goes unanswered until the end-txn deadline passes.
        while h.m.state_name() == "Committing" {
            assert!(sent < 10, "gives up in bounded time");
            match h.req().body {
                TxnRequestBody::FindCoordinator(_) => {
                    h.answer(TxnResponse::FindCoordinator(find_ok(TXN_ID, 1)));
                    continue;
                }
                TxnRequestBody::EndTxn(e) => {
                    assert!(e.committed);
                    assert_eq!(e.producer_epoch, 0);
                    sent += 1;
                }
                other => panic!("{other:?}"),
            }
            // No answer: time runs to the request's deadline (or the commit's, if sooner).
            h.wait_backoff();
            ev.extend(h.events());
            if h.m.state_name() == "Committing" {
                h.wait_backoff();
            }
        }
        assert!(sent >= 2, "retried before giving up");
        // Reported at the deadline (5 s after the commit), before the bump is done.
        assert_eq!(h.now - t0, Duration::from_secs(5));
        assert!(
            matches!(ev.as_slice(), [TxnEvent::OutcomeUnknown { .. }]),
            "{ev:?}"
        );
        assert_eq!(h.m.state_name(), "Initializing");
        let r = loop {
            let r = h.req();
            match r.body {
                TxnRequestBody::FindCoordinator(_) => {
                    h.answer(TxnResponse::FindCoordinator(find_ok(TXN_ID, 1)))
                }
                _ => break r,
            }
        };
        let TxnRequestBody::InitProducerId(i) = &r.body else {
            panic!("{r:?}")
        };
        assert_eq!((i.producer_id, i.producer_epoch), (PID, 0), "KIP-360 bump");
        h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
        let ev = h.events();
        assert!(
            matches!(
                ev.as_slice(),
                [TxnEvent::EpochBumped {
                    producer_id: PID,
                    epoch: 1
                }]
            ),
            "{ev:?}"
        );
        assert!(!ev.iter().any(|e| matches!(e, TxnEvent::Committed)));
        assert_eq!(h.m.state_name(), "Ready");
    }
    // UNKNOWN_SERVER_ERROR: the outcome is unknown at once.
    let mut h = committing(v1(), TxnConfig::new(TXN_ID));
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(
        ErrorCode::UNKNOWN_SERVER_ERROR,
    )));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::OutcomeUnknown { error }]
            if error.broker_code() == Some(ErrorCode::UNKNOWN_SERVER_ERROR)),
        "{ev:?}"
    );
    let r = h.req();
    assert!(matches!(&r.body, TxnRequestBody::InitProducerId(i) if i.producer_epoch == 0));
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::EpochBumped { .. }]),
        "{ev:?}"
    );
}

fn group() -> GroupMetadata {
    GroupMetadata {
        group_id: "in-group".into(),
        generation_id: 5,
        member_id: "m-1".into(),
        instance_id: Some("i-1".into()),
    }
}

fn offsets() -> Vec<TxnOffset> {
    vec![
        TxnOffset {
            partition: TopicPartition::new("in", 0),
            offset: 42,
            leader_epoch: 3,
            metadata: None,
        },
        TxnOffset {
            partition: TopicPartition::new("in", 1),
            offset: 7,
            leader_epoch: -1,
            metadata: Some("meta".into()),
        },
    ]
}

fn commit_resp(parts: &[(i32, ErrorCode)]) -> TxnOffsetCommitResponse {
    TxnOffsetCommitResponse {
        topics: vec![TxnOffsetCommitResponseTopic {
            name: KString::from("in"),
            partitions: parts
                .iter()
                .map(|(p, c)| TxnOffsetCommitResponsePartition {
                    partition_index: *p,
                    error_code: c.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Expects FindCoordinator for the group and answers it with `node`.
fn find_group(h: &mut H, node: i32) {
    let r = h.req();
    let TxnRequestBody::FindCoordinator(f) = &r.body else {
        panic!("expected FindCoordinator, got {r:?}")
    };
    assert_eq!(f.key_type, 0, "group key type");
    assert_eq!(f.coordinator_keys, vec![KString::from("in-group")]);
    h.answer(TxnResponse::FindCoordinator(find_ok("in-group", node)));
}

fn check_txn_offset_commit(r: &TxnRequest, node: i32, version: i16, parts: &[i32]) {
    assert_eq!(r.target, Target::GroupCoordinator(coord(node)));
    assert_eq!(r.version, version);
    let TxnRequestBody::TxnOffsetCommit(c) = &r.body else {
        panic!("expected TxnOffsetCommit, got {r:?}")
    };
    assert_eq!(c.transactional_id.as_str(), TXN_ID);
    assert_eq!(c.group_id.as_str(), "in-group");
    assert_eq!((c.producer_id, c.producer_epoch), (PID, 0));
    // KIP-447 group metadata.
    assert_eq!(c.generation_id_or_member_epoch, 5);
    assert_eq!(c.member_id.as_str(), "m-1");
    assert_eq!(c.group_instance_id.as_deref(), Some("i-1"));
    assert_eq!(c.topics.len(), 1);
    assert_eq!(c.topics[0].name.as_str(), "in");
    let got: Vec<i32> = c.topics[0]
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect();
    assert_eq!(got, parts);
    for p in &c.topics[0].partitions {
        match p.partition_index {
            0 => assert_eq!((p.committed_offset, p.committed_leader_epoch), (42, 3)),
            1 => {
                assert_eq!((p.committed_offset, p.committed_leader_epoch), (7, -1));
                assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
            }
            _ => panic!("unexpected partition"),
        }
    }
}

#[test]
fn send_offsets_v1_adds_offsets_then_commits_them_to_the_group_coordinator() {
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    let r = h.req();
    assert_eq!(r.target, Target::TransactionCoordinator(coord(1)));
    let TxnRequestBody::AddOffsetsToTxn(a) = &r.body else {
        panic!("{r:?}")
    };
    assert_eq!(a.group_id.as_str(), "in-group");
    assert_eq!((a.producer_id, a.producer_epoch), (PID, 0));
    h.answer(TxnResponse::AddOffsetsToTxn(
        AddOffsetsToTxnResponse::default(),
    ));
    find_group(&mut h, 3);
    let r = h.req();
    check_txn_offset_commit(&r, 3, 4, &[0, 1]);
    // Partition 1: the group coordinator is loading; only it is sent again.
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[
        (0, ErrorCode::NONE),
        (1, ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
    ])));
    assert!(h.events().is_empty());
    h.wait_backoff();
    let r = h.req();
    check_txn_offset_commit(&r, 3, 4, &[1]);
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[(
        1,
        ErrorCode::NONE,
    )])));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::OffsetsCommitted { group_id }] if group_id == "in-group"),
        "{ev:?}"
    );
    // Second offsets of the same group in the same transaction: no second AddOffsetsToTxn.
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    let r = h.req();
    check_txn_offset_commit(&r, 3, 4, &[0, 1]);
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[
        (0, ErrorCode::NONE),
        (1, ErrorCode::NONE),
    ])));
    let _ = h.events();
    // An offsets-only transaction commits (it is not empty).
    h.m.commit(h.now).unwrap();
    h.m.set_flushed(h.now);
    let (committed, _, _, _) = h.end_txn();
    assert!(committed);
    h.answer(TxnResponse::EndTxn(end_ok()));
    assert!(matches!(h.events().as_slice(), [TxnEvent::Committed]));
}

#[test]
fn send_offsets_v2_commits_without_add_offsets() {
    let mut h = H::ready(v2());
    h.m.begin().unwrap();
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    // The commit waits for the offsets.
    h.m.commit(h.now).unwrap();
    h.m.set_flushed(h.now);
    find_group(&mut h, 3);
    let r = h.req();
    check_txn_offset_commit(&r, 3, 5, &[0, 1]);
    // The group coordinator moved.
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[
        (0, ErrorCode::NOT_COORDINATOR),
        (1, ErrorCode::NOT_COORDINATOR),
    ])));
    h.wait_backoff();
    find_group(&mut h, 4);
    let r = h.req();
    check_txn_offset_commit(&r, 4, 5, &[0, 1]);
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[
        (0, ErrorCode::NONE),
        (1, ErrorCode::NONE),
    ])));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::OffsetsCommitted { .. }]
    ));
    let (committed, _, _, version) = h.end_txn();
    assert!(committed && version == 5);
}

#[test]
fn stale_group_member_makes_the_transaction_abortable() {
    let mut h = H::ready(v2());
    h.m.begin().unwrap();
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    find_group(&mut h, 3);
    let _ = h.req();
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[
        (0, ErrorCode::ILLEGAL_GENERATION),
        (1, ErrorCode::ILLEGAL_GENERATION),
    ])));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)]
            if e.broker_code() == Some(ErrorCode::ILLEGAL_GENERATION)),
        "{ev:?}"
    );
    assert!(h.m.commit(h.now).is_err());
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    // TxnOffsetCommit v5 may have added the group: the abort goes to the coordinator.
    let (committed, _, _, _) = h.end_txn();
    assert!(!committed);
}

#[test]
fn answers_nothing_waits_for_are_ignored() {
    let mut h = H::ready(v1());
    h.answer(TxnResponse::EndTxn(end_ok()));
    assert!(h.events().is_empty());
    assert_eq!(h.m.state_name(), "Ready");
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    let _ = h.req();
    // A stray answer of another kind leaves the request in flight.
    h.answer(TxnResponse::EndTxn(end_ok()));
    assert!(h.events().is_empty());
    h.no_req();
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::NONE,
    )])));
    assert!(h.m.may_send(&tp(0)));
}

#[test]
fn transactions_v2_needs_both_end_txn_v5_and_produce_v12() {
    assert!(v2().transactions_v2());
    assert!(!v1().transactions_v2());
    let end_only = TxnVersions {
        produce: 11,
        ..TxnVersions::default()
    };
    assert!(!end_only.transactions_v2());
    let produce_only = TxnVersions {
        end_txn: 4,
        ..TxnVersions::default()
    };
    assert!(!produce_only.transactions_v2());
    // v2 with an old TxnOffsetCommit still sends AddOffsetsToTxn first.
    let old_commit = TxnVersions {
        txn_offset_commit: 4,
        ..TxnVersions::default()
    };
    let mut h = H::ready(old_commit);
    assert!(h.m.is_v2());
    h.m.begin().unwrap();
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    let r = h.req();
    assert!(
        matches!(r.body, TxnRequestBody::AddOffsetsToTxn(_)),
        "{r:?}"
    );
}

#[test]
fn an_epoch_bump_needs_init_producer_id_v3() {
    let versions = TxnVersions {
        init_producer_id: 2,
        ..v1()
    };
    let mut h = H::ready(versions);
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    let _ = h.req();
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::NONE,
    )])));
    h.m.commit(h.now).unwrap();
    h.m.set_flushed(h.now);
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(
        ErrorCode::UNKNOWN_SERVER_ERROR,
    )));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::OutcomeUnknown { .. }, TxnEvent::Fatal(e)]
            if e.broker_code() == Some(ErrorCode::UNSUPPORTED_VERSION)),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| matches!(e, TxnEvent::Committed)));
}

#[test]
fn add_partitions_without_an_answer_are_sent_again() {
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    h.m.add_partition(&tp(1)).unwrap();
    let r = h.req();
    assert_eq!(added(&r), vec![tp(0), tp(1)]);
    h.m.handle_transport_error(h.now);
    assert!(!h.m.may_send(&tp(0)));
    h.wait_backoff();
    h.find_txn(2);
    let r = h.req();
    assert_eq!(r.target, Target::TransactionCoordinator(coord(2)));
    assert_eq!(added(&r), vec![tp(0), tp(1)]);
    // One partition not tried because of the other's retriable error: both go again.
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[
        (tp(0), ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
        (tp(1), ErrorCode::OPERATION_NOT_ATTEMPTED),
    ])));
    h.no_req();
    h.wait_backoff();
    let r = h.req();
    assert_eq!(added(&r), vec![tp(0), tp(1)]);
    // A partition missing from the answer is tried again; the other is in.
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::NONE,
    )])));
    assert!(h.m.may_send(&tp(0)) && !h.m.may_send(&tp(1)));
    h.wait_backoff();
    let r = h.req();
    assert_eq!(added(&r), vec![tp(1)]);
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(1),
        ErrorCode::NONE,
    )])));
    assert!(h.m.may_send(&tp(1)));
    assert!(h.events().is_empty());
}

// -------------------------------------------------------------------------------------------
// transaction.end.timeout.ms: commit and abort are bounded

/// A config whose end deadline (10 s) comes before the request timeout (30 s), so an EndTxn
/// that is never answered meets the end deadline first.
fn short_end() -> TxnConfig {
    let mut cfg = TxnConfig::new(TXN_ID);
    cfg.end_txn_timeout = Duration::from_secs(10);
    cfg
}

#[test]
fn a_commit_with_end_txn_unanswered_is_outcome_unknown_at_its_deadline() {
    for versions in [v1(), v2()] {
        let mut h = committing(versions, short_end());
        let t0 = h.now;
        let _ = h.end_txn();
        let number = h.m.in_flight_request().expect("EndTxn in flight");
        // The driver's timer: the commit's deadline, not the request's.
        assert_eq!(h.m.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        h.advance(Duration::from_millis(9_999));
        assert!(h.events().is_empty(), "nothing before the deadline");
        assert_eq!(h.m.in_flight_request(), Some(number));
        h.advance(Duration::from_millis(1));
        let ev = h.events();
        assert!(
            matches!(
                ev.as_slice(),
                [TxnEvent::OutcomeUnknown {
                    error: Error::Timeout { .. }
                }]
            ),
            "{ev:?}"
        );
        // The EndTxn is abandoned (its late answer is never handed in) and the epoch is
        // bumped with the current id and epoch, to the same coordinator.
        assert_eq!(h.m.in_flight_request(), None);
        assert_eq!(h.m.state_name(), "Initializing");
        assert!(!h.m.is_ready() && h.m.begin().is_err());
        let r = h.req();
        assert_eq!(r.target, Target::TransactionCoordinator(coord(1)));
        assert!(
            matches!(&r.body, TxnRequestBody::InitProducerId(i) if (i.producer_id, i.producer_epoch) == (PID, 0)),
            "{r:?}"
        );
        h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
        assert!(matches!(
            h.events().as_slice(),
            [TxnEvent::EpochBumped {
                producer_id: PID,
                epoch: 1
            }]
        ));
        assert!(h.m.is_ready());
    }
}

#[test]
fn the_deadline_counts_from_the_commit_not_from_the_first_end_txn() {
    let mut h = committing_unflushed(v2(), TxnConfig::new(TXN_ID));
    let deadline = h.now + Duration::from_secs(60);
    assert_eq!(h.m.poll_timeout(), Some(deadline));
    // The batches take 55 s; EndTxn then has 5 s left.
    h.advance(Duration::from_secs(55));
    h.m.set_flushed(h.now);
    let _ = h.end_txn();
    assert_eq!(h.m.poll_timeout(), Some(deadline));
    h.advance(Duration::from_secs(5));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::OutcomeUnknown { .. }]
    ));
}

#[test]
fn a_commit_still_waiting_for_its_batches_at_the_deadline_fails_and_aborts() {
    let mut h = committing_unflushed(v1(), short_end());
    h.advance(Duration::from_secs(10));
    let ev = h.events();
    assert!(
        matches!(
            ev.as_slice(),
            [TxnEvent::AbortableError(Error::Timeout { .. })]
        ),
        "{ev:?}"
    );
    h.no_req();
    assert_eq!(h.m.state_name(), "AbortableError");
    // The caller aborts; the abort waits for the batches, then EndTxn(abort).
    h.m.abort(h.now).unwrap();
    h.no_req();
    h.m.set_flushed(h.now);
    let (committed, ..) = h.end_txn();
    assert!(!committed);
    h.answer(TxnResponse::EndTxn(end_ok()));
    assert!(matches!(h.events().as_slice(), [TxnEvent::Aborted]));
}

#[test]
fn an_abort_is_bounded_once_its_end_txn_went_and_keeps_going_before() {
    let mut h = H::ready(v2());
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    h.m.abort(h.now).unwrap();
    // Batches in flight: nothing to do at the deadline but wait; no busy timer after it.
    h.advance(Duration::from_secs(60));
    assert!(h.events().is_empty());
    assert_eq!(h.m.state_name(), "Aborting");
    assert_eq!(h.m.poll_timeout(), None);
    // The batches are answered 20 s later: EndTxn(abort) goes with a new deadline.
    h.advance(Duration::from_secs(20));
    h.m.set_flushed(h.now);
    let (committed, ..) = h.end_txn();
    assert!(!committed);
    let deadline = h.now + Duration::from_secs(60);
    assert_eq!(h.m.poll_timeout(), Some(h.now + Duration::from_secs(30)));
    // Unanswered: retried until the new deadline, then reported aborted and bumped.
    loop {
        let at = h.m.poll_timeout().expect("a timer");
        h.advance(at - h.now);
        if h.m.ending().is_none() {
            break;
        }
        while let Some(r) = h.m.poll_request() {
            match r.body {
                TxnRequestBody::FindCoordinator(_) => {
                    h.answer(TxnResponse::FindCoordinator(find_ok(TXN_ID, 1)))
                }
                TxnRequestBody::EndTxn(e) => assert!(!e.committed),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(h.now, deadline);
    assert!(matches!(h.events().as_slice(), [TxnEvent::Aborted]));
    assert!(matches!(&h.req().body, TxnRequestBody::InitProducerId(i) if i.producer_epoch == 0));
}

// -------------------------------------------------------------------------------------------
// KIP-588: the coordinator aborted the transaction by itself (transaction.timeout.ms)

/// A v1 transaction with tp(0) added and a batch that failed with INVALID_PRODUCER_EPOCH (the
/// coordinator's timeout abort wrote a marker with the bumped epoch), aborted and flushed: the
/// EndTxn(abort) is out.
fn v1_abort_after_a_coordinator_timeout(init_producer_id: i16) -> H {
    let mut h = H::ready(TxnVersions {
        init_producer_id,
        ..v1()
    });
    h.m.begin().unwrap();
    h.m.add_partition(&tp(0)).unwrap();
    let _ = h.req();
    h.answer(TxnResponse::AddPartitionsToTxn(add_parts_resp(&[(
        tp(0),
        ErrorCode::NONE,
    )])));
    h.m.abortable_error(
        h.now,
        BrokerError::new(ErrorCode::INVALID_PRODUCER_EPOCH)
            .with_partition("out", 0)
            .into(),
        false,
    );
    let _ = h.events();
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let (committed, pid, epoch, _) = h.end_txn();
    assert_eq!((committed, pid, epoch), (false, PID, 0));
    h
}

#[test]
fn a_refused_abort_recovers_with_init_producer_id_at_the_current_epoch() {
    for code in [
        ErrorCode::PRODUCER_FENCED,
        ErrorCode::INVALID_PRODUCER_EPOCH,
    ] {
        let mut h = v1_abort_after_a_coordinator_timeout(5);
        h.answer(TxnResponse::EndTxn(end_err(code)));
        assert!(h.events().is_empty(), "{code:?}: not fatal, not done yet");
        assert_eq!(h.m.state_name(), "Initializing");
        let r = h.req();
        assert_eq!(r.target, Target::TransactionCoordinator(coord(1)));
        let TxnRequestBody::InitProducerId(i) = &r.body else {
            panic!("{r:?}")
        };
        assert_eq!(
            (i.producer_id, i.producer_epoch),
            (PID, 0),
            "current id and epoch"
        );
        // The coordinator's previous epoch was ours: it answers the epoch it bumped to.
        h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
        let ev = h.events();
        assert!(
            matches!(
                ev.as_slice(),
                [
                    TxnEvent::EpochBumped {
                        producer_id: PID,
                        epoch: 1
                    },
                    TxnEvent::Aborted
                ]
            ),
            "{code:?}: {ev:?}"
        );
        assert!(h.m.fatal().is_none());
        // And the producer goes on.
        h.m.begin().unwrap();
        h.m.add_partition(&tp(1)).unwrap();
        let r = h.req();
        assert!(
            matches!(&r.body, TxnRequestBody::AddPartitionsToTxn(a) if a.v3_and_below_producer_epoch == 1)
        );
    }
}

#[test]
fn a_refused_abort_after_a_takeover_is_fenced() {
    let mut h = v1_abort_after_a_coordinator_timeout(5);
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    let _ = h.req();
    // Another producer initialized the id: the coordinator forgot our epoch.
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::PRODUCER_FENCED,
    )));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::Fatal(e)] if is_fenced(e)),
        "{ev:?}"
    );
    assert_everything_fails(&mut h, is_fenced);
    // Without InitProducerId v3 there is no way to ask: fenced at once.
    let mut h = v1_abort_after_a_coordinator_timeout(2);
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    assert!(matches!(h.events().as_slice(), [TxnEvent::Fatal(e)] if is_fenced(e)));
    h.no_req();
}

#[test]
fn a_commit_the_coordinator_already_aborted_fails_and_the_abort_recovers() {
    // v2: EndTxn(commit) after the coordinator's timeout abort is INVALID_TXN_STATE; the
    // abort is then answered with the bumped epoch (the coordinator takes it as a retry).
    let mut h = committing(v2(), TxnConfig::new(TXN_ID));
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::INVALID_TXN_STATE)));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)] if is_refused(e)),
        "{ev:?}"
    );
    assert!(h.m.fatal().is_none());
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let (committed, ..) = h.end_txn();
    assert!(!committed);
    h.answer(TxnResponse::EndTxn(EndTxnResponse {
        producer_id: PID,
        producer_epoch: 1,
        ..Default::default()
    }));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::EpochBumped { epoch: 1, .. }, TxnEvent::Aborted]
    ));

    // v1: PRODUCER_FENCED to the first EndTxn(commit): not committed, abort, KIP-588 bump.
    let mut h = committing(v1(), TxnConfig::new(TXN_ID));
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    assert!(matches!(h.events().as_slice(), [TxnEvent::AbortableError(e)] if is_refused(e)));
    h.m.abort(h.now).unwrap();
    h.m.set_flushed(h.now);
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    assert!(matches!(&h.req().body, TxnRequestBody::InitProducerId(i) if i.producer_epoch == 0));
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::EpochBumped { epoch: 1, .. }, TxnEvent::Aborted]
    ));

    // v1: an earlier EndTxn(commit) went unanswered (it may have committed before a takeover):
    // the refusal of the retry makes the outcome unknown, and the bump asks about fencing.
    let mut h = committing(v1(), TxnConfig::new(TXN_ID));
    let _ = h.end_txn();
    h.m.handle_transport_error(h.now);
    h.wait_backoff();
    h.find_txn(1);
    let _ = h.end_txn();
    h.answer(TxnResponse::EndTxn(end_err(ErrorCode::PRODUCER_FENCED)));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::OutcomeUnknown { .. }]
    ));
    assert!(matches!(&h.req().body, TxnRequestBody::InitProducerId(i) if i.producer_epoch == 0));
    h.answer(TxnResponse::InitProducerId(init_ok(PID, 1)));
    assert!(matches!(
        h.events().as_slice(),
        [TxnEvent::EpochBumped { epoch: 1, .. }]
    ));
    assert!(h.m.is_ready());
}

#[test]
fn requests_of_a_transaction_the_coordinator_aborted_make_it_abortable_not_fatal() {
    // v2 offsets: TxnOffsetCommit refused with the old epoch.
    let mut h = H::ready(v2());
    h.m.begin().unwrap();
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    find_group(&mut h, 3);
    let _ = h.req();
    h.answer(TxnResponse::TxnOffsetCommit(commit_resp(&[
        (0, ErrorCode::INVALID_PRODUCER_EPOCH),
        (1, ErrorCode::INVALID_PRODUCER_EPOCH),
    ])));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)] if is_refused(e)),
        "{ev:?}"
    );
    // v1 AddOffsetsToTxn refused.
    let mut h = H::ready(v1());
    h.m.begin().unwrap();
    h.m.add_offsets(h.now, group(), offsets()).unwrap();
    let r = h.req();
    assert!(matches!(r.body, TxnRequestBody::AddOffsetsToTxn(_)));
    h.answer(TxnResponse::AddOffsetsToTxn(AddOffsetsToTxnResponse {
        error_code: ErrorCode::PRODUCER_FENCED.0,
        ..Default::default()
    }));
    let ev = h.events();
    assert!(
        matches!(ev.as_slice(), [TxnEvent::AbortableError(e)] if is_refused(e)),
        "{ev:?}"
    );
    // InitProducerId refusing a fresh producer stays fatal (that is a takeover, not a timeout).
    let mut h = H::new(v1());
    h.m.init(h.now).unwrap();
    h.find_txn(1);
    let _ = h.req();
    h.answer(TxnResponse::InitProducerId(init_err(
        ErrorCode::PRODUCER_FENCED,
    )));
    assert!(matches!(h.events().as_slice(), [TxnEvent::Fatal(e)] if is_fenced(e)));
}
