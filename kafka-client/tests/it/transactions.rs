//! The transactional producer against a real broker: committed records are visible to
//! read_committed readers and aborted ones only to read_uncommitted readers; offsets sent in a
//! transaction are committed with it (and not when it aborts); a second producer with the same
//! transactional id fences the first; misuse is refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_client::config::{IsolationLevel, ProducerConfig};
use kafka_client::producer::{GroupMetadata, TxnOffset};
use kafka_client::{Admin, Consumer, Error, Producer, ProducerRecord, TopicPartition};

use crate::consumer::{bootstrap, consumer_config, create_topic};
use crate::group::unique;

pub(crate) fn txn_config(bootstrap: &str, txn_id: &str) -> ProducerConfig {
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    cfg.transactional_id(txn_id.to_string());
    cfg
}

/// Sends `values` to `topic` (partition = index % partitions) inside the open transaction.
async fn send_all(p: &Producer, topic: &str, partitions: i32, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        // The outcome is checked through the readers (the commit waits for every batch).
        let _delivery = p
            .send(
                ProducerRecord::new(topic.to_string())
                    .partition(i as i32 % partitions)
                    .value(v.clone()),
            )
            .await
            .expect("send in a transaction");
    }
}

/// Reads `topic` from the start with `isolation` until `expect` values arrived, then 1.5 s more
/// to catch anything extra; returns the values per partition in offset order.
async fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
    expect: usize,
) -> BTreeMap<i32, Vec<String>> {
    let mut cfg = consumer_config(bootstrap);
    cfg.isolation_level(isolation);
    let c = Consumer::new(cfg).await.expect("consumer");
    c.assign((0..partitions).map(|p| TopicPartition::new(topic.to_string(), p)))
        .await
        .expect("assign");
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut n = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if quiet_until.is_some_and(|t| now >= t) {
            break;
        }
        assert!(
            now < deadline,
            "{isolation:?} reader of {topic}: {n} of {expect} records after 30 s"
        );
        for r in c.poll(Duration::from_millis(200)).await.expect("poll") {
            let v = String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec()).unwrap();
            out.entry(r.partition).or_default().push(v);
            n += 1;
        }
        if n >= expect && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(1500));
        }
    }
    c.close().await;
    out
}

fn flat(m: &BTreeMap<i32, Vec<String>>) -> Vec<String> {
    let mut v: Vec<String> = m.values().flatten().cloned().collect();
    v.sort();
    v
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_records_are_invisible_to_read_committed_and_visible_to_read_uncommitted() {
    crate::logs();
    let bootstrap = bootstrap().await;
    let topic = unique("txn-visibility");
    let p = Producer::new(txn_config(&bootstrap, &unique("txn")))
        .await
        .expect("transactional producer");
    create_topic(p.client(), &topic, 3).await;
    p.init_transactions().await.expect("init");

    let first = values("c1", 300);
    let aborted = values("ab", 150);
    let second = values("c2", 300);
    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, 3, &first).await;
    p.commit_transaction().await.expect("commit 1");

    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, 3, &aborted).await;
    // Some of them reach the broker before the abort.
    p.flush().await.expect("flush");
    p.abort_transaction().await.expect("abort");

    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, 3, &second).await;
    p.commit_transaction().await.expect("commit 2");
    assert!(!p.in_transaction());
    p.close().await.expect("close");

    let committed = read_all(&bootstrap, &topic, 3, IsolationLevel::ReadCommitted, 600).await;
    let mut want: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    want.sort();
    assert_eq!(
        flat(&committed),
        want,
        "read_committed sees both commits only"
    );
    // Per partition, commit 1 precedes commit 2 in offset order.
    for (part, vals) in &committed {
        let mut sorted = vals.clone();
        sorted.sort();
        assert_eq!(vals, &sorted, "partition {part} in order");
    }

    let all = read_all(&bootstrap, &topic, 3, IsolationLevel::ReadUncommitted, 750).await;
    let mut want_all: Vec<String> = first
        .iter()
        .chain(aborted.iter())
        .chain(second.iter())
        .cloned()
        .collect();
    want_all.sort();
    assert_eq!(
        flat(&all),
        want_all,
        "read_uncommitted sees the aborted records too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_sent_in_a_transaction_commit_with_it_and_not_when_it_aborts() {
    crate::logs();
    let bootstrap = bootstrap().await;
    let input = unique("txn-in");
    let output = unique("txn-out");
    let group = unique("txn-group");
    let p = Producer::new(txn_config(&bootstrap, &unique("txn")))
        .await
        .expect("transactional producer");
    create_topic(p.client(), &input, 2).await;
    create_topic(p.client(), &output, 1).await;
    let admin = Admin::from_client(p.client().clone());
    let meta = GroupMetadata {
        group_id: group.clone(),
        generation_id: -1,
        member_id: String::new(),
        instance_id: None,
    };
    let offsets = |a: i64, b: i64| {
        vec![
            TxnOffset {
                partition: TopicPartition::new(input.clone(), 0),
                offset: a,
                leader_epoch: -1,
                metadata: None,
            },
            TxnOffset {
                partition: TopicPartition::new(input.clone(), 1),
                offset: b,
                leader_epoch: -1,
                metadata: None,
            },
        ]
    };

    p.begin_transaction().await.unwrap();
    send_all(&p, &output, 1, &values("x", 10)).await;
    p.send_offsets_to_transaction(offsets(42, 7), meta.clone())
        .await
        .expect("offsets in the transaction");
    p.commit_transaction().await.expect("commit");
    // The coordinator writes the transaction markers after answering EndTxn: the offsets
    // become visible shortly after.
    let p0 = TopicPartition::new(input.clone(), 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let got = admin.list_group_offsets(&group).await.expect("offsets");
        if got.contains_key(&p0) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.get(&p0), Some(&42));
    assert_eq!(got.get(&TopicPartition::new(input.clone(), 1)), Some(&7));

    p.begin_transaction().await.unwrap();
    send_all(&p, &output, 1, &values("y", 10)).await;
    p.send_offsets_to_transaction(offsets(99, 99), meta.clone())
        .await
        .expect("offsets in the transaction");
    p.abort_transaction().await.expect("abort");
    // Give the abort markers the same time to land before checking nothing changed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = admin.list_group_offsets(&group).await.expect("offsets");
    assert_eq!(
        got.get(&TopicPartition::new(input.clone(), 0)),
        Some(&42),
        "aborted offsets are not committed"
    );
    assert_eq!(got.get(&TopicPartition::new(input.clone(), 1)), Some(&7));

    // An empty transaction sends nothing and commits.
    p.begin_transaction().await.unwrap();
    p.commit_transaction().await.expect("empty commit");
    p.close().await.expect("close");

    let out = read_all(&bootstrap, &output, 1, IsolationLevel::ReadCommitted, 10).await;
    assert_eq!(flat(&out), values("x", 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let bootstrap = bootstrap().await;
    let topic = unique("txn-fence");
    let txn_id = unique("txn");
    let old = Producer::new(txn_config(&bootstrap, &txn_id))
        .await
        .expect("producer 1");
    create_topic(old.client(), &topic, 1).await;
    old.begin_transaction().await.unwrap();
    send_all(&old, &topic, 1, &values("zombie", 20)).await;
    old.flush().await.expect("flush");

    // The new instance's InitProducerId aborts the old one's open transaction and fences it.
    let new = Producer::new(txn_config(&bootstrap, &txn_id))
        .await
        .expect("producer 2");
    new.init_transactions().await.expect("init 2");
    new.begin_transaction().await.unwrap();
    send_all(&new, &topic, 1, &values("live", 20)).await;
    new.commit_transaction().await.expect("commit 2");

    // The zombie: its next records or its commit are refused as fenced.
    let r = async {
        send_all(&old, &topic, 1, &values("zombie2", 5)).await;
        old.commit_transaction().await
    }
    .await;
    match r {
        Err(Error::Fenced(_)) => {}
        // The partition leader answers the zombie's records INVALID_PRODUCER_EPOCH, which only
        // dooms the transaction (as in Java since KIP-588); its abort meets the coordinator,
        // which says who took over.
        Err(e)
            if e.broker_code()
                == Some(kafka_client::kafka_wire::ErrorCode::INVALID_PRODUCER_EPOCH) =>
        {
            match old.abort_transaction().await {
                Err(Error::Fenced(_)) => {}
                other => panic!("the old producer's abort must be fenced, got {other:?}"),
            }
        }
        other => panic!("the old producer must be fenced, got {other:?}"),
    }
    match old.begin_transaction().await {
        Err(Error::Fenced(_)) => {}
        other => panic!("fencing is permanent, got {other:?}"),
    }
    let _ = old.close().await;
    new.close().await.expect("close");

    let out = read_all(&bootstrap, &topic, 1, IsolationLevel::ReadCommitted, 20).await;
    assert_eq!(
        flat(&out),
        values("live", 20),
        "only the live producer's records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_outside_a_transaction_are_refused() {
    let bootstrap = bootstrap().await;
    let topic = unique("txn-misuse");
    let p = Producer::new(txn_config(&bootstrap, &unique("txn")))
        .await
        .expect("producer");
    create_topic(p.client(), &topic, 1).await;
    p.init_transactions().await.expect("init");
    match p.send(ProducerRecord::new(topic.clone()).value("v")).await {
        Err(Error::Misuse(_)) => {}
        other => panic!("expected misuse, got {other:?}"),
    }
    match p.commit_transaction().await {
        Err(Error::Misuse(_)) => {}
        other => panic!("commit without begin: expected misuse, got {other:?}"),
    }
    p.begin_transaction().await.unwrap();
    match p.begin_transaction().await {
        Err(Error::Misuse(_)) => {}
        other => panic!("nested begin: expected misuse, got {other:?}"),
    }
    // Close aborts the open transaction.
    send_all(&p, &topic, 1, &values("open", 5)).await;
    p.flush()
        .await
        .expect("flush: the records are written, in the open transaction");
    p.close().await.expect("close");
    let out = read_all(&bootstrap, &topic, 1, IsolationLevel::ReadUncommitted, 5).await;
    assert_eq!(flat(&out).len(), 5);
    let out = read_all(&bootstrap, &topic, 1, IsolationLevel::ReadCommitted, 0).await;
    assert!(
        out.is_empty(),
        "the open transaction was aborted at close: {out:?}"
    );

    // A plain producer has no transaction API.
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    let plain = Producer::new(cfg).await.unwrap();
    assert!(matches!(
        plain.begin_transaction().await,
        Err(Error::Misuse(_))
    ));
    plain.close().await.unwrap();
}

/// What our transactional producer committed, Java's read_committed consumer reads exactly as
/// ours does: the same records at the same offsets, none of the aborted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn java_read_committed_agrees_with_ours() {
    let bootstrap = bootstrap().await;
    let topic = unique("txn-java");
    let p = Producer::new(txn_config(&bootstrap, &unique("txn")))
        .await
        .expect("transactional producer");
    create_topic(p.client(), &topic, 3).await;
    for (i, commit) in [true, false, true, false, true].into_iter().enumerate() {
        p.begin_transaction().await.unwrap();
        send_all(&p, &topic, 3, &values(&format!("t{i}"), 90)).await;
        p.flush()
            .await
            .expect("flush: written before the transaction ends");
        if commit {
            p.commit_transaction().await.expect("commit");
        } else {
            p.abort_transaction().await.expect("abort");
        }
    }
    p.close().await.expect("close");

    // Ours: (partition, offset, value) of every committed record.
    let mut cfg = consumer_config(&bootstrap);
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    let c = Consumer::new(cfg).await.expect("consumer");
    c.assign((0..3).map(|p| TopicPartition::new(topic.clone(), p)))
        .await
        .unwrap();
    let mut ours = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ours.len() < 270 {
        assert!(Instant::now() < deadline, "{} of 270 records", ours.len());
        for r in c.poll(Duration::from_millis(200)).await.unwrap() {
            let v = String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec()).unwrap();
            ours.push((r.partition, r.offset, v));
        }
    }
    c.close().await;

    let out = crate::jvm::run_async(
        "ClientInterop",
        vec![
            "consume".into(),
            bootstrap.clone(),
            topic.clone(),
            "270".into(),
            "read_committed".into(),
        ],
    )
    .await;
    let mut java: Vec<(i32, i64, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[4].to_string(),
            )
        })
        .collect();
    ours.sort();
    java.sort();
    assert_eq!(
        java.len(),
        270,
        "Java read_committed sees the three commits only"
    );
    assert_eq!(java, ours, "Java and we read the same committed records");
    assert!(ours
        .iter()
        .all(|(_, _, v)| !v.starts_with("t1") && !v.starts_with("t3")));
}
