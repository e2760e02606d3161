//! The idempotent producer under faults, on a private 3-node cluster (topic RF 3, min ISR 2).
//!
//! One producer writes continuously, round-robin over the partitions; each record's value is its
//! producer-side sequence number within its partition. Meanwhile the test kills the leader of a
//! partition with SIGKILL and brings it back, cuts every client connection through the fault
//! proxies again and again, black-holes a leader's client traffic for longer than the request
//! timeout, and restarts a broker gracefully. Then everything is read back:
//! - every acknowledged record is in the log exactly once, at the offset its delivery future
//!   reported;
//! - no record appears twice, and per partition the log is in send order;
//! - nothing is in the log that was never handed to the producer;
//! - records whose delivery failed are counted and printed (a failure is an answer; a delivery
//!   future that never resolves fails the test).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_client::admin::NewTopic;
use kafka_client::config::{
    AutoOffsetReset, ClientConfig, ConsumerConfig, IsolationLevel, ProducerConfig,
};
use kafka_client::{Admin, Consumer, DeliveryFuture, Offset, Producer, ProducerRecord};
use kafka_client::{Header, TopicPartition};
use testkit::{Cluster, ClusterConfig};
use tokio::sync::mpsc;

const TOPIC: &str = "producer-faults";
const PARTITIONS: i32 = 6;
/// Records sent per millisecond at most (the sender sleeps 1 ms after each group).
const PER_MS: u64 = 8;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The producer's request timeout (the black hole lasts longer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Not answered yet (only before the collector finishes).
    Pending,
    /// `send` refused it: it never entered the producer.
    Refused,
    /// Its delivery future failed.
    Failed,
    /// Acknowledged at this offset (-1: acknowledged as a duplicate, offset unknown).
    Acked(i64),
}

fn key(partition: i32, seq: u64) -> Bytes {
    Bytes::from(format!("p{partition}-{seq}"))
}

fn seq_of(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

fn elapsed(t0: Instant) -> String {
    format!("{:>6.1}s", t0.elapsed().as_secs_f64())
}

/// The proxied client addresses of every node.
fn servers(cluster: &Cluster) -> Vec<String> {
    cluster.bootstrap().split(',').map(str::to_string).collect()
}

async fn admin(cluster: &Cluster) -> Admin {
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(servers(cluster))
        .client_id("faults-admin".to_string())
        .request_timeout(Duration::from_secs(15));
    Admin::new(cfg).await.expect("admin connects")
}

/// The leader of `partition`, from fresh metadata (retried until there is one, up to `within`).
async fn leader_of(admin: &Admin, partition: i32, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(d) = admin.describe_topics(&[TOPIC]).await {
            if let Some(p) = d[0].partitions.iter().find(|p| p.partition == partition) {
                if p.leader >= 0 {
                    return p.leader;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "partition {partition} has no leader after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every partition has all three replicas in sync again.
async fn wait_full_isr(admin: &Admin, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let state = admin.describe_topics(&[TOPIC]).await;
        if let Ok(d) = &state {
            if d[0]
                .partitions
                .iter()
                .all(|p| p.leader >= 0 && p.isr.len() == 3)
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the ISR did not recover within {within:?}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Sent {
    partition: i32,
    seq: u64,
    fut: Option<DeliveryFuture>,
}

/// Sends until `stop` is set; returns how many records each partition was given.
async fn send_loop(producer: Producer, stop: Arc<AtomicBool>, tx: mpsc::Sender<Sent>) -> Vec<u64> {
    let mut next = vec![0u64; PARTITIONS as usize];
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let partition = (i % PARTITIONS as u64) as i32;
        let seq = next[partition as usize];
        next[partition as usize] += 1;
        let mut record = ProducerRecord::new(TOPIC)
            .partition(partition)
            .key(key(partition, seq))
            .value(Bytes::copy_from_slice(&seq.to_be_bytes()));
        record.headers.push(Header {
            key: "seq".into(),
            value: Some(Bytes::from(seq.to_string())),
        });
        let fut = match producer.send(record).await {
            Ok(f) => Some(f),
            Err(e) => {
                println!("send of {partition}/{seq} refused: {e}");
                None
            }
        };
        if tx
            .send(Sent {
                partition,
                seq,
                fut,
            })
            .await
            .is_err()
        {
            break;
        }
        i += 1;
        if i % PER_MS == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    next
}

/// Awaits every delivery future in send order; returns each record's outcome per partition and
/// the failure messages with their counts.
async fn collect(mut rx: mpsc::Receiver<Sent>) -> (Vec<Vec<Outcome>>, BTreeMap<String, u64>) {
    let mut outcomes = vec![Vec::new(); PARTITIONS as usize];
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(s) = rx.recv().await {
        let list: &mut Vec<Outcome> = &mut outcomes[s.partition as usize];
        assert_eq!(list.len() as u64, s.seq, "sequence numbers are dense");
        let outcome = match s.fut {
            None => Outcome::Refused,
            Some(fut) => {
                // The delivery timeout bounds every answer; a future still open well after it
                // is a record silently stuck.
                match tokio::time::timeout(DELIVERY_TIMEOUT + Duration::from_secs(60), fut).await {
                    Err(_) => panic!(
                        "the delivery future of {}/{} never resolved",
                        s.partition, s.seq
                    ),
                    Ok(Ok(meta)) => {
                        assert_eq!(meta.partition, s.partition);
                        Outcome::Acked(meta.offset)
                    }
                    Ok(Err(e)) => {
                        *errors.entry(e.to_string()).or_default() += 1;
                        Outcome::Failed
                    }
                }
            }
        };
        list.push(outcome);
    }
    (outcomes, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_survives_kills_cuts_and_restarts() {
    let _heavy = testkit::heavy_test_permit().await;
    let t0 = Instant::now();
    let cluster = Cluster::start(ClusterConfig::with_brokers(3))
        .await
        .expect("the 3-node cluster must start");
    println!("{} cluster up: {}", elapsed(t0), cluster.bootstrap());
    let admin = admin(&cluster).await;
    admin
        .create_topic(
            &NewTopic::new(TOPIC, PARTITIONS, 3)
                .config("min.insync.replicas", "2")
                .config("retention.ms", "-1")
                .config("unclean.leader.election.enable", "false"),
        )
        .await
        .expect("create topic");
    wait_full_isr(&admin, Duration::from_secs(60)).await;

    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(servers(&cluster))
        .client_id("faults-producer".to_string())
        .request_timeout(REQUEST_TIMEOUT)
        .metadata_min_refresh_interval(Duration::from_millis(500));
    cfg.linger(Duration::from_millis(5))
        .delivery_timeout(DELIVERY_TIMEOUT);
    let producer = Producer::new(cfg).await.expect("producer starts");

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Sent>(1 << 16);
    let sender = tokio::spawn(send_loop(producer.clone(), stop.clone(), tx));
    let collector = tokio::spawn(collect(rx));

    // The faults, one after another, while the sender runs.
    let faults = async {
        tokio::time::sleep(Duration::from_secs(3)).await;

        // (a) SIGKILL the leader of partition 0, produce without it, bring it back.
        let victim = leader_of(&admin, 0, Duration::from_secs(30)).await;
        let node = cluster.node(victim as usize).expect("leader is a node");
        println!(
            "{} kill -9 node {victim} (leader of partition 0)",
            elapsed(t0)
        );
        node.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        node.restart().await.expect("killed node restarts");
        println!("{} node {victim} back", elapsed(t0));
        wait_full_isr(&admin, Duration::from_secs(90)).await;
        println!("{} ISR full again", elapsed(t0));

        // (a') Kill the leader of another partition, with a shorter outage.
        let victim = leader_of(&admin, 1, Duration::from_secs(30)).await;
        let node = cluster.node(victim as usize).expect("leader is a node");
        println!(
            "{} kill -9 node {victim} (leader of partition 1)",
            elapsed(t0)
        );
        node.kill();
        tokio::time::sleep(Duration::from_secs(2)).await;
        node.restart().await.expect("killed node restarts");
        println!("{} node {victim} back", elapsed(t0));
        wait_full_isr(&admin, Duration::from_secs(90)).await;
        println!("{} ISR full again", elapsed(t0));

        // (b) Cut every client connection, many times, at irregular intervals.
        let mut cuts = 0;
        for round in 0..16u64 {
            for n in cluster.nodes() {
                n.proxy().cut();
            }
            cuts += 1;
            tokio::time::sleep(Duration::from_millis(200 + (round * 131) % 500)).await;
        }
        // And one node at a time.
        for round in 0..9usize {
            cluster.nodes()[round % 3].proxy().cut();
            cuts += 1;
            tokio::time::sleep(Duration::from_millis(150 + (round as u64 * 97) % 300)).await;
        }
        println!("{} {cuts} connection cuts done", elapsed(t0));

        // (b') Black-hole the leader of partition 3 for longer than the request timeout:
        // requests to it time out with their fate unknown and are resent with the same
        // sequences once it answers again.
        let victim = leader_of(&admin, 3, Duration::from_secs(30)).await;
        let proxy = cluster
            .node(victim as usize)
            .expect("leader is a node")
            .proxy();
        println!("{} black hole in front of node {victim}", elapsed(t0));
        proxy.blackhole(true);
        tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_secs(2)).await;
        proxy.heal();
        println!("{} black hole healed", elapsed(t0));

        // (c) A graceful restart of the leader of partition 2 (controlled shutdown moves its
        // leaderships away first).
        let victim = leader_of(&admin, 2, Duration::from_secs(30)).await;
        let node = cluster.node(victim as usize).expect("leader is a node");
        println!("{} restarting node {victim}", elapsed(t0));
        node.restart().await.expect("node restarts");
        println!("{} node {victim} restarted", elapsed(t0));
        wait_full_isr(&admin, Duration::from_secs(90)).await;

        // Some calm at the end.
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    tokio::time::timeout(Duration::from_secs(600), faults)
        .await
        .expect("the fault schedule finishes within 10 minutes");
    stop.store(true, Ordering::SeqCst);
    let sent = tokio::time::timeout(Duration::from_secs(120), sender)
        .await
        .expect("the sender stops")
        .expect("the sender task");
    tokio::time::timeout(DELIVERY_TIMEOUT + Duration::from_secs(60), producer.flush())
        .await
        .expect("flush ends within the delivery timeout")
        .expect("flush");
    let (outcomes, errors) =
        match tokio::time::timeout(DELIVERY_TIMEOUT + Duration::from_secs(120), collector).await {
            Err(_) => panic!("the collector did not finish"),
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Ok(Ok(r)) => r,
        };
    tokio::time::timeout(Duration::from_secs(60), producer.close())
        .await
        .expect("close ends")
        .expect("close");
    let produced_in = t0.elapsed();

    let total: u64 = sent.iter().sum();
    let count = |f: &dyn Fn(&Outcome) -> bool| -> u64 {
        outcomes
            .iter()
            .flat_map(|l| l.iter())
            .filter(|o| f(o))
            .count() as u64
    };
    let acked = count(&|o| matches!(o, Outcome::Acked(_)));
    let acked_dup = count(&|o| *o == Outcome::Acked(-1));
    let failed = count(&|o| *o == Outcome::Failed);
    let refused = count(&|o| *o == Outcome::Refused);
    let pending = count(&|o| *o == Outcome::Pending);
    println!(
        "{} sent {total} records: {acked} acknowledged ({acked_dup} without offset), \
         {failed} failed, {refused} refused by send",
        elapsed(t0)
    );
    for (msg, n) in &errors {
        println!("  delivery failed {n}x: {msg}");
    }
    assert_eq!(pending, 0);
    assert_eq!(
        acked + failed + refused,
        total,
        "every record has an outcome"
    );
    assert!(acked > 0, "some records were acknowledged");

    // Read everything back, up to each partition's end.
    let ends = admin
        .list_offsets(
            &(0..PARTITIONS)
                .map(|p| (TopicPartition::new(TOPIC, p), Offset::Latest))
                .collect::<Vec<_>>(),
            IsolationLevel::ReadUncommitted,
        )
        .await
        .expect("end offsets");
    let mut ccfg = ConsumerConfig::default();
    ccfg.client_mut()
        .bootstrap_servers(servers(&cluster))
        .client_id("faults-reader".to_string());
    ccfg.auto_offset_reset(AutoOffsetReset::None)
        .enable_auto_commit(false)
        .max_poll_records(10_000);
    let consumer = Consumer::new(ccfg).await.expect("consumer starts");
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(TOPIC, p))
        .collect();
    consumer.assign(tps.clone()).await.expect("assign");
    for tp in &tps {
        consumer.seek(tp, Offset::Earliest).await.expect("seek");
    }
    // Per partition: the sequence read at each offset, in log order.
    let mut logs: Vec<Vec<(i64, u64)>> = vec![Vec::new(); PARTITIONS as usize];
    let end_of = |p: i32| ends[&TopicPartition::new(TOPIC, p)].offset;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = (0..PARTITIONS)
            .all(|p| consumer.position(&TopicPartition::new(TOPIC, p)) >= Some(end_of(p)));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reading back did not reach the end offsets {ends:?} in time"
        );
        for r in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            let seq = r
                .value
                .as_deref()
                .and_then(seq_of)
                .unwrap_or_else(|| panic!("bad value at {}@{}", r.partition, r.offset));
            assert_eq!(
                r.key.as_deref(),
                Some(key(r.partition, seq).as_ref()),
                "key at {}@{}",
                r.partition,
                r.offset
            );
            logs[r.partition as usize].push((r.offset, seq));
        }
    }
    consumer.close().await;

    let mut duplicates = 0u64;
    let mut lost = 0u64;
    let mut unknown = 0u64;
    let mut out_of_order = 0u64;
    let mut offset_mismatch = 0u64;
    let mut failed_but_written = 0u64;
    for p in 0..PARTITIONS as usize {
        let list = &outcomes[p];
        let mut times_read = vec![0u32; list.len()];
        let mut last_seq: Option<u64> = None;
        for &(offset, seq) in &logs[p] {
            let Some(outcome) = list.get(seq as usize) else {
                println!("partition {p}: offset {offset} holds seq {seq}, never sent");
                unknown += 1;
                continue;
            };
            times_read[seq as usize] += 1;
            if times_read[seq as usize] == 2 {
                println!("partition {p}: seq {seq} duplicated (again at offset {offset})");
                duplicates += 1;
            }
            if let Some(last) = last_seq {
                if seq <= last {
                    if out_of_order < 10 {
                        println!("partition {p}: seq {seq} at offset {offset} after seq {last}");
                    }
                    out_of_order += 1;
                }
            }
            last_seq = Some(seq);
            match *outcome {
                Outcome::Acked(o) if o >= 0 && o != offset => {
                    if offset_mismatch < 10 {
                        println!("partition {p}: seq {seq} acknowledged at {o}, read at {offset}");
                    }
                    offset_mismatch += 1;
                }
                Outcome::Acked(_) => {}
                Outcome::Failed => failed_but_written += 1,
                Outcome::Refused | Outcome::Pending => {
                    println!("partition {p}: seq {seq} ({outcome:?}) is in the log");
                    unknown += 1;
                }
            }
        }
        for (seq, o) in list.iter().enumerate() {
            if matches!(o, Outcome::Acked(_)) && times_read[seq] == 0 {
                if lost < 10 {
                    println!("partition {p}: acknowledged seq {seq} ({o:?}) is not in the log");
                }
                lost += 1;
            }
        }
    }
    let read: usize = logs.iter().map(Vec::len).sum();
    println!(
        "{} read {read} records: {duplicates} duplicates, {lost} acknowledged but lost, \
         {out_of_order} out of order, {offset_mismatch} at another offset than acknowledged, \
         {unknown} never sent or refused, {failed_but_written} failed but written \
         (producing took {produced_in:.1?})",
        elapsed(t0)
    );
    assert_eq!(duplicates, 0, "duplicates");
    assert_eq!(lost, 0, "acknowledged records lost");
    assert_eq!(out_of_order, 0, "records out of order");
    assert_eq!(
        offset_mismatch, 0,
        "records at other offsets than acknowledged"
    );
    assert_eq!(
        unknown, 0,
        "records in the log that the producer never accepted"
    );
    cluster.shutdown(Duration::from_secs(30)).await;
}

/// A batch that had a sequence fails by the delivery timeout (its broker is black-holed): the
/// producer renews by bumping its epoch (KIP-360), and the broker takes the next records at
/// sequence 0 of the new epoch. The log holds the records before and after, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_delivery_timeout_the_renewed_producer_is_accepted() {
    const T: &str = "producer-epoch-bump";
    let cluster = Cluster::start(ClusterConfig::with_brokers(1))
        .await
        .expect("the 1-node cluster must start");
    let admin = admin(&cluster).await;
    admin
        .create_topic(&NewTopic::new(T, 1, 1).config("retention.ms", "-1"))
        .await
        .expect("create topic");
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(servers(&cluster))
        .client_id("epoch-bump".to_string())
        .request_timeout(Duration::from_secs(1));
    cfg.linger(Duration::ZERO)
        .delivery_timeout(Duration::from_secs(3));
    let producer = Producer::new(cfg).await.expect("producer starts");
    let rec = |v: &'static str| ProducerRecord::new(T).partition(0).value(v);
    // Every delivery is answered within 60 s, one way or the other.
    let send = |v: &'static str| {
        let p = producer.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), p.send_and_wait(rec(v)))
                .await
                .unwrap_or_else(|_| panic!("{v}: no answer within 60 s"))
        }
    };
    let a = send("a").await.expect("a is acknowledged");
    let (id, epoch) = producer
        .producer_id()
        .expect("an idempotent producer has an id");
    let proxy = cluster.nodes()[0].proxy();
    proxy.blackhole(true);
    let b = send("b").await;
    proxy.heal();
    let err = b.expect_err("b cannot be delivered through a black hole");
    println!("b failed as expected: {err}");
    let c = send("c")
        .await
        .expect("c is acknowledged by the renewed producer");
    assert!(c.offset > a.offset, "a at {}, c at {}", a.offset, c.offset);
    assert_eq!(
        producer.producer_id(),
        Some((id, epoch + 1)),
        "renewed by bumping the epoch of the same id"
    );
    producer.close().await.expect("close");

    let mut ccfg = ConsumerConfig::default();
    ccfg.client_mut()
        .bootstrap_servers(servers(&cluster))
        .client_id("epoch-bump-reader".to_string());
    let consumer = Consumer::new(ccfg).await.expect("consumer starts");
    let tp = TopicPartition::new(T, 0);
    consumer.assign([tp.clone()]).await.expect("assign");
    consumer.seek(&tp, Offset::Earliest).await.expect("seek");
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.position(&tp) <= Some(c.offset) {
        assert!(Instant::now() < deadline, "read {values:?} so far");
        for r in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            values
                .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(
        values,
        ["a", "c"],
        "b never reached the broker; a and c once each"
    );
}
