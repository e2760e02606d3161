//! A transactional copy through a coordinator outage longer than `transaction.timeout.ms`
//! (KIP-588): `kfk copy --transactional` keeps running while the only broker (hence the
//! transaction coordinator) is black-holed for 8 s with a 3 s transaction timeout, so the
//! coordinator aborts the copier's open transaction by itself and bumps its epoch. The copier
//! must recover (never fenced), and a read_committed reader of the destination must find every
//! source record exactly once.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_client::admin::NewTopic;
use kafka_client::config::{
    AutoOffsetReset, ClientConfig, ConsumerConfig, IsolationLevel, ProducerConfig,
};
use kafka_client::{Admin, Consumer, Offset, Producer, ProducerRecord, TopicPartition};
use testkit::{Cluster, ClusterConfig};

const PARTITIONS: i32 = 3;
const RECORDS: usize = 6000;
const SRC: &str = "outage-src";
const DST: &str = "outage-dst";
const TXN_ID: &str = "outage-copier";
const TXN_TIMEOUT: Duration = Duration::from_secs(3);
const OUTAGE: Duration = Duration::from_secs(8);

fn elapsed(t0: Instant) -> String {
    format!("{:>5.1}s", t0.elapsed().as_secs_f64())
}

fn servers(cluster: &Cluster) -> Vec<String> {
    cluster.bootstrap().split(',').map(str::to_string).collect()
}

/// Writes `RECORDS` keyed records to the source, 40 every 100 ms (about 15 s, plus the outage,
/// which it waits out: the outage falls in the middle of the copy).
async fn feed(servers: Vec<String>) {
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(servers)
        .client_id("outage-source".to_string())
        .request_timeout(Duration::from_secs(5));
    let p = Producer::new(cfg).await.expect("source producer");
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let r = ProducerRecord::new(SRC)
            .key(Bytes::from(format!("k{i:05}")))
            .value(Bytes::from(i.to_string()));
        pending.push(p.send(r).await.expect("send to the source"));
        if pending.len() == 40 {
            for d in pending.drain(..) {
                d.await.expect("a source record is acknowledged");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for d in pending {
        d.await.expect("a source record is acknowledged");
    }
    p.close().await.expect("close the source producer");
}

/// Reads all of `topic` with read_committed (once no transaction is open: last stable offset =
/// high watermark); returns the keys per partition in offset order.
async fn read_keys(cluster: &Cluster, admin: &Admin, topic: &str) -> Vec<Vec<Bytes>> {
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic.to_string(), p))
        .collect();
    let queries: Vec<(TopicPartition, Offset)> =
        tps.iter().map(|tp| (tp.clone(), Offset::Latest)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ends = loop {
        let hw = admin
            .list_offsets(&queries, IsolationLevel::ReadUncommitted)
            .await
            .expect("high watermarks");
        let lso = admin
            .list_offsets(&queries, IsolationLevel::ReadCommitted)
            .await
            .expect("last stable offsets");
        if tps.iter().all(|tp| hw[tp].offset == lso[tp].offset) {
            break hw;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: a transaction is still open: {hw:?} vs {lso:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut cfg = ConsumerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(servers(cluster))
        .client_id("outage-reader".to_string());
    cfg.auto_offset_reset(AutoOffsetReset::Earliest)
        .enable_auto_commit(false)
        .isolation_level(IsolationLevel::ReadCommitted);
    let consumer = Consumer::new(cfg).await.expect("reader");
    consumer.assign(tps.clone()).await.expect("assign");
    let mut out = vec![Vec::new(); PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !tps
        .iter()
        .all(|tp| consumer.position(tp) >= Some(ends[tp].offset))
    {
        assert!(Instant::now() < deadline, "{topic}: not read to {ends:?}");
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            out[r.partition as usize].push(r.key.clone().unwrap_or_default());
        }
    }
    consumer.close().await;
    out
}

/// Lines of the broker's log that tell it rolled back a transaction of `TXN_ID` on its own.
fn timeout_rollbacks(cluster: &Cluster) -> Vec<String> {
    let log =
        std::fs::read_to_string(cluster.nodes()[0].dir().join("server.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains(TXN_ID) && l.to_lowercase().contains("timeout"))
        .filter(|l| l.to_lowercase().contains("rollback") || l.to_lowercase().contains("abort"))
        .map(str::to_string)
        .collect()
}

struct Copier {
    child: Child,
    stderr: PathBuf,
}

impl Copier {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_copy_survives_a_coordinator_outage_longer_than_the_transaction_timeout() {
    let t0 = Instant::now();
    let _heavy = testkit::heavy_test_permit().await;
    let mut cc = ClusterConfig::with_brokers(1);
    // The coordinator looks for expired transactions every 500 ms (default 10 s).
    cc.property(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "500",
    );
    let cluster = Cluster::start(cc)
        .await
        .expect("the 1-node cluster must start");
    println!("{} cluster up: {}", elapsed(t0), cluster.bootstrap());
    let mut acfg = ClientConfig::default();
    acfg.bootstrap_servers(servers(&cluster))
        .request_timeout(Duration::from_secs(15));
    let admin = Admin::new(acfg).await.expect("admin");
    admin
        .create_topics(&[
            NewTopic::new(SRC, PARTITIONS, 1),
            NewTopic::new(DST, PARTITIONS, 1),
        ])
        .await
        .expect("create topics");

    let stderr = std::env::temp_dir().join(format!("kfk-outage-{}.err", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_kfk"))
        .env(
            "KFK_LOG",
            "warn,kafka_client::producer=info,kafka_client::transact=info",
        )
        .arg("-b")
        .arg(cluster.bootstrap())
        .args(["copy", SRC, DST, "--group", "outage-copiers"])
        .args(["--transactional", "--transactional-id", TXN_ID])
        .args(["--from-beginning", "--commit-interval", "200"])
        .args([
            "-X",
            &format!("transaction.timeout.ms={}", TXN_TIMEOUT.as_millis()),
        ])
        .args(["-X", "request.timeout.ms=4000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&stderr).expect("stderr file")))
        .spawn()
        .expect("kfk copy starts");
    let mut copier = Copier { child, stderr };
    println!("{} copier started (pid {})", elapsed(t0), copier.child.id());

    let feeding = Arc::new(AtomicBool::new(true));
    let source = {
        let (servers, feeding) = (servers(&cluster), feeding.clone());
        tokio::spawn(async move {
            feed(servers).await;
            feeding.store(false, Ordering::SeqCst);
        })
    };
    // Records flow and the copier commits; then the coordinator goes dark for longer than the
    // transaction timeout, with a transaction open. One more round if the broker did not
    // abort one of the copier's transactions (its transaction had not reached it yet).
    let proxy = cluster.nodes()[0].proxy();
    let mut rollbacks = Vec::new();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            copier.child.try_wait().expect("copier status").is_none(),
            "the copier died before the outage:\n{}",
            copier.log()
        );
        println!("{} black hole on (round {round})", elapsed(t0));
        proxy.blackhole(true);
        tokio::time::sleep(OUTAGE).await;
        proxy.blackhole(false);
        println!("{} black hole off", elapsed(t0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        rollbacks = timeout_rollbacks(&cluster);
        if !rollbacks.is_empty() {
            break;
        }
    }
    for l in &rollbacks {
        println!("broker: {l}");
    }
    assert!(
        !rollbacks.is_empty(),
        "the broker never aborted a transaction of {TXN_ID} on its own; its log:\n{}",
        cluster.nodes()[0].log_tail()
    );
    match tokio::time::timeout(Duration::from_secs(60), source).await {
        Err(_) => panic!("the source producer did not finish"),
        Ok(r) => r.expect("the source producer"),
    }
    assert!(!feeding.load(Ordering::SeqCst));
    println!("{} source written: {RECORDS} records", elapsed(t0));

    // The copier catches up: its group's committed offsets reach the source's end.
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(SRC.to_string(), p))
        .collect();
    let queries: Vec<(TopicPartition, Offset)> =
        tps.iter().map(|tp| (tp.clone(), Offset::Latest)).collect();
    let ends = admin
        .list_offsets(&queries, IsolationLevel::ReadUncommitted)
        .await
        .expect("source ends");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            copier.child.try_wait().expect("copier status").is_none(),
            "the copier died:\n{}",
            copier.log()
        );
        let committed = admin
            .list_group_offsets("outage-copiers")
            .await
            .unwrap_or_default();
        if tps
            .iter()
            .all(|tp| committed.get(tp).copied() >= Some(ends[tp].offset))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the copier did not catch up: committed {committed:?}, source ends {ends:?}\n{}",
            copier.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("{} the copier caught up", elapsed(t0));
    let st = Command::new("kill")
        .args(["-TERM", &copier.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = copier.child.try_wait().expect("copier status") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the copier did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = copier.log();
    let summary = log
        .lines()
        .find(|l| l.starts_with("kfk: copied "))
        .unwrap_or("(no summary)")
        .to_string();
    println!("{} copier exited with {status}: {summary}", elapsed(t0));
    for l in log.lines().filter(|l| {
        l.contains("KIP-588") || l.contains("abort") || l.contains("EndTxn") || l.contains("WARN")
    }) {
        println!("copier: {l}");
    }
    assert_eq!(status.code(), Some(143), "exit after SIGTERM:\n{log}");
    assert!(
        !log.to_lowercase().contains("fenced"),
        "never fenced:\n{log}"
    );

    // Every source record exactly once in the destination, in the source's partition and order.
    let src = read_keys(&cluster, &admin, SRC).await;
    let dst = read_keys(&cluster, &admin, DST).await;
    let mut seen: BTreeMap<&Bytes, usize> = BTreeMap::new();
    for keys in &dst {
        for k in keys {
            *seen.entry(k).or_default() += 1;
        }
    }
    let dups: usize = seen.values().map(|n| n - 1).sum();
    let lost = src
        .iter()
        .flatten()
        .filter(|k| !seen.contains_key(k))
        .count();
    let total: usize = dst.iter().map(Vec::len).sum();
    println!(
        "{} destination: {total} records read_committed, {dups} duplicates, {lost} lost",
        elapsed(t0)
    );
    assert_eq!(src.iter().map(Vec::len).sum::<usize>(), RECORDS);
    assert_eq!((dups, lost, total), (0, 0, RECORDS));
    assert_eq!(dst, src, "same partition, same order");
    println!("{} passed", elapsed(t0));
}
