//! `kbench txn`: the consume-transform-produce loop in transactions at several commit intervals,
//! against the same loop at least once, for our client and each peer.
//!
//! Per run: in this process, a producer (our client, for every copier alike) writes `records`
//! stamped records at a fixed rate to an input topic, and a read_committed reader (ours too) of
//! the output measures end-to-end latency from each record's stamp (its intended send time, so
//! a stalled producer is not hidden: coordinated omission) to its arrival. Only the copier
//! differs: a worker process of the client under test (ours, Java, franz-go, rdkafka, krafka,
//! kacrab), whose CPU time is measured as for the other workloads (getrusage of the reaped
//! child).
//!
//! Copier worker protocol (`kbench worker`, and each peer's program), `--name value` pairs:
//! ```text
//! --mode txn --bootstrap HOST:PORT --input TOPIC --output TOPIC --group GROUP
//! --transactional-id ID --interval-ms MS --exactly-once true|false --records N
//! --partitions P --timeout-s S
//! ```
//! The copier is a group consumer (`group.id` GROUP, read_committed, earliest, no auto commit)
//! subscribed to the input. Once it owns all P partitions it prints `kbench-ready` on stderr
//! (the harness starts the input only then). It copies each record's value to the same
//! partition of the output (acks=all, linger.ms=1) and ends a transaction (exactly once:
//! outputs and input offsets committed together, e.g. `sendOffsetsToTransaction` with the
//! consumer's group metadata) or, at least once, flushes then commits the offsets, when
//! `interval-ms` has passed since the first record of the current one. It stops once N records
//! are committed and prints one JSON line on stdout ([`TxnWorkerResult`]):
//! `{"client": "name version", "records": N, "commits": C, "aborts": A, "elapsed_s": S,
//! "commit_ms": {"p50", "p90", "p99", "p999", "max"} | null, "settings": {...}}`, where
//! `elapsed_s` runs from the first record copied to the last commit and `commit_ms` is the
//! duration of each commit (EndTxn with its flush and offsets, or flush + OffsetCommit).

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use kafka_client::config::{ConsumerConfig, ProducerConfig};
use kafka_client::consumer::Consumer;
use kafka_client::producer::{Producer, ProducerRecord};
use kafka_client::transact::TransactSession;
use kafka_client::{Offset, TopicPartition};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::runner::{ClientKind, Launcher};
use crate::spec::{Percentiles, WorkerArgs};
use crate::worker::{read_stamp, Latency, PayloadPool, Schedule};

/// What a copier prints on stderr once it owns every input partition.
pub const READY_LINE: &str = "kbench-ready";

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
    /// The copier's client.
    pub client: ClientKind,
    /// What the copier called itself (name and version).
    pub client_version: String,
    /// `exactly-once` or `at-least-once`.
    pub mode: String,
    pub interval_ms: u64,
    pub records: u64,
    /// Records per second, from the first input record sent to the last copied record read
    /// by the read_committed reader.
    pub copied_per_s: f64,
    pub commits: u64,
    pub aborts: u64,
    /// End-to-end latency, ms.
    pub latency_ms: Option<Percentiles>,
    /// Duration of one commit (EndTxn round trip with its flush and offsets), ms, as the
    /// copier measured it.
    pub commit_ms: Option<Percentiles>,
    /// The copier process's user + system CPU time.
    pub cpu_s: f64,
    /// CPU seconds per 10 000 records copied.
    pub cpu_s_per_10k: f64,
    /// CPU seconds per 10^9 value bytes copied.
    pub cpu_s_per_gb: f64,
    /// The copier's effective settings, as its client names them.
    pub settings: BTreeMap<String, String>,
}

/// A copier worker's arguments (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnWorkerArgs {
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub group: String,
    pub transactional_id: String,
    pub interval_ms: u64,
    pub exactly_once: bool,
    pub records: u64,
    pub partitions: i32,
    pub timeout_s: u64,
}

impl TxnWorkerArgs {
    /// The worker command line (after the program and its prefix).
    pub fn to_args(&self) -> Vec<String> {
        let pairs: [(&str, String); 11] = [
            ("mode", "txn".into()),
            ("bootstrap", self.bootstrap.clone()),
            ("input", self.input.clone()),
            ("output", self.output.clone()),
            ("group", self.group.clone()),
            ("transactional-id", self.transactional_id.clone()),
            ("interval-ms", self.interval_ms.to_string()),
            ("exactly-once", self.exactly_once.to_string()),
            ("records", self.records.to_string()),
            ("partitions", self.partitions.to_string()),
            ("timeout-s", self.timeout_s.to_string()),
        ];
        pairs
            .into_iter()
            .flat_map(|(k, v)| [format!("--{k}"), v])
            .collect()
    }

    /// Parses `--name value` pairs; every name is required, unknown names are errors.
    pub fn parse(args: &[String]) -> Result<TxnWorkerArgs, String> {
        let mut w = WorkerArgs::parse(args)?;
        let mode = w.take("mode")?;
        if mode != "txn" {
            return Err(format!("not a txn worker: --mode {mode}"));
        }
        let a = TxnWorkerArgs {
            bootstrap: w.take("bootstrap")?,
            input: w.take("input")?,
            output: w.take("output")?,
            group: w.take("group")?,
            transactional_id: w.take("transactional-id")?,
            interval_ms: w.num("interval-ms")?,
            exactly_once: w.flag("exactly-once")?,
            records: w.num("records")?,
            partitions: w.num("partitions")?,
            timeout_s: w.num("timeout-s")?,
        };
        w.finish()?;
        if a.interval_ms == 0 || a.records == 0 || a.partitions < 1 {
            return Err("--interval-ms, --records and --partitions must be positive".into());
        }
        Ok(a)
    }

    /// Whether `args` ask for a copier (`--mode txn`).
    pub fn is_txn(args: &[String]) -> bool {
        args.chunks(2)
            .any(|p| p.len() == 2 && p[0] == "--mode" && p[1] == "txn")
    }
}

/// The one line a copier prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnWorkerResult {
    pub client: String,
    pub records: u64,
    pub commits: u64,
    pub aborts: u64,
    pub elapsed_s: f64,
    #[serde(default)]
    pub commit_ms: Option<Percentiles>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
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

/// What a copy loop reports: commits, aborts, commit durations, first record to last commit.
type CopyOutcome = (u64, u64, Latency, Duration);

/// Copies in transactions until `a.records` records are committed.
async fn copy_exactly_once(
    a: &TxnWorkerArgs,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<CopyOutcome> {
    let (bootstrap, src, dst, group) = (&a.bootstrap, &a.input, &a.output, &a.group);
    let (interval, want, partitions) = (
        Duration::from_millis(a.interval_ms),
        a.records,
        a.partitions,
    );
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    let mut first: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let session = TransactSession::new(
        consumer_config(bootstrap, Some(group))?,
        producer_config(bootstrap, Some(a.transactional_id.clone()))?,
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
            let now = Instant::now();
            started.get_or_insert(now);
            first.get_or_insert(now);
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
            last_commit = Instant::now();
            commit_lat.record(t.elapsed());
            pending = 0;
            started = None;
        }
    }
    session.close().await?;
    let elapsed = last_commit.saturating_duration_since(first.unwrap_or(last_commit));
    Ok((commits, aborts, commit_lat, elapsed))
}

/// Copies at least once (flush, then commit the offsets) until `a.records` are committed.
async fn copy_at_least_once(
    a: &TxnWorkerArgs,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<CopyOutcome> {
    let (bootstrap, src, dst, group) = (&a.bootstrap, &a.input, &a.output, &a.group);
    let (interval, want, partitions) = (
        Duration::from_millis(a.interval_ms),
        a.records,
        a.partitions,
    );
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    let mut first: Option<Instant> = None;
    let mut last_commit = Instant::now();
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
            let now = Instant::now();
            started.get_or_insert(now);
            first.get_or_insert(now);
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
            last_commit = Instant::now();
            commit_lat.record(t.elapsed());
            commits += 1;
            started = None;
        }
    }
    consumer.close().await;
    producer.close().await?;
    let elapsed = last_commit.saturating_duration_since(first.unwrap_or(last_commit));
    Ok((commits, 0, commit_lat, elapsed))
}

/// Our copier: `kbench worker --mode txn ...` (see the module documentation).
pub async fn worker_main(args: &[String]) -> Result<()> {
    let a = TxnWorkerArgs::parse(args).map_err(anyhow::Error::msg)?;
    let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if ready.await.is_ok() {
            eprintln!("{READY_LINE}");
        }
    });
    let (commits, aborts, commit_lat, elapsed) = if a.exactly_once {
        copy_exactly_once(&a, ready_tx).await?
    } else {
        copy_at_least_once(&a, ready_tx).await?
    };
    let mut settings: BTreeMap<String, String> = [
        ("acks", "all"),
        ("linger.ms", "1"),
        ("isolation.level", "read_committed"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("fetch.max.wait.ms", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    settings.insert(
        "transactional".into(),
        if a.exactly_once {
            "TransactSession"
        } else {
            "no"
        }
        .into(),
    );
    let result = TxnWorkerResult {
        client: format!("ours {}", env!("CARGO_PKG_VERSION")),
        records: a.records,
        commits,
        aborts,
        elapsed_s: elapsed.as_secs_f64(),
        commit_ms: commit_lat.percentiles(),
        settings,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// One run: the copier of `launcher` at `interval`, in transactions (`exactly_once`) or at
/// least once.
pub async fn run(
    launcher: &Launcher,
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
    let budget = Duration::from_secs(60)
        + Duration::from_secs_f64(w.records as f64 / w.rate.max(1) as f64 * 3.0);
    let deadline = Instant::now() + budget;

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
        let done = Instant::now();
        reader.close().await;
        Ok((lat, done))
    });

    // The copier, a worker process of the client under test.
    let group = format!("{tag}-group");
    let args = TxnWorkerArgs {
        bootstrap: bootstrap.to_string(),
        input: src.clone(),
        output: dst,
        transactional_id: format!("{group}-txn"),
        group,
        interval_ms: interval.as_millis() as u64,
        exactly_once,
        records: w.records,
        partitions: w.partitions,
        timeout_s: budget.as_secs(),
    };
    let name = launcher.kind.name();
    let mut cmd = Command::new(&launcher.program);
    cmd.args(&launcher.prefix)
        .args(args.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Only reaped children count in RUSAGE_CHILDREN, and the embedded broker is never reaped
    // while kbench runs: the delta is the copier's CPU time.
    let cpu_before = crate::runner::children_cpu()?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", launcher.program.display()))?;
    let stdout = child.stdout.take().context("copier stdout")?;
    let stderr = child.stderr.take().context("copier stderr")?;
    let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
    let err_task = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: VecDeque<String> = VecDeque::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == READY_LINE {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    });
    let out_task = crate::runner::collect_lines(stdout);
    // The input starts once the copier owns every partition, so the group join is not
    // measured as latency.
    match tokio::time::timeout(Duration::from_secs(120), ready).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            // stderr closed without the ready line: the copier stopped.
            let status = child.wait().await.context("waiting for the copier")?;
            let tail = err_task.await.unwrap_or_default();
            bail!("{name} copier stopped before it was ready ({status}); its stderr:\n{tail}");
        }
        Err(_) => {
            let _ = child.kill().await;
            let tail = err_task.await.unwrap_or_default();
            bail!("{name} copier was not ready (assigned every partition) within 120 s; its stderr:\n{tail}");
        }
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

    let limit = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(30);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s.context("waiting for the copier")?,
        Err(_) => {
            let _ = child.kill().await;
            let tail = err_task.await.unwrap_or_default();
            bail!("{name} copier did not finish in time; killed; its stderr:\n{tail}");
        }
    };
    let cpu_s = (crate::runner::children_cpu()? - cpu_before).max(0.0);
    let tail = err_task.await.unwrap_or_default();
    let out = out_task.await.unwrap_or_default();
    if !status.success() {
        bail!("{name} copier failed ({status}); its stderr:\n{tail}");
    }
    let line = out
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("{name} copier printed no result line; stderr:\n{tail}"))?;
    let r: TxnWorkerResult =
        serde_json::from_str(line).with_context(|| format!("{name} copier result {line:?}"))?;
    if r.records < w.records {
        bail!(
            "{name} copier reported {} records, expected {}",
            r.records,
            w.records
        );
    }
    let (lat, read_done) = read.await.context("reader task")??;
    let first = first_sent.unwrap_or(origin);
    let elapsed = read_done.saturating_duration_since(first).as_secs_f64();
    let bytes = w.records as f64 * w.size.max(16) as f64;
    Ok(TxnRun {
        client: launcher.kind,
        client_version: r.client,
        mode: if exactly_once {
            "exactly-once".into()
        } else {
            "at-least-once".into()
        },
        interval_ms: interval.as_millis() as u64,
        records: w.records,
        copied_per_s: w.records as f64 / elapsed.max(1e-9),
        commits: r.commits,
        aborts: r.aborts,
        latency_ms: lat.percentiles(),
        commit_ms: r.commit_ms,
        cpu_s,
        cpu_s_per_10k: cpu_s / (w.records as f64 / 1e4),
        cpu_s_per_gb: cpu_s / (bytes / 1e9),
        settings: r.settings,
    })
}

/// Prints the table of `runs`.
pub fn print_table(w: &TxnWorkload, runs: &[TxnRun]) {
    println!(
        "txn: {} records of {} B at {} records/s, {} partitions (copier per client; input and read_committed reader: ours)",
        w.records, w.size, w.rate, w.partitions
    );
    println!(
        "{:<9} {:<14} {:>8} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7} {:>9}",
        "client",
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
        "commit p99",
        "cpu s",
        "cpu/10k"
    );
    let f = |p: &Option<Percentiles>, pick: fn(&Percentiles) -> f64| {
        p.as_ref()
            .map_or("-".to_string(), |p| format!("{:.2}", pick(p)))
    };
    for r in runs {
        println!(
            "{:<9} {:<14} {:>6}ms {:>10.0} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7.2} {:>9.3}",
            r.client.name(),
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
            r.cpu_s,
            r.cpu_s_per_10k,
        );
    }
    println!("(latencies in ms; cpu s: the copier process's user + system time, cpu/10k: per 10 000 records copied)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_worker_args_round_trip_and_are_checked() {
        let a = TxnWorkerArgs {
            bootstrap: "b:1".into(),
            input: "in".into(),
            output: "out".into(),
            group: "g".into(),
            transactional_id: "g-txn".into(),
            interval_ms: 10,
            exactly_once: true,
            records: 500,
            partitions: 6,
            timeout_s: 90,
        };
        let args = a.to_args();
        assert!(TxnWorkerArgs::is_txn(&args));
        assert_eq!(TxnWorkerArgs::parse(&args).unwrap(), a);
        let mut bad = args.clone();
        bad.push("--bogus".into());
        bad.push("1".into());
        assert!(TxnWorkerArgs::parse(&bad)
            .unwrap_err()
            .contains("unknown worker argument --bogus"));
        let at = args.iter().position(|x| x == "--exactly-once").unwrap();
        let mut bad = args.clone();
        bad[at + 1] = "yes".into();
        assert!(TxnWorkerArgs::parse(&bad)
            .unwrap_err()
            .contains("--exactly-once"));
        let mut missing = args.clone();
        missing.drain(at..at + 2);
        assert!(TxnWorkerArgs::parse(&missing)
            .unwrap_err()
            .contains("missing worker argument --exactly-once"));
        let e2e = ["--mode".to_string(), "e2e".to_string()];
        assert!(!TxnWorkerArgs::is_txn(&e2e));
    }

    #[test]
    fn txn_result_line_parses() {
        let line = r#"{"client":"x 1","records":5,"commits":2,"aborts":0,"elapsed_s":0.5,"commit_ms":null,"settings":{"acks":"all"}}"#;
        let r: TxnWorkerResult = serde_json::from_str(line).unwrap();
        assert_eq!((r.records, r.commits), (5, 2));
        assert!(r.commit_ms.is_none());
    }
}
