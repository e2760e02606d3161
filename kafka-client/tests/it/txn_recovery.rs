//! The transactional producer when its coordinator misbehaves, on private 1-node clusters:
//! a commit under a black-holed coordinator returns `OutcomeUnknown` by its deadline
//! (`transaction.end.timeout.ms`), also when its first future was dropped; and a transaction
//! that outlives `transaction.timeout.ms`, aborted by the coordinator itself, is recovered
//! (KIP-588) with transactions v2 and v1 (the v1 protocol through the proxy's version cap).

use std::time::{Duration, Instant};

use kafka_client::config::IsolationLevel;
use kafka_client::{Consumer, Error, Producer, ProducerRecord, TopicPartition};
use testkit::{Cluster, ClusterConfig, VersionCap};

use crate::consumer::{consumer_config, create_topic};
use crate::transactions::txn_config;

/// Reads `topic` (partition 0) from the start with read_committed until `expect` values came,
/// then 1 s more; returns them in offset order.
async fn committed_values(bootstrap: &str, topic: &str, expect: usize) -> Vec<String> {
    let mut cfg = consumer_config(bootstrap);
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    let c = Consumer::new(cfg).await.expect("consumer");
    c.assign([TopicPartition::new(topic.to_string(), 0)])
        .await
        .expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_until: Option<Instant> = None;
    while quiet_until.is_none_or(|t| Instant::now() < t) {
        assert!(Instant::now() < deadline, "{topic}: {out:?} after 30 s");
        for r in c.poll(Duration::from_millis(200)).await.expect("poll") {
            out.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
        if out.len() >= expect && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    c.close().await;
    out
}

/// Sends `value` to partition 0 of `topic` in the open transaction and waits for its answer.
async fn send_acked(p: &Producer, topic: &str, value: &str) {
    p.send(
        ProducerRecord::new(topic.to_string())
            .partition(0)
            .value(value.to_string()),
    )
    .await
    .expect("send")
    .await
    .expect("acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_under_a_black_holed_coordinator_is_outcome_unknown_by_its_deadline() {
    crate::logs();
    let _heavy = testkit::heavy_test_permit().await;
    let cluster = Cluster::start(ClusterConfig::with_brokers(1))
        .await
        .expect("the 1-node cluster must start");
    let bootstrap = cluster.bootstrap();
    let topic = "bounded-commit";
    let end_timeout = Duration::from_secs(4);
    let mut cfg = txn_config(&bootstrap, "bounded-commit");
    // The request timeout is longer than the end timeout: the end deadline must govern.
    cfg.transaction_end_timeout(end_timeout);
    cfg.client_mut().request_timeout(Duration::from_secs(10));
    let p = Producer::new(cfg).await.expect("producer");
    create_topic(p.client(), topic, 1).await;
    p.init_transactions().await.expect("init");
    p.begin_transaction().await.unwrap();
    send_acked(&p, topic, "before").await;
    p.commit_transaction()
        .await
        .expect("a commit before the fault");

    // Every batch is answered before the coordinator (the only node) goes silent, so the
    // commit's EndTxn is what meets the black hole.
    p.begin_transaction().await.unwrap();
    for i in 0..10 {
        send_acked(&p, topic, &format!("unknown-{i}")).await;
    }
    let proxy = cluster.nodes()[0].proxy();
    proxy.blackhole(true);
    let t0 = Instant::now();
    // The caller gives up on its first call: dropping the future does not stop the commit...
    assert!(
        tokio::time::timeout(Duration::from_secs(1), p.commit_transaction())
            .await
            .is_err(),
        "no answer through the black hole"
    );
    // ...nothing else may start meanwhile, and says why...
    let begin = p.begin_transaction().await;
    assert!(
        matches!(&begin, Err(Error::Misuse(m)) if m.contains("commit_transaction")),
        "{begin:?}"
    );
    let abort = p.abort_transaction().await;
    assert!(matches!(&abort, Err(Error::Misuse(_))), "{abort:?}");
    // ...and the next call resumes the same commit, which ends at its deadline.
    let err = p.commit_transaction().await.unwrap_err();
    let took = t0.elapsed();
    println!("commit under the black hole: {err} after {took:?} (deadline {end_timeout:?})");
    assert!(matches!(err, Error::OutcomeUnknown(_)), "{err}");
    assert!(
        took >= end_timeout - Duration::from_millis(100)
            && took <= end_timeout + Duration::from_millis(1500),
        "returned after {took:?}, deadline {end_timeout:?}"
    );

    // Healed: the epoch bump settles the transaction (it was never committed: the EndTxn did
    // not reach the broker) and the producer goes on.
    proxy.blackhole(false);
    let (pid, epoch) = p.producer_id().expect("producer id");
    let t1 = Instant::now();
    p.begin_transaction().await.expect("begin after the bump");
    println!("next transaction began {:?} after healing", t1.elapsed());
    assert!(
        p.producer_id().expect("producer id") > (pid, epoch),
        "the epoch was bumped"
    );
    send_acked(&p, topic, "after").await;
    p.commit_transaction()
        .await
        .expect("a commit after the fault");
    p.close().await.expect("close");
    assert_eq!(
        committed_values(&bootstrap, topic, 2).await,
        vec!["before", "after"],
        "read_committed sees no record of the unknown transaction"
    );
}

/// One producer with `transaction.timeout.ms` = 2 s meets three coordinator-side timeout
/// aborts: one found by a Produce, one by the commit, one by the abort. Each time the
/// transaction fails (never fatally), the abort recovers, and the next transaction commits.
async fn outlive_the_transaction_timeout(cluster: &Cluster, v1: bool) {
    let cap = v1.then(VersionCap::redpanda);
    for node in cluster.nodes() {
        node.proxy().set_version_cap(cap.clone());
    }
    let bootstrap = cluster.bootstrap();
    let label = if v1 { "kip588-v1" } else { "kip588-v2" };
    let mut cfg = txn_config(&bootstrap, label);
    cfg.transaction_timeout(Duration::from_secs(2));
    let p = Producer::new(cfg).await.expect("producer");
    create_topic(p.client(), label, 1).await;
    p.init_transactions().await.expect("init");
    let (_, first_epoch) = p.producer_id().unwrap();
    // The broker aborts transactions older than 2 s every 500 ms.
    let outlive = Duration::from_secs(4);
    for how in ["produce", "commit", "abort"] {
        p.begin_transaction().await.unwrap();
        send_acked(&p, label, &format!("aborted-by-timeout-{how}")).await;
        tokio::time::sleep(outlive).await;
        match how {
            "produce" => {
                let late = p
                    .send(
                        ProducerRecord::new(label.to_string())
                            .partition(0)
                            .value("late"),
                    )
                    .await
                    .expect("send")
                    .await;
                let err = late.expect_err("a Produce of a transaction the coordinator aborted");
                assert!(!err.is_fatal(), "{label} {how}: {err}");
                let err = p.commit_transaction().await.expect_err("commit refused");
                assert!(!err.is_fatal(), "{label} {how}: {err}");
            }
            "commit" => {
                let err = p.commit_transaction().await.expect_err("nothing to commit");
                println!("{label}: commit after the coordinator's abort: {err}");
                assert!(!err.is_fatal(), "{label} {how}: {err}");
            }
            _ => {}
        }
        p.abort_transaction()
            .await
            .unwrap_or_else(|e| panic!("{label} {how}: the abort recovers: {e}"));
        p.begin_transaction().await.unwrap();
        send_acked(&p, label, &format!("committed-after-{how}")).await;
        p.commit_transaction()
            .await
            .unwrap_or_else(|e| panic!("{label} {how}: commit after recovery: {e}"));
    }
    let (_, epoch) = p.producer_id().unwrap();
    assert!(epoch > first_epoch, "{label}: the epoch moved on");
    p.close().await.expect("close");
    assert_eq!(
        committed_values(&bootstrap, label, 3).await,
        vec![
            "committed-after-produce",
            "committed-after-commit",
            "committed-after-abort"
        ],
        "{label}: the aborted transactions stay invisible"
    );
    for node in cluster.nodes() {
        node.proxy().set_version_cap(None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_the_coordinator_aborted_on_timeout_are_recovered() {
    crate::logs();
    let _heavy = testkit::heavy_test_permit().await;
    let mut cc = ClusterConfig::with_brokers(1);
    cc.property(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        "500",
    );
    let cluster = Cluster::start(cc)
        .await
        .expect("the 1-node cluster must start");
    outlive_the_transaction_timeout(&cluster, false).await;
    outlive_the_transaction_timeout(&cluster, true).await;
}
