use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_wire::messages::fetch::{FetchableTopicResponse, LeaderIdAndEpoch, PartitionData};
use kafka_wire::records::{BatchBuilder, BatchOptions};
use kafka_wire::Uuid;

use super::*;
use crate::metadata::{BrokerInfo, PartitionMetadata, TopicMetadata};

const TOPIC_ID: Uuid = Uuid([7; 16]);

fn meta(partitions: i32, leader: impl Fn(i32) -> i32) -> ClusterMetadata {
    let mut m = ClusterMetadata::empty(Instant::now());
    for id in [1, 2] {
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
    m.topics.insert(
        "t".into(),
        Arc::new(TopicMetadata {
            name: "t".into(),
            topic_id: TOPIC_ID,
            is_internal: false,
            error: None,
            partitions: (0..partitions)
                .map(|p| PartitionMetadata {
                    partition: p,
                    leader: leader(p),
                    leader_epoch: 3,
                    replicas: vec![leader(p)],
                    isr: vec![leader(p)],
                    offline: vec![],
                    error: None,
                })
                .collect(),
        }),
    );
    m
}

fn settings() -> FetchSettings {
    let mut c = ConsumerConfig::default();
    c.auto_offset_reset(AutoOffsetReset::Earliest);
    FetchSettings::from_config(&c)
}

fn batch(base: i64, n: i64) -> Bytes {
    let mut b = BatchBuilder::new(BatchOptions {
        base_offset: base,
        ..Default::default()
    });
    for i in 0..n {
        b.append(100 + i, None, Some(format!("{}", base + i).as_bytes()), &[])
            .unwrap();
    }
    b.finish().unwrap()
}

fn response(parts: Vec<PartitionData>, session_id: i32) -> FetchResponse {
    FetchResponse {
        session_id,
        responses: vec![FetchableTopicResponse {
            topic_id: TOPIC_ID,
            partitions: parts,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn data(p: i32, records: Bytes, hw: i64) -> PartitionData {
    PartitionData {
        partition_index: p,
        high_watermark: hw,
        last_stable_offset: hw,
        records: Some(records),
        ..Default::default()
    }
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

/// A fetcher with partitions 0..n assigned and at offset 0.
fn ready(n: i32) -> Fetcher {
    let mut f = Fetcher::new(settings());
    f.assign((0..n).map(tp));
    for p in 0..n {
        f.seek(&tp(p), 0);
    }
    f
}

fn fetch_parts(req: &FetchRequest) -> BTreeMap<i32, i64> {
    req.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.fetch_offset)))
        .collect()
}

#[test]
fn new_partitions_reset_per_policy_then_fetch() {
    let m = meta(2, |_| 1);
    let mut f = Fetcher::new(settings());
    f.assign([tp(0), tp(1)]);
    assert_eq!(f.position(&tp(0)), None);
    let resets = f.poll_resets();
    assert_eq!(resets.len(), 2);
    assert!(resets.iter().all(|(_, o, _)| *o == Offset::Earliest));
    // Not asked twice while in flight.
    assert!(f.poll_resets().is_empty());
    // Nothing to fetch before positions are known.
    assert!(f.poll_fetch_brokers(Instant::now(), &m).0.is_empty());
    for (t, _, g) in resets {
        f.handle_reset(&t, g, Ok(5));
    }
    assert_eq!(f.position(&tp(1)), Some(5));
    let (brokers, refresh) = f.poll_fetch_brokers(Instant::now(), &m);
    assert_eq!(brokers, vec![1]);
    assert!(!refresh);
    let req = f.build_fetch(1, 13, &m).unwrap();
    assert_eq!(fetch_parts(&req), BTreeMap::from([(0, 5), (1, 5)]));
    assert_eq!(req.topics[0].topic_id, TOPIC_ID);
    assert_eq!(req.topics[0].partitions[0].current_leader_epoch, 3);
    // One fetch in flight per broker.
    assert!(f.poll_fetch_brokers(Instant::now(), &m).0.is_empty());
}

#[test]
fn positions_advance_and_earlier_offsets_in_a_batch_are_skipped() {
    let m = meta(1, |_| 1);
    let mut f = ready(1);
    f.seek(&tp(0), 3);
    let (b, _) = f.poll_fetch_brokers(Instant::now(), &m);
    let req = f.build_fetch(b[0], 13, &m).unwrap();
    assert_eq!(fetch_parts(&req)[&0], 3);
    // The broker returns the whole batch 0..10.
    let actions = f.handle_fetch_response(
        1,
        Instant::now(),
        response(vec![data(0, batch(0, 10), 10)], 9),
        &m,
    );
    assert!(actions.is_empty());
    assert_eq!(f.lag(&tp(0)), Some(7));
    let got = f.take_records(4).unwrap();
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert_eq!(f.position(&tp(0)), Some(7));
    assert_eq!(f.lag(&tp(0)), Some(3));
    // Prefetch: the next fetch starts after the buffered records, incrementally.
    let (b, _) = f.poll_fetch_brokers(Instant::now(), &m);
    let req = f.build_fetch(b[0], 13, &m).unwrap();
    assert_eq!((req.session_id, req.session_epoch), (9, 1));
    assert_eq!(fetch_parts(&req)[&0], 10);
    let got = f.take_records(100).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(f.position(&tp(0)), Some(10));
    assert_eq!(f.lag(&tp(0)), Some(0));
    assert_eq!(f.buffered_bytes(), 0);
}

#[test]
fn seek_during_a_fetch_drops_its_records() {
    let m = meta(1, |_| 1);
    let mut f = ready(1);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    f.seek(&tp(0), 50);
    f.handle_fetch_response(
        1,
        Instant::now(),
        response(vec![data(0, batch(0, 10), 10)], 1),
        &m,
    );
    assert!(f.take_records(100).unwrap().is_empty());
    assert_eq!(f.position(&tp(0)), Some(50));
}

#[test]
fn pause_and_resume() {
    let m = meta(2, |_| 1);
    let mut f = ready(2);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    f.handle_fetch_response(
        1,
        Instant::now(),
        response(vec![data(0, batch(0, 2), 2), data(1, batch(0, 2), 2)], 4),
        &m,
    );
    f.pause(&[tp(0)]);
    let got = f.take_records(100).unwrap();
    assert!(got.iter().all(|r| r.partition == 1));
    assert_eq!(got.len(), 2);
    // A paused partition is not fetched: it leaves the session (forgotten).
    f.poll_fetch_brokers(Instant::now(), &m);
    let req = f.build_fetch(1, 13, &m).unwrap();
    assert_eq!(fetch_parts(&req), BTreeMap::from([(1, 2)]));
    assert_eq!(req.forgotten_topics_data.len(), 1);
    assert_eq!(req.forgotten_topics_data[0].partitions, vec![0]);
    f.handle_fetch_response(1, Instant::now(), response(vec![], 4), &m);
    f.resume(&[tp(0)]);
    let got = f.take_records(100).unwrap();
    assert_eq!(
        got.iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        vec![(0, 0), (0, 1)]
    );
    f.poll_fetch_brokers(Instant::now(), &m);
    let req = f.build_fetch(1, 13, &m).unwrap();
    assert_eq!(fetch_parts(&req), BTreeMap::from([(0, 2)]));
}

#[test]
fn prefetch_stops_at_the_bound() {
    let m = meta(2, |p| p + 1);
    let mut s = settings();
    s.max_prefetch_bytes = 100;
    let mut f = Fetcher::new(s);
    f.assign([tp(0), tp(1)]);
    f.seek(&tp(0), 0);
    f.seek(&tp(1), 0);
    let (b, _) = f.poll_fetch_brokers(Instant::now(), &m);
    assert_eq!(b, vec![1, 2]);
    f.build_fetch(1, 13, &m).unwrap();
    f.build_fetch(2, 13, &m).unwrap();
    f.handle_fetch_response(
        1,
        Instant::now(),
        response(vec![data(0, batch(0, 20), 20)], 1),
        &m,
    );
    assert!(f.buffered_bytes() >= 100);
    // Broker 2's answer still lands, but no new fetch goes out while the buffer is full.
    f.handle_fetch_response(
        2,
        Instant::now(),
        response(vec![data(1, batch(0, 1), 1)], 1),
        &m,
    );
    assert!(f.poll_fetch_brokers(Instant::now(), &m).0.is_empty());
    while !f.take_records(7).unwrap().is_empty() {}
    assert_eq!(f.buffered_bytes(), 0);
    assert_eq!(f.poll_fetch_brokers(Instant::now(), &m).0, vec![1, 2]);
}

#[test]
fn offset_out_of_range_resets_per_policy() {
    let m = meta(1, |_| 1);
    let mut f = ready(1);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    let mut pd = data(0, Bytes::new(), -1);
    pd.error_code = ErrorCode::OFFSET_OUT_OF_RANGE.0;
    f.handle_fetch_response(1, Instant::now(), response(vec![pd.clone()], 1), &m);
    assert_eq!(f.position(&tp(0)), None);
    let resets = f.poll_resets();
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].1, Offset::Earliest);
    f.handle_reset(&tp(0), resets[0].2, Ok(42));
    assert_eq!(f.position(&tp(0)), Some(42));

    // With auto.offset.reset=none: a typed error for that partition.
    let mut s = settings();
    s.auto_offset_reset = AutoOffsetReset::None;
    let mut f = Fetcher::new(s);
    f.assign([tp(0)]);
    let e = f.take_records(10).unwrap_err();
    assert_eq!(e.broker_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    f.seek(&tp(0), 0);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    f.handle_fetch_response(1, Instant::now(), response(vec![pd], 1), &m);
    let e = f.take_records(10).unwrap_err();
    assert_eq!(e.broker_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    assert!(e.to_string().contains("t-0"));
    assert!(f.poll_resets().is_empty());
}

#[test]
fn leader_errors_refresh_and_apply_hints() {
    let m = meta(1, |_| 1);
    let mut f = ready(1);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    let mut pd = data(0, Bytes::new(), -1);
    pd.error_code = ErrorCode::NOT_LEADER_OR_FOLLOWER.0;
    pd.current_leader = LeaderIdAndEpoch {
        leader_id: 2,
        leader_epoch: 4,
        ..Default::default()
    };
    let actions = f.handle_fetch_response(1, Instant::now(), response(vec![pd], 1), &m);
    assert!(actions.contains(&Action::RefreshMetadata));
    assert!(actions.contains(&Action::LeaderHint {
        topic: "t".into(),
        partition: 0,
        leader: 2,
        epoch: 4
    }));
    assert_eq!(f.position(&tp(0)), Some(0));
}

#[test]
fn session_errors_make_the_next_fetch_full() {
    let m = meta(2, |_| 1);
    let mut f = ready(2);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    f.handle_fetch_response(1, Instant::now(), response(vec![], 11), &m);
    f.poll_fetch_brokers(Instant::now(), &m);
    let req = f.build_fetch(1, 13, &m).unwrap();
    assert_eq!((req.session_id, req.session_epoch), (11, 1));
    assert!(req.topics.is_empty());
    let mut resp = response(vec![], 0);
    resp.error_code = ErrorCode::INVALID_FETCH_SESSION_EPOCH.0;
    f.handle_fetch_response(1, Instant::now(), resp, &m);
    f.poll_fetch_brokers(Instant::now(), &m);
    let req = f.build_fetch(1, 13, &m).unwrap();
    assert_eq!((req.session_id, req.session_epoch), (0, 0));
    assert_eq!(fetch_parts(&req).len(), 2);
    // A failed request backs the broker off and reopens the session.
    let now = Instant::now();
    f.handle_fetch_error(1, now, &Error::Closed);
    assert!(f.poll_fetch_brokers(now, &m).0.is_empty());
    assert!(f.poll_timeout(now).is_some());
    assert_eq!(
        f.poll_fetch_brokers(now + Duration::from_secs(5), &m).0,
        vec![1]
    );
}

#[test]
fn close_hands_out_open_sessions() {
    let m = meta(1, |_| 1);
    let mut f = ready(1);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    f.handle_fetch_response(1, Instant::now(), response(vec![], 21), &m);
    assert_eq!(f.take_sessions(), vec![(1, 21)]);
    assert!(f.take_sessions().is_empty());
}

#[test]
fn group_partitions_wait_for_their_committed_offset() {
    let m = meta(3, |_| 1);
    let mut f = Fetcher::new(settings());
    f.add_pending(&[tp(0), tp(1), tp(2)]);
    assert_eq!(f.assignment().len(), 3);
    // Neither reset nor fetched while the committed offset is looked up.
    assert!(f.poll_resets().is_empty());
    assert!(f.poll_fetch_brokers(Instant::now(), &m).0.is_empty());
    assert!(f.is_pending(&tp(0)));
    // A seek (from the assigned hook) wins over the committed offset.
    f.seek(&tp(2), 9);
    assert!(!f.is_pending(&tp(2)));
    f.start(&tp(0), Some(7));
    f.start(&tp(1), None);
    f.start(&tp(2), Some(1));
    assert_eq!(f.position(&tp(0)), Some(7));
    assert_eq!(f.position(&tp(2)), Some(9));
    let resets = f.poll_resets();
    assert_eq!(resets.len(), 1);
    assert_eq!((&resets[0].0, resets[0].1), (&tp(1), Offset::Earliest));
    // Only partitions with a known position count for commits.
    let positions: Vec<(i32, i64)> = f
        .commit_positions()
        .into_iter()
        .map(|(tp, o, _)| (tp.partition, o))
        .collect();
    assert_eq!(positions, vec![(0, 7), (2, 9)]);
}

#[test]
fn fenced_partitions_hand_nothing_out_and_keep_their_position() {
    let m = meta(2, |_| 1);
    let mut f = ready(2);
    f.poll_fetch_brokers(Instant::now(), &m);
    f.build_fetch(1, 13, &m).unwrap();
    f.handle_fetch_response(
        1,
        Instant::now(),
        response(vec![data(0, batch(0, 4), 4), data(1, batch(0, 4), 4)], 4),
        &m,
    );
    assert_eq!(f.take_records(1).unwrap().len(), 1);
    let before = f.position(&tp(0));
    f.fence(&[tp(0)]);
    // Resuming does not undo a revocation.
    f.resume(&[tp(0)]);
    let got = f.take_records(100).unwrap();
    assert!(got.iter().all(|r| r.partition == 1), "{got:?}");
    assert_eq!(f.position(&tp(0)), before);
    assert!(f
        .commit_positions()
        .iter()
        .any(|(t, o, _)| *t == tp(0) && Some(*o) == before));
    f.remove(&[tp(0)]);
    assert_eq!(f.assignment(), vec![tp(1)]);
    assert_eq!(f.buffered_bytes(), 0);
}
