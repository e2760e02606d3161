//! Interop with Apache Kafka's Java client (`tests/java/ClientInterop.java`, run on testkit's
//! classpath): Java writes with every codec and in transactions, our consumer reads; our producer
//! writes with every codec, Java reads, and both partition keys alike. Needs `java`/`javac` and the
//! Kafka jars; fails, never skips, without them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_client::config::{IsolationLevel, ProducerConfig};
use kafka_client::kafka_wire::Codec;
use kafka_client::producer::{Producer, ProducerRecord};
use kafka_client::{Consumer, ConsumerRecord, TopicPartition};

use crate::consumer::{bootstrap, consumer_config, create_topic};
use crate::jvm;

const CODECS: [(Codec, &str); 5] = [
    (Codec::None, "none"),
    (Codec::Gzip, "gzip"),
    (Codec::Snappy, "snappy"),
    (Codec::Lz4, "lz4"),
    (Codec::Zstd, "zstd"),
];
const BASE_TS: i64 = 1_650_000_000_000;

async fn java(args: Vec<String>) -> String {
    jvm::run_async("ClientInterop", args).await
}

async fn read_all(
    consumer: &Consumer,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Vec<ConsumerRecord> {
    consumer
        .assign((0..partitions).map(|p| TopicPartition::new(topic, p)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{topic}: {} of {n} records",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    // Nothing beyond.
    out.extend(consumer.poll(Duration::from_millis(1000)).await.unwrap());
    out
}

fn text(b: &Option<bytes::Bytes>) -> String {
    String::from_utf8_lossy(b.as_deref().unwrap_or(b"<null>")).into_owned()
}

#[tokio::test]
async fn we_read_what_java_wrote_with_every_codec() {
    let bootstrap = bootstrap().await;
    let consumer = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    const N: usize = 200;
    for (_, codec) in CODECS {
        let topic = format!("interop-java-{codec}");
        create_topic(consumer.client(), &topic, 3).await;
        java(vec![
            "produce".into(),
            bootstrap.clone(),
            topic.clone(),
            codec.into(),
            N.to_string(),
            BASE_TS.to_string(),
        ])
        .await;
        let c = Consumer::with_client(consumer.client().clone(), consumer_config(&bootstrap))
            .await
            .unwrap();
        let records = read_all(&c, &topic, 3, N).await;
        assert_eq!(records.len(), N, "{codec}");
        let mut seen = [false; N];
        for r in &records {
            let key = text(&r.key);
            let i: usize = key.strip_prefix("k-").unwrap().parse().unwrap();
            assert!(!seen[i], "duplicate {key}");
            seen[i] = true;
            assert_eq!(text(&r.value), format!("v-{i}-{codec}"));
            assert_eq!(r.timestamp, BASE_TS + i as i64);
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| (h.key.clone(), text(&h.value)))
                .collect();
            assert_eq!(
                headers,
                vec![
                    ("idx".into(), i.to_string()),
                    ("codec".into(), codec.to_string())
                ]
            );
        }
        c.close().await;
    }
    consumer.close().await;
}

#[tokio::test]
async fn transactions_written_by_java() {
    let bootstrap = bootstrap().await;
    let topic = "interop-java-txn";
    let setup = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    create_topic(setup.client(), topic, 1).await;
    java(vec!["txn".into(), bootstrap.clone(), topic.into()]).await;

    let mut cfg = consumer_config(&bootstrap);
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    let committed = Consumer::with_client(setup.client().clone(), cfg)
        .await
        .unwrap();
    let got = read_all(&committed, topic, 1, 10).await;
    let values: Vec<String> = got.iter().map(|r| text(&r.value)).collect();
    let want: Vec<String> = ["c1", "c2"]
        .iter()
        .flat_map(|p| (0..5).map(move |i| format!("{p}-{i}")))
        .collect();
    assert_eq!(values, want);
    // The position passed the last commit marker: nothing left to read.
    let tp = TopicPartition::new(topic, 0);
    assert_eq!(committed.lag(&tp), Some(0));

    let uncommitted = Consumer::with_client(setup.client().clone(), consumer_config(&bootstrap))
        .await
        .unwrap();
    let got = read_all(&uncommitted, topic, 1, 15).await;
    let values: Vec<String> = got.iter().map(|r| text(&r.value)).collect();
    let want: Vec<String> = ["c1", "a", "c2"]
        .iter()
        .flat_map(|p| (0..5).map(move |i| format!("{p}-{i}")))
        .collect();
    assert_eq!(
        values, want,
        "read_uncommitted shows aborted records, never markers"
    );
    setup.close().await;
}

#[tokio::test]
async fn java_reads_what_our_producer_wrote_and_partitions_alike() {
    let bootstrap = bootstrap().await;
    const N: usize = 200;
    let admin = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    for (codec, name) in CODECS {
        let topic = format!("interop-rust-{name}");
        create_topic(admin.client(), &topic, 3).await;
        let mut cfg = ProducerConfig::default();
        cfg.client_mut()
            .bootstrap_servers(vec![bootstrap.split(',').next().unwrap().to_string()]);
        cfg.compression(codec);
        let producer = Producer::new(cfg).await.unwrap();
        let mut deliveries = Vec::new();
        for i in 0..N {
            let rec = ProducerRecord::new(topic.clone())
                .key(format!("k-{i}"))
                .value(format!("v-{i}-{name}"))
                .header("idx", i.to_string());
            deliveries.push(producer.send(rec).await.unwrap());
        }
        producer.flush().await.unwrap();
        let mut ours: BTreeMap<String, i32> = BTreeMap::new();
        for (i, d) in deliveries.into_iter().enumerate() {
            let md = d.await.unwrap();
            ours.insert(format!("k-{i}"), md.partition);
        }
        producer.close().await.unwrap();

        let out = java(vec![
            "consume".into(),
            bootstrap.clone(),
            topic.clone(),
            N.to_string(),
        ])
        .await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), N, "{name}");
        let mut java_saw: BTreeMap<String, i32> = BTreeMap::new();
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "{line}");
            let i: usize = f[3].strip_prefix("k-").unwrap().parse().unwrap();
            assert_eq!(f[4], format!("v-{i}-{name}"));
            assert_eq!(f[5], format!("idx={i}"));
            java_saw.insert(f[3].to_string(), f[0].parse().unwrap());
        }
        assert_eq!(
            java_saw, ours,
            "{name}: Java sees each record where we put it"
        );

        if codec == Codec::None {
            // Java's default partitioner puts the same keys on the same partitions.
            let jt = "interop-partitioner-java";
            create_topic(admin.client(), jt, 3).await;
            java(vec![
                "produce".into(),
                bootstrap.clone(),
                jt.into(),
                "none".into(),
                N.to_string(),
                BASE_TS.to_string(),
            ])
            .await;
            let c = Consumer::with_client(admin.client().clone(), consumer_config(&bootstrap))
                .await
                .unwrap();
            let java_placed: BTreeMap<String, i32> = read_all(&c, jt, 3, N)
                .await
                .iter()
                .map(|r| (text(&r.key), r.partition))
                .collect();
            assert_eq!(java_placed, ours, "key partitioning differs from Java's");
        }
    }
    admin.close().await;
}
