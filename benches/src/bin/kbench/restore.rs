//! `kbench streams-restore`: how fast a fresh `EventSource` rebuilds its `MemStore`s from a
//! changelog (STREAMS.md 5.3: ≥ 300,000 records/s with 1 KiB values and 100,000 keys).
//!
//! Fills a compacted changelog of P partitions with `records` values of `size` bytes over
//! `keys` keys (`key-000000` ...; record `j` has key `j mod keys` and its value starts with `j`,
//! big-endian), in transactions of `txn-records` (so the log holds commit markers, like a
//! processor's), next to an empty input topic. Then, each round, a fresh event source (a new
//! group, the filled changelog named by `changelog_topic`) is started in this process and timed
//! from its first store's creation (the factory is called when a partition's restore begins)
//! until every partition is active (restored and processing). The stores are checked when they
//! are dropped: every key present with the value of its last write. CPU time is this process's
//! (getrusage), and the broker's from `/proc`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_client::admin::NewTopic;
use kafka_client::config::{ClientConfig, ProducerConfig};
use kafka_client::producer::{Producer, ProducerRecord};
use kafka_client::ConsumerRecord;
use serde::Serialize;
use streams::store::{ChangelogRecord, MemStore, Raw, StateStore, StoreError};
use streams::{DecodeError, EventContext, EventSource, EventSourceConfig, Health, Outcome};

use crate::report::Stat;
use crate::worker::PayloadPool;
use crate::Common;

/// `kbench streams-restore` flags.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// Changelog records to fill.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Value size in bytes (at least 8).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Partitions of the changelog (and of the empty input topic).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Restores of the same changelog, each by a fresh event source.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Records per transaction while filling.
    #[arg(long, default_value_t = 10_000)]
    txn_records: u64,
    /// Also read the changelog with kafka-client alone each round (a consumer per partition on
    /// one client, as the restore does; a consumer per partition each on its own client; one
    /// consumer for all): the consumer's share of the restore time.
    #[arg(long)]
    baseline: bool,
    #[command(flatten)]
    common: Common,
}

type Inner = MemStore<Bytes, Bytes, Raw, Raw>;

/// What every store of a round reports.
#[derive(Default)]
struct Shared {
    first_store: Mutex<Option<Instant>>,
    applied: AtomicU64,
    /// Per partition: keys held, keys whose value is not the last write, at the store's drop.
    dropped: Mutex<Vec<(i32, u64, u64)>>,
    records: u64,
    keys: u64,
}

/// A `MemStore` that counts what it applies and checks its contents when dropped.
struct Timed {
    partition: i32,
    inner: Inner,
    shared: Arc<Shared>,
}

impl StateStore for Timed {
    fn apply(&mut self, record: &ChangelogRecord<'_>) -> Result<(), StoreError> {
        self.inner.apply(record)?;
        self.shared.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The record number of the last write of key `k`.
fn last_write(k: u64, records: u64, keys: u64) -> Option<u64> {
    (k < records.min(keys)).then(|| k + keys * ((records - 1 - k) / keys))
}

fn key_of(k: u64) -> String {
    format!("key-{k:06}")
}

impl Drop for Timed {
    fn drop(&mut self) {
        let (mut held, mut wrong) = (0u64, 0u64);
        for (k, v) in self.inner.iter() {
            held += 1;
            let k = std::str::from_utf8(k)
                .ok()
                .and_then(|s| s.strip_prefix("key-"))
                .and_then(|n| n.parse::<u64>().ok());
            let want = k.and_then(|k| last_write(k, self.shared.records, self.shared.keys));
            let got = v
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
            if want.is_none() || got != want {
                wrong += 1;
            }
        }
        self.shared
            .dropped
            .lock()
            .unwrap()
            .push((self.partition, held, wrong));
    }
}

/// How [`raw_read`] reads the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawRead {
    /// One consumer per partition, all on one client (one connection): what a restore does.
    PerPartitionSharedClient,
    /// One consumer per partition, each on its own client (its own connection).
    PerPartitionOwnClient,
    /// One consumer assigned every partition.
    OneConsumer,
}

/// Reads every partition of `changelog` read_committed to its end offset with kafka-client
/// alone (polls of 500 ms, like the restore); records and seconds. The baseline that tells the
/// consumer's part from the streams layer's.
async fn raw_read(
    bootstrap: &str,
    changelog: &str,
    partitions: i32,
    how: RawRead,
) -> Result<(u64, f64)> {
    let per_partition = how != RawRead::OneConsumer;
    use kafka_client::config::{ConsumerConfig, IsolationLevel};
    use kafka_client::{Client, Consumer, Offset, TopicPartition};
    let mut cc = ClientConfig::default();
    cc.bootstrap_servers(vec![bootstrap.to_string()]);
    let client = Client::connect(cc.clone()).await?;
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(changelog, p))
        .collect();
    let ends = kafka_client::offsets::list_offsets(
        &client,
        &tps.iter()
            .map(|tp| (tp.clone(), Offset::Latest))
            .collect::<Vec<_>>(),
        IsolationLevel::ReadUncommitted,
    )
    .await?;
    let mut cfg = ConsumerConfig::default();
    *cfg.client_mut() = cc;
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    let groups: Vec<Vec<TopicPartition>> = if per_partition {
        tps.iter().map(|tp| vec![tp.clone()]).collect()
    } else {
        vec![tps.clone()]
    };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for group in groups {
        let consumer = if how == RawRead::PerPartitionOwnClient {
            Consumer::new(cfg.clone()).await?
        } else {
            Consumer::with_client(client.clone(), cfg.clone()).await?
        };
        let ends: Vec<(TopicPartition, i64)> = group
            .iter()
            .map(|tp| (tp.clone(), ends.get(tp).map_or(0, |o| o.offset)))
            .collect();
        tasks.push(tokio::spawn(async move {
            consumer.assign(group.clone()).await?;
            for tp in &group {
                consumer.seek(tp, Offset::Earliest).await?;
            }
            let mut n = 0u64;
            let deadline = Instant::now() + Duration::from_secs(600);
            while ends
                .iter()
                .any(|(tp, end)| consumer.position(tp).unwrap_or(0) < *end)
            {
                if Instant::now() > deadline {
                    bail!("the raw read did not reach the end offsets in 600 s");
                }
                n += consumer.poll(Duration::from_millis(500)).await?.len() as u64;
            }
            consumer.close().await;
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.context("a raw read task")??;
    }
    let secs = started.elapsed().as_secs_f64();
    client.close();
    Ok((total, secs))
}

/// One restore.
#[derive(Debug, Clone, Serialize)]
struct RestoreRun {
    round: usize,
    records_applied: u64,
    /// From the first store's creation until every partition was active.
    restore_s: f64,
    records_per_s: f64,
    mb_per_s: f64,
    /// From `run()` to the first store (group join, committed offsets, changelog ends).
    join_s: f64,
    /// Health: the first `Restoring` to `Healthy`.
    restoring_to_healthy_s: Option<f64>,
    keys_held: u64,
    keys_wrong: u64,
    /// This process's CPU (user + system) during the restore.
    cpu_s: f64,
    broker_cpu_s: Option<f64>,
    /// kafka-client alone, records/s: the restore's way (a consumer per partition on one
    /// client), a consumer per partition each on its own client, one consumer for every
    /// partition.
    raw_shared_client_records_per_s: Option<f64>,
    raw_own_clients_records_per_s: Option<f64>,
    raw_one_consumer_records_per_s: Option<f64>,
}

fn self_cpu() -> Result<f64> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

async fn fill(a: &RestoreArgs, bootstrap: &str, changelog: &str, quiet: bool) -> Result<f64> {
    let txn_id = crate::unique("restore-fill");
    let props: Vec<(String, String)> = [
        ("bootstrap.servers", bootstrap),
        ("client.id", "kbench-restore-fill"),
        ("acks", "all"),
        ("linger.ms", "5"),
        ("batch.size", "131072"),
        ("transactional.id", txn_id.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let producer = Producer::new(ProducerConfig::from_properties(props)?)
        .await
        .context("the fill producer")?;
    let pool = PayloadPool::new(a.size, 0x7265_7374);
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut j = 0u64;
    while j < a.records {
        producer.begin_transaction().await?;
        let end = (j + a.txn_records).min(a.records);
        while j < end {
            let mut v = BytesMut::with_capacity(a.size);
            v.put_u64(j);
            v.put_slice(&pool.get(j)[8..]);
            let rec = ProducerRecord::new(changelog.to_string())
                .key(key_of(j % a.keys).into_bytes())
                .value(v.freeze());
            let failed = failed.clone();
            producer
                .send_with(rec, move |r| {
                    if r.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await?;
            j += 1;
        }
        producer.commit_transaction().await?;
        if !quiet && (j / a.txn_records) % 20 == 0 {
            eprintln!("kbench: filled {j} of {} records", a.records);
        }
    }
    producer.close().await?;
    let n = failed.load(Ordering::Relaxed);
    if n > 0 {
        bail!("{n} changelog records were not written");
    }
    Ok(a.records as f64 / started.elapsed().as_secs_f64())
}

async fn restore_once(
    a: &RestoreArgs,
    bootstrap: &str,
    input: &str,
    changelog: &str,
    broker_pid: Option<u32>,
    round: usize,
) -> Result<RestoreRun> {
    let shared = Arc::new(Shared {
        records: a.records,
        keys: a.keys,
        ..Shared::default()
    });
    let mut client = ClientConfig::default();
    client.bootstrap_servers(vec![bootstrap.to_string()]);
    let mut cfg = EventSourceConfig::new(crate::unique("restore"), input.to_string(), client);
    cfg.changelog_topic = Some(changelog.to_string());
    let factory = {
        let shared = shared.clone();
        move |p: i32| {
            shared
                .first_store
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
            Timed {
                partition: p,
                inner: MemStore::new(Raw, Raw),
                shared: shared.clone(),
            }
        }
    };
    let decode = |_: &ConsumerRecord| -> Result<(), DecodeError> { Ok(()) };
    let source = EventSource::builder(cfg, factory)
        .on("none", decode, |_: &mut EventContext<'_, Timed>, _: ()| {
            Outcome::Complete
        })
        .build()
        .await
        .context("building the event source")?;
    let mut health = source.health_watch();
    let health_times = tokio::spawn(async move {
        let (mut restoring, mut healthy) = (None, None);
        loop {
            match &*health.borrow_and_update() {
                Health::Restoring { .. } => {
                    restoring.get_or_insert_with(Instant::now);
                }
                Health::Healthy if restoring.is_some() => {
                    healthy.get_or_insert_with(Instant::now);
                }
                _ => {}
            }
            if healthy.is_some() || health.changed().await.is_err() {
                return (restoring, healthy);
            }
        }
    });
    let cpu0 = self_cpu()?;
    let broker0 = broker_pid.and_then(crate::cpu::cpu_s);
    let mut active = source.active_partitions();
    let started = Instant::now();
    let running = source.spawn();
    let limit = Duration::from_secs(600);
    let waited = tokio::time::timeout(limit, async {
        loop {
            if active.borrow_and_update().len() == a.partitions as usize {
                return Ok(());
            }
            if let Health::Unhealthy(e) = source.health() {
                bail!("the event source failed: {e}");
            }
            if active.changed().await.is_err() {
                bail!("the event source stopped");
            }
        }
    })
    .await;
    let done = Instant::now();
    let cpu_s = self_cpu()? - cpu0;
    let broker_cpu_s = broker_pid
        .and_then(crate::cpu::cpu_s)
        .zip(broker0)
        .map(|(b, a)| b - a);
    source.stop().await;
    let ran = running.await.context("the event source task")?;
    match waited {
        Err(_) => bail!("not every partition was active after {} s", limit.as_secs()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {}
    }
    ran.context("the event source")?;
    let (restoring, healthy) = health_times.await.unwrap_or((None, None));
    drop(source);
    let first = shared
        .first_store
        .lock()
        .unwrap()
        .context("no store was made")?;
    // The stores are dropped when the source stops; wait for their reports.
    let until = Instant::now() + Duration::from_secs(10);
    while shared.dropped.lock().unwrap().len() < a.partitions as usize && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = shared.dropped.lock().unwrap().clone();
    let by_partition: BTreeMap<i32, (u64, u64)> =
        dropped.iter().map(|(p, h, w)| (*p, (*h, *w))).collect();
    let keys_held = by_partition.values().map(|v| v.0).sum();
    let keys_wrong = by_partition.values().map(|v| v.1).sum();
    let applied = shared.applied.load(Ordering::Relaxed);
    let restore_s = done.duration_since(first).as_secs_f64();
    Ok(RestoreRun {
        round,
        records_applied: applied,
        restore_s,
        records_per_s: applied as f64 / restore_s.max(1e-9),
        mb_per_s: applied as f64 * a.size as f64 / 1e6 / restore_s.max(1e-9),
        join_s: first.duration_since(started).as_secs_f64(),
        restoring_to_healthy_s: restoring
            .zip(healthy)
            .map(|(r, h)| h.duration_since(r).as_secs_f64()),
        keys_held,
        keys_wrong,
        cpu_s,
        broker_cpu_s,
        raw_shared_client_records_per_s: None,
        raw_own_clients_records_per_s: None,
        raw_one_consumer_records_per_s: None,
    })
}

#[derive(Serialize)]
struct RestoreReport<'a> {
    target: &'a str,
    records: u64,
    keys: u64,
    size: usize,
    partitions: i32,
    fill_records_per_s: f64,
    runs: &'a [RestoreRun],
    median_records_per_s: Option<f64>,
}

pub async fn run(a: RestoreArgs) -> Result<()> {
    if a.records == 0 || a.keys == 0 || a.size < 8 || a.partitions < 1 || a.runs == 0 {
        bail!("--records, --keys, --partitions, --runs must be positive and --size at least 8");
    }
    if a.txn_records == 0 {
        bail!("--txn-records must be positive");
    }
    let quiet = a.common.quiet;
    let target = crate::connect(&a.common, quiet).await?;
    let tag = crate::unique("restore");
    let (input, changelog) = (format!("{tag}-in"), format!("{tag}-changelog"));
    crate::target::create_topic(&target.bootstrap, &input, a.partitions).await?;
    crate::target::create_topic_with(
        &target.bootstrap,
        &NewTopic::new(changelog.as_str(), a.partitions, 1).config("cleanup.policy", "compact"),
    )
    .await?;
    if !quiet {
        eprintln!(
            "kbench: filling {changelog}: {} records of {} B over {} keys",
            a.records, a.size, a.keys
        );
    }
    let fill_rate = fill(&a, &target.bootstrap, &changelog, quiet).await?;
    let mut runs = Vec::new();
    for round in 1..=a.runs {
        let r = restore_once(
            &a,
            &target.bootstrap,
            &input,
            &changelog,
            target.broker_pid,
            round,
        )
        .await
        .with_context(|| format!("restore round {round}"))?;
        let mut r = r;
        if a.baseline {
            for how in [
                RawRead::PerPartitionSharedClient,
                RawRead::PerPartitionOwnClient,
                RawRead::OneConsumer,
            ] {
                let (n, secs) = raw_read(&target.bootstrap, &changelog, a.partitions, how).await?;
                let rate = Some(n as f64 / secs.max(1e-9));
                match how {
                    RawRead::PerPartitionSharedClient => r.raw_shared_client_records_per_s = rate,
                    RawRead::PerPartitionOwnClient => r.raw_own_clients_records_per_s = rate,
                    RawRead::OneConsumer => r.raw_one_consumer_records_per_s = rate,
                }
            }
        }
        if !quiet {
            eprintln!(
                "kbench: restore #{round}: {} records in {:.3} s = {:.0} records/s",
                r.records_applied, r.restore_s, r.records_per_s
            );
        }
        runs.push(r);
    }
    println!(
        "streams-restore: {} records of {} B over {} keys, {} partitions, MemStore<Bytes, Bytes>; \
         filled at {fill_rate:.0} records/s; target: {}",
        a.records, a.size, a.keys, a.partitions, target.description
    );
    println!(
        "{:>5} {:>9} {:>9} {:>11} {:>8} {:>7} {:>9} {:>8} {:>7} {:>7} {:>8} {:>11} {:>11} {:>11}",
        "round",
        "applied",
        "restore s",
        "records/s",
        "MB/s",
        "join s",
        "health s",
        "keys",
        "wrong",
        "cpu s",
        "brk cpu",
        "raw/shared",
        "raw/own",
        "raw/one"
    );
    for r in &runs {
        println!(
            "{:>5} {:>9} {:>9.3} {:>11.0} {:>8.1} {:>7.2} {:>9} {:>8} {:>7} {:>7.2} {:>8} {:>11} {:>11} {:>11}",
            r.round,
            r.records_applied,
            r.restore_s,
            r.records_per_s,
            r.mb_per_s,
            r.join_s,
            r.restoring_to_healthy_s
                .map_or("-".into(), |v| format!("{v:.3}")),
            r.keys_held,
            r.keys_wrong,
            r.cpu_s,
            r.broker_cpu_s.map_or("-".into(), |v| format!("{v:.2}")),
            r.raw_shared_client_records_per_s
                .map_or("-".into(), |v| format!("{v:.0}")),
            r.raw_own_clients_records_per_s
                .map_or("-".into(), |v| format!("{v:.0}")),
            r.raw_one_consumer_records_per_s
                .map_or("-".into(), |v| format!("{v:.0}"))
        );
    }
    let rates: Vec<f64> = runs.iter().map(|r| r.records_per_s).collect();
    let median = Stat::of(&rates);
    if let Some(m) = median {
        println!(
            "median {:.0} records/s (min {:.0}, max {:.0}); target >= 300000",
            m.median, m.min, m.max
        );
    }
    println!("(restore s: from the first store's creation to every partition active; join s: run() to the first store; health s: Restoring to Healthy; keys/wrong: keys held by the stores and those whose value is not the last write; raw/shared, raw/own, raw/one: records/s of kafka-client alone reading the same changelog read_committed with --baseline: a consumer per partition on one client (as the restore), a consumer per partition each on its own client, one consumer for every partition)");
    if let Some(path) = &a.common.json {
        crate::write_json(
            path,
            &RestoreReport {
                target: &target.description,
                records: a.records,
                keys: a.keys,
                size: a.size,
                partitions: a.partitions,
                fill_records_per_s: fill_rate,
                runs: &runs,
                median_records_per_s: median.map(|m| m.median),
            },
        )?;
    }
    let want_keys = a.keys.min(a.records);
    for r in &runs {
        if r.records_applied != a.records || r.keys_held != want_keys || r.keys_wrong > 0 {
            bail!(
                "restore round {} is wrong: applied {} of {} records, {} of {want_keys} keys, \
                 {} with a value other than the last write",
                r.round,
                r.records_applied,
                a.records,
                r.keys_held,
                r.keys_wrong
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_writes() {
        // 10 records over 4 keys: key 0 at 0, 4, 8; key 1 at 1, 5, 9; key 3 at 3, 7.
        assert_eq!(last_write(0, 10, 4), Some(8));
        assert_eq!(last_write(1, 10, 4), Some(9));
        assert_eq!(last_write(3, 10, 4), Some(7));
        assert_eq!(last_write(4, 10, 4), None);
        // Fewer records than keys: keys past the records were never written.
        assert_eq!(last_write(2, 3, 10), Some(2));
        assert_eq!(last_write(3, 3, 10), None);
        assert_eq!(key_of(42), "key-000042");
    }

    #[test]
    fn a_dropped_store_reports_its_keys_and_wrong_values() {
        let shared = Arc::new(Shared {
            records: 10,
            keys: 4,
            ..Shared::default()
        });
        let mut s = Timed {
            partition: 2,
            inner: MemStore::new(Raw, Raw),
            shared: shared.clone(),
        };
        let value = |j: u64| {
            let mut v = j.to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 8]);
            v
        };
        for (offset, (k, j)) in [(0u64, 0u64), (1, 1), (0, 4), (1, 9), (3, 3)]
            .into_iter()
            .enumerate()
        {
            let key = key_of(k);
            let v = value(j);
            s.apply(&ChangelogRecord {
                key: key.as_bytes(),
                value: Some(&v),
                offset: offset as i64,
            })
            .unwrap();
        }
        assert_eq!(shared.applied.load(Ordering::Relaxed), 5);
        drop(s);
        // key 0 holds 4 (last write 8): wrong; key 1 holds 9: right; key 3 holds 3 (last 7).
        assert_eq!(*shared.dropped.lock().unwrap(), vec![(2, 3, 2)]);
    }
}
