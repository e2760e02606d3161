//! The direct-assignment consumer against a real broker: data written with raw Produce requests,
//! read back with poll and with the stream, seeks, pause/resume and lag.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_client::client::Purpose;
use kafka_client::config::{AutoOffsetReset, ConsumerConfig};
use kafka_client::kafka_wire::messages::create_topics::{CreatableTopic, CreateTopicsRequest};
use kafka_client::kafka_wire::messages::produce::{PartitionProduceData, TopicProduceData};
use kafka_client::kafka_wire::messages::ProduceRequest;
use kafka_client::kafka_wire::records::{BatchBuilder, BatchOptions};
use kafka_client::kafka_wire::{Codec, ErrorCode, KString};
use kafka_client::{Client, Consumer, ConsumerRecord, Offset, TopicPartition};

pub(crate) async fn bootstrap() -> String {
    testkit::shared_cluster(1)
        .await
        .expect("the shared 1-node cluster must start")
        .bootstrap()
}

pub(crate) fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::default();
    c.client_mut()
        .bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    c.auto_offset_reset(AutoOffsetReset::Earliest);
    c.enable_auto_commit(false);
    c
}

pub(crate) async fn create_topic(client: &Client, name: &str, partitions: i32) {
    let req = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: KString::from(name),
            num_partitions: partitions,
            replication_factor: 1,
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    };
    let resp = client
        .send_any(Purpose::Control, move |_| req)
        .await
        .expect("CreateTopics");
    for t in &resp.topics {
        assert!(
            t.error_code == 0 || t.error_code == ErrorCode::TOPIC_ALREADY_EXISTS.0,
            "create {name}: {}",
            ErrorCode(t.error_code)
        );
    }
    // Wait until the broker's metadata has the new topic and its leaders.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.topic(name).await {
            Ok(t) if t.partitions.len() == partitions as usize => return,
            Ok(_) => {}
            Err(e) => assert!(Instant::now() < deadline, "metadata of {name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = client.refresh_metadata().await;
    }
}

type Rec = (Vec<u8>, Vec<u8>, i64);

/// Writes one batch to `topic`-`partition`; returns its base offset.
pub(crate) async fn produce(
    client: &Client,
    topic: &str,
    partition: i32,
    records: &[Rec],
    codec: Codec,
) -> i64 {
    let mut b = BatchBuilder::new(BatchOptions {
        compression: codec,
        max_batch_bytes: 8 << 20,
        ..Default::default()
    });
    for (k, v, ts) in records {
        b.append(*ts, Some(k), Some(v), &[("h", Some(k.as_slice()))])
            .unwrap();
    }
    let batch = b.finish().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = client.topic(topic).await.expect("topic");
        let leader = t.partition(partition).expect("partition").leader;
        let req = ProduceRequest {
            acks: -1,
            timeout_ms: 30_000,
            topic_data: vec![TopicProduceData {
                name: KString::from(topic),
                topic_id: t.topic_id,
                partition_data: vec![PartitionProduceData {
                    index: partition,
                    records: Some(batch.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let resp = client.send(leader, Purpose::Produce, move |_| req).await;
        match resp {
            Ok(r) => {
                let p = &r.responses[0].partition_responses[0];
                if p.error_code == 0 {
                    return p.base_offset;
                }
                assert!(
                    ErrorCode(p.error_code).is_retriable() && Instant::now() < deadline,
                    "produce: {}",
                    ErrorCode(p.error_code)
                );
            }
            Err(e) => assert!(
                e.is_retriable() && Instant::now() < deadline,
                "produce: {e}"
            ),
        }
        client.request_metadata_refresh();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rec(p: i32, i: i64, base_ts: i64) -> Rec {
    (
        format!("k-{p}-{i}").into_bytes(),
        format!("value {i} of {p}").into_bytes(),
        base_ts + i,
    )
}

const PARTITIONS: i32 = 12;
const PER_PARTITION: i64 = 60;
const BASE_TS: i64 = 1_700_000_000_000;

/// A 12-partition topic with 60 records per partition in two batches (gzip, then none).
async fn filled_topic(client: &Client, name: &str) {
    create_topic(client, name, PARTITIONS).await;
    for p in 0..PARTITIONS {
        let first: Vec<Rec> = (0..PER_PARTITION / 2).map(|i| rec(p, i, BASE_TS)).collect();
        let second: Vec<Rec> = (PER_PARTITION / 2..PER_PARTITION)
            .map(|i| rec(p, i, BASE_TS))
            .collect();
        assert_eq!(produce(client, name, p, &first, Codec::Gzip).await, 0);
        assert_eq!(
            produce(client, name, p, &second, Codec::None).await,
            PER_PARTITION / 2
        );
    }
}

fn check(r: &ConsumerRecord) {
    let (k, v, ts) = rec(r.partition, r.offset, BASE_TS);
    assert_eq!(r.key.as_deref(), Some(k.as_slice()));
    assert_eq!(r.value.as_deref(), Some(v.as_slice()));
    assert_eq!(r.timestamp, ts);
    assert_eq!(r.headers.len(), 1);
    assert_eq!(r.headers[0].key, "h");
    assert_eq!(r.headers[0].value.as_deref(), Some(k.as_slice()));
}

async fn poll_until(c: &Consumer, n: usize, within: Duration) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived",
            out.len()
        );
        out.extend(c.poll(Duration::from_millis(500)).await.expect("poll"));
    }
    out
}

fn all_tps(topic: &str) -> Vec<TopicPartition> {
    (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect()
}

#[tokio::test]
async fn consume_everything_with_poll_and_stream() {
    let bootstrap = bootstrap().await;
    let topic = "consumer-all";
    let consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    filled_topic(consumer.client(), topic).await;
    consumer.assign(all_tps(topic)).await.unwrap();
    assert_eq!(consumer.assignment().len(), PARTITIONS as usize);
    let total = (PARTITIONS as i64 * PER_PARTITION) as usize;
    let records = poll_until(&consumer, total, Duration::from_secs(60)).await;
    assert_eq!(records.len(), total);
    let mut next: HashMap<i32, i64> = HashMap::new();
    for r in &records {
        check(r);
        let n = next.entry(r.partition).or_insert(0);
        assert_eq!(r.offset, *n, "in order, no gaps, no duplicates");
        *n += 1;
    }
    // Nothing more; positions at the end; lag 0 once the high watermark is known.
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
    for tp in all_tps(topic) {
        assert_eq!(consumer.position(&tp), Some(PER_PARTITION));
        assert_eq!(consumer.lag(&tp), Some(0), "{tp}");
    }
    consumer.close().await;

    // Same through the stream.
    use std::future::poll_fn;
    use std::pin::pin;
    let consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    consumer.assign(all_tps(topic)).await.unwrap();
    let mut stream = pin!(consumer.stream());
    let mut seen: BTreeMap<(i32, i64), ()> = BTreeMap::new();
    let got = tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < total {
            let r = poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx))
                .await
                .expect("stream ended")
                .expect("stream error");
            check(&r);
            assert!(seen.insert((r.partition, r.offset), ()).is_none());
        }
    })
    .await;
    assert!(got.is_ok(), "stream gave {} of {total}", seen.len());
    consumer.close().await;
}

#[tokio::test]
async fn seek_pause_resume_and_lag() {
    let bootstrap = bootstrap().await;
    let topic = "consumer-seek";
    let mut cfg = consumer_config(&bootstrap);
    cfg.auto_offset_reset(AutoOffsetReset::Latest);
    let consumer = Consumer::new(cfg).await.unwrap();
    filled_topic(consumer.client(), topic).await;
    let tp0 = TopicPartition::new(topic, 0);
    let tp1 = TopicPartition::new(topic, 1);
    consumer.assign([tp0.clone(), tp1.clone()]).await.unwrap();

    // auto.offset.reset=latest: nothing to read, positions at the end.
    assert!(consumer
        .poll(Duration::from_millis(1500))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.position(&tp0), Some(PER_PARTITION));
    assert_eq!(consumer.lag(&tp0), Some(0));

    // Earliest.
    consumer.seek(&tp0, Offset::Earliest).await.unwrap();
    assert_eq!(consumer.position(&tp0), Some(0));
    let got = poll_until(&consumer, PER_PARTITION as usize, Duration::from_secs(30)).await;
    assert!(got.iter().all(|r| r.partition == 0));
    assert_eq!(got.first().unwrap().offset, 0);

    // An exact offset (inside the first, compressed batch).
    consumer.seek(&tp0, Offset::At(7)).await.unwrap();
    let got = poll_until(&consumer, 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].offset, 7);
    check(&got[0]);

    // A timestamp: the first record at or after it.
    consumer
        .seek(&tp0, Offset::Timestamp(BASE_TS + 42))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp0), Some(42));
    // A timestamp after the last record: the log end.
    consumer
        .seek(&tp0, Offset::Timestamp(BASE_TS + 10_000))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp0), Some(PER_PARTITION));
    consumer.seek(&tp0, Offset::Latest).await.unwrap();
    assert_eq!(consumer.position(&tp0), Some(PER_PARTITION));
    let unassigned = TopicPartition::new(topic, 5);
    assert!(consumer.seek(&unassigned, Offset::Earliest).await.is_err());

    // Pause partition 1: rewinding it yields nothing until resumed.
    consumer.pause(std::slice::from_ref(&tp1));
    consumer.seek(&tp1, Offset::At(50)).await.unwrap();
    assert!(consumer
        .poll(Duration::from_millis(1500))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(consumer.position(&tp1), Some(50));
    consumer.resume(std::slice::from_ref(&tp1));
    let got = poll_until(&consumer, 10, Duration::from_secs(30)).await;
    assert_eq!(
        got.iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        (50..60).map(|o| (1, o)).collect::<Vec<_>>()
    );
    assert_eq!(consumer.lag(&tp1), Some(0));

    // New data arrives while we are at the end: lag shows it, then reaches 0.
    let more: Vec<Rec> = (PER_PARTITION..PER_PARTITION + 5)
        .map(|i| rec(1, i, BASE_TS))
        .collect();
    produce(consumer.client(), topic, 1, &more, Codec::Lz4).await;
    let got = poll_until(&consumer, 5, Duration::from_secs(30)).await;
    assert_eq!(got.last().unwrap().offset, PER_PARTITION + 4);
    assert_eq!(consumer.lag(&tp1), Some(0));

    // Replacing the assignment.
    consumer.assign([tp1.clone()]).await.unwrap();
    assert_eq!(consumer.assignment(), vec![tp1.clone()]);
    assert_eq!(consumer.position(&tp0), None);
    consumer.close().await;
    assert!(consumer.poll(Duration::from_millis(10)).await.is_err());
}

#[tokio::test]
async fn offset_out_of_range_resets_or_fails() {
    let bootstrap = bootstrap().await;
    let topic = "consumer-out-of-range";
    let consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    create_topic(consumer.client(), topic, 1).await;
    let recs: Vec<Rec> = (0..10).map(|i| rec(0, i, BASE_TS)).collect();
    produce(consumer.client(), topic, 0, &recs, Codec::Zstd).await;
    let tp = TopicPartition::new(topic, 0);
    consumer.assign([tp.clone()]).await.unwrap();
    // Past the end: the broker says OFFSET_OUT_OF_RANGE, auto.offset.reset=earliest rewinds.
    consumer.seek(&tp, Offset::At(1000)).await.unwrap();
    let got = poll_until(&consumer, 10, Duration::from_secs(30)).await;
    assert_eq!(got.first().unwrap().offset, 0);
    assert_eq!(consumer.position(&tp), Some(10));
    consumer.close().await;

    // auto.offset.reset=none: a typed error, before and after a seek past the end.
    let mut cfg = consumer_config(&bootstrap);
    cfg.auto_offset_reset(AutoOffsetReset::None);
    let strict = Consumer::new(cfg).await.unwrap();
    strict.assign([tp.clone()]).await.unwrap();
    let e = strict.poll(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.broker_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE));
    strict.seek(&tp, Offset::At(1000)).await.unwrap();
    let e = strict.poll(Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(e.broker_code(), Some(ErrorCode::OFFSET_OUT_OF_RANGE), "{e}");
    strict.seek(&tp, Offset::At(4)).await.unwrap();
    let got = poll_until(&strict, 6, Duration::from_secs(30)).await;
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
    strict.close().await;
}
