//! The producer end to end on the shared 1-node broker: 1,000,000 keyed records with headers and
//! explicit timestamps over 12 partitions, once per compression codec, read back with the
//! consumer. Every record must arrive exactly once, in order per partition, intact, at the
//! (partition, offset) its delivery future reported.
//!
//! Memory stays bounded: a record's content is a function of its index (carried in the key), so
//! only one packed (partition, offset) word per record is kept, plus a bitmap of records seen.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_client::admin::NewTopic;
use kafka_client::config::{AutoOffsetReset, ClientConfig, ConsumerConfig, ProducerConfig};
use kafka_client::kafka_wire::Codec;
use kafka_client::{
    Admin, Consumer, ConsumerRecord, DeliveryFuture, Header, Offset, Producer, ProducerRecord,
    TopicPartition,
};
use tokio::sync::mpsc;

const RECORDS: u64 = 1_000_000;
const PARTITIONS: i32 = 12;
/// Bounds of each phase; a phase that takes longer fails the test with a message.
const PRODUCE_WITHIN: Duration = Duration::from_secs(300);
const CONSUME_WITHIN: Duration = Duration::from_secs(300);
/// No acknowledgement recorded yet.
const UNSET: u64 = u64::MAX;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:07}"))
}

fn index_of(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(b"key-")?)
        .ok()?
        .parse()
        .ok()
}

/// 8 to 71 bytes: the index, then a run derived from it (compressible, but different per record).
fn value(i: u64) -> Bytes {
    let len = 8 + (i.wrapping_mul(2_654_435_761) % 64) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&i.to_le_bytes());
    let seed = (i % 251) as u8;
    for j in 0..len - 8 {
        v.push(seed.wrapping_add((j / 4) as u8));
    }
    Bytes::from(v)
}

fn timestamp(base: i64, i: u64) -> i64 {
    base + (i / 16) as i64
}

fn headers(i: u64, codec: &str) -> Vec<Header> {
    vec![
        Header {
            key: "idx".into(),
            value: Some(Bytes::from(i.to_be_bytes().to_vec())),
        },
        Header {
            key: "codec".into(),
            value: Some(Bytes::from(codec.to_string())),
        },
        Header {
            key: "null".into(),
            value: None,
        },
    ]
}

fn pack(partition: i32, offset: i64) -> u64 {
    assert!(
        (0..PARTITIONS).contains(&partition),
        "partition {partition}"
    );
    assert!((0..1 << 48).contains(&offset), "offset {offset}");
    ((partition as u64) << 48) | offset as u64
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::None => "none",
        Codec::Gzip => "gzip",
        Codec::Snappy => "snappy",
        Codec::Lz4 => "lz4",
        Codec::Zstd => "zstd",
    }
}

async fn bootstrap() -> String {
    testkit::shared_cluster(1)
        .await
        .expect("the shared 1-node cluster must start")
        .bootstrap()
}

/// Produces every record; returns the packed (partition, offset) of each, by index.
async fn produce_all(bootstrap: &str, topic: &str, codec: Codec, base_ts: i64) -> Vec<u64> {
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(vec![bootstrap.to_string()])
        .client_id(format!("roundtrip-{}", codec_name(codec)));
    cfg.compression(codec)
        .linger(Duration::from_millis(10))
        .batch_size(256 << 10)
        .buffer_memory(64 << 20);
    let producer = Producer::new(cfg).await.expect("producer starts");

    // Delivery futures are awaited in send order by a collector task; the bounded channel and
    // the producer's buffer memory bound what is held at once.
    let (tx, mut rx) = mpsc::channel::<(u64, DeliveryFuture)>(1 << 16);
    let topic_owned = topic.to_string();
    let collector = tokio::spawn(async move {
        let mut acks = vec![UNSET; RECORDS as usize];
        while let Some((i, fut)) = rx.recv().await {
            let meta = match fut.await {
                Ok(m) => m,
                Err(e) => panic!("record {i} failed: {e}"),
            };
            assert_eq!(&*meta.topic, topic_owned.as_str());
            assert_eq!(meta.timestamp, timestamp(base_ts, i), "record {i}");
            assert!(
                meta.offset >= 0,
                "record {i} acknowledged without an offset"
            );
            acks[i as usize] = pack(meta.partition, meta.offset);
        }
        acks
    });
    let name = codec_name(codec);
    for i in 0..RECORDS {
        // Keyed: the partitioner spreads the records over the 12 partitions.
        let mut record = ProducerRecord::new(topic)
            .key(key(i))
            .value(value(i))
            .timestamp(timestamp(base_ts, i));
        record.headers = headers(i, name);
        let fut = producer
            .send(record)
            .await
            .unwrap_or_else(|e| panic!("send of record {i} refused: {e}"));
        if tx.send((i, fut)).await.is_err() {
            break; // The collector ended: its panic is reported below.
        }
    }
    drop(tx);
    producer.flush().await.expect("flush");
    let acks = match collector.await {
        Ok(a) => a,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    producer.close().await.expect("close");
    acks
}

/// What one partition's reader expects next.
#[derive(Clone, Copy, Default)]
struct PartitionCursor {
    next_offset: i64,
    last_index: Option<u64>,
}

fn check_record(
    r: &ConsumerRecord,
    acks: &[u64],
    seen: &mut [u64],
    cursors: &mut [PartitionCursor],
    base_ts: i64,
    codec: &str,
) {
    let at = format!("{}-{}@{}", r.topic, r.partition, r.offset);
    let i = r
        .key
        .as_deref()
        .and_then(index_of)
        .unwrap_or_else(|| panic!("{at}: unexpected key {:?}", r.key));
    assert!(i < RECORDS, "{at}: index {i} out of range");
    let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
    assert!(seen[word] & bit == 0, "{at}: record {i} read twice");
    seen[word] |= bit;
    assert_eq!(
        acks[i as usize],
        pack(r.partition, r.offset),
        "{at}: record {i} read where its delivery future did not say"
    );
    let c = &mut cursors[r.partition as usize];
    assert_eq!(
        r.offset, c.next_offset,
        "{at}: gap or repeat in the partition"
    );
    c.next_offset += 1;
    if let Some(last) = c.last_index {
        assert!(
            last < i,
            "{at}: record {i} after record {last}: order broken"
        );
    }
    c.last_index = Some(i);
    assert_eq!(r.value, Some(value(i)), "{at}: value of record {i}");
    assert_eq!(r.timestamp, timestamp(base_ts, i), "{at}: timestamp of {i}");
    assert_eq!(r.headers, headers(i, codec), "{at}: headers of record {i}");
}

async fn consume_all(bootstrap: &str, topic: &str, acks: &[u64], base_ts: i64, codec: &str) {
    let mut cfg = ConsumerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(vec![bootstrap.to_string()])
        .client_id(format!("roundtrip-reader-{codec}"));
    cfg.auto_offset_reset(AutoOffsetReset::None)
        .enable_auto_commit(false)
        .max_poll_records(10_000);
    let consumer = Consumer::new(cfg).await.expect("consumer starts");
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(tps.clone()).await.expect("assign");
    for tp in &tps {
        consumer.seek(tp, Offset::Earliest).await.expect("seek");
        assert_eq!(consumer.position(tp), Some(0), "{tp} starts at 0");
    }
    let mut seen = vec![0u64; RECORDS.div_ceil(64) as usize];
    let mut cursors = vec![PartitionCursor::default(); PARTITIONS as usize];
    let mut read = 0u64;
    let deadline = Instant::now() + CONSUME_WITHIN;
    while read < RECORDS {
        assert!(
            Instant::now() < deadline,
            "only {read} of {RECORDS} records read within {CONSUME_WITHIN:?}"
        );
        let batch = consumer.poll(Duration::from_secs(1)).await.expect("poll");
        for r in &batch {
            check_record(r, acks, &mut seen, &mut cursors, base_ts, codec);
        }
        read += batch.len() as u64;
    }
    assert_eq!(read, RECORDS, "more records than were produced");
    // Every partition ends where the producer's acknowledgements say, and nothing follows.
    let mut expected = vec![0i64; PARTITIONS as usize];
    for &a in acks {
        expected[(a >> 48) as usize] += 1;
    }
    for (p, c) in cursors.iter().enumerate() {
        assert_eq!(c.next_offset, expected[p], "partition {p} record count");
    }
    let extra = consumer
        .poll(Duration::from_millis(500))
        .await
        .expect("final poll");
    assert!(
        extra.is_empty(),
        "{} unexpected records after the last",
        extra.len()
    );
    consumer.close().await;
}

async fn roundtrip(codec: Codec) {
    let name = codec_name(codec);
    let bootstrap = bootstrap().await;
    let topic = format!("roundtrip-{name}");
    let mut admin_cfg = ClientConfig::default();
    admin_cfg
        .bootstrap_servers(vec![bootstrap.clone()])
        .request_timeout(Duration::from_secs(30));
    let admin = Admin::new(admin_cfg).await.expect("admin connects");
    // retention.ms=-1: nothing is deleted while we read, whatever the timestamps.
    admin
        .create_topic(&NewTopic::new(&topic, PARTITIONS, 1).config("retention.ms", "-1"))
        .await
        .expect("create topic");

    // Recent timestamps (an hour ago, rising by 1 ms every 16 records) are accepted by the
    // broker's timestamp bounds.
    let base_ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
        - 3_600_000;

    let started = Instant::now();
    let acks = tokio::time::timeout(
        PRODUCE_WITHIN,
        produce_all(&bootstrap, &topic, codec, base_ts),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: producing {RECORDS} records took over {PRODUCE_WITHIN:?}"));
    let produced = started.elapsed();
    assert!(
        acks.iter().all(|&a| a != UNSET),
        "every record acknowledged"
    );
    let mut per_partition = vec![0u64; PARTITIONS as usize];
    for &a in &acks {
        per_partition[(a >> 48) as usize] += 1;
    }
    assert!(
        per_partition.iter().all(|&n| n > 0),
        "the keys spread over all partitions: {per_partition:?}"
    );

    let started = Instant::now();
    tokio::time::timeout(
        CONSUME_WITHIN + Duration::from_secs(30),
        consume_all(&bootstrap, &topic, &acks, base_ts, name),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: consuming took over {CONSUME_WITHIN:?}"));
    let consumed = started.elapsed();
    println!(
        "roundtrip {name}: {RECORDS} records over {PARTITIONS} partitions {per_partition:?}: \
         produced in {produced:.1?} ({:.0} rec/s), consumed in {consumed:.1?} ({:.0} rec/s)",
        RECORDS as f64 / produced.as_secs_f64(),
        RECORDS as f64 / consumed.as_secs_f64()
    );
    admin.delete_topics(&[&topic]).await.expect("delete topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_none() {
    roundtrip(Codec::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_gzip() {
    roundtrip(Codec::Gzip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_snappy() {
    roundtrip(Codec::Snappy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_lz4() {
    roundtrip(Codec::Lz4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_zstd() {
    roundtrip(Codec::Zstd).await;
}
