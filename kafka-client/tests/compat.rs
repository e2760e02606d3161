//! Broker compatibility: the same smoke against every Apache Kafka release testkit can fetch, and
//! against a Kafka behind a proxy that presents Redpanda's API versions.
//!
//! The smoke, per broker: admin calls (create, describe, configs, cluster, groups, delete);
//! produce and read back with every codec (idempotent); a consumer group of 3 that asks for the
//! KIP-848 protocol (and falls back to classic where the broker lacks it); a transactional copy
//! through a [`TransactSession`] whose first transaction is aborted, read back with
//! read_committed. Each run prints a table row of what was negotiated.
//!
//! Versions: `KAFKA_COMPAT_VERSIONS` = a comma list, or `all` for [`ALL_VERSIONS`]; by default the
//! oldest and the newest ([`DEFAULT_VERSIONS`]), which CI runs. The full matrix and its table
//! (docs/compatibility.md):
//!
//! ```text
//! KAFKA_COMPAT_VERSIONS=all cargo test --release -p kafka-client --test compat -- --nocapture
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_client::admin::{ConfigResource, NewTopic};
use kafka_client::config::{
    AutoOffsetReset, ClientConfig, ConsumerConfig, GroupProtocol, IsolationLevel, ProducerConfig,
};
use kafka_client::kafka_wire::messages::{
    ConsumerGroupHeartbeatRequest, EndTxnRequest, FetchRequest, JoinGroupRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
};
use kafka_client::kafka_wire::{ApiKey, Codec};
use kafka_client::transact::TransactSession;
use kafka_client::{Admin, Client, Consumer, Producer, ProducerRecord, Purpose, TopicPartition};
use testkit::{Cluster, ClusterConfig, VersionCap};

/// Every release the registry serves, newest patch of each line.
const ALL_VERSIONS: &[&str] = &["3.9.2", "4.0.2", "4.1.2", "4.2.1", "4.3.2", "4.4.0"];
/// The oldest and the newest: what CI runs.
const DEFAULT_VERSIONS: &[&str] = &["3.9.2", "4.4.0"];

fn versions() -> Vec<String> {
    match std::env::var("KAFKA_COMPAT_VERSIONS") {
        Ok(v) if v.trim() == "all" => ALL_VERSIONS.iter().map(|s| s.to_string()).collect(),
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => DEFAULT_VERSIONS.iter().map(|s| s.to_string()).collect(),
    }
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}")
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::default();
    c.bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    c
}

fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::default();
    *c.client_mut() = client_config(bootstrap);
    c.auto_offset_reset(AutoOffsetReset::Earliest);
    c.enable_auto_commit(false);
    c
}

fn producer_config(bootstrap: &str) -> ProducerConfig {
    let mut c = ProducerConfig::default();
    *c.client_mut() = client_config(bootstrap);
    c
}

/// What one broker negotiated and how the smoke went.
#[derive(Debug, Default)]
struct Row {
    broker: String,
    versions: BTreeMap<&'static str, String>,
    group_protocol: String,
    txn_protocol: String,
}

const COLUMNS: &[&str] = &[
    "ApiVersions",
    "Produce",
    "Fetch",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "JoinGroup",
    "ConsumerGroupHeartbeat",
    "EndTxn",
];

impl Row {
    fn header() -> String {
        let mut h = String::from("| broker |");
        let mut sep = String::from("|---|");
        for c in COLUMNS {
            h.push_str(&format!(" {c} |"));
            sep.push_str("---|");
        }
        h.push_str(" group (asked: consumer) | transactions |");
        sep.push_str("---|---|");
        format!("{h}\n{sep}")
    }

    fn line(&self) -> String {
        let mut l = format!("| {} |", self.broker);
        for c in COLUMNS {
            l.push_str(&format!(
                " {} |",
                self.versions.get(c).map_or("-", String::as_str)
            ));
        }
        l.push_str(&format!(
            " {} | {} |",
            self.group_protocol, self.txn_protocol
        ));
        l
    }
}

/// Reads `partitions` of `topic` from the start until `expect` records arrived (30 s at most),
/// then 1 s more; returns the values per partition in offset order.
async fn read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
    expect: usize,
) -> BTreeMap<i32, Vec<Bytes>> {
    let mut cfg = consumer_config(bootstrap);
    cfg.isolation_level(isolation);
    let c = Consumer::new(cfg).await.expect("consumer");
    c.assign((0..partitions).map(|p| TopicPartition::new(topic, p)))
        .await
        .expect("assign");
    let mut out: BTreeMap<i32, Vec<Bytes>> = BTreeMap::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until = None;
    while quiet_until.is_none_or(|t| Instant::now() < t) {
        assert!(
            Instant::now() < deadline,
            "{topic} ({isolation:?}): {n} of {expect} records after 30 s"
        );
        for r in c.poll(Duration::from_millis(200)).await.expect("poll") {
            out.entry(r.partition)
                .or_default()
                .push(r.value.clone().unwrap_or_default());
            n += 1;
        }
        if n >= expect && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    c.close().await;
    out
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("v-{i:05}"))
}

/// Admin calls; returns a created topic's name.
async fn admin_calls(admin: &Admin, partitions: i32) -> String {
    let topic = unique("compat");
    admin
        .create_topic(&NewTopic::new(&topic, partitions, 1).config("retention.ms", "3600000"))
        .await
        .expect("create topic");
    let described = admin.describe_topics(&[&topic]).await.expect("describe");
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].partitions.len(), partitions as usize);
    let configs = admin
        .describe_configs(&ConfigResource::Topic(topic.clone()))
        .await
        .expect("describe configs");
    assert!(
        configs
            .iter()
            .any(|c| c.name == "retention.ms" && c.value.as_deref() == Some("3600000")),
        "retention.ms not described: {configs:?}"
    );
    let cluster = admin.describe_cluster().await.expect("describe cluster");
    assert_eq!(cluster.brokers.len(), 1, "{cluster:?}");
    topic
}

/// Every codec: 600 records per codec through an idempotent producer, read back in order.
async fn every_codec(bootstrap: &str, admin: &Admin) {
    for codec in [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ] {
        let topic = admin_calls(admin, 3).await;
        let mut cfg = producer_config(bootstrap);
        cfg.compression(codec).linger(Duration::from_millis(5));
        let p = Producer::new(cfg).await.expect("producer");
        let mut deliveries = Vec::new();
        for i in 0..600 {
            let rec = ProducerRecord::new(topic.clone())
                .partition(i as i32 % 3)
                .key(format!("k{i}"))
                .value(value(i));
            deliveries.push(p.send(rec).await.expect("send"));
        }
        p.flush().await.expect("flush");
        for d in deliveries {
            d.await
                .unwrap_or_else(|e| panic!("{codec:?}: delivery: {e}"));
        }
        p.close().await.expect("close");
        let got = read_back(bootstrap, &topic, 3, IsolationLevel::ReadUncommitted, 600).await;
        for part in 0..3 {
            let want: Vec<Bytes> = (0..600).filter(|i| i % 3 == part).map(value).collect();
            assert_eq!(
                got.get(&(part as i32)),
                Some(&want),
                "{codec:?}: partition {part} differs"
            );
        }
        admin.delete_topics(&[&topic]).await.expect("delete topic");
    }
}

/// A group of 3 asking for the KIP-848 protocol: every record read once, every member busy.
/// Returns the protocol the group ran.
async fn group_of_three(bootstrap: &str, admin: &Admin) -> String {
    const N: usize = 1200;
    let topic = admin_calls(admin, 6).await;
    let p = Producer::new(producer_config(bootstrap))
        .await
        .expect("producer");
    for i in 0..N {
        let delivery = p
            .send(
                ProducerRecord::new(topic.clone())
                    .partition(i as i32 % 6)
                    .value(value(i)),
            )
            .await
            .expect("send");
        drop(delivery); // flush below waits for every delivery
    }
    p.flush().await.expect("flush");
    p.close().await.expect("close");

    let group = unique("compat-group");
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut cfg = consumer_config(bootstrap);
        cfg.group_id(group.clone())
            .group_protocol(GroupProtocol::Consumer)
            .heartbeat_interval(Duration::from_millis(300))
            .session_timeout(Duration::from_secs(10))
            .rebalance_timeout(Duration::from_secs(20));
        let c = Arc::new(Consumer::new(cfg).await.expect("consumer"));
        c.subscribe([topic.clone()]).await.expect("subscribe");
        members.push(c);
    }
    // Poll all three together until every record is read and each member owns partitions.
    let mut seen = BTreeSet::new();
    let mut busy = [false; 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N || busy.iter().any(|b| !b) {
        assert!(
            Instant::now() < deadline,
            "group: {} of {N} records, members busy {busy:?} after 60 s",
            seen.len()
        );
        for (i, c) in members.iter().enumerate() {
            for r in c.poll(Duration::from_millis(100)).await.expect("poll") {
                assert!(seen.insert(r.value.clone().unwrap()), "read twice: {r:?}");
            }
            c.commit_polled().await.ok();
            busy[i] |= !c.assignment().is_empty();
        }
    }
    let described = admin.describe_groups(&[&group]).await.expect("describe");
    let protocol = if described[0].is_consumer_protocol {
        "consumer (KIP-848)".to_string()
    } else {
        format!("classic ({})", described[0].protocol)
    };
    let listed = admin.list_groups().await.expect("list groups");
    assert!(listed.iter().any(|g| g.group_id == group), "{listed:?}");
    for c in &members {
        c.close().await;
    }
    admin.delete_topics(&[&topic]).await.expect("delete topic");
    protocol
}

/// A transactional copy: the first transaction (with copies sent) is aborted, then the session
/// copies everything; read_committed sees each input record exactly once.
async fn transactional_copy(bootstrap: &str, admin: &Admin) {
    const N: usize = 900;
    let input = admin_calls(admin, 3).await;
    let output = admin_calls(admin, 3).await;
    let p = Producer::new(producer_config(bootstrap))
        .await
        .expect("producer");
    for i in 0..N {
        let delivery = p
            .send(
                ProducerRecord::new(input.clone())
                    .partition(i as i32 % 3)
                    .value(value(i)),
            )
            .await
            .expect("send");
        drop(delivery); // flush below waits for every delivery
    }
    p.flush().await.expect("flush");
    p.close().await.expect("close");

    let mut ccfg = consumer_config(bootstrap);
    ccfg.group_id(unique("compat-copy"));
    let mut pcfg = producer_config(bootstrap);
    pcfg.transactional_id(unique("compat-txn"));
    let session = TransactSession::new(ccfg, pcfg).await.expect("session");
    session.subscribe([input.clone()]).await.expect("subscribe");
    let mut aborted_once = false;
    let mut copied_committed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while copied_committed < N {
        assert!(
            Instant::now() < deadline,
            "copy: {copied_committed} of {N} committed after 60 s"
        );
        let records = session
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        let n = records.len();
        for r in records {
            let rec = ProducerRecord::new(output.clone())
                .partition(r.partition)
                .value(r.value.clone().unwrap_or_default());
            let delivery = session.send(rec).await.expect("send in transaction");
            drop(delivery); // the commit waits for every delivery
        }
        if n > 0 && !aborted_once {
            // Written to the log first, so the abort has records to hide.
            session
                .producer()
                .flush()
                .await
                .expect("flush in a transaction");
            assert!(!session.end(false).await.expect("abort"), "abort committed");
            aborted_once = true;
            continue;
        }
        if session.end(true).await.expect("end") {
            copied_committed += n;
        }
    }
    session.close().await.expect("close session");
    let committed = read_back(bootstrap, &output, 3, IsolationLevel::ReadCommitted, N).await;
    for part in 0..3 {
        let want: Vec<Bytes> = (0..N).filter(|i| i % 3 == part).map(value).collect();
        assert_eq!(
            committed.get(&(part as i32)),
            Some(&want),
            "read_committed partition {part} of the copy differs"
        );
    }
    let uncommitted: usize = read_back(bootstrap, &output, 3, IsolationLevel::ReadUncommitted, N)
        .await
        .values()
        .map(Vec::len)
        .sum();
    assert!(
        uncommitted > N,
        "the aborted transaction's records should be visible to read_uncommitted \
         ({uncommitted} records)"
    );
    admin
        .delete_topics(&[&input, &output])
        .await
        .expect("delete topics");
}

/// The smoke against the broker at `bootstrap`, named `broker` in the row.
async fn smoke(bootstrap: &str, broker: &str) -> Row {
    let client = Client::connect(client_config(bootstrap))
        .await
        .unwrap_or_else(|e| panic!("{broker}: connect: {e}"));
    let node = *client.metadata().brokers.keys().next().expect("a broker");
    let conn = client
        .connection(node, Purpose::Control)
        .await
        .expect("connection");
    let v = |k: Option<i16>| k.map_or("-".to_string(), |v| format!("v{v}"));
    let mut row = Row {
        broker: broker.to_string(),
        ..Default::default()
    };
    row.versions.insert(
        "ApiVersions",
        v(conn.versions().version(ApiKey::API_VERSIONS)),
    );
    row.versions
        .insert("Produce", v(conn.version::<ProduceRequest>()));
    row.versions
        .insert("Fetch", v(conn.version::<FetchRequest>()));
    row.versions
        .insert("Metadata", v(conn.version::<MetadataRequest>()));
    row.versions
        .insert("OffsetCommit", v(conn.version::<OffsetCommitRequest>()));
    row.versions
        .insert("OffsetFetch", v(conn.version::<OffsetFetchRequest>()));
    row.versions
        .insert("JoinGroup", v(conn.version::<JoinGroupRequest>()));
    row.versions.insert(
        "ConsumerGroupHeartbeat",
        v(conn.version::<ConsumerGroupHeartbeatRequest>()),
    );
    row.versions
        .insert("EndTxn", v(conn.version::<EndTxnRequest>()));
    let txn_level = conn.finalized_feature("transaction.version").unwrap_or(0);
    row.txn_protocol = if txn_level >= 2 && conn.version::<EndTxnRequest>() >= Some(5) {
        format!("v2 (KIP-890; transaction.version={txn_level})")
    } else {
        format!("v1 (transaction.version={txn_level})")
    };
    let admin = Admin::from_client(client);

    let t = Instant::now();
    every_codec(bootstrap, &admin).await;
    eprintln!("{broker}: every codec in {:?}", t.elapsed());
    let t = Instant::now();
    row.group_protocol = group_of_three(bootstrap, &admin).await;
    eprintln!("{broker}: group of three in {:?}", t.elapsed());
    let t = Instant::now();
    transactional_copy(bootstrap, &admin).await;
    eprintln!("{broker}: transactional copy in {:?}", t.elapsed());
    admin.client().close();
    row
}

/// Every version of [`versions`]: a one-node cluster each, the smoke, a table row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_version_matrix() {
    let mut rows = Vec::new();
    for version in versions() {
        let t = Instant::now();
        let cluster = Cluster::start(ClusterConfig {
            kafka_version: Some(version.clone()),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Kafka {version} must start: {e}"));
        let row = smoke(&cluster.bootstrap(), &format!("Apache Kafka {version}")).await;
        eprintln!("Kafka {version}: smoke passed in {:?}", t.elapsed());
        rows.push(row);
        cluster.shutdown(Duration::from_secs(15)).await;
    }
    println!("\n{}", Row::header());
    for r in &rows {
        println!("{}", r.line());
    }
    // KIP-848 was early access before 4.0: the newest must run it, and every broker must have
    // run a group.
    let newest = rows.last().expect("at least one version");
    assert!(!newest.group_protocol.is_empty());
}

/// A Kafka behind a proxy that presents Redpanda v24.3's API versions: the client negotiates
/// within them (ApiVersions v3 after an UNSUPPORTED_VERSION answer to v5, no KIP-848, the
/// transaction protocol v1) and the smoke passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redpanda_version_cap() {
    let cluster = Cluster::start(ClusterConfig::default())
        .await
        .expect("the cluster must start");
    for node in cluster.nodes() {
        node.proxy().set_version_cap(Some(VersionCap::redpanda()));
    }
    let row = smoke(&cluster.bootstrap(), "Redpanda 24.3 version set (cap)").await;
    println!("\n{}\n{}", Row::header(), row.line());
    let cap = VersionCap::redpanda();
    for (name, key) in [
        ("ApiVersions", ApiKey::API_VERSIONS),
        ("Produce", ApiKey::PRODUCE),
        ("Fetch", ApiKey::FETCH),
        ("Metadata", ApiKey::METADATA),
        ("OffsetCommit", ApiKey::OFFSET_COMMIT),
        ("JoinGroup", ApiKey::JOIN_GROUP),
        ("EndTxn", ApiKey::END_TXN),
    ] {
        let (_, max) = cap.range(key.0).expect("in the cap");
        assert_eq!(row.versions[name], format!("v{max}"), "{name}");
    }
    assert_eq!(row.versions["ConsumerGroupHeartbeat"], "-");
    assert!(row.group_protocol.starts_with("classic"), "{row:?}");
    assert!(row.txn_protocol.starts_with("v1"), "{row:?}");
    cluster.shutdown(Duration::from_secs(15)).await;
}
