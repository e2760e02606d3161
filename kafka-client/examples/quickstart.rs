//! Quick start: starts a local Apache Kafka (one KRaft node, via `testkit`), creates a topic,
//! sends 30,000 keyed records with the idempotent producer (lz4, acks=all), reads them back with
//! the consumer and checks that every record came back once, intact and in order per partition.
//!
//! ```sh
//! cargo run --release -p kafka-client --example quickstart
//! # or against a broker of your own:
//! QUICKSTART_BOOTSTRAP=127.0.0.1:9092 cargo run --release -p kafka-client --example quickstart
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_client::admin::{Admin, NewTopic};
use kafka_client::config::{ConsumerConfig, ProducerConfig};
use kafka_client::kafka_wire::Codec;
use kafka_client::{Consumer, Offset, Producer, ProducerRecord, TopicPartition};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOPIC: &str = "quickstart";
const PARTITIONS: i32 = 3;
const RECORDS: u64 = 30_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    // Keep the cluster alive until the end of `main`: dropping it stops the broker.
    let (_cluster, bootstrap) = match std::env::var("QUICKSTART_BOOTSTRAP") {
        Ok(b) => (None, b),
        Err(_) => {
            println!(
                "starting a local Apache Kafka {} (KRaft, 1 node)...",
                testkit::dist::kafka_version()
            );
            let cluster = testkit::Cluster::start(testkit::ClusterConfig::with_brokers(1)).await?;
            let bootstrap = cluster.bootstrap();
            println!(
                "cluster up in {:.1?}: bootstrap={bootstrap}",
                started.elapsed()
            );
            (Some(cluster), bootstrap)
        }
    };
    let servers: Vec<String> = bootstrap.split(',').map(str::to_string).collect();

    let mut pcfg = ProducerConfig::default();
    pcfg.client_mut().bootstrap_servers(servers.clone());
    pcfg.compression(Codec::Lz4);
    let producer = Producer::new(pcfg).await?;
    let admin = Admin::from_client(producer.client().clone());
    if admin
        .create_topic_if_absent(&NewTopic::new(TOPIC, PARTITIONS, 1))
        .await?
    {
        println!("created topic {TOPIC} with {PARTITIONS} partitions");
    }
    let start_offsets = kafka_client::offsets::list_offsets(
        admin.client(),
        &(0..PARTITIONS)
            .map(|p| (TopicPartition::new(TOPIC, p), Offset::Latest))
            .collect::<Vec<_>>(),
        Default::default(),
    )
    .await?;

    // Produce: `send` returns once the record is buffered; the delivery futures resolve when
    // the broker has acknowledged them.
    let t = Instant::now();
    let mut deliveries = Vec::with_capacity(RECORDS as usize);
    for i in 0..RECORDS {
        let record = ProducerRecord::new(TOPIC)
            .key(Bytes::from(format!("user-{}", i % 1000)))
            .value(Bytes::from(format!("event {i}")))
            .header("seq", Bytes::from(i.to_string()));
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await?;
    let mut expected: HashMap<i32, u64> = HashMap::new();
    for d in deliveries {
        let meta = d.await?;
        *expected.entry(meta.partition).or_default() += 1;
    }
    println!(
        "produced {RECORDS} records (lz4, idempotent, acks=all) in {:.0?}",
        t.elapsed()
    );
    producer.close().await?;

    // Consume what we wrote: from where the log ended before we produced.
    let t = Instant::now();
    let mut ccfg = ConsumerConfig::default();
    ccfg.client_mut().bootstrap_servers(servers);
    let consumer = Consumer::new(ccfg).await?;
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    consumer.assign(tps.clone()).await?;
    for tp in &tps {
        consumer
            .seek(tp, Offset::At(start_offsets[tp].offset))
            .await?;
    }
    let mut seen = vec![false; RECORDS as usize];
    let mut last_seq: HashMap<i32, u64> = HashMap::new();
    let mut got = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < RECORDS {
        if Instant::now() > deadline {
            return Err(format!("only {got} of {RECORDS} records came back in 60 s").into());
        }
        for r in consumer.poll(Duration::from_secs(1)).await? {
            let seq: u64 = r
                .headers
                .iter()
                .find(|h| h.key == "seq")
                .and_then(|h| std::str::from_utf8(h.value.as_deref()?).ok()?.parse().ok())
                .ok_or("record without a seq header")?;
            if r.value.as_deref() != Some(format!("event {seq}").as_bytes()) {
                return Err(format!("record {seq}: wrong value").into());
            }
            if r.key.as_deref() != Some(format!("user-{}", seq % 1000).as_bytes()) {
                return Err(format!("record {seq}: wrong key").into());
            }
            if std::mem::replace(&mut seen[seq as usize], true) {
                return Err(format!("record {seq} came back twice").into());
            }
            if last_seq
                .insert(r.partition, seq)
                .is_some_and(|prev| prev > seq)
            {
                return Err(format!("partition {}: record {seq} out of order", r.partition).into());
            }
            got += 1;
        }
    }
    consumer.close().await;
    println!(
        "consumed and verified {got} records in {:.0?}: per partition {:?}",
        t.elapsed(),
        {
            let mut v: Vec<_> = expected.into_iter().collect();
            v.sort();
            v
        }
    );
    println!("done in {:.1?}", started.elapsed());
    Ok(())
}
