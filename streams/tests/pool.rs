//! The exactly-once pool against a real broker (testkit's shared 1-node cluster): order across
//! many producer slots at a high rate, fencing by a second instance with the same id, and the
//! metrics sink.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streams::kafka_client::config::{
    AutoOffsetReset, ConsumerConfig, IsolationLevel, ProducerConfig,
};
use streams::kafka_client::{Consumer, ConsumerRecord, Producer, ProducerRecord, TopicPartition};
use streams::metrics::{Metric, MetricsSink};
use streams::store::{BigEndian, MemStore, Utf8};
use streams::{DecodeError, EventContext, EventSource, EventSourceConfig, Health, Outcome};
use support::broker::{bootstrap, client, create, unique};

type Counts = MemStore<String, u64, Utf8, BigEndian>;

fn config(bootstrap: &str, group: &str, topic: &str) -> EventSourceConfig {
    let mut c = EventSourceConfig::new(group, topic, client(bootstrap));
    c.session_timeout = Duration::from_secs(10);
    c.eos.transaction_timeout = Duration::from_secs(8);
    c
}

/// Input values are `seq` as decimal text.
fn seq(r: &ConsumerRecord) -> Result<u64, DecodeError> {
    std::str::from_utf8(r.value.as_deref().unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DecodeError::new("not a number"))
}

/// Per key: count += 1 (logged), and forwards `seq:count` under the key.
async fn sequencer(
    config: EventSourceConfig,
    out: String,
    sink: Option<Arc<dyn MetricsSink>>,
) -> EventSource<Counts> {
    let mut b = EventSource::builder(config, |_| MemStore::new(Utf8, BigEndian)).on(
        "n",
        seq,
        move |ctx: &mut EventContext<'_, Counts>, seq: u64| {
            let key = String::from_utf8_lossy(ctx.record().key.as_deref().unwrap_or_default())
                .into_owned();
            let n = ctx.get(&key).copied().unwrap_or(0) + 1;
            ctx.put(key.clone(), n);
            ctx.forward(
                ProducerRecord::new(out.as_str())
                    .key(key)
                    .value(format!("{seq}:{n}")),
            );
            Outcome::Complete
        },
    );
    if let Some(s) = sink {
        b = b.metrics(s);
    }
    b.build().await.unwrap()
}

/// Produces `n` events `0..n` on partition 0, keys `k0..k{keys}` round robin, as fast as the
/// producer goes (or paced at `rate` per second).
async fn produce_seqs(bootstrap: &str, topic: &str, n: u64, keys: u64, rate: Option<u64>) {
    let mut cfg = ProducerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    let p = Producer::new(cfg).await.unwrap();
    let start = Instant::now();
    let mut deliveries = Vec::new();
    for i in 0..n {
        if let Some(r) = rate {
            let due = start + Duration::from_micros(i * 1_000_000 / r);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let r = ProducerRecord::new(topic)
            .partition(0)
            .key(format!("k{}", i % keys))
            .value(i.to_string())
            .header("__grt__", "n");
        deliveries.push(p.send(r).await.unwrap());
    }
    p.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    p.close().await.unwrap();
}

/// Reads `topic` read_committed from the start until `n` records came (or `wait` passed).
async fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    wait: Duration,
) -> Vec<ConsumerRecord> {
    let mut cfg = ConsumerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    cfg.auto_offset_reset(AutoOffsetReset::Earliest);
    let c = Consumer::new(cfg).await.unwrap();
    c.assign((0..partitions).map(|p| TopicPartition::new(topic, p)))
        .await
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    c.close().await;
    out
}

async fn wait_active(s: &EventSource<Counts>, n: usize) {
    let mut w = s.active_partitions();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.borrow_and_update().len() < n {
        assert!(Instant::now() < deadline, "not active on {n} partitions");
        let _ = tokio::time::timeout(Duration::from_millis(200), w.changed()).await;
    }
}

fn text(r: &ConsumerRecord) -> (String, String) {
    (
        String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
        String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
    )
}

/// The sequencer's output (`seq:count` per key): every seq in `0..n` exactly once, and per key
/// the counts 1, 2, 3... in the order read (each key's partition in offset order).
fn assert_each_seq_once_and_counts_consecutive(out: &[ConsumerRecord], n: u64) {
    let mut seqs: Vec<u64> = out
        .iter()
        .map(|r| text(r).1.split_once(':').unwrap().0.parse().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs.len() as u64, n, "outputs");
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == i as u64),
        "every seq exactly once"
    );
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in out {
        let (k, v) = text(r);
        per_key
            .entry(k)
            .or_default()
            .push(v.split_once(':').unwrap().1.parse().unwrap());
    }
    for (k, c) in per_key {
        let expected: Vec<u64> = (1..=c.len() as u64).collect();
        assert_eq!(c, expected, "{k}: counts consecutive in output order");
    }
}

/// STREAMS.md §5.2 "Pool ordering": one input partition at 20,000 events/s, a pool of 4 with a
/// 2 ms linger (many slot switches). Per key the outputs carry strictly increasing input seqs
/// and consecutive counts, the changelog's counts are consecutive, every seq is output exactly
/// once, and the committed offset sampled every 100 ms never moves back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_partition_at_20k_per_second_keeps_order_across_four_slots() {
    const N: u64 = 60_000;
    const KEYS: u64 = 16;
    let b = bootstrap().await;
    let (input, output, group) = (unique("seqs"), unique("seqs-out"), unique("seqs-group"));
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    let mut cfg = config(&b, &group, &input);
    cfg.eos.pool_size = 4;
    cfg.eos.linger = Duration::from_millis(2);
    let s = sequencer(cfg, output.clone(), None).await;
    let changelog = s.changelog_topic().to_string();
    let run = s.spawn();
    wait_active(&s, 1).await;

    // Sample the committed offset while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (b, group, input, sampling) =
            (b.clone(), group.clone(), input.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut cfg = ConsumerConfig::default();
            *cfg.client_mut() = client(&b);
            cfg.group_id(group);
            let c = Consumer::new(cfg).await.unwrap();
            let tp = TopicPartition::new(input.as_str(), 0);
            let mut seen = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                if let Ok(m) = c.committed(std::slice::from_ref(&tp)).await {
                    if let Some(o) = m.get(&tp).copied().flatten() {
                        seen.push(o);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            c.close().await;
            seen
        })
    };
    let started = Instant::now();
    produce_seqs(&b, &input, N, KEYS, Some(20_000)).await;
    let produced_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.stats().committed_events < N {
        assert!(Instant::now() < deadline, "{:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampling.store(false, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    let stats = s.stats();
    s.stop().await;
    run.await.unwrap().unwrap();
    println!(
        "{N} events produced in {produced_in:?}; {} transactions, {} retries; {} offset samples",
        stats.transactions,
        stats.retries,
        samples.len()
    );
    assert!(
        samples.windows(2).all(|w| w[0] <= w[1]),
        "committed offsets moved back: {samples:?}"
    );
    assert!(samples.len() >= 5, "too few samples: {samples:?}");

    let out = read_all(&b, &output, 1, N as usize, Duration::from_secs(60)).await;
    let mut per_key: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for r in &out {
        let (k, v) = text(r);
        let (seq, n) = v.split_once(':').expect("seq:count");
        per_key
            .entry(k)
            .or_default()
            .push((seq.parse().unwrap(), n.parse().unwrap()));
    }
    let mut all_seqs: Vec<u64> = per_key.values().flatten().map(|(s, _)| *s).collect();
    all_seqs.sort_unstable();
    assert_eq!(all_seqs.len() as u64, N, "outputs");
    assert!(
        all_seqs.iter().enumerate().all(|(i, s)| *s == i as u64),
        "every seq exactly once"
    );
    for (k, v) in &per_key {
        for (i, (seq, n)) in v.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1, "{k}: counts consecutive in output order");
            if i > 0 {
                assert!(*seq > v[i - 1].0, "{k}: seqs strictly increase");
                assert_eq!(*seq, v[i - 1].0 + KEYS, "{k}: no gap");
            }
        }
    }

    let log = read_all(&b, &changelog, 1, N as usize, Duration::from_secs(60)).await;
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for r in &log {
        let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
        let v = u64::from_be_bytes(r.value.as_deref().unwrap().try_into().unwrap());
        let prev = last.insert(k.clone(), v).unwrap_or(0);
        assert_eq!(v, prev + 1, "{k}: changelog counts consecutive");
    }
    assert_eq!(last.values().sum::<u64>(), N);
}

/// STREAMS.md §5.2 "Fencing": a second instance with the same instance id fences the first,
/// which goes unhealthy and commits nothing after; the second goes on, and every event is
/// output exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_with_the_same_id_fences_the_first() {
    let b = bootstrap().await;
    let (input, output, group) = (unique("fence"), unique("fence-out"), unique("fence-group"));
    create(&b, &input, 2).await;
    create(&b, &output, 2).await;
    let mut cfg = config(&b, &group, &input);
    cfg.instance_id = Some("same".into());
    let first = sequencer(cfg.clone(), output.clone(), None).await;
    let run1 = first.spawn();
    wait_active(&first, 2).await;
    produce_seqs(&b, &input, 500, 4, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.stats().committed_events < 500 {
        assert!(Instant::now() < deadline, "{:?}", first.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = sequencer(cfg, output.clone(), None).await;
    let run2 = second.spawn();
    // The first learns it is fenced at its next transaction: give it events.
    let feeder = {
        let (b, input) = (b.clone(), input.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                produce_seqs(&b, &input, 50, 4, None).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let r1 = tokio::time::timeout(Duration::from_secs(60), run1)
        .await
        .expect("the fenced instance stops by itself")
        .unwrap();
    let err = r1.expect_err("the first instance is fenced");
    assert!(err.is_fenced(), "{err}");
    assert!(
        matches!(first.health(), Health::Unhealthy(ref e) if e.is_fenced()),
        "{:?}",
        first.health()
    );
    println!("first instance: {err}");
    let after = first.stats().committed_events;
    feeder.await.unwrap();
    wait_active(&second, 2).await;
    // 500 + 10 × 50 events went in; the survivor's output must hold each seq value the right
    // number of times (seqs repeat across batches, so count per key instead).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = first.stats().committed_events + second.stats().committed_events;
        if second.stats().committed_events > 0 && done >= 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} {:?}",
            first.stats(),
            second.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        first.stats().committed_events,
        after,
        "nothing after fencing"
    );
    second.stop().await;
    run2.await.unwrap().unwrap();
    let out = read_all(&b, &output, 2, 1000, Duration::from_secs(30)).await;
    assert_eq!(out.len(), 1000, "every event output once (read_committed)");
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &out {
        let (k, v) = text(r);
        counts
            .entry(k)
            .or_default()
            .push(v.split_once(':').unwrap().1.parse().unwrap());
    }
    for (k, mut c) in counts {
        c.sort_unstable();
        let expected: Vec<u64> = (1..=c.len() as u64).collect();
        assert_eq!(c, expected, "{k}: each count once, none lost");
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Metric>>);

impl MetricsSink for Recorder {
    fn record(&self, metric: Metric) {
        self.0.lock().unwrap().push(metric);
    }
}

struct Sleeper;

impl MetricsSink for Sleeper {
    fn record(&self, _: Metric) {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The metrics sink: committed transactions add up to the events, restores and per-partition
/// counts are reported; a sink that sleeps 1 s per call slows nothing and its drops are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_reach_the_sink_and_a_slow_sink_only_loses_metrics() {
    let b = bootstrap().await;
    let (input, output) = (unique("metrics"), unique("metrics-out"));
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    produce_seqs(&b, &input, 2000, 8, None).await;

    let rec = Arc::new(Recorder::default());
    let mut cfg = config(&b, &unique("metrics-group"), &input);
    cfg.metrics_interval = Duration::from_millis(50);
    let s = sequencer(cfg, output.clone(), Some(rec.clone())).await;
    let run = s.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().committed_events < 2000 {
        assert!(Instant::now() < deadline, "{:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.stop().await;
    run.await.unwrap().unwrap();
    assert_eq!(s.stats().metrics_dropped, 0);
    let got = rec.0.lock().unwrap().clone();
    let committed: u64 = got
        .iter()
        .filter_map(|m| match m {
            Metric::TxnCommitted(t) => Some(t.events),
            _ => None,
        })
        .sum();
    assert_eq!(committed, 2000, "TxnCommitted events add up");
    assert!(got
        .iter()
        .any(|m| matches!(m, Metric::Restored { partition: 0, .. })));
    let last_count = got
        .iter()
        .filter_map(|m| match m {
            Metric::Partition {
                partition: 0,
                events,
                ..
            } => Some(*events),
            _ => None,
        })
        .max();
    assert_eq!(last_count, Some(2000), "per-partition events");

    // A sink that blocks 1 s per metric, with a queue of 1.
    let mut cfg = config(&b, &unique("metrics-slow"), &input);
    cfg.metrics_queue = 1;
    cfg.metrics_interval = Duration::from_millis(10);
    let s = sequencer(cfg, output.clone(), Some(Arc::new(Sleeper))).await;
    let run = s.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().committed_events < 2000 {
        assert!(
            Instant::now() < deadline,
            "a slow sink stalled processing: {:?}",
            s.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
    run.await.unwrap().unwrap();
    assert!(s.stats().metrics_dropped > 0, "{:?}", s.stats());
}

/// STREAMS.md §5.2 "Pool retry" (R10, R11): the broker's connections close right after
/// forwarding an EndTxn, 50 times, while events flow through a pool of 3. Each commit whose
/// answer was lost is resolved by reading the committed offsets; every event is output exactly
/// once and per key the counts stay consecutive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_lost_end_txn_answers_are_resolved_without_loss_or_duplicates() {
    const END_TXN: i16 = 26;
    const TRIPS: u32 = 50;
    let cluster = testkit::Cluster::start(testkit::ClusterConfig::with_brokers(1))
        .await
        .expect("a private 1-node cluster must start (its connections are cut)");
    cluster
        .wait_ready()
        .await
        .expect("the private cluster answers");
    let b = cluster.bootstrap();
    let proxy = cluster.node(1).expect("node 1").proxy();
    let (input, output, group) = (unique("trip"), unique("trip-out"), unique("trip-group"));
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    let mut cfg = config(&b, &group, &input);
    cfg.eos.pool_size = 3;
    cfg.eos.linger = Duration::from_millis(5);
    // Each lost answer costs an attempt at most; allow for two trips on one transaction.
    cfg.eos.max_commit_attempts = 5;
    // A commit whose answer is still missing after 1 s counts as unknown (then R11).
    cfg.eos.commit_timeout = Duration::from_secs(1);
    let s = sequencer(cfg, output.clone(), None).await;
    let run = s.spawn();
    wait_active(&s, 1).await;

    proxy.trip_after(END_TXN, TRIPS);
    proxy.cut();
    let produced = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (b, input, produced, feeding) =
            (b.clone(), input.clone(), produced.clone(), feeding.clone());
        tokio::spawn(async move {
            let mut cfg = ProducerConfig::default();
            *cfg.client_mut() = client(&b);
            let p = Producer::new(cfg).await.unwrap();
            let mut i = 0u64;
            while feeding.load(Ordering::SeqCst) {
                for _ in 0..20 {
                    let r = ProducerRecord::new(input.as_str())
                        .key(format!("k{}", i % 8))
                        .value(i.to_string())
                        .header("__grt__", "n");
                    p.send_and_wait(r).await.unwrap();
                    i += 1;
                }
                produced.store(i, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p.close().await.unwrap();
        })
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while proxy.tripped() < u64::from(TRIPS) {
        assert!(
            Instant::now() < deadline,
            "{} trips so far; {:?}",
            proxy.tripped(),
            s.stats()
        );
        assert!(
            !matches!(s.health(), Health::Unhealthy(_)),
            "{:?}",
            s.health()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.trip_after(END_TXN, 0);
    feeding.store(false, Ordering::SeqCst);
    feeder.await.unwrap();
    let n = produced.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.stats().committed_events < n {
        assert!(Instant::now() < deadline, "{n} produced; {:?}", s.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = s.stats();
    s.stop().await;
    run.await.unwrap().unwrap();
    println!(
        "{n} events, {} trips; {} transactions, {} retries, {} unknown outcomes resolved",
        proxy.tripped(),
        stats.transactions,
        stats.retries,
        stats.outcomes_resolved
    );
    assert!(
        stats.outcomes_resolved > 0,
        "no unknown outcome was resolved: {stats:?}"
    );
    let out = read_all(&b, &output, 1, n as usize, Duration::from_secs(60)).await;
    assert_each_seq_once_and_counts_consecutive(&out, n);
    cluster.shutdown(Duration::from_secs(10)).await;
}

/// `abort()` ends the open transactions without committing them: `run` returns `Ok`, the health
/// is `Stopped`, and the next instance processes the aborted events again, so every event is
/// output exactly once (read_committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_drops_open_transactions_and_the_next_owner_redoes_them() {
    let b = bootstrap().await;
    let (input, output, group) = (unique("abort"), unique("abort-out"), unique("abort-group"));
    create(&b, &input, 1).await;
    create(&b, &output, 1).await;
    let mut cfg = config(&b, &group, &input);
    cfg.eos.commit_deadline = Duration::from_secs(60);
    // The first instance defers seq 10 and never completes it: its transaction stays open.
    let held: Arc<Mutex<Vec<streams::Completion>>> = Arc::default();
    let keep = held.clone();
    let out = output.clone();
    let first = EventSource::builder(cfg.clone(), |_| Counts::new(Utf8, BigEndian))
        .on(
            "n",
            seq,
            move |ctx: &mut EventContext<'_, Counts>, seq: u64| {
                if seq == 10 {
                    keep.lock().unwrap().push(ctx.defer());
                    return Outcome::Incomplete;
                }
                let n = ctx.get(&"k".to_string()).copied().unwrap_or(0) + 1;
                ctx.put("k".to_string(), n);
                ctx.forward(
                    ProducerRecord::new(out.as_str())
                        .key("k")
                        .value(format!("{seq}:{n}")),
                );
                Outcome::Complete
            },
        )
        .build()
        .await
        .unwrap();
    let run1 = first.spawn();
    wait_active(&first, 1).await;
    let mut pcfg = ProducerConfig::default();
    *pcfg.client_mut() = client(&b);
    let p = Producer::new(pcfg).await.unwrap();
    let send = |range: std::ops::Range<u64>| {
        let (p, input) = (p.clone(), input.clone());
        async move {
            for i in range {
                p.send_and_wait(
                    ProducerRecord::new(input.as_str())
                        .key("k")
                        .value(i.to_string())
                        .header("__grt__", "n"),
                )
                .await
                .unwrap();
            }
        }
    };
    // Seqs 0-9 commit first, so seq 10 opens a transaction of its own.
    send(0..10).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.stats().committed_events < 10 {
        assert!(Instant::now() < deadline, "{:?}", first.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(10..16).await;
    p.close().await.unwrap();
    while first.stats().events < 16 {
        assert!(Instant::now() < deadline, "{:?}", first.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the held transaction time to (wrongly) commit anything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(first.stats().committed_events, 10, "seq 10 holds the rest");
    first.abort().await;
    run1.await
        .unwrap()
        .expect("an aborted instance ends with Ok");
    assert!(
        matches!(first.health(), Health::Stopped),
        "{:?}",
        first.health()
    );
    drop(held);

    let second = sequencer(cfg, output.clone(), None).await;
    let run2 = second.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while second.stats().committed_events < 6 {
        assert!(Instant::now() < deadline, "{:?}", second.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
    run2.await.unwrap().unwrap();
    let got = read_all(&b, &output, 1, 16, Duration::from_secs(30)).await;
    let values: Vec<String> = got.iter().map(|r| text(r).1).collect();
    let expected: Vec<String> = (0..16u64).map(|i| format!("{i}:{}", i + 1)).collect();
    assert_eq!(values, expected, "each event once, counts consecutive");
}

/// What happened, in one global order: (instance, partition, what).
type HookLog = Arc<Mutex<Vec<(u8, i32, &'static str)>>>;

/// A [`Counts`] store that logs its creation (assignment) and its `revoked()`.
struct Probe {
    inner: Counts,
    me: u8,
    partition: i32,
    log: HookLog,
}

impl streams::store::StateStore for Probe {
    fn apply(
        &mut self,
        record: &streams::store::ChangelogRecord<'_>,
    ) -> Result<(), streams::store::StoreError> {
        self.inner.apply(record)
    }

    fn revoked(&mut self) {
        self.log
            .lock()
            .unwrap()
            .push((self.me, self.partition, "revoked"));
    }
}

impl streams::store::KvStore for Probe {
    type Key = String;
    type Value = u64;
    fn get(&self, key: &String) -> Option<&u64> {
        self.inner.get(key)
    }
    fn put(&mut self, key: String, value: u64) -> streams::store::ChangelogEntry {
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: &String) -> streams::store::ChangelogEntry {
        self.inner.delete(key)
    }
}

async fn slow_probe(
    config: EventSourceConfig,
    out: String,
    me: u8,
    log: HookLog,
) -> EventSource<Probe> {
    let factory_log = log.clone();
    EventSource::builder(config, move |p| {
        factory_log.lock().unwrap().push((me, p, "assigned"));
        Probe {
            inner: Counts::new(Utf8, BigEndian),
            me,
            partition: p,
            log: factory_log.clone(),
        }
    })
    .on(
        "n",
        seq,
        move |ctx: &mut EventContext<'_, Probe>, seq: u64| {
            log.lock().unwrap().push((me, ctx.partition(), "handled"));
            // 0-3 ms of work.
            std::thread::sleep(Duration::from_micros(seq * 7919 % 3000));
            let key = String::from_utf8_lossy(ctx.record().key.as_deref().unwrap_or_default())
                .into_owned();
            let n = ctx.get(&key).copied().unwrap_or(0) + 1;
            ctx.put(key.clone(), n);
            ctx.forward(
                ProducerRecord::new(out.as_str())
                    .key(key)
                    .value(format!("{seq}:{n}")),
            );
            Outcome::Complete
        },
    )
    .build()
    .await
    .unwrap()
}

/// STREAMS.md §5.2 "Revoke drain" (GKES's D4, D5): 1000 events queued per partition, handlers
/// taking 0-3 ms, and a second member joining mid-run. No instance handles an event of a
/// partition after that partition's `revoked()` (until it is assigned again), and the new owner
/// continues from the committed state: every event is output once and per key the counts are
/// consecutive.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn a_member_joining_mid_run_takes_over_from_committed_state() {
    const P: i32 = 4;
    const PER: u64 = 1000;
    let b = bootstrap().await;
    let (input, output, group) = (unique("drain"), unique("drain-out"), unique("drain-group"));
    create(&b, &input, P).await;
    create(&b, &output, P).await;
    let mut pcfg = ProducerConfig::default();
    *pcfg.client_mut() = client(&b);
    let p = Producer::new(pcfg).await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..PER * P as u64 {
        let r = ProducerRecord::new(input.as_str())
            .partition((i % P as u64) as i32)
            .key(format!("k{}", i % 16))
            .value(i.to_string())
            .header("__grt__", "n");
        deliveries.push(p.send(r).await.unwrap());
    }
    p.flush().await.unwrap();
    for d in deliveries {
        d.await.unwrap();
    }
    p.close().await.unwrap();

    let log: HookLog = Arc::default();
    let cfg = config(&b, &group, &input);
    let a = slow_probe(cfg.clone(), output.clone(), 1, log.clone()).await;
    let run_a = a.spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bsrc = slow_probe(cfg, output.clone(), 2, log.clone()).await;
    let run_b = bsrc.spawn();
    let total = PER * P as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while a.stats().committed_events + bsrc.stats().committed_events < total {
        assert!(
            Instant::now() < deadline,
            "{:?} {:?}",
            a.stats(),
            bsrc.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sa, sb) = (a.stats(), bsrc.stats());
    a.stop().await;
    bsrc.stop().await;
    run_a.await.unwrap().unwrap();
    run_b.await.unwrap().unwrap();
    println!(
        "instance 1 committed {} events, instance 2 {}",
        sa.committed_events, sb.committed_events
    );
    assert!(sb.committed_events > 0, "the joiner took partitions over");

    // Per (instance, partition): handled only between an assignment and its revoke.
    let log = log.lock().unwrap().clone();
    let mut owned: BTreeMap<(u8, i32), bool> = BTreeMap::new();
    for (me, p, what) in &log {
        let o = owned.entry((*me, *p)).or_insert(false);
        match *what {
            "assigned" => *o = true,
            "revoked" => *o = false,
            _ => assert!(
                *o,
                "instance {me} handled partition {p} while not owning it"
            ),
        }
    }
    assert!(
        log.iter().any(|(me, _, w)| *me == 1 && *w == "revoked"),
        "instance 1 gave partitions up"
    );

    let out = read_all(&b, &output, P, total as usize, Duration::from_secs(60)).await;
    // Each key lives on one partition, read in offset order.
    assert_each_seq_once_and_counts_consecutive(&out, total);
}
