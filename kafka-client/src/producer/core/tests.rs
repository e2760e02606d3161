//! Deterministic tests of the producer core: no broker, no sleeps, time is a parameter.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kafka_wire::messages::produce::{PartitionProduceResponse, TopicProduceResponse};
use kafka_wire::records::RecordBatch;

use tokio::sync::oneshot;

use super::*;
use crate::metadata::{BrokerInfo, PartitionMetadata, TopicMetadata};
use crate::producer::{DeliveryCallback, Reply};

type Core = super::Core<Reply>;

type Rx = oneshot::Receiver<Result<RecordMetadata>>;

fn cfg() -> CoreConfig {
    CoreConfig {
        acks: Acks::All,
        idempotent: true,
        transactional: false,
        linger: Duration::from_millis(5),
        batch_size: 16384,
        buffer_memory: 32 << 20,
        max_request_size: 1 << 20,
        max_in_flight: 5,
        compression: Codec::None,
        compression_level: None,
        delivery_timeout: Duration::from_secs(120),
        retries: u32::MAX,
        retry_backoff: Duration::from_millis(100),
        retry_backoff_max: Duration::from_secs(1),
    }
}

fn core_with(cfg: CoreConfig) -> Core {
    let mut pc = ProducerConfig::default();
    pc.batch_size(cfg.batch_size);
    let mut c = Core::new(cfg, Partitioner::new(&pc), 7);
    if c.cfg.idempotent {
        assert_eq!(c.needs_producer_id(), !c.cfg.transactional);
        c.set_producer_id(1000, 0);
    }
    c
}

/// Metadata with topic "t" of `leaders.len()` partitions led by `leaders[i]`.
fn meta(leaders: &[i32]) -> ClusterMetadata {
    let mut m = ClusterMetadata::empty(Instant::now());
    for id in 1..=3 {
        m.brokers.insert(
            id,
            BrokerInfo {
                id,
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
                rack: None,
            },
        );
    }
    let partitions = leaders
        .iter()
        .enumerate()
        .map(|(i, &l)| PartitionMetadata {
            partition: i as i32,
            leader: l,
            leader_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            offline: vec![],
            error: None,
        })
        .collect();
    m.topics.insert(
        "t".into(),
        Arc::new(TopicMetadata {
            name: "t".into(),
            topic_id: Uuid::from_u128(42),
            is_internal: false,
            error: None,
            partitions,
        }),
    );
    m
}

/// Marks partition `p` of "t" as holding our producer state on the broker (a batch of ours
/// was acknowledged), so up to `max_in_flight` batches may be pipelined to it.
fn confirm(c: &mut Core, p: i32) {
    c.partitions
        .entry(TopicPartition::new("t", p))
        .or_insert_with(|| PartitionState {
            topic: Arc::from("t"),
            last_acked_offset: -1,
            ..Default::default()
        })
        .confirmed = true;
}

fn rec(p: i32, value_len: usize) -> ProducerRecord {
    ProducerRecord::new("t")
        .partition(p)
        .value(vec![b'x'; value_len])
}

fn append(c: &mut Core, now: Instant, r: ProducerRecord) -> Rx {
    match c.append(now, 1_000, 4, r) {
        Ok(rx) => rx,
        Err(AppendError::Full(_)) => panic!("buffer full"),
        Err(AppendError::Failed(e)) => panic!("append failed: {e}"),
    }
}

/// Appends enough records to partition `p` to make `n` full batches (16 records of 1000 bytes
/// each fill a 16 KiB batch), plus returns every receiver.
fn fill_batches(c: &mut Core, now: Instant, p: i32, n: usize) -> Vec<Rx> {
    let mut rxs = Vec::new();
    for _ in 0..n * 16 {
        rxs.push(append(c, now, rec(p, 1000)));
    }
    rxs
}

fn resp(p: i32, code: ErrorCode, base_offset: i64, log_start: i64) -> ProduceResponse {
    ProduceResponse {
        responses: vec![TopicProduceResponse {
            name: "t".into(),
            partition_responses: vec![PartitionProduceResponse {
                index: p,
                error_code: code.0,
                base_offset,
                log_start_offset: log_start,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn seq_of(tb: &TransmitBatch) -> (i64, i16, i32, i32) {
    let b = RecordBatch::new(tb.records.clone()).unwrap();
    b.verify_crc().unwrap();
    (
        b.producer_id(),
        b.producer_epoch(),
        b.base_sequence(),
        b.records_count(),
    )
}

fn got(rx: &mut Rx) -> Option<Result<RecordMetadata>> {
    rx.try_recv().ok()
}

#[test]
fn sequence_wraps_at_i32_max() {
    assert_eq!(next_sequence(0, 5), 5);
    assert_eq!(next_sequence(i32::MAX - 1, 1), i32::MAX);
    assert_eq!(next_sequence(i32::MAX, 1), 0);
    assert_eq!(next_sequence(i32::MAX - 2, 5), 2);
}

#[test]
fn linger_holds_a_small_batch_until_it_expires() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut rx = append(&mut c, t0, rec(0, 10));
    assert!(c.poll_transmit(t0, &m).is_empty());
    assert!(c
        .poll_transmit(t0 + Duration::from_millis(4), &m)
        .is_empty());
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(5)));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].node, 1);
    assert_eq!(seq_of(&tx[0].batches[0]), (1000, 0, 0, 1));
    assert!(got(&mut rx).is_none());
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 77, 0)));
    let md = got(&mut rx).unwrap().unwrap();
    assert_eq!((md.partition, md.offset, md.timestamp), (0, 77, 1_000));
    assert_eq!(c.buffer_used(), 0);
}

#[test]
fn a_full_batch_goes_without_waiting_for_linger_and_flush_sends_the_rest() {
    let t0 = Instant::now();
    let m = meta(&[1, 2, 1, 1]);
    let mut c = core_with(cfg());
    confirm(&mut c, 1);
    // 20 records of 1000 bytes: one full batch and one open one.
    for _ in 0..20 {
        append(&mut c, t0, rec(1, 1000));
    }
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].node, 2);
    let (_, _, seq, n) = seq_of(&tx[0].batches[0]);
    assert_eq!(seq, 0);
    assert!((15..20).contains(&n), "{n}");
    assert!(c.poll_transmit(t0, &m).is_empty());
    let mark = c.flush();
    let tx2 = c.poll_transmit(t0, &m);
    assert_eq!(tx2.len(), 1);
    assert_eq!(seq_of(&tx2[0].batches[0]), (1000, 0, n, 20 - n));
    assert!(!c.flushed(mark));
    c.handle_response(t0, tx[0].req, Ok(resp(1, ErrorCode::NONE, 0, 0)));
    c.handle_response(
        t0,
        tx2[0].req,
        Ok(resp(1, ErrorCode::NONE, i64::from(n), 0)),
    );
    assert!(c.flushed(mark));
}

#[test]
fn several_partitions_of_one_leader_share_a_request() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 2, 1]);
    let mut c = core_with(cfg());
    for p in 0..4 {
        append(&mut c, t0, rec(p, 10));
    }
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(tx.len(), 2);
    let mut sizes: Vec<(i32, usize)> = tx.iter().map(|t| (t.node, t.batches.len())).collect();
    sizes.sort();
    assert_eq!(sizes, vec![(1, 3), (2, 1)]);
}

#[test]
fn requests_respect_max_request_size() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut config = cfg();
    config.max_request_size = 40_000;
    let mut c = core_with(config);
    for p in 0..4 {
        fill_batches(&mut c, t0, p, 1);
    }
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(
        tx.len(),
        2,
        "4 batches of ~16 KB in requests of at most 40 KB"
    );
    for t in &tx {
        let size: usize = t.batches.iter().map(|b| b.records.len()).sum();
        assert!(size <= 40_000);
    }
}

#[test]
fn buffer_memory_bounds_appends_and_frees_on_completion() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut config = cfg();
    config.buffer_memory = 50_000;
    let mut c = core_with(config);
    confirm(&mut c, 0);
    let mut accepted = 0;
    loop {
        match c.append(t0, 0, 4, rec(0, 1000)) {
            Ok(_) => accepted += 1,
            Err(AppendError::Full(r)) => {
                assert_eq!(r.value.as_ref().map(|v| v.len()), Some(1000));
                break;
            }
            Err(AppendError::Failed(e)) => panic!("{e}"),
        }
        assert!(accepted < 1000, "never full");
    }
    assert!(c.buffer_used() <= 50_000);
    assert!((40..=50).contains(&accepted), "{accepted}");
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(tx.len(), 3);
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 0, 0)));
    assert!(c.append(t0, 0, 4, rec(0, 1000)).is_ok());
}

#[test]
fn too_large_records_fail_at_once() {
    let t0 = Instant::now();
    let mut c = core_with(cfg());
    match c.append(t0, 0, 4, rec(0, 1_000_000)) {
        Err(AppendError::Failed(e)) => {
            assert_eq!(e.broker_code(), Some(ErrorCode::MESSAGE_TOO_LARGE))
        }
        _ => panic!("expected MESSAGE_TOO_LARGE"),
    }
    assert!(c.append(t0, 0, 4, rec(0, 999_000)).is_ok());
    let mut config = cfg();
    config.max_request_size = 10_000;
    let mut c = core_with(config);
    assert!(matches!(
        c.append(t0, 0, 4, rec(0, 10_000)),
        Err(AppendError::Failed(_))
    ));
}

#[test]
fn at_most_five_batches_in_flight_per_partition() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    confirm(&mut c, 0);
    fill_batches(&mut c, t0, 0, 7);
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(tx.len(), 5);
    let seqs: Vec<i32> = tx.iter().map(|t| seq_of(&t.batches[0]).2).collect();
    assert_eq!(seqs, vec![0, 16, 32, 48, 64]);
    assert!(c.poll_transmit(t0, &m).is_empty());
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 0, 0)));
    let more = c.poll_transmit(t0, &m);
    assert_eq!(more.len(), 1);
    assert_eq!(seq_of(&more[0].batches[0]).2, 80);
}

#[test]
fn a_partition_the_broker_has_not_confirmed_gets_one_batch_at_a_time() {
    // A broker accepts any first sequence from a producer it does not know: had the second
    // batch been in flight when the first failed, it would have been written first.
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut rxs = fill_batches(&mut c, t0, 0, 4);
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(tx.len(), 1);
    assert_eq!(seq_of(&tx[0].batches[0]).2, 0);
    assert!(c.poll_transmit(t0, &m).is_empty());
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, 0)),
    );
    let t1 = t0 + Duration::from_secs(1);
    let retry = c.poll_transmit(t1, &m);
    assert_eq!(retry.len(), 1);
    assert_eq!(seq_of(&retry[0].batches[0]).2, 0);
    c.handle_response(t1, retry[0].req, Ok(resp(0, ErrorCode::NONE, 0, 0)));
    // Confirmed: the other three go out together, in order.
    let rest = c.poll_transmit(t1, &m);
    let seqs: Vec<i32> = rest.iter().map(|t| seq_of(&t.batches[0]).2).collect();
    assert_eq!(seqs, vec![16, 32, 48]);
    for (i, t) in rest.iter().enumerate() {
        c.handle_response(
            t1,
            t.req,
            Ok(resp(0, ErrorCode::NONE, 16 + 16 * i as i64, 0)),
        );
    }
    let offsets: Vec<i64> = rxs
        .iter_mut()
        .map(|rx| got(rx).unwrap().unwrap().offset)
        .collect();
    assert_eq!(offsets, (0..64).collect::<Vec<i64>>());
    // A new producer id starts unconfirmed again.
    fill_batches(&mut c, t1, 0, 2);
    c.set_producer_id(2000, 0);
    assert_eq!(c.poll_transmit(t1, &m).len(), 1);
}

#[test]
fn sequences_wrap_in_batch_headers() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    confirm(&mut c, 0);
    append(&mut c, t0, rec(0, 10));
    c.partitions
        .get_mut(&TopicPartition::new("t", 0))
        .unwrap()
        .next_seq = i32::MAX - 1;
    append(&mut c, t0, rec(0, 10));
    append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(seq_of(&tx[0].batches[0]).2, i32::MAX - 1);
    append(&mut c, t0 + Duration::from_millis(5), rec(0, 10));
    let tx2 = c.poll_transmit(t0 + Duration::from_millis(10), &m);
    // 3 records from MAX-1: MAX-1, MAX, 0; the next batch starts at 1.
    assert_eq!(seq_of(&tx2[0].batches[0]).2, 1);
}

#[test]
fn retry_resends_from_the_first_unfinished_batch_with_the_same_sequences() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    confirm(&mut c, 0);
    let mut rxs = fill_batches(&mut c, t0, 0, 3);
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(tx.len(), 3);
    let first: Vec<_> = tx.iter().map(|t| seq_of(&t.batches[0])).collect();
    // Batch 1 fails retriably; 2 and 3 are rejected as out of order (1 is missing).
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::NOT_ENOUGH_REPLICAS, -1, 0)),
    );
    // Nothing goes out while batches 2 and 3 are still in flight.
    assert!(c.poll_transmit(t0 + Duration::from_secs(1), &m).is_empty());
    c.handle_response(
        t0,
        tx[1].req,
        Ok(resp(0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, 0)),
    );
    c.handle_response(
        t0,
        tx[2].req,
        Ok(resp(0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, 0)),
    );
    assert!(
        !c.needs_producer_id(),
        "a consequential OOO is not data loss"
    );
    assert!(rxs.iter_mut().all(|rx| got(rx).is_none()));
    // Backoff first.
    assert!(c
        .poll_transmit(t0 + Duration::from_millis(50), &m)
        .is_empty());
    let again = c.poll_transmit(t0 + Duration::from_secs(1), &m);
    let second: Vec<_> = again.iter().map(|t| seq_of(&t.batches[0])).collect();
    assert_eq!(first, second);
    for (i, t) in again.iter().enumerate() {
        c.handle_response(t0, t.req, Ok(resp(0, ErrorCode::NONE, i as i64 * 16, 0)));
    }
    let offsets: Vec<i64> = rxs
        .iter_mut()
        .map(|rx| got(rx).unwrap().unwrap().offset)
        .collect();
    assert_eq!(offsets, (0..48).collect::<Vec<i64>>());
}

#[test]
fn duplicate_sequence_is_success() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::DUPLICATE_SEQUENCE_NUMBER, -1, 0)),
    );
    let md = got(&mut rx).unwrap().unwrap();
    assert_eq!(md.offset, -1);
    assert_eq!(c.pending_records(), 0);
}

#[test]
fn leader_move_mid_flight_resends_to_the_new_leader_with_the_same_sequences() {
    let t0 = Instant::now();
    let mut c = core_with(cfg());
    confirm(&mut c, 0);
    let mut rxs = fill_batches(&mut c, t0, 0, 2);
    let tx = c.poll_transmit(t0, &meta(&[1, 1, 1, 1]));
    assert!(tx.iter().all(|t| t.node == 1));
    let before: Vec<_> = tx.iter().map(|t| seq_of(&t.batches[0])).collect();
    let mut r = resp(0, ErrorCode::NOT_LEADER_OR_FOLLOWER, -1, 0);
    r.responses[0].partition_responses[0]
        .current_leader
        .leader_id = 2;
    r.responses[0].partition_responses[0]
        .current_leader
        .leader_epoch = 5;
    let a = c.handle_response(t0, tx[0].req, Ok(r));
    assert!(a.refresh_metadata);
    assert_eq!(a.leader_hints, vec![("t".to_string(), 0, 2, 5)]);
    // The second request dies with its connection.
    let a = c.handle_response(
        t0,
        tx[1].req,
        Err(Error::io(
            crate::error::Peer::Unknown,
            std::io::ErrorKind::ConnectionReset.into(),
        )),
    );
    assert!(a.refresh_metadata);
    let moved = meta(&[2, 1, 1, 1]);
    let again = c.poll_transmit(t0 + Duration::from_secs(2), &moved);
    assert!(again.iter().all(|t| t.node == 2));
    let after: Vec<_> = again.iter().map(|t| seq_of(&t.batches[0])).collect();
    assert_eq!(before, after);
    for (i, t) in again.iter().enumerate() {
        c.handle_response(
            t0,
            t.req,
            Ok(resp(0, ErrorCode::NONE, 100 + i as i64 * 16, 0)),
        );
    }
    assert_eq!(got(&mut rxs[31]).unwrap().unwrap().offset, 131);
}

#[test]
fn out_of_order_after_truncation_renews_the_producer_id_and_resends() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut first = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 10, 0)));
    assert_eq!(got(&mut first).unwrap().unwrap().offset, 10);
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(seq_of(&tx[0].batches[0]).2, 1);
    // The log start moved past offset 10: the broker forgot us.
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, 20)),
    );
    assert!(got(&mut rx).is_none());
    assert!(c.needs_producer_id());
    assert!(c.poll_transmit(t0 + Duration::from_secs(5), &m).is_empty());
    c.set_producer_id(2000, 0);
    let tx = c.poll_transmit(t0 + Duration::from_secs(5), &m);
    assert_eq!(seq_of(&tx[0].batches[0]), (2000, 0, 0, 1));
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 20, 20)));
    assert_eq!(got(&mut rx).unwrap().unwrap().offset, 20);
}

#[test]
fn out_of_order_without_truncation_fails_the_batch_and_renews() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut first = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 10, 0)));
    assert!(got(&mut first).unwrap().is_ok());
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    let mut behind = append(&mut c, t0, rec(0, 10));
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, 0)),
    );
    let err = got(&mut rx).unwrap().unwrap_err();
    assert_eq!(
        err.broker_code(),
        Some(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
    );
    assert!(c.needs_producer_id());
    c.set_producer_id(2000, 0);
    let tx = c.poll_transmit(t0 + Duration::from_secs(5), &m);
    assert_eq!(seq_of(&tx[0].batches[0]), (2000, 0, 0, 1));
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 12, 0)));
    assert_eq!(got(&mut behind).unwrap().unwrap().offset, 12);
}

#[test]
fn delivery_timeout_fails_only_safe_batches_and_everything_behind_them() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut rxs = fill_batches(&mut c, t0, 0, 1);
    let tx = c.poll_transmit(t0, &m);
    assert_eq!(tx.len(), 1);
    let t1 = t0 + Duration::from_secs(1);
    let mut later: Vec<Rx> = (0..3).map(|_| append(&mut c, t1, rec(0, 10))).collect();
    let mut other = append(&mut c, t1, rec(1, 10));
    // Past the timeout of the in-flight batch only: nothing is safe to fail.
    c.handle_timeout(t0 + Duration::from_millis(120_500));
    assert!(rxs.iter_mut().all(|rx| got(rx).is_none()));
    assert!(later.iter_mut().all(|rx| got(rx).is_none()));
    // Past the timeout of the queued batches: they were never sent, so they fail, with the
    // other partition's (also never sent); the in-flight batch still waits for its answer.
    c.handle_timeout(t1 + Duration::from_secs(120));
    assert!(later
        .iter_mut()
        .all(|rx| matches!(got(rx), Some(Err(Error::Timeout { .. })))));
    assert!(matches!(got(&mut other), Some(Err(Error::Timeout { .. }))));
    assert!(rxs.iter_mut().all(|rx| got(rx).is_none()));
    assert!(!c.needs_producer_id());
    // Answered with a retriable error: now it is safe to fail it; it had a sequence, so the
    // producer id is renewed.
    c.handle_response(
        t1,
        tx[0].req,
        Ok(resp(0, ErrorCode::NOT_ENOUGH_REPLICAS, -1, 0)),
    );
    assert!(rxs.iter_mut().all(|rx| got(rx).is_none()));
    c.handle_timeout(t1 + Duration::from_secs(121));
    assert!(rxs
        .iter_mut()
        .all(|rx| matches!(got(rx), Some(Err(Error::Timeout { .. })))));
    assert!(c.needs_producer_id());
    assert_eq!(c.pending_records(), 0);
    assert_eq!(c.buffer_used(), 0);
}

#[test]
fn retries_exhausted_fail_the_batch() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut config = cfg();
    config.idempotent = false;
    config.retries = 1;
    config.acks = Acks::One;
    let mut c = core_with(config);
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(seq_of(&tx[0].batches[0]), (-1, -1, -1, 1));
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::NOT_ENOUGH_REPLICAS, -1, 0)),
    );
    let tx = c.poll_transmit(t0 + Duration::from_secs(1), &m);
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::NOT_ENOUGH_REPLICAS, -1, 0)),
    );
    assert!(got(&mut rx).unwrap().is_err());
}

#[test]
fn acks_zero_completes_on_transmit() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut config = cfg();
    config.idempotent = false;
    config.acks = Acks::None;
    let mut c = core_with(config);
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(tx.len(), 1);
    assert_eq!(got(&mut rx).unwrap().unwrap().offset, -1);
    assert_eq!(c.in_flight_requests(), 0);
}

#[test]
fn keyed_records_follow_murmur2_and_unkeyed_stick() {
    let t0 = Instant::now();
    let mut c = core_with(cfg());
    let mut seen: HashMap<i32, usize> = HashMap::new();
    for i in 0..100 {
        let key = format!("key-{i}");
        let want = crate::partitioner::partition_for_key(key.as_bytes(), 4).unwrap();
        append(&mut c, t0, ProducerRecord::new("t").key(key).value("v"));
        let tp = TopicPartition::new("t", want);
        *seen.entry(want).or_default() += 1;
        let n: usize = c.partitions[&tp]
            .queue
            .iter()
            .map(|b| b.records.len())
            .sum();
        assert_eq!(n, seen[&want]);
    }
    let mut c = core_with(cfg());
    for _ in 0..10 {
        append(&mut c, t0, ProducerRecord::new("t").value("v"));
    }
    let used: BTreeMap<_, _> = c
        .partitions
        .iter()
        .filter(|(_, p)| !p.queue.is_empty())
        .map(|(tp, p)| (tp.partition, p.queue.len()))
        .collect();
    assert_eq!(
        used.len(),
        1,
        "small unkeyed records stick to one partition"
    );
}

fn conn_reset() -> Error {
    Error::io(
        crate::error::Peer::Unknown,
        std::io::ErrorKind::ConnectionReset.into(),
    )
}

/// Found by the broker fault test: a leader killed and dropped from the metadata made the
/// connection attempt fail with BROKER_NOT_AVAILABLE, which failed the records at once (and,
/// since they had sequences, renewed the producer id). Nothing was written: retry instead.
#[test]
fn a_request_that_could_not_be_sent_is_retried_with_the_same_sequences() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    let before = seq_of(&tx[0].batches[0]);
    let err = Error::Broker(
        BrokerError::new(ErrorCode::BROKER_NOT_AVAILABLE).with_message("not in the metadata"),
    );
    let a = c.handle_unsent(t0, tx[0].req, err);
    assert!(a.refresh_metadata);
    assert!(got(&mut rx).is_none(), "not failed");
    assert!(!c.needs_producer_id(), "no sequence was lost");
    let again = c.poll_transmit(t0 + Duration::from_secs(1), &meta(&[2, 1, 1, 1]));
    assert_eq!(again[0].node, 2);
    assert_eq!(seq_of(&again[0].batches[0]), before);
    c.handle_response(t0, again[0].req, Ok(resp(0, ErrorCode::NONE, 7, 0)));
    assert_eq!(got(&mut rx).unwrap().unwrap().offset, 7);
    // A fatal error still fails at once.
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_secs(2), &m);
    c.handle_unsent(t0, tx[0].req, Error::Closed);
    assert!(matches!(got(&mut rx), Some(Err(Error::Closed))));
}

/// Found by the broker fault test: renewing the producer id while another partition had a
/// batch whose request died with its connection (written or not, unknown) gave that batch a
/// new sequence under the new id, and the broker wrote it a second time. Now the batches that
/// already have a sequence are resent under the old id until answered, then the id is renewed.
#[test]
fn renewal_waits_until_other_partitions_resolve_their_resends_under_the_old_id() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    // Partition 0 has acknowledged data; partition 1 has one batch in flight.
    let mut first = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 10, 0)));
    assert!(got(&mut first).unwrap().is_ok());
    let mut lost = append(&mut c, t0, rec(0, 10));
    let mut unknown = append(&mut c, t0, rec(1, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(tx.len(), 1, "one leader, one request");
    assert_eq!(tx[0].batches.len(), 2);
    let p1_before = seq_of(&tx[0].batches[1]);
    // The request dies with its connection: both batches may or may not be written.
    c.handle_response(t0, tx[0].req, Err(conn_reset()));
    let t1 = t0 + Duration::from_secs(1);
    let tx = c.poll_transmit(t1, &m);
    assert_eq!(tx[0].batches.len(), 2);
    // Partition 0 says out of order without truncation (data loss on the broker): the batch
    // fails and the id must be renewed. Partition 1's resend dies again.
    let mut r = resp(0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, 0);
    r.responses[0]
        .partition_responses
        .push(PartitionProduceResponse {
            index: 1,
            error_code: ErrorCode::REQUEST_TIMED_OUT.0,
            base_offset: -1,
            ..Default::default()
        });
    c.handle_response(t1, tx[0].req, Ok(r));
    assert!(got(&mut lost).unwrap().is_err());
    let mut behind0 = append(&mut c, t1, rec(0, 10));
    let mut new1 = append(&mut c, t1, rec(1, 10));
    assert!(
        !c.needs_producer_id(),
        "partition 1 has a batch of unknown fate under the current id"
    );
    // Only partition 1's resend goes out, under the old id with its old sequence.
    let t2 = t1 + Duration::from_secs(1);
    let tx = c.poll_transmit(t2, &m);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].batches.len(), 1);
    assert_eq!(tx[0].batches[0].tp.partition, 1);
    assert_eq!(seq_of(&tx[0].batches[0]), p1_before);
    c.handle_response(
        t2,
        tx[0].req,
        Ok(resp(1, ErrorCode::DUPLICATE_SEQUENCE_NUMBER, -1, 0)),
    );
    assert!(got(&mut unknown).unwrap().is_ok(), "it had been written");
    assert!(c.poll_transmit(t2, &m).is_empty(), "waiting for the new id");
    assert!(c.needs_producer_id());
    c.set_producer_id(2000, 0);
    let tx = c.poll_transmit(t2 + Duration::from_secs(5), &m);
    let mut seqs: Vec<_> = tx
        .iter()
        .flat_map(|t| t.batches.iter())
        .map(|b| (b.tp.partition, seq_of(b)))
        .collect();
    seqs.sort();
    assert_eq!(seqs, vec![(0, (2000, 0, 0, 1)), (1, (2000, 0, 0, 1))]);
    for t in &tx {
        let mut r = resp(0, ErrorCode::NONE, 50, 0);
        r.responses[0].partition_responses = t
            .batches
            .iter()
            .map(|b| PartitionProduceResponse {
                index: b.tp.partition,
                base_offset: 50,
                ..Default::default()
            })
            .collect();
        c.handle_response(t2, t.req, Ok(r));
    }
    assert!(got(&mut behind0).unwrap().is_ok());
    assert!(got(&mut new1).unwrap().is_ok());
}

#[test]
fn renewal_bumps_the_epoch_of_the_same_id() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    assert_eq!(c.bumped_producer_id(), None, "no renewal due");
    let mut first = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 10, 0)));
    assert!(got(&mut first).unwrap().is_ok());
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER, -1, 0)),
    );
    assert!(got(&mut rx).unwrap().is_err());
    assert!(c.needs_producer_id());
    assert_eq!(c.bumped_producer_id(), Some((1000, 1)));
    c.set_producer_id(1000, 1);
    let mut next = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_secs(1), &m);
    assert_eq!(seq_of(&tx[0].batches[0]), (1000, 1, 0, 1));
    c.handle_response(t0, tx[0].req, Ok(resp(0, ErrorCode::NONE, 12, 0)));
    assert!(got(&mut next).unwrap().is_ok());
    // An exhausted epoch asks the broker for a new id instead.
    c.set_producer_id(1000, i16::MAX - 1);
    c.need_reset = true;
    assert_eq!(c.bumped_producer_id(), None);
}

fn txn_core() -> Core {
    let mut config = cfg();
    config.transactional = true;
    let mut c = core_with(config);
    // The transaction manager, not the core, supplies the id.
    assert!(!c.needs_producer_id());
    c.set_producer_id(1000, 0);
    c
}

#[test]
fn concurrent_transactions_on_produce_is_retried_after_a_short_backoff() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = txn_core();
    let mut rx = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    let t1 = t0 + Duration::from_millis(5);
    c.handle_response(
        t1,
        tx[0].req,
        Ok(resp(0, ErrorCode::CONCURRENT_TRANSACTIONS, -1, 0)),
    );
    // Not before 20 ms, but long before retry.backoff.ms (100 ms).
    assert!(c
        .poll_transmit(t1 + Duration::from_millis(19), &m)
        .is_empty());
    let tx = c.poll_transmit(t1 + Duration::from_millis(20), &m);
    assert_eq!(tx.len(), 1, "resent after 20 ms");
    assert_eq!(seq_of(&tx[0].batches[0]).2, 0, "with the same sequence");
    c.handle_response(t1, tx[0].req, Ok(resp(0, ErrorCode::NONE, 7, 0)));
    assert_eq!(got(&mut rx).unwrap().unwrap().offset, 7);
    assert!(c.take_failures().is_empty());
}

#[test]
fn transactional_batches_wait_for_the_gate_and_carry_the_transactional_bit() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = txn_core();
    let _rx0 = append(&mut c, t0, rec(0, 10));
    let _rx1 = append(&mut c, t0, rec(1, 10));
    let later = t0 + Duration::from_millis(10);
    let tx = c.poll_transmit_gated(later, &m, |tp| tp.partition == 1);
    assert_eq!(tx.len(), 1);
    assert_eq!(
        tx[0].batches.len(),
        1,
        "partition 0 is not in the transaction yet"
    );
    assert_eq!(tx[0].batches[0].tp.partition, 1);
    let batch = RecordBatch::new(tx[0].batches[0].records.clone()).expect("a batch");
    assert!(batch.is_transactional());
    let tx = c.poll_transmit_gated(later, &m, |_| true);
    assert_eq!(tx[0].batches[0].tp.partition, 0, "sent once allowed");
}

#[test]
fn abort_drops_unsent_batches_and_failed_batches_are_reported() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = txn_core();
    let mut sent = append(&mut c, t0, rec(0, 10));
    let tx = c.poll_transmit(t0 + Duration::from_millis(10), &m);
    let mut unsent = append(&mut c, t0, rec(1, 10));
    // Partition 1's batch was never sent: dropped without a sequence.
    assert!(!c.abort_unsent(&Error::Aborted));
    assert!(matches!(got(&mut unsent), Some(Err(Error::Aborted))));
    assert!(
        got(&mut sent).is_none(),
        "the batch in flight waits for its answer"
    );
    assert!(!c.flushed(c.last_batch_id()));
    // It fails: the failure is reported with its sequence (the epoch must be bumped).
    c.handle_response(
        t0,
        tx[0].req,
        Ok(resp(0, ErrorCode::INVALID_TXN_STATE, -1, 0)),
    );
    assert!(got(&mut sent).unwrap().is_err());
    let failures = c.take_failures();
    assert_eq!(failures.len(), 1);
    assert!(failures[0].1, "it had a sequence");
    assert!(c.flushed(c.last_batch_id()));
}

/// Appends `r` with a callback that pushes its outcome to `out`.
fn append_cb(
    c: &mut Core,
    now: Instant,
    r: ProducerRecord,
    out: &Arc<std::sync::Mutex<Vec<Result<RecordMetadata>>>>,
) {
    let out = out.clone();
    let cb: DeliveryCallback = Box::new(move |res| out.lock().unwrap().push(res));
    let mut reply = Some(Reply::Callback(cb));
    match c.append_with(|| now, 1_000, 4, r, &mut reply) {
        Ok(()) => assert!(reply.is_none(), "an appended record's reply is taken"),
        Err(AppendError::Full(_)) => panic!("buffer full"),
        Err(AppendError::Failed(e)) => panic!("append failed: {e}"),
    }
}

#[test]
fn callbacks_are_handed_out_to_run_after_the_core_is_released() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    for _ in 0..3 {
        append_cb(&mut c, t0, rec(2, 10), &out);
    }
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(tx.len(), 1);
    c.handle_response(t0, tx[0].req, Ok(resp(2, ErrorCode::NONE, 40, 0)));
    // Nothing is called inside the core: the callbacks wait in the completed list.
    assert!(out.lock().unwrap().is_empty());
    let mut done = Vec::new();
    c.swap_completed(&mut done);
    assert_eq!(done.len(), 3);
    crate::producer::run_callbacks(done.drain(..));
    let got = std::mem::take(&mut *out.lock().unwrap());
    let offsets: Vec<(String, i32, i64)> = got
        .into_iter()
        .map(|r| {
            let md = r.unwrap();
            (md.topic.to_string(), md.partition, md.offset)
        })
        .collect();
    assert_eq!(
        offsets,
        vec![
            ("t".into(), 2, 40),
            ("t".into(), 2, 41),
            ("t".into(), 2, 42)
        ]
    );
    // The traded list is empty and nothing more is pending.
    assert!(c.take_completed().is_empty());
}

#[test]
fn failed_records_report_through_their_callbacks() {
    let t0 = Instant::now();
    let mut c = core_with(cfg());
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    append_cb(&mut c, t0, rec(0, 10), &out);
    let mut rx = append(&mut c, t0, rec(1, 10));
    c.fail_all(&Error::Closed);
    // The future's record is answered at once; the callback's waits to be called.
    assert!(matches!(got(&mut rx), Some(Err(Error::Closed))));
    let done = c.take_completed();
    assert_eq!(done.len(), 1);
    crate::producer::run_callbacks(done);
    let got = out.lock().unwrap();
    assert!(matches!(got.as_slice(), [Err(Error::Closed)]));
}

#[test]
fn a_full_buffer_hands_the_record_back_with_its_topic_and_keeps_the_reply() {
    let t0 = Instant::now();
    let mut small = cfg();
    small.buffer_memory = 4096;
    let mut c = core_with(small);
    append(&mut c, t0, rec(0, 2000));
    let (tx, _rx) = oneshot::channel();
    let mut reply = Some(Reply::Future(tx));
    match c.append_with(|| t0, 1_000, 4, rec(0, 3000), &mut reply) {
        Err(AppendError::Full(r)) => {
            assert_eq!(r.topic, "t");
            assert_eq!(r.value.as_ref().map(|v| v.len()), Some(3000));
        }
        Ok(()) => panic!("appended past buffer.memory"),
        Err(AppendError::Failed(e)) => panic!("append failed: {e}"),
    }
    assert!(
        reply.is_some(),
        "the reply stays with the caller for the retry"
    );
}

#[test]
fn acknowledged_batch_buffers_are_reused() {
    let t0 = Instant::now();
    let m = meta(&[1, 1, 1, 1]);
    let mut c = core_with(cfg());
    let _rx = append(&mut c, t0, rec(0, 100));
    let tx = c.poll_transmit(t0 + Duration::from_millis(5), &m);
    assert_eq!(tx.len(), 1);
    // The transmit's copy of the batch is gone (written), as after a real send.
    let req = tx[0].req;
    drop(tx);
    c.handle_response(t0, req, Ok(resp(0, ErrorCode::NONE, 0, 0)));
    assert_eq!(c.spare.len(), 1, "the acknowledged batch's buffer is kept");
    let _rx2 = append(&mut c, t0, rec(1, 100));
    assert!(c.spare.is_empty(), "the new batch took the kept buffer");
    // The new batch is whole and correct in the reused buffer.
    let tx = c.poll_transmit(t0 + Duration::from_millis(10), &m);
    let b = RecordBatch::new(tx[0].batches[0].records.clone()).unwrap();
    b.verify_crc().unwrap();
    assert_eq!(b.records_count(), 1);
}
