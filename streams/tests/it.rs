//! The event source against a real broker (testkit's shared 1-node cluster): exactly-once
//! processing with a changelog, restore after a restart, offset-only transactions (GKES's D2),
//! the undecodable-event policies, and the changelog partition-count check.

mod support;

use std::time::{Duration, Instant};

use streams::kafka_client::admin::Admin;
use streams::kafka_client::config::{
    AutoOffsetReset, ConsumerConfig, IsolationLevel, ProducerConfig,
};
use streams::kafka_client::{Consumer, ConsumerRecord, Producer, ProducerRecord, TopicPartition};
use streams::store::{BigEndian, MemStore, Utf8};
use streams::{
    DecodeError, Error, ErrorPolicy, EventContext, EventSource, EventSourceConfig, Health, Outcome,
};
use support::broker::{bootstrap, client, create, unique};

type Counts = MemStore<String, u64, Utf8, BigEndian>;

/// Writes `values` as `click` events keyed by page, round robin over `partitions`.
async fn produce(bootstrap: &str, topic: &str, events: &[(&str, &str, Option<&str>)]) {
    let mut cfg = ProducerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    let p = Producer::new(cfg).await.unwrap();
    let mut deliveries = Vec::new();
    for (key, value, kind) in events {
        let mut r = ProducerRecord::new(topic)
            .key(key.to_string())
            .value(value.to_string());
        if let Some(k) = kind {
            r = r.header("__grt__", k.to_string());
        }
        deliveries.push(p.send(r).await.unwrap());
    }
    p.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    p.close().await.unwrap();
}

/// Reads `topic` read_committed until `n` records arrived (or 30 s).
async fn read(bootstrap: &str, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let mut cfg = ConsumerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    cfg.auto_offset_reset(AutoOffsetReset::Earliest);
    let c = Consumer::new(cfg).await.unwrap();
    let admin = Admin::from_client(c.client().clone());
    let d = admin.describe_topics(&[topic]).await.unwrap();
    let tps: Vec<TopicPartition> = (0..d[0].partitions.len() as i32)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    c.assign(tps).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    c.close().await;
    out
}

fn config(bootstrap: &str, group: &str, topic: &str) -> EventSourceConfig {
    let mut c = EventSourceConfig::new(group, topic, client(bootstrap));
    c.session_timeout = Duration::from_secs(10);
    c.eos.transaction_timeout = Duration::from_secs(8);
    c
}

fn page(r: &ConsumerRecord) -> Result<String, DecodeError> {
    let v = r.value.as_deref().unwrap_or_default();
    std::str::from_utf8(v)
        .map(str::to_string)
        .map_err(|e| DecodeError::new(e.to_string()))
}

/// Counts clicks per page and forwards `page=count` to `out`.
async fn counter(config: EventSourceConfig, out: String) -> EventSource<Counts> {
    EventSource::builder(config, |_| MemStore::new(Utf8, BigEndian))
        .on(
            "click",
            page,
            move |ctx: &mut EventContext<'_, Counts>, page: String| {
                let n = ctx.get(&page).copied().unwrap_or(0) + 1;
                ctx.put(page.clone(), n);
                ctx.forward(
                    ProducerRecord::new(out.as_str())
                        .key(page.clone())
                        .value(format!("{page}={n}")),
                );
                Outcome::Complete
            },
        )
        .build()
        .await
        .unwrap()
}

async fn wait_active(s: &EventSource<Counts>, n: usize) {
    let mut w = s.active_partitions();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.borrow_and_update().len() < n {
        assert!(Instant::now() < deadline, "not active on {n} partitions");
        let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
    }
}

async fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let mut cfg = ConsumerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    cfg.group_id(group.to_string());
    let c = Consumer::new(cfg).await.unwrap();
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let m = c.committed(&tps).await.unwrap();
    c.close().await;
    tps.iter().map(|tp| m[tp]).collect()
}

/// Counting clicks across a restart: the second instance restores each partition's counts from
/// the changelog, so counts continue where the first left off; every output is committed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_survive_a_restart_through_the_changelog() {
    let b = bootstrap().await;
    let (input, output, group) = (unique("clicks"), unique("counts"), unique("counter"));
    create(&b, &input, 3).await;
    create(&b, &output, 3).await;
    let first: Vec<(&str, &str, Option<&str>)> = (0..30)
        .map(|i| {
            (
                ["a", "b", "c"][i % 3],
                ["home", "cart", "help"][i % 3],
                Some("click"),
            )
        })
        .collect();
    produce(&b, &input, &first).await;

    let s = counter(config(&b, &group, &input), output.clone()).await;
    let run = s.spawn();
    wait_active(&s, 3).await;
    let got = read(&b, &output, 30).await;
    assert_eq!(got.len(), 30);
    s.stop().await;
    run.await.unwrap().unwrap();
    assert!(matches!(s.health(), Health::Stopped));
    assert_eq!(
        committed(&b, &group, &input, 3)
            .await
            .iter()
            .flatten()
            .sum::<i64>(),
        30
    );

    // A new instance: its stores come from the changelog.
    produce(
        &b,
        &input,
        &[("a", "home", Some("click")), ("b", "cart", Some("click"))],
    )
    .await;
    let s2 = counter(config(&b, &group, &input), output.clone()).await;
    let run2 = s2.spawn();
    wait_active(&s2, 3).await;
    let all = read(&b, &output, 32).await;
    s2.stop().await;
    run2.await.unwrap().unwrap();
    let values: Vec<String> = all
        .iter()
        .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values.len(), 32, "{values:?}");
    assert!(values.contains(&"home=11".to_string()), "{values:?}");
    assert!(values.contains(&"cart=11".to_string()), "{values:?}");
    for p in ["home", "cart", "help"] {
        let mut seen: Vec<u64> = values
            .iter()
            .filter_map(|v| v.strip_prefix(&format!("{p}=")))
            .map(|n| n.parse().unwrap())
            .collect();
        seen.sort();
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, expected, "{p}: each count exactly once");
    }
    assert!(s2.stats().restored_records >= 3, "{:?}", s2.stats());
}

/// GKES's D2: events whose handler outputs nothing still commit their offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_without_outputs_commit_their_offsets() {
    let b = bootstrap().await;
    let (input, group) = (unique("silent"), unique("silent-group"));
    create(&b, &input, 2).await;
    let events: Vec<(&str, &str, Option<&str>)> = (0..200)
        .map(|i| (["x", "y"][i % 2], "v", Some("noop")))
        .collect();
    produce(&b, &input, &events).await;
    let s = EventSource::builder(config(&b, &group, &input), |_| {
        MemStore::<String, u64, Utf8, BigEndian>::new(Utf8, BigEndian)
    })
    .on(
        "noop",
        page,
        |_: &mut EventContext<'_, Counts>, _: String| Outcome::Complete,
    )
    .build()
    .await
    .unwrap();
    let run = s.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().committed_events < 200 {
        assert!(Instant::now() < deadline, "{:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
    run.await.unwrap().unwrap();
    let c = committed(&b, &group, &input, 2).await;
    assert_eq!(c.iter().flatten().sum::<i64>(), 200, "{c:?}");
}

/// An undecodable event under the default `Fail` policy stops the instance unhealthy and its
/// offset is not committed; under `Skip` it is counted and passed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_events_fail_by_default_and_can_be_skipped() {
    let b = bootstrap().await;
    let (input, output) = (unique("bad"), unique("bad-out"));
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    // Two good clicks around one whose value is not UTF-8.
    let mut cfg = ProducerConfig::default();
    *cfg.client_mut() = client(&b);
    let p = Producer::new(cfg).await.unwrap();
    for v in [b"home".to_vec(), vec![0xff, 0xfe], b"cart".to_vec()] {
        p.send_and_wait(
            ProducerRecord::new(input.as_str())
                .key("k")
                .value(v)
                .header("__grt__", "click"),
        )
        .await
        .unwrap();
    }
    p.close().await.unwrap();

    let group = unique("bad-fail");
    let s = counter(config(&b, &group, &input), output.clone()).await;
    let r = tokio::time::timeout(Duration::from_secs(60), s.run())
        .await
        .expect("a failing instance stops by itself");
    let err = r.expect_err("the undecodable event fails the instance");
    assert!(err.to_string().contains("undecodable"), "{err}");
    assert!(matches!(s.health(), Health::Unhealthy(_)));
    let c = committed(&b, &group, &input, 1).await;
    assert!(
        c[0].unwrap_or(0) <= 1,
        "the bad record's offset committed: {c:?}"
    );

    let group = unique("bad-skip");
    let mut cfg = config(&b, &group, &input);
    cfg.decode_errors = ErrorPolicy::Skip;
    let s = counter(cfg, output.clone()).await;
    let run = s.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().committed_events < 3 {
        assert!(Instant::now() < deadline, "{:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.stats().undecodable, 1);
    s.stop().await;
    run.await.unwrap().unwrap();
    assert_eq!(committed(&b, &group, &input, 1).await, vec![Some(3)]);
}

/// A changelog whose partition count differs from the source's is refused at build, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changelog_with_another_partition_count_is_refused() {
    let b = bootstrap().await;
    let (input, group) = (unique("mismatch"), unique("mismatch-group"));
    create(&b, &input, 3).await;
    let mut cfg = config(&b, &group, &input);
    let changelog = unique("mismatch-changelog");
    create(&b, &changelog, 2).await;
    cfg.changelog_topic = Some(changelog.clone());
    let err = match EventSource::builder(cfg, |_| {
        MemStore::<String, u64, Utf8, BigEndian>::new(Utf8, BigEndian)
    })
    .on(
        "click",
        page,
        |_: &mut EventContext<'_, Counts>, _: String| Outcome::Complete,
    )
    .build()
    .await
    {
        Ok(_) => panic!("a mismatched changelog was accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{msg}");
    assert!(msg.contains("2 partitions") && msg.contains("3"), "{msg}");
}
