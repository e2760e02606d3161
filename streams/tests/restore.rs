//! The restore matrix of STREAMS.md §5.2 ("Restore" and "Bootstrap" rows) against the real
//! broker (testkit's shared 1-node cluster).
//!
//! Every case drives the restore the way users get it: a changelog is written (by a handler of an
//! `EventSource`, or directly with the record a handler's `ctx.put` / `ctx.delete` writes: the
//! store's own changelog entry, to the same partition number, on a compacted topic), then a fresh
//! `EventSource` whose stores are `MemStore`s is started on it, and a `probe` event per partition
//! (produced before the start, so handled only after that partition's restore) sends the store's
//! entries back over a channel, to be compared with a model. Every wait is bounded.
//!
//! Cases: 100,000 changes on 10,000 keys with tombstones; every 97th transaction aborted;
//! compaction while the changelog is written; `delete_records` moving the log start; a changelog
//! whose last offset is a control record; one undecodable value (Unhealthy, never skipped); the
//! owner process killed with SIGKILL mid-stream and a new instance restoring (the test binary runs
//! itself as the owner); a replication factor below 3 is warned; source partitions growing at
//! runtime make the instance unhealthy, naming both counts. The changelog partition-count
//! mismatch at `build()` is `tests/it.rs`'s `a_changelog_with_another_partition_count_is_refused`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streams::kafka_client::admin::{Admin, NewTopic};
use streams::kafka_client::config::{
    AutoOffsetReset, ConsumerConfig, IsolationLevel, ProducerConfig,
};
use streams::kafka_client::{
    Client, Consumer, ConsumerRecord, Offset, Producer, ProducerRecord, TopicPartition,
};
use streams::store::{BigEndian, ChangelogEntry, Codec, KvStore, MemStore};
use streams::{DecodeError, EventContext, EventSource, EventSourceConfig, Health, Outcome, Stats};
use support::broker::{bootstrap, client, unique};
use tokio::sync::mpsc;

/// The store of every case: `u32` keys, `u64` values, both fixed-width big-endian, so a value of
/// any other length does not decode.
type Store = MemStore<u32, u64, BigEndian, BigEndian>;
/// What a partition's store should hold.
type Model = BTreeMap<u32, u64>;

/// Every wait for a restore or a broker answer gives up after this.
const BOUND: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------------------------- broker

async fn admin(bootstrap: &str) -> Admin {
    Admin::from_client(Client::connect(client(bootstrap)).await.unwrap())
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut t = NewTopic::new(topic, partitions, 1);
    for (k, v) in configs {
        t = t.config(*k, *v);
    }
    admin(bootstrap).await.create_topic(&t).await.unwrap();
}

/// A compacted changelog topic, as the event source creates it.
async fn create_changelog(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic(
        bootstrap,
        topic,
        partitions,
        &[("cleanup.policy", "compact")],
    )
    .await;
}

async fn plain_producer(bootstrap: &str) -> Producer {
    let mut cfg = ProducerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    cfg.enable_idempotence(Some(true));
    Producer::new(cfg).await.unwrap()
}

async fn transactional_producer(bootstrap: &str) -> Producer {
    let mut cfg = ProducerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    cfg.transactional_id(Some(unique("restore-writer")));
    cfg.transaction_timeout(Duration::from_secs(20));
    let p = Producer::new(cfg).await.unwrap();
    p.init_transactions().await.unwrap();
    p
}

/// `tp`'s log start, end (high watermark) and last stable offset.
async fn offsets(admin: &Admin, tp: &TopicPartition) -> (i64, i64, i64) {
    let one = |at, iso| {
        let tp = tp.clone();
        async move { admin.list_offsets(&[(tp.clone(), at)], iso).await.unwrap()[&tp].offset }
    };
    (
        one(Offset::Earliest, IsolationLevel::ReadUncommitted).await,
        one(Offset::Latest, IsolationLevel::ReadUncommitted).await,
        one(Offset::Latest, IsolationLevel::ReadCommitted).await,
    )
}

/// The records of `tp` from its log start up to (not including) `upto`, read read_uncommitted
/// (aborted data included; control records are never returned).
async fn read_raw(bootstrap: &str, tp: &TopicPartition, upto: i64) -> Vec<ConsumerRecord> {
    let (start, _, _) = offsets(&admin(bootstrap).await, tp).await;
    let mut cfg = ConsumerConfig::default();
    *cfg.client_mut() = client(bootstrap);
    cfg.isolation_level(IsolationLevel::ReadUncommitted);
    cfg.auto_offset_reset(AutoOffsetReset::Earliest);
    let c = Consumer::new(cfg).await.unwrap();
    c.assign([tp.clone()]).await.unwrap();
    c.seek(tp, Offset::At(start)).await.unwrap();
    let deadline = Instant::now() + BOUND;
    let mut out = Vec::new();
    while c.position(tp).unwrap_or(start) < upto {
        assert!(Instant::now() < deadline, "reading {tp:?} up to {upto}");
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    c.close().await;
    out.retain(|r| r.offset < upto);
    out
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

// ------------------------------------------------------------------------------- changes, model

/// SplitMix64: a small deterministic generator, so every run writes the same changelog.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Put(u32, u64),
    Delete(u32),
}

impl Change {
    fn key(self) -> u32 {
        match self {
            Change::Put(k, _) | Change::Delete(k) => k,
        }
    }

    fn apply(self, model: &mut Model) {
        match self {
            Change::Put(k, v) => {
                model.insert(k, v);
            }
            Change::Delete(k) => {
                model.remove(&k);
            }
        }
    }
}

/// `n` changes on `keys` keys: one in five a delete, the others a put of a value no other change
/// writes (`first_value + i`), so a restored value names the change it came from.
fn changes(n: usize, keys: u32, seed: u64, first_value: u64) -> Vec<Change> {
    let mut rng = SplitMix(seed);
    (0..n as u64)
        .map(|i| {
            let key = (rng.next() % u64::from(keys)) as u32;
            if rng.next() % 5 == 0 {
                Change::Delete(key)
            } else {
                Change::Put(key, first_value + i)
            }
        })
        .collect()
}

fn partition_of(key: u32, partitions: i32) -> i32 {
    (key % partitions as u32) as i32
}

/// The changelog record of `change`, as `ctx.put` / `ctx.delete` writes it: the entry the store's
/// own `put` / `delete` returns (so the store's codecs), to the partition with the input's number.
fn changelog_record(topic: &str, partitions: i32, change: Change) -> ProducerRecord {
    let mut scratch = Store::default();
    let ChangelogEntry { key, value } = match change {
        Change::Put(k, v) => scratch.put(k, v),
        Change::Delete(k) => scratch.delete(&k),
    };
    let mut r = ProducerRecord::new(topic)
        .partition(partition_of(change.key(), partitions))
        .key(key);
    r.value = value;
    r
}

/// The models of `changes` applied in order, one per partition.
fn models(changes: &[Change], partitions: i32) -> Vec<Model> {
    let mut m = vec![Model::new(); partitions as usize];
    for c in changes {
        c.apply(&mut m[partition_of(c.key(), partitions) as usize]);
    }
    m
}

/// Writes `changes` with an idempotent producer (no transaction); returns each one's offset.
async fn write_plain(
    producer: &Producer,
    topic: &str,
    partitions: i32,
    changes: &[Change],
) -> Vec<i64> {
    let mut deliveries = Vec::with_capacity(changes.len());
    for c in changes {
        deliveries.push(
            producer
                .send(changelog_record(topic, partitions, *c))
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    let mut out = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        out.push(d.await.unwrap().offset);
    }
    out
}

/// Sends `record` in the open transaction (whose commit waits for every delivery).
async fn send_in_txn(producer: &Producer, record: ProducerRecord) {
    drop(producer.send(record).await.unwrap());
}

// ----------------------------------------------------------------- restoring through a source

/// One partition's store, as a probe event saw it.
struct Probe {
    partition: i32,
    entries: Model,
}

/// Sends every store's entries to `tx` on a `probe` event.
fn probe_route(
    builder: streams::EventSourceBuilder<Store>,
    tx: mpsc::UnboundedSender<Probe>,
) -> streams::EventSourceBuilder<Store> {
    builder.on(
        "probe",
        |_: &ConsumerRecord| Ok::<(), DecodeError>(()),
        move |ctx: &mut EventContext<'_, Store>, ()| {
            let entries = ctx.store().iter().map(|(k, v)| (*k, *v)).collect();
            let _ = tx.send(Probe {
                partition: ctx.partition(),
                entries,
            });
            Outcome::Complete
        },
    )
}

async fn produce_probes(bootstrap: &str, topic: &str, partitions: i32) {
    let p = plain_producer(bootstrap).await;
    for part in 0..partitions {
        p.send_and_wait(
            ProducerRecord::new(topic)
                .partition(part)
                .key("probe")
                .header("__grt__", "probe"),
        )
        .await
        .unwrap();
    }
    p.close().await.unwrap();
}

fn config(bootstrap: &str, group: &str, topic: &str) -> EventSourceConfig {
    let mut c = EventSourceConfig::new(group, topic, client(bootstrap));
    c.session_timeout = Duration::from_secs(10);
    c.eos.transaction_timeout = Duration::from_secs(8);
    c
}

/// Waits for a probe from each of `partitions` partitions (bounded; fails at once if the source
/// goes unhealthy).
async fn collect_probes<S: streams::store::StateStore>(
    source: &EventSource<S>,
    rx: &mut mpsc::UnboundedReceiver<Probe>,
    partitions: i32,
) -> Vec<Model> {
    let deadline = Instant::now() + BOUND;
    let mut got: BTreeMap<i32, Model> = BTreeMap::new();
    while got.len() < partitions as usize {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(p)) => {
                got.insert(p.partition, p.entries);
            }
            Ok(None) => panic!("the probe channel closed"),
            Err(_) => {
                if let Health::Unhealthy(e) = source.health() {
                    panic!("the source went unhealthy: {e}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no probe from every partition within {BOUND:?} (got {:?}): health {:?}, {:?}",
                    got.keys().collect::<Vec<_>>(),
                    source.health(),
                    source.stats()
                );
            }
        }
    }
    got.into_values().collect()
}

/// What a fresh event source restored from `changelog`.
struct Restored {
    stores: Vec<Model>,
    stats: Stats,
    took: Duration,
}

/// Starts a fresh event source on a new source topic of `partitions` partitions whose changelog is
/// `changelog`, and returns each partition's store as its probe saw it (after its restore).
async fn restore(bootstrap: &str, changelog: &str, partitions: i32) -> Restored {
    let (input, group) = (unique("restore-src"), unique("restore-group"));
    create_topic(bootstrap, &input, partitions, &[]).await;
    produce_probes(bootstrap, &input, partitions).await;
    let mut cfg = config(bootstrap, &group, &input);
    cfg.changelog_topic = Some(changelog.to_string());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let source = probe_route(EventSource::builder(cfg, |_| Store::default()), tx)
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    let run = source.spawn();
    let stores = collect_probes(&source, &mut rx, partitions).await;
    let took = started.elapsed();
    source.stop().await;
    run.await.unwrap().unwrap();
    Restored {
        stores,
        stats: source.stats(),
        took,
    }
}

/// Compares each partition's store with its model, naming the first difference.
fn assert_equal(stores: &[Model], models: &[Model]) {
    assert_eq!(stores.len(), models.len());
    for (p, (store, model)) in stores.iter().zip(models).enumerate() {
        if store != model {
            let missing = model.iter().find(|(k, v)| store.get(k) != Some(v));
            let extra = store.iter().find(|(k, _)| !model.contains_key(k));
            panic!(
                "partition {p}: the store ({} keys) differs from the model ({} keys); first \
                 model entry not restored: {missing:?}; first restored key not in the model: \
                 {extra:?}",
                store.len(),
                model.len()
            );
        }
    }
}

// ------------------------------------------------------------------------------------- cases

/// 100,000 changes on 10,000 keys, one in five a tombstone, on two partitions: the restore gives
/// the model, having applied every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_changes_with_tombstones_restore_to_the_model() {
    let b = bootstrap().await;
    let changelog = unique("cl-100k");
    create_changelog(&b, &changelog, 2).await;
    let all = changes(100_000, 10_000, 1, 1);
    let p = plain_producer(&b).await;
    write_plain(&p, &changelog, 2, &all).await;
    p.close().await.unwrap();
    let models = models(&all, 2);
    let deleted = (0..10_000u32)
        .filter(|k| {
            all.contains(&Change::Delete(*k))
                && !models[partition_of(*k, 2) as usize].contains_key(k)
        })
        .count();
    assert!(deleted > 100, "the model must hold deleted keys: {deleted}");

    let r = restore(&b, &changelog, 2).await;
    println!(
        "100k changes: restored {} records in {:?}; {} + {} keys, {deleted} keys ended deleted",
        r.stats.restored_records,
        r.took,
        models[0].len(),
        models[1].len()
    );
    assert_equal(&r.stores, &models);
    // The default segment (1 GiB) is never cleaned while active: every record was applied.
    assert_eq!(r.stats.restored_records, 100_000);
}

/// The changelog written in transactions of 20 changes over both partitions, every 97th
/// aborted (its puts and tombstones on keys that hold values): nothing aborted is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aborted_transactions_are_not_restored() {
    let b = bootstrap().await;
    let changelog = unique("cl-aborts");
    create_changelog(&b, &changelog, 2).await;
    let all = changes(20_000, 1_000, 2, 1);
    let p = transactional_producer(&b).await;
    let mut kept = Vec::new();
    let mut aborted = Vec::new();
    for (t, txn) in all.chunks(20).enumerate() {
        p.begin_transaction().await.unwrap();
        for c in txn {
            send_in_txn(&p, changelog_record(&changelog, 2, *c)).await;
        }
        if (t + 1) % 97 == 0 {
            p.abort_transaction().await.unwrap();
            aborted.extend_from_slice(txn);
        } else {
            p.commit_transaction().await.unwrap();
            kept.extend_from_slice(txn);
        }
    }
    p.close().await.unwrap();
    // 1000 transactions: numbers 97, 194, ..., 970 aborted.
    assert_eq!(aborted.len(), 10 * 20);
    let models = models(&kept, 2);
    // Had the aborted changes been applied, the stores would differ from the model.
    let with_aborts = {
        let mut m = vec![Model::new(); 2];
        for c in &all {
            c.apply(&mut m[partition_of(c.key(), 2) as usize]);
        }
        m
    };
    assert_ne!(with_aborts, models, "the aborted changes must matter");

    let r = restore(&b, &changelog, 2).await;
    println!(
        "aborts: {} transactions ({} aborted), restored {} records in {:?}",
        all.len() / 20,
        aborted.len() / 20,
        r.stats.restored_records,
        r.took
    );
    assert_equal(&r.stores, &models);
    let aborted_values: std::collections::BTreeSet<u64> = aborted
        .iter()
        .filter_map(|c| match c {
            Change::Put(_, v) => Some(*v),
            Change::Delete(_) => None,
        })
        .collect();
    for s in &r.stores {
        assert!(s.values().all(|v| !aborted_values.contains(v)));
    }
    assert_eq!(r.stats.restored_records, kept.len() as u64);
}

/// Compaction while the changelog is written (`segment.ms=100`, `min.cleanable.dirty.ratio=0.01`,
/// 1 MiB segments, the smallest Kafka 4 accepts): chunks of changes go on until the cleaner has
/// removed overwritten records, then more are written on top (a dirty tail over a cleaned head).
/// The restore reads fewer records than were written and still gives the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_while_writing_still_restores_the_model() {
    let b = bootstrap().await;
    let changelog = unique("cl-compact");
    create_topic(
        &b,
        &changelog,
        2,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("segment.bytes", "1048576"),
        ],
    )
    .await;
    let p = plain_producer(&b).await;
    const CHUNK: usize = 2_000;
    let mut written: Vec<Change> = Vec::new();
    let mut chunk_no = 0u64;
    let mut next_chunk = || {
        chunk_no += 1;
        changes(CHUNK, 1_000, 100 + chunk_no, chunk_no * 1_000_000)
    };
    let tp0 = TopicPartition::new(changelog.as_str(), 0);
    let started = Instant::now();
    // The first chunk's records are all overwritten later; once the cleaner has run, fewer than
    // the first chunk's offsets of partition 0 are left.
    let first_chunk_end = {
        let c = next_chunk();
        let offs = write_plain(&p, &changelog, 2, &c).await;
        written.extend_from_slice(&c);
        let last_p0 = c
            .iter()
            .zip(&offs)
            .filter(|(c, _)| partition_of(c.key(), 2) == 0)
            .map(|(_, o)| *o)
            .max()
            .unwrap();
        last_p0 + 1
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = next_chunk();
        write_plain(&p, &changelog, 2, &c).await;
        written.extend_from_slice(&c);
        let left = read_raw(&b, &tp0, first_chunk_end).await.len() as i64;
        if left < first_chunk_end {
            println!(
                "compaction: partition 0 kept {left} of its first {first_chunk_end} offsets after \
                 {:?} and {} changes",
                started.elapsed(),
                written.len()
            );
            break;
        }
        assert!(
            started.elapsed() < BOUND,
            "the cleaner did not run within {BOUND:?}"
        );
    }
    // A dirty tail on top of the cleaned log: puts and tombstones of keys the cleaner kept.
    for _ in 0..3 {
        let c = next_chunk();
        write_plain(&p, &changelog, 2, &c).await;
        written.extend_from_slice(&c);
    }
    p.close().await.unwrap();
    let models = models(&written, 2);

    let r = restore(&b, &changelog, 2).await;
    println!(
        "compaction: {} changes written, {} restored in {:?}",
        written.len(),
        r.stats.restored_records,
        r.took
    );
    assert_equal(&r.stores, &models);
    assert!(
        r.stats.restored_records < written.len() as u64,
        "the restore read a compacted log"
    );
}

/// `delete_records` moves partition 0's log start to the middle and partition 1's to its end: the
/// restore reads exactly the records from the new log start to the end, and gives the model of
/// those changes (partition 1 restores empty at once).
///
/// The broker refuses DeleteRecords on a topic whose `cleanup.policy` is only `compact`
/// (POLICY_VIOLATION), which is how the event source creates changelogs; so this changelog is
/// `compact,delete` with no time limit, as an operator may set one up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_records_moves_the_start_of_the_restore() {
    let b = bootstrap().await;
    let changelog = unique("cl-delete");
    create_topic(
        &b,
        &changelog,
        2,
        &[("cleanup.policy", "compact,delete"), ("retention.ms", "-1")],
    )
    .await;
    let all = changes(20_000, 2_000, 3, 1);
    let p = plain_producer(&b).await;
    let offs = write_plain(&p, &changelog, 2, &all).await;
    p.close().await.unwrap();
    let (tp0, tp1) = (
        TopicPartition::new(changelog.as_str(), 0),
        TopicPartition::new(changelog.as_str(), 1),
    );
    let a = admin(&b).await;
    let (_, end0, _) = offsets(&a, &tp0).await;
    let (_, end1, _) = offsets(&a, &tp1).await;
    let cut0 = end0 / 2;
    let low = a
        .delete_records(&[(tp0.clone(), cut0), (tp1.clone(), end1)])
        .await
        .unwrap();
    assert_eq!((low[&tp0], low[&tp1]), (cut0, end1));
    assert_eq!(offsets(&a, &tp0).await.0, cut0);
    let mut models = vec![Model::new(); 2];
    for (c, off) in all.iter().zip(&offs) {
        if partition_of(c.key(), 2) == 0 && *off >= cut0 {
            c.apply(&mut models[0]);
        }
    }
    assert!(!models[0].is_empty());
    let without_cut = self::models(&all, 2);
    assert_ne!(without_cut[0], models[0], "the deleted records must matter");

    let r = restore(&b, &changelog, 2).await;
    println!(
        "delete_records: log start {cut0} of {end0} and {end1} of {end1}; restored {} in {:?}",
        r.stats.restored_records, r.took
    );
    assert_equal(&r.stores, &models);
    assert_eq!(r.stats.restored_records, (end0 - cut0) as u64);
}

/// The last offset of the changelog is a control record: a commit marker on partition 0; on
/// partition 1 an abort marker after aborted data. Each restore ends (bounded) and leaves the
/// aborted data out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trailing_control_record_ends_the_restore() {
    let b = bootstrap().await;
    let changelog = unique("cl-marker");
    create_changelog(&b, &changelog, 2).await;
    let all = changes(2_000, 200, 4, 1);
    let p = transactional_producer(&b).await;
    p.begin_transaction().await.unwrap();
    for c in &all {
        send_in_txn(&p, changelog_record(&changelog, 2, *c)).await;
    }
    p.commit_transaction().await.unwrap();
    // Partition 1 only: puts over every key it holds, then aborted.
    let aborted: Vec<Change> = (0..200u32)
        .filter(|k| partition_of(*k, 2) == 1)
        .map(|k| Change::Put(k, 9_000_000 + u64::from(k)))
        .collect();
    p.begin_transaction().await.unwrap();
    for c in &aborted {
        send_in_txn(&p, changelog_record(&changelog, 2, *c)).await;
    }
    p.abort_transaction().await.unwrap();
    p.close().await.unwrap();
    for part in 0..2 {
        let tp = TopicPartition::new(changelog.as_str(), part);
        let (_, end, stable) = offsets(&admin(&b).await, &tp).await;
        assert_eq!(stable, end, "no open transaction");
        let last_data = read_raw(&b, &tp, end).await.last().unwrap().offset;
        assert!(
            last_data < end - 1,
            "partition {part}: offset {} must be a control record (last data {last_data})",
            end - 1
        );
    }
    let models = models(&all, 2);

    let r = restore(&b, &changelog, 2).await;
    println!(
        "trailing markers: restored {} records in {:?}",
        r.stats.restored_records, r.took
    );
    assert_equal(&r.stores, &models);
    assert_eq!(r.stats.restored_records, all.len() as u64);
}

/// One changelog value that does not decode (3 bytes for a `u64`): the restore fails the instance
/// (Unhealthy, naming the partition and the offset) and the probe after it is never handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_changelog_value_makes_the_source_unhealthy() {
    let b = bootstrap().await;
    let changelog = unique("cl-bad");
    create_changelog(&b, &changelog, 1).await;
    let p = plain_producer(&b).await;
    let good = changes(10, 5, 5, 1)
        .into_iter()
        .map(|c| match c {
            Change::Delete(k) => Change::Put(k, 7),
            put => put,
        })
        .collect::<Vec<_>>();
    write_plain(&p, &changelog, 1, &good).await;
    let bad = p
        .send_and_wait(
            ProducerRecord::new(changelog.as_str())
                .partition(0)
                .key(BigEndian.encode(&3u32))
                .value(vec![1u8, 2, 3]),
        )
        .await
        .unwrap()
        .offset;
    assert_eq!(bad, 10);
    write_plain(&p, &changelog, 1, &changes(5, 5, 6, 100)).await;
    p.close().await.unwrap();

    let (input, group) = (unique("bad-src"), unique("bad-group"));
    create_topic(&b, &input, 1, &[]).await;
    produce_probes(&b, &input, 1).await;
    let mut cfg = config(&b, &group, &input);
    cfg.changelog_topic = Some(changelog.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let source = probe_route(EventSource::builder(cfg, |_| Store::default()), tx)
        .build()
        .await
        .unwrap();
    let r = tokio::time::timeout(BOUND, source.run())
        .await
        .expect("a failed restore stops the instance by itself");
    let err = r
        .expect_err("the undecodable value fails the instance")
        .to_string();
    println!("undecodable: {err}");
    let Health::Unhealthy(reason) = source.health() else {
        panic!("not unhealthy: {:?}", source.health());
    };
    for part in [
        "restoring partition 0",
        "changelog offset 10",
        "value",
        "expected 8 bytes, got 3",
    ] {
        assert!(err.contains(part), "{part:?} not in {err:?}");
        assert!(reason.to_string().contains(part), "{reason}");
    }
    assert!(rx.try_recv().is_err(), "the probe was handled");
    assert_eq!(source.stats().events, 0);
    assert_eq!(committed(&b, &group, &input, 1).await, vec![None]);
}

// ------------------------------------------------------------- SIGKILL of the owning process

/// Set in the owner child process (the test binary running
/// [`the_owner_killed_with_sigkill_is_restored_by_a_new_instance`] as the owner): `bootstrap`,
/// `input`, `group` and `instance` separated by spaces.
const OWNER_ENV: &str = "STREAMS_RESTORE_TEST_OWNER";

/// An event of the SIGKILL case: add `delta` to `key`'s count, or delete the key.
#[derive(Debug, Clone, Copy)]
enum Event {
    Add(u32, u64),
    Delete(u32),
}

/// Counts per key: `add` events (key: `u32`, value: `u64` delta) add, `del` events delete; plus
/// the probe route when `probes` is given. Every change goes through `ctx.put` / `ctx.delete`.
async fn counter(
    config: EventSourceConfig,
    probes: Option<mpsc::UnboundedSender<Probe>>,
) -> EventSource<Store> {
    fn key(r: &ConsumerRecord) -> Result<u32, DecodeError> {
        BigEndian
            .decode(r.key.as_deref().unwrap_or_default())
            .map_err(|e| DecodeError::new(format!("key: {e}")))
    }
    let mut b = EventSource::builder(config, |_| Store::default())
        .on(
            "add",
            |r: &ConsumerRecord| {
                let delta: u64 = BigEndian
                    .decode(r.value.as_deref().unwrap_or_default())
                    .map_err(|e| DecodeError::new(format!("delta: {e}")))?;
                Ok((key(r)?, delta))
            },
            |ctx: &mut EventContext<'_, Store>, (k, delta): (u32, u64)| {
                let n = ctx.get(&k).copied().unwrap_or(0) + delta;
                ctx.put(k, n);
                Outcome::Complete
            },
        )
        .on("del", key, |ctx: &mut EventContext<'_, Store>, k: u32| {
            ctx.delete(&k);
            Outcome::Complete
        });
    if let Some(tx) = probes {
        b = probe_route(b, tx);
    }
    b.build().await.unwrap()
}

fn owner_config(bootstrap: &str, group: &str, input: &str, instance: &str) -> EventSourceConfig {
    let mut cfg = config(bootstrap, group, input);
    // The same instance id, so the new instance's transactional id fences the killed one's open
    // transaction at once, and static membership, so it takes the partitions over without
    // waiting for the dead member's session to expire.
    cfg.instance_id = Some(instance.to_string());
    cfg.static_membership = true;
    // Transactions of about 200 ms (2,000 events at the input rate), so the kill finds one open.
    cfg.eos.linger = Duration::from_millis(200);
    cfg.eos.target_txn_events = 5_000;
    cfg
}

/// The owner, in the child process: counts until killed. It prints its committed event count
/// every 10 ms, exits when its stdin closes (the test process died), and stops by itself after
/// two minutes in any case.
async fn run_owner(spec: &str) {
    let [bootstrap, input, group, instance]: [&str; 4] = spec
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("bootstrap input group instance");
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(3);
    });
    let source = counter(owner_config(bootstrap, group, input, instance), None).await;
    let run = source.spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !run.is_finished() {
        println!("owner committed={}", source.stats().committed_events);
        let _ = std::io::stdout().flush();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("owner health={:?}", source.health());
    source.stop().await;
}

/// The owner child process; killed (SIGKILL) on drop.
struct Owner {
    child: Child,
    committed: Arc<AtomicU64>,
    output: Arc<Mutex<Vec<String>>>,
}

impl Owner {
    fn start(spec: &str) -> Owner {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "--exact",
                "the_owner_killed_with_sigkill_is_restored_by_a_new_instance",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(OWNER_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the owner process starts");
        let committed = Arc::new(AtomicU64::new(0));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (c, o) = (committed.clone(), output.clone());
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match line.strip_prefix("owner committed=") {
                    Some(n) => c.store(n.parse().unwrap_or(0), Ordering::SeqCst),
                    None => o.lock().unwrap().push(line),
                }
            }
        });
        let o = output.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                o.lock().unwrap().push(line);
            }
        });
        Owner {
            child,
            committed,
            output,
        }
    }

    /// Waits until the owner has committed at least `n` events (bounded; fails if it exits).
    async fn wait_committed(&mut self, n: u64) {
        let deadline = Instant::now() + BOUND;
        while self.committed.load(Ordering::SeqCst) < n {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the owner exited ({status}): {:?}",
                    self.output.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the owner committed {} events within {BOUND:?}: {:?}",
                self.committed.load(Ordering::SeqCst),
                self.output.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The restore row's kill -9: the owner of two partitions counts 24,000 `add`/`del` events in a
/// child process and is killed with SIGKILL mid-stream, while events still arrive. A new
/// instance (same instance id) restores both stores from the changelog the owner wrote, goes on
/// from the committed offsets, and ends equal to the model of every event applied once (an
/// aborted or doubled change would show in the counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_killed_with_sigkill_is_restored_by_a_new_instance() {
    if let Ok(spec) = std::env::var(OWNER_ENV) {
        run_owner(&spec).await;
        return;
    }
    let b = bootstrap().await;
    let (input, group, instance) = (unique("kill-src"), unique("kill-group"), unique("owner"));
    const PARTITIONS: i32 = 2;
    const EVENTS: usize = 24_000;
    create_topic(&b, &input, PARTITIONS, &[]).await;
    let mut rng = SplitMix(7);
    let events: Vec<Event> = (0..EVENTS)
        .map(|_| {
            let k = (rng.next() % 500) as u32;
            if rng.next() % 10 == 0 {
                Event::Delete(k)
            } else {
                Event::Add(k, 1 + rng.next() % 100)
            }
        })
        .collect();
    let mut models = vec![Model::new(); PARTITIONS as usize];
    let mut per_partition = [0i64; PARTITIONS as usize];
    for e in &events {
        let (k, m) = match *e {
            Event::Add(k, d) => (k, Some(d)),
            Event::Delete(k) => (k, None),
        };
        let p = partition_of(k, PARTITIONS) as usize;
        per_partition[p] += 1;
        match m {
            Some(d) => *models[p].entry(k).or_insert(0) += d,
            None => {
                models[p].remove(&k);
            }
        }
    }

    let mut owner = Owner::start(&format!("{b} {input} {group} {instance}"));
    // 200 events every 20 ms (10,000/s), from now until all are written.
    let producer = {
        let (b, input, events) = (b.clone(), input.clone(), events.clone());
        tokio::spawn(async move {
            let p = plain_producer(&b).await;
            for chunk in events.chunks(200) {
                let mut deliveries = Vec::new();
                for e in chunk {
                    let (k, kind, value) = match *e {
                        Event::Add(k, d) => (k, "add", Some(BigEndian.encode(&d))),
                        Event::Delete(k) => (k, "del", None),
                    };
                    let mut r = ProducerRecord::new(input.as_str())
                        .partition(partition_of(k, PARTITIONS))
                        .key(BigEndian.encode(&k))
                        .header("__grt__", kind);
                    r.value = value;
                    deliveries.push(p.send(r).await.unwrap());
                }
                for d in deliveries {
                    d.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            p.close().await.unwrap();
        })
    };
    let started = Instant::now();
    owner.wait_committed(EVENTS as u64 / 4).await;
    // Kill once the open transaction has changelog records in the log (past the last stable
    // offset): the new instance must not restore them.
    let changelog = format!("{group}-{input}-changelog");
    let a = admin(&b).await;
    let uncommitted = || async {
        let mut n = 0;
        for part in 0..PARTITIONS {
            let (_, end, stable) =
                offsets(&a, &TopicPartition::new(changelog.as_str(), part)).await;
            n += end - stable;
        }
        n
    };
    let deadline = Instant::now() + BOUND;
    while uncommitted().await == 0 {
        assert!(Instant::now() < deadline, "no open transaction seen");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_kill = owner.committed.load(Ordering::SeqCst);
    owner.kill();
    let killed_at = started.elapsed();
    // Nobody has fenced the dead owner's transaction yet: its records are still past the LSO.
    let open = uncommitted().await;
    assert!(open > 0, "the kill left no open transaction");
    assert!(at_kill < EVENTS as u64, "the kill must be mid-stream");
    tokio::time::timeout(BOUND, producer)
        .await
        .expect("the events are written in time")
        .unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let source = counter(owner_config(&b, &group, &input, &instance), Some(tx)).await;
    let restarted = Instant::now();
    let run = source.spawn();
    produce_probes(&b, &input, PARTITIONS).await;
    let stores = collect_probes(&source, &mut rx, PARTITIONS).await;
    let took = restarted.elapsed();
    let stats = source.stats();
    source.stop().await;
    run.await.unwrap().unwrap();
    println!(
        "sigkill: owner killed after {killed_at:?} with {at_kill} events committed and {open} \
         changelog offsets of its open transaction past the last stable offset; the new instance \
         restored {} records and handled {} events, probes after {took:?}",
        stats.restored_records, stats.events
    );
    assert_equal(&stores, &models);
    // Each event writes one changelog record: every event was either committed by the owner
    // (and restored) or handled by the new instance, never both (the probes are handled too).
    assert!(stats.restored_records > 0, "{stats:?}");
    assert_eq!(
        stats.restored_records + stats.events,
        (EVENTS + PARTITIONS as usize) as u64,
        "{stats:?}"
    );
    let c = committed(&b, &group, &input, PARTITIONS).await;
    assert_eq!(
        c,
        per_partition
            .iter()
            .map(|n| Some(n + 1))
            .collect::<Vec<_>>(),
        "every event and probe committed"
    );
}

// ------------------------------------------------------------------------------------ bootstrap

/// A `MakeWriter` that keeps what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A changelog with fewer than 3 replicas is warned about at `build()` (a broker loss could lose
/// committed state). On this 1-node cluster the created changelog has 1 replica; the library's
/// check counts the changelog's replicas, not the brokers, so 1 replica on 3 brokers warns the
/// same way. The warning is a log line: captured with a subscriber on this thread (where
/// `build()` runs).
#[tokio::test]
async fn a_changelog_with_fewer_than_three_replicas_is_warned_about() {
    let b = bootstrap().await;
    let (input, group) = (unique("rf-src"), unique("rf-group"));
    create_topic(&b, &input, 1, &[]).await;
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let source = {
        let _guard = tracing::subscriber::set_default(subscriber);
        let (tx, _rx) = mpsc::unbounded_channel();
        probe_route(
            EventSource::builder(config(&b, &group, &input), |_| Store::default()),
            tx,
        )
        .build()
        .await
        .unwrap()
    };
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    println!("{log}");
    let warning = log
        .lines()
        .find(|l| l.contains("replication factor below 3"))
        .unwrap_or_else(|| panic!("no replication warning in {log:?}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(source.changelog_topic()), "{warning}");
    assert!(warning.contains("replicas=1"), "{warning}");
}

/// STREAMS.md §1.4: source partitions growing at runtime change the key → partition mapping, so
/// the instance must go Unhealthy. Metadata is refreshed every second here so the consumer sees
/// the third partition at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_partitions_growing_at_runtime_make_the_source_unhealthy() {
    let b = bootstrap().await;
    let (input, group) = (unique("grow-src"), unique("grow-group"));
    create_topic(&b, &input, 2, &[]).await;
    let mut cfg = config(&b, &group, &input);
    cfg.client.metadata_max_age(Duration::from_secs(1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let source = probe_route(EventSource::builder(cfg, |_| Store::default()), tx)
        .build()
        .await
        .unwrap();
    let run = source.spawn();
    produce_probes(&b, &input, 2).await;
    collect_probes(&source, &mut rx, 2).await;
    admin(&b).await.create_partitions(&input, 3).await.unwrap();
    // Well above a metadata refresh (1 s) plus a rebalance.
    const LIMIT: Duration = Duration::from_secs(20);
    let grown = Instant::now();
    let mut health = source.health_watch();
    while !matches!(*health.borrow_and_update(), Health::Unhealthy(_)) {
        if grown.elapsed() >= LIMIT {
            let h = source.health();
            source.stop().await;
            let _ = run.await;
            panic!("still {h:?} {LIMIT:?} after the source grew from 2 to 3 partitions");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), health.changed()).await;
    }
    let Health::Unhealthy(reason) = source.health() else {
        unreachable!()
    };
    println!("grown: unhealthy after {:?}: {reason}", grown.elapsed());
    let reason = reason.to_string();
    assert!(
        reason.contains("partitions") && reason.contains('2') && reason.contains('3'),
        "the reason names the growth: {reason}"
    );
    let _ = tokio::time::timeout(BOUND, run).await;
}
