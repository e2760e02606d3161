//! `kbench txn`: the consume-transform-produce loop (our client) in transactions at several
//! commit intervals, against the same loop at least once.
//!
//! Per run, in this process: a producer writes `records` stamped records at a fixed rate to an
//! input topic; a copier (a [`TransactSession`], or a group consumer plus an idempotent
//! producer committing offsets after each flush) copies them to an output topic, ending a
//! transaction (or committing) every `interval`; a read_committed reader of the output
//! measures end-to-end latency from each record's stamp (its intended send time, so a stalled
//! producer is not hidden: coordinated omission) to its arrival. Also reported: the copier's
//! throughput and the duration of each commit (`end()` for transactions, flush + OffsetCommit
//! at least once).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_client::config::{ConsumerConfig, ProducerConfig};
use kafka_client::consumer::Consumer;
use kafka_client::producer::{Producer, ProducerRecord};
use kafka_client::transact::TransactSession;
use kafka_client::{Offset, TopicPartition};
use serde::Serialize;

use crate::spec::Percentiles;
use crate::worker::{read_stamp, Latency, PayloadPool, Schedule};

/// Settings of one `kbench txn` invocation.
#[derive(Debug, Clone, Serialize)]
pub struct TxnWorkload {
    pub records: u64,
    pub rate: u64,
    pub size: usize,
    pub partitions: i32,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TxnRun {
    /// `exactly-once` or `at-least-once`.
    pub mode: String,
    pub interval_ms: u64,
    pub records: u64,
    /// Records copied per second (first input record to the last one committed).
    pub copied_per_s: f64,
    pub commits: u64,
    pub aborts: u64,
    /// End-to-end latency, ms.
    pub latency_ms: Option<Percentiles>,
    /// Duration of one commit (EndTxn round trip with its flush and offsets), ms.
    pub commit_ms: Option<Percentiles>,
}

fn base_props(bootstrap: &str) -> Vec<(String, String)> {
    vec![
        ("bootstrap.servers".into(), bootstrap.to_string()),
        ("client.id".into(), "kbench-txn".into()),
    ]
}

fn producer_config(bootstrap: &str, txn_id: Option<String>) -> Result<ProducerConfig> {
    let mut props = base_props(bootstrap);
    props.push(("acks".into(), "all".into()));
    props.push(("linger.ms".into(), "1".into()));
    if let Some(id) = txn_id {
        props.push(("transactional.id".into(), id));
    }
    ProducerConfig::from_properties(props).context("producer configuration")
}

fn consumer_config(bootstrap: &str, group: Option<&str>) -> Result<ConsumerConfig> {
    let mut props = base_props(bootstrap);
    props.push(("enable.auto.commit".into(), "false".into()));
    props.push(("isolation.level".into(), "read_committed".into()));
    props.push(("auto.offset.reset".into(), "earliest".into()));
    props.push(("fetch.max.wait.ms".into(), "5".into()));
    if let Some(g) = group {
        props.push(("group.id".into(), g.to_string()));
        props.push(("heartbeat.interval.ms".into(), "500".into()));
    }
    ConsumerConfig::from_properties(props).context("consumer configuration")
}

fn copy_of(r: &kafka_client::ConsumerRecord, dst: &str) -> ProducerRecord {
    let mut out = ProducerRecord::new(dst.to_string()).partition(r.partition);
    if let Some(v) = &r.value {
        out = out.value(v.clone());
    }
    out
}

/// Waits (up to 60 s) until `consumer` owns every partition of its topic, then says so on
/// `ready`: the input starts only once the copier is in place, so group start-up is not
/// measured as latency.
async fn wait_assigned(
    consumer: &Consumer,
    partitions: i32,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    while consumer.assignment().len() < partitions as usize {
        if Instant::now() > until {
            bail!("the copier was not assigned every partition within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = ready.send(());
    Ok(())
}

/// Copies until `want` records are committed; returns (commits, aborts, commit durations).
#[allow(clippy::too_many_arguments)]
async fn copy_exactly_once(
    bootstrap: &str,
    src: &str,
    dst: &str,
    group: &str,
    interval: Duration,
    want: u64,
    deadline: Instant,
    partitions: i32,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(u64, u64, Latency)> {
    let session = TransactSession::new(
        consumer_config(bootstrap, Some(group))?,
        producer_config(bootstrap, Some(format!("{group}-txn")))?,
    )
    .await
    .context("transact session")?;
    session.subscribe([src.to_string()]).await?;
    wait_assigned(session.consumer(), partitions, ready).await?;
    let (mut commits, mut aborts, mut done, mut pending) = (0u64, 0u64, 0u64, 0u64);
    let mut commit_lat = Latency::new();
    let mut started: Option<Instant> = None;
    while done < want {
        if Instant::now() > deadline {
            bail!("copied {done} of {want} records before the timeout");
        }
        let wait = started.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
        let records = session.poll(wait.max(Duration::from_micros(100))).await?;
        if !records.is_empty() {
            started.get_or_insert_with(Instant::now);
        }
        for r in &records {
            let _delivery = session.send(copy_of(r, dst)).await?;
        }
        pending += records.len() as u64;
        if started.is_some_and(|t| t.elapsed() >= interval) {
            let t = Instant::now();
            if session.end(true).await? {
                commits += 1;
                done += pending;
            } else {
                aborts += 1;
            }
            commit_lat.record(t.elapsed());
            pending = 0;
            started = None;
        }
    }
    session.close().await?;
    Ok((commits, aborts, commit_lat))
}

#[allow(clippy::too_many_arguments)]
async fn copy_at_least_once(
    bootstrap: &str,
    src: &str,
    dst: &str,
    group: &str,
    interval: Duration,
    want: u64,
    deadline: Instant,
    partitions: i32,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(u64, u64, Latency)> {
    let producer = Producer::new(producer_config(bootstrap, None)?).await?;
    let consumer = Consumer::new(consumer_config(bootstrap, Some(group))?).await?;
    consumer.subscribe([src.to_string()]).await?;
    wait_assigned(&consumer, partitions, ready).await?;
    let (mut commits, mut done) = (0u64, 0u64);
    let mut commit_lat = Latency::new();
    let mut started: Option<Instant> = None;
    let mut deliveries = Vec::new();
    let mut offsets = std::collections::BTreeMap::new();
    while done < want {
        if Instant::now() > deadline {
            bail!("copied {done} of {want} records before the timeout");
        }
        let wait = started.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
        let records = consumer.poll(wait.max(Duration::from_micros(100))).await?;
        if !records.is_empty() {
            started.get_or_insert_with(Instant::now);
        }
        for r in &records {
            deliveries.push(producer.send(copy_of(r, dst)).await?);
            offsets.insert(
                TopicPartition::new(r.topic.as_ref(), r.partition),
                r.offset + 1,
            );
        }
        if started.is_some_and(|t| t.elapsed() >= interval) {
            let t = Instant::now();
            producer.flush().await?;
            for d in deliveries.drain(..) {
                d.await?;
                done += 1;
            }
            consumer.commit(std::mem::take(&mut offsets)).await?;
            commit_lat.record(t.elapsed());
            commits += 1;
            started = None;
        }
    }
    consumer.close().await;
    producer.close().await?;
    Ok((commits, 0, commit_lat))
}

/// One run: `interval` with transactions (`exactly_once`) or at least once.
pub async fn run(
    bootstrap: &str,
    w: &TxnWorkload,
    exactly_once: bool,
    interval: Duration,
    tag: &str,
) -> Result<TxnRun> {
    let src = format!("{tag}-in");
    let dst = format!("{tag}-out");
    crate::target::create_topic(bootstrap, &src, w.partitions).await?;
    crate::target::create_topic(bootstrap, &dst, w.partitions).await?;
    let deadline = Instant::now()
        + Duration::from_secs(60)
        + Duration::from_secs_f64(w.records as f64 / w.rate.max(1) as f64 * 3.0);

    // The reader of the output.
    let reader = Consumer::new(consumer_config(bootstrap, None)?).await?;
    let tps: Vec<TopicPartition> = (0..w.partitions)
        .map(|p| TopicPartition::new(dst.clone(), p))
        .collect();
    reader.assign(tps.clone()).await?;
    for tp in &tps {
        reader.seek(tp, Offset::Earliest).await?;
    }
    let origin = Instant::now();
    let want = w.records;
    let read = tokio::spawn(async move {
        let mut lat = Latency::new();
        let mut n = 0u64;
        while n < want {
            if Instant::now() > deadline {
                bail!("read {n} of {want} copied records before the timeout");
            }
            for r in reader.poll(Duration::from_millis(50)).await? {
                let now_us = origin.elapsed().as_micros() as u64;
                let stamp = read_stamp(r.value.as_deref().unwrap_or_default())
                    .context("a record without a stamp")?;
                lat.record(Duration::from_micros(now_us.saturating_sub(stamp)));
                n += 1;
            }
        }
        reader.close().await;
        Ok(lat)
    });

    let group = format!("{tag}-group");
    let (b, s, d, g) = (
        bootstrap.to_string(),
        src.clone(),
        dst.clone(),
        group.clone(),
    );
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let parts = w.partitions;
    let copier = tokio::spawn(async move {
        if exactly_once {
            copy_exactly_once(&b, &s, &d, &g, interval, want, deadline, parts, ready_tx).await
        } else {
            copy_at_least_once(&b, &s, &d, &g, interval, want, deadline, parts, ready_tx).await
        }
    });
    if ready.await.is_err() {
        // The copier failed before it was in place: its error says why.
        copier.await.context("copier task")??;
        bail!("the copier stopped before it was assigned its partitions");
    }

    // The input, at a fixed rate, each value stamped with its intended send time.
    let producer = Producer::new(producer_config(bootstrap, None)?).await?;
    let pool = PayloadPool::new(w.size.max(16), 0x7478_6e62);
    let schedule = Schedule::new(Instant::now(), w.rate);
    let mut first_sent: Option<Instant> = None;
    let mut deliveries = Vec::new();
    for i in 0..w.records {
        let due = schedule.due(i).unwrap_or_else(Instant::now);
        tokio::time::sleep_until(due.into()).await;
        first_sent.get_or_insert_with(Instant::now);
        let value = pool.stamped(i, due.saturating_duration_since(origin).as_micros() as u64);
        let rec = ProducerRecord::new(src.clone())
            .partition((i % w.partitions as u64) as i32)
            .value(value);
        deliveries.push(producer.send(rec).await?);
    }
    producer.flush().await?;
    for d in deliveries {
        d.await.context("input delivery")?;
    }
    producer.close().await?;

    let (commits, aborts, commit_lat) = copier.await.context("copier task")??;
    let copied_at = Instant::now();
    let lat = read.await.context("reader task")??;
    let first = first_sent.unwrap_or(origin);
    let elapsed = copied_at.saturating_duration_since(first).as_secs_f64();
    Ok(TxnRun {
        mode: if exactly_once {
            "exactly-once".into()
        } else {
            "at-least-once".into()
        },
        interval_ms: interval.as_millis() as u64,
        records: w.records,
        copied_per_s: w.records as f64 / elapsed.max(1e-9),
        commits,
        aborts,
        latency_ms: lat.percentiles(),
        commit_ms: commit_lat.percentiles(),
    })
}

/// Prints the table of `runs`.
pub fn print_table(w: &TxnWorkload, runs: &[TxnRun]) {
    println!(
        "txn: {} records of {} B at {} records/s, {} partitions (our client; copy + read_committed reader)",
        w.records, w.size, w.rate, w.partitions
    );
    println!(
        "{:<14} {:>8} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}",
        "mode",
        "interval",
        "copied/s",
        "commits",
        "aborts",
        "e2e p50",
        "e2e p99",
        "e2e p99.9",
        "e2e max",
        "commit p50",
        "commit p99"
    );
    let f = |p: &Option<Percentiles>, pick: fn(&Percentiles) -> f64| {
        p.as_ref()
            .map_or("-".to_string(), |p| format!("{:.2}", pick(p)))
    };
    for r in runs {
        println!(
            "{:<14} {:>6}ms {:>10.0} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}",
            r.mode,
            r.interval_ms,
            r.copied_per_s,
            r.commits,
            r.aborts,
            f(&r.latency_ms, |p| p.p50),
            f(&r.latency_ms, |p| p.p99),
            f(&r.latency_ms, |p| p.p999),
            f(&r.latency_ms, |p| p.max),
            f(&r.commit_ms, |p| p.p50),
            f(&r.commit_ms, |p| p.p99),
        );
    }
    println!("(latencies in ms)");
}
