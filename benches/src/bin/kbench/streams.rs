//! `kbench streams`: BANK.md's workload, the same driver for every streams implementation.
//!
//! Per run (BANK.md "Run procedure"): fresh input and output topics (P partitions, replication
//! factor min(3, brokers)); the client's processor started as `instances` worker processes
//! (`<launcher> run --bootstrap B --input T --output T --group G --changelog C --instance-id
//! ID [variant flags]`), waited for until their `active=<n>` lines add up to P; kbench's
//! read_committed output reader started; `bank load` producing `rate × (warmup + duration)`
//! events on the schedule (no coordinated omission); every `seq` waited for (or no new one for
//! the idle timeout); `bank check` reading the output again, 10 s more, and the changelog
//! (oracles (a), (b), (g)); the processors stopped with SIGTERM.
//!
//! Measured here: e2e latency of the measured events (the reader's first sight of a `seq`, wall
//! clock, minus its `intended_us`), the output rate and backlog over the measured window, a
//! per-second timeline, the processors' and the broker's CPU seconds (`/proc`, from the start
//! of the load until every `seq` was seen), the transactions the processors report when they
//! stop (`transactions=<n>` on stderr). Modes: plain (optionally several rounds, clients
//! alternating), `--failover` (BANK.md (d)), `--max-rate` (rate steps until the backlog grows).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use kafka_client::admin::NewTopic;
use kafka_client::config::{ConsumerConfig, IsolationLevel};
use kafka_client::{Consumer, Offset, TopicPartition};
use serde::Serialize;
use tokio::sync::watch;

use crate::bank::{
    self, CheckResult, CheckSettings, ClientSpec, Instance, InstanceSummary, Peer, Processor,
    RunTopics,
};
use crate::cpu::CpuTracker;
use crate::report::Stat;
use crate::runner::Paths;
use crate::Common;

/// `kbench streams` flags.
#[derive(clap::Args)]
pub struct StreamsArgs {
    /// Clients, comma-separated: CLIENT[:OPTION...] with CLIENT ours, gkes or kafka-streams and
    /// OPTION pool=N, linger=MS, alo (at least once) or eager; e.g. `ours,ours:alo,gkes`.
    #[arg(long, value_delimiter = ',', default_value = "ours")]
    clients: Vec<ClientSpec>,
    /// Input events per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Warm-up seconds (checked by every oracle, not in the latency).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Measured seconds after the warm-up.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Partitions of the input and output topics (P).
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Processor instances per run (default 1; 2 with --failover).
    #[arg(long)]
    instances: Option<usize>,
    /// Accounts (A).
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// The input stream's seed (S).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rounds; each runs every client once, in the order given (A B A B ...).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// BANK.md (d): two instances, SIGKILL of the second `--kill-at` seconds into the measured
    /// window, restarted `--restart-after` seconds later; prints a per-second timeline.
    #[arg(long)]
    failover: bool,
    /// Seconds into the measured window of the kill (--failover).
    #[arg(long, default_value_t = 30.0)]
    kill_at: f64,
    /// Seconds from the kill to the restart (--failover).
    #[arg(long, default_value_t = 5.0)]
    restart_after: f64,
    /// Step the rate up (a fresh run per step): doubling from --rate until the backlog grows
    /// (or --rate-limit), then --refine bisections between the last stable rate and the first
    /// unstable one; reports the highest backlog-stable rate. A failed run or oracle stops it.
    #[arg(long)]
    max_rate: bool,
    /// Bisection steps of --max-rate after the first unstable rate.
    #[arg(long, default_value_t = 2)]
    refine: u32,
    /// Highest rate --max-rate tries, events/s.
    #[arg(long, default_value_t = 160_000)]
    rate_limit: u64,
    /// After the last send, give up waiting for the output after this many seconds without a
    /// new `seq`.
    #[arg(long, default_value_t = 120.0)]
    idle_timeout: f64,
    /// Seconds the checker keeps reading the output after the last `seq` (late duplicates).
    #[arg(long, default_value_t = 10.0)]
    settle: f64,
    /// The changelog is read until this many seconds pass without a record.
    #[arg(long, default_value_t = 3.0)]
    changelog_quiet: f64,
    /// Print the per-second timeline of every run (always printed with --failover).
    #[arg(long)]
    timeline: bool,
    /// A few seconds for CI: 1 s warm-up, 4 s measured, short settle and quiet times.
    #[arg(long)]
    smoke: bool,
    /// Use this bank binary instead of building the example (`cargo build --release -p
    /// streams --example bank`).
    #[arg(long)]
    bank_bin: Option<PathBuf>,
    /// Folder for the JSON report and the processors' logs (`streams-logs/`).
    #[arg(long, default_value = "kbench-results")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// The settings every run of one invocation shares.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rate: u64,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub partitions: i32,
    pub instances: usize,
    pub accounts: u64,
    pub seed: u64,
    pub failover: Option<Failover>,
    pub idle_timeout_s: f64,
    pub settle_s: f64,
    pub changelog_quiet_s: f64,
    #[serde(skip)]
    pub quiet: bool,
    #[serde(skip)]
    pub logs: PathBuf,
}

impl Settings {
    fn events(&self, rate: u64) -> u64 {
        (rate as f64 * (self.warmup_s + self.duration_s)).round() as u64
    }

    fn warmup_events(&self, rate: u64) -> u64 {
        (rate as f64 * self.warmup_s).round() as u64
    }
}

/// BANK.md (d).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Failover {
    /// Seconds into the measured window.
    pub kill_at_s: f64,
    pub restart_after_s: f64,
}

/// Latency in ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lat {
    pub n: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds from the start of the measured window.
    pub second: i64,
    /// Events whose intended send time falls in this second and that were seen.
    pub n: u64,
    /// Events first seen by the reader during this (wall-clock) second.
    pub out: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// Whether the processor kept up: events due (by the schedule) minus events seen, sampled each
/// second over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// Least-squares slope of the backlog, events/s.
    pub slope_per_s: f64,
    /// The slope as a fraction of the rate.
    pub slope_fraction: f64,
    /// The backlog at the end of the sends, in events and in seconds of input.
    pub final_events: i64,
    pub final_s: f64,
    pub max_events: i64,
    /// slope ≤ 2% of the rate and the final backlog ≤ 1 s of input.
    pub stable: bool,
}

/// What happened in a failover run.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    /// When the kill and the restart happened, seconds into the measured window.
    pub killed_at_s: Option<f64>,
    pub restarted_at_s: Option<f64>,
    /// Median of the per-second p99 before the kill, ms.
    pub baseline_p99_ms: Option<f64>,
    /// Seconds from the kill until every later second's p99 is within 2x the baseline.
    pub recovery_s: Option<f64>,
}

/// One run of one client.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsRun {
    pub client: String,
    pub round: usize,
    pub rate: u64,
    pub events: u64,
    pub warmup_events: u64,
    pub instances: usize,
    pub topics: RunTopics,
    pub active_split: Vec<u32>,
    /// Distinct `seq`s the reader saw, and whether that is all of them.
    pub seen: u64,
    pub complete: bool,
    /// Records the reader saw again (duplicates), as a first sign; the checker's count rules.
    pub reader_duplicates: u64,
    /// Seqs first seen during the measured window, per second.
    pub output_rate: Option<f64>,
    pub latency_ms: Option<Lat>,
    pub backlog: Option<Backlog>,
    pub send_lag_ms: Option<f64>,
    pub load: Option<String>,
    /// From the start of the load until every `seq` was seen (or the reader gave up).
    pub cpu_window_s: f64,
    pub worker_cpu_s: f64,
    pub worker_cpu_s_per_10k: f64,
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_s_per_10k: Option<f64>,
    /// Transactions the processors reported at their graceful stop (None if they print none;
    /// a lower bound when an instance was killed).
    pub transactions: Option<u64>,
    pub transactions_lower_bound: bool,
    pub check: Option<CheckResult>,
    pub check_error: Option<String>,
    /// The oracles' verdict for this client (see [`verdict`]).
    pub oracles_ok: bool,
    /// How the verdict differs from `bank check`'s, if it does.
    pub oracle_note: Option<String>,
    /// Offsets of the output a read_committed reader does not get: commit (and abort) markers
    /// and aborted records; about one marker per partition a transaction wrote to.
    pub output_markers: Option<u64>,
    pub failover: Option<FailoverResult>,
    pub timeline: Vec<Second>,
    pub unexpected_exits: Vec<String>,
    pub processes: Vec<InstanceSummary>,
}

impl StreamsRun {
    /// Every oracle held, the reader saw every `seq`, no instance died on its own.
    pub fn ok(&self) -> bool {
        self.complete && self.oracles_ok && self.unexpected_exits.is_empty()
    }

    fn count(&self, oracle: &str, key: &str) -> Option<u64> {
        self.check.as_ref().and_then(|c| c.count(oracle, key))
    }
}

fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The offset of event `i` from `t0`, µs, exactly as `bank load` computes it.
fn offset_us(i: u64, rate: u64) -> i64 {
    ((u128::from(i) * 1_000_000_000 / u128::from(rate.max(1))) / 1000) as i64
}

/// What the output reader saw: per `seq`, its intended time and its first sighting.
struct Observed {
    rate: u64,
    intended: Vec<i64>,
    /// Wall µs of the first sighting; 0 = not seen.
    seen: Vec<i64>,
    distinct: u64,
    duplicates: u64,
    undecodable: u64,
    out_of_range: u64,
    last_new: Option<Instant>,
    t0_us: Option<i64>,
}

/// kbench's read_committed reader of the output (BANK.md (c): min bytes 1, max wait 500 ms).
struct Reader {
    observed: Arc<Mutex<Observed>>,
    distinct: Arc<AtomicU64>,
    t0: watch::Receiver<Option<i64>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
    sampler: tokio::task::JoinHandle<Vec<(i64, u64)>>,
}

impl Reader {
    async fn start(topics: &RunTopics, partitions: i32, events: u64, rate: u64) -> Result<Reader> {
        let mut cfg = ConsumerConfig::default();
        cfg.client_mut()
            .bootstrap_servers(vec![topics.bootstrap.clone()]);
        cfg.isolation_level(IsolationLevel::ReadCommitted);
        cfg.enable_auto_commit(false);
        cfg.fetch_min_bytes(1usize);
        cfg.fetch_max_wait(Duration::from_millis(500));
        let consumer = Consumer::new(cfg).await.context("the output reader")?;
        let tps: Vec<TopicPartition> = (0..partitions)
            .map(|p| TopicPartition::new(topics.output.as_str(), p))
            .collect();
        consumer.assign(tps.clone()).await?;
        for tp in &tps {
            consumer.seek(tp, Offset::Earliest).await?;
        }
        let observed = Arc::new(Mutex::new(Observed {
            rate,
            intended: vec![0; events as usize],
            seen: vec![0; events as usize],
            distinct: 0,
            duplicates: 0,
            undecodable: 0,
            out_of_range: 0,
            last_new: None,
            t0_us: None,
        }));
        let distinct = Arc::new(AtomicU64::new(0));
        let (t0_tx, t0) = watch::channel(None);
        let (stop, stop_rx) = watch::channel(false);
        let task = {
            let (observed, distinct) = (observed.clone(), distinct.clone());
            tokio::spawn(async move {
                let r = read_loop(&consumer, &observed, &distinct, &t0_tx, &stop_rx).await;
                consumer.close().await;
                r
            })
        };
        let sampler = {
            let (distinct, mut stop_rx) = (distinct.clone(), stop.subscribe());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => samples.push((wall_us(), distinct.load(Ordering::Relaxed))),
                        _ = stop_rx.changed() => return samples,
                    }
                }
            })
        };
        Ok(Reader {
            observed,
            distinct,
            t0,
            stop,
            task,
            sampler,
        })
    }

    fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    fn last_new(&self) -> Option<Instant> {
        self.observed.lock().unwrap().last_new
    }

    /// Stops reading; what was seen and the backlog samples.
    async fn finish(self) -> Result<(Observed, Vec<(i64, u64)>)> {
        let _ = self.stop.send(true);
        let read = self.task.await.context("the reader task")?;
        let samples = self.sampler.await.unwrap_or_default();
        read.context("reading the output")?;
        let observed = Arc::try_unwrap(self.observed)
            .map_err(|_| anyhow::anyhow!("the reader is still shared"))?
            .into_inner()
            .unwrap();
        Ok((observed, samples))
    }
}

async fn read_loop(
    consumer: &Consumer,
    observed: &Mutex<Observed>,
    distinct: &AtomicU64,
    t0: &watch::Sender<Option<i64>>,
    stop: &watch::Receiver<bool>,
) -> Result<()> {
    while !*stop.borrow() {
        let records = consumer.poll(Duration::from_millis(200)).await?;
        if records.is_empty() {
            continue;
        }
        let (now_us, now) = (wall_us(), Instant::now());
        let mut o = observed.lock().unwrap();
        for r in &records {
            let v = r.value.as_deref().unwrap_or_default();
            if v.len() != 34 {
                o.undecodable += 1;
                continue;
            }
            let seq = u64::from_be_bytes(v[0..8].try_into().expect("8 bytes"));
            let intended = i64::from_be_bytes(v[8..16].try_into().expect("8 bytes"));
            let Some(slot) = o.seen.get(seq as usize).copied() else {
                o.out_of_range += 1;
                continue;
            };
            if slot != 0 {
                o.duplicates += 1;
                continue;
            }
            o.seen[seq as usize] = now_us;
            o.intended[seq as usize] = intended;
            o.distinct += 1;
            o.last_new = Some(now);
            if o.t0_us.is_none() {
                let t = intended - offset_us(seq, o.rate);
                o.t0_us = Some(t);
                let _ = t0.send(Some(t));
            }
        }
        distinct.store(o.distinct, Ordering::Relaxed);
    }
    Ok(())
}

/// The exact `q` quantile of sorted `v`.
fn quantile(v: &[i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(us: i64) -> f64 {
    us as f64 / 1e3
}

/// Latency, output rate, backlog and timeline from what the reader saw.
struct Figures {
    latency: Option<Lat>,
    output_rate: Option<f64>,
    backlog: Option<Backlog>,
    timeline: Vec<Second>,
    measured_start_us: Option<i64>,
}

fn figures(o: &Observed, samples: &[(i64, u64)], rate: u64, warmup: u64) -> Figures {
    let events = o.seen.len() as u64;
    let Some(t0) = o.t0_us else {
        return Figures {
            latency: None,
            output_rate: None,
            backlog: None,
            timeline: Vec::new(),
            measured_start_us: None,
        };
    };
    let start = t0 + offset_us(warmup, rate);
    let last_send = t0 + offset_us(events.saturating_sub(1), rate);
    let mut lat: Vec<i64> = Vec::new();
    let seconds = ((last_send - start) / 1_000_000 + 1).max(0) as usize;
    let mut per_second: Vec<Vec<i64>> = vec![Vec::new(); seconds];
    let mut out = vec![0u64; seconds];
    let mut in_window = 0u64;
    for seq in 0..events as usize {
        let seen = o.seen[seq];
        if seen == 0 {
            continue;
        }
        if seen >= start && seen <= last_send {
            in_window += 1;
        }
        let k = (seen - start).div_euclid(1_000_000);
        if k >= 0 && (k as usize) < seconds {
            out[k as usize] += 1;
        }
        if (seq as u64) < warmup {
            continue;
        }
        let l = (seen - o.intended[seq]).max(0);
        lat.push(l);
        let k = (o.intended[seq] - start).div_euclid(1_000_000);
        if k >= 0 && (k as usize) < seconds {
            per_second[k as usize].push(l);
        }
    }
    lat.sort_unstable();
    let latency = (!lat.is_empty()).then(|| Lat {
        n: lat.len() as u64,
        p50: ms(quantile(&lat, 0.50)),
        p99: ms(quantile(&lat, 0.99)),
        p999: ms(quantile(&lat, 0.999)),
        max: ms(*lat.last().unwrap_or(&0)),
    });
    let timeline = per_second
        .into_iter()
        .zip(out)
        .enumerate()
        .map(|(k, (mut v, out))| {
            v.sort_unstable();
            let some = |q: f64| (!v.is_empty()).then(|| ms(quantile(&v, q)));
            Second {
                second: k as i64,
                n: v.len() as u64,
                out,
                p50_ms: some(0.5),
                p99_ms: some(0.99),
                max_ms: some(1.0),
            }
        })
        .collect();
    let span_s = (last_send - start) as f64 / 1e6;
    let output_rate = (span_s > 0.0).then(|| in_window as f64 / span_s);
    // Backlog: events due by the schedule minus events seen, at each sample in the window.
    let due = |t: i64| -> i64 {
        if t < t0 {
            return 0;
        }
        let n = ((t - t0) as i128 * rate as i128 / 1_000_000) as i64 + 1;
        n.min(events as i64)
    };
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= start && *t <= last_send)
        .map(|(t, seen)| ((t - start) as f64 / 1e6, (due(*t) - *seen as i64) as f64))
        .collect();
    let backlog = (pts.len() >= 2).then(|| {
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let final_events = pts.last().map_or(0, |p| p.1 as i64);
        let final_s = final_events as f64 / rate as f64;
        let fraction = slope / rate as f64;
        Backlog {
            slope_per_s: slope,
            slope_fraction: fraction,
            final_events,
            final_s,
            max_events: pts.iter().map(|p| p.1 as i64).max().unwrap_or(0),
            stable: fraction <= 0.02 && final_s <= 1.0,
        }
    });
    Figures {
        latency,
        output_rate,
        backlog,
        timeline,
        measured_start_us: Some(start),
    }
}

/// Baseline and recovery of a failover run from its timeline.
fn recovery(timeline: &[Second], killed_at_s: Option<f64>) -> (Option<f64>, Option<f64>) {
    let Some(kill) = killed_at_s else {
        return (None, None);
    };
    let mut before: Vec<f64> = timeline
        .iter()
        .filter(|s| (s.second as f64) + 1.0 <= kill)
        .filter_map(|s| s.p99_ms)
        .collect();
    before.sort_by(|a, b| a.total_cmp(b));
    let Some(base) = (!before.is_empty()).then(|| before[before.len() / 2]) else {
        return (None, None);
    };
    let bound = 2.0 * base;
    let after: Vec<&Second> = timeline
        .iter()
        .filter(|s| (s.second as f64) + 1.0 > kill)
        .collect();
    // The first second from which every later second is within the bound.
    let mut recovered: Option<i64> = None;
    for s in after.iter().rev() {
        match s.p99_ms {
            Some(p) if p <= bound => recovered = Some(s.second),
            _ => break,
        }
    }
    let rec = recovered.map(|s| (s as f64 - kill).max(0.0));
    (Some(base), rec)
}

/// The oracles' verdict for `peer`: `bank check`'s, except for GKES, which writes its own
/// marker records (key `gkes__mark`) into the changelog (STREAMS.md D24,
/// benches/peers/gkes/README.md): oracle (a) counts each as an unknown key (and most as on a
/// wrong partition), so for GKES (a) is judged on the balances only (changelog and output
/// mismatches, undecodable values), with a note giving the counts it set aside.
pub fn verdict(peer: Peer, check: Option<&CheckResult>) -> (bool, Option<String>) {
    let Some(c) = check else {
        return (false, None);
    };
    if peer != Peer::Gkes || c.ok {
        return (c.ok, None);
    }
    let others_ok = c.oracles.iter().filter(|o| o.name != "a").all(|o| o.ok);
    let zero = |k: &str| c.count("a", k) == Some(0);
    let balances_ok =
        zero("changelog_mismatches") && zero("output_mismatches") && zero("changelog_undecodable");
    if others_ok && balances_ok {
        let n = |k: &str| c.count("a", k).unwrap_or(0);
        (
            true,
            Some(format!(
                "oracle (a) judged on balances only: GKES's changelog marker records counted as \
                 changelog_unknown_keys={} changelog_wrong_partitions={}",
                n("changelog_unknown_keys"),
                n("changelog_wrong_partitions")
            )),
        )
    } else {
        (false, None)
    }
}

/// Offsets of the output not returned read_committed: log end offsets minus data records.
async fn output_markers(topics: &RunTopics, partitions: i32, records: Option<u64>) -> Option<u64> {
    let records = records?;
    let mut cfg = kafka_client::config::ClientConfig::default();
    cfg.bootstrap_servers(vec![topics.bootstrap.clone()]);
    let client = kafka_client::Client::connect(cfg).await.ok()?;
    let tps: Vec<(TopicPartition, Offset)> = (0..partitions)
        .map(|p| {
            (
                TopicPartition::new(topics.output.as_str(), p),
                Offset::Latest,
            )
        })
        .collect();
    let ends =
        kafka_client::offsets::list_offsets(&client, &tps, IsolationLevel::ReadUncommitted).await;
    client.close();
    let total: i64 = ends.ok()?.values().map(|o| o.offset).sum();
    u64::try_from(total).ok()?.checked_sub(records)
}

/// Creates BANK.md's input and output topics: P partitions, RF min(3, brokers), delete.
async fn create_topics(topics: &RunTopics, partitions: i32) -> Result<()> {
    let brokers = crate::target::broker_count(&topics.bootstrap).await?;
    let rf = brokers.clamp(1, 3) as i16;
    for t in [&topics.input, &topics.output] {
        let nt = NewTopic::new(t.as_str(), partitions, rf).config("cleanup.policy", "delete");
        crate::target::create_topic_with(&topics.bootstrap, &nt).await?;
    }
    Ok(())
}

fn safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The processes of one run, killed on drop.
struct Fleet {
    slots: Vec<Instance>,
    done: Vec<InstanceSummary>,
}

/// One run of `processor` at `rate`.
#[allow(clippy::too_many_arguments)]
async fn run_once(
    processor: &Processor,
    bank: &Path,
    bootstrap: &str,
    broker_pid: Option<u32>,
    s: &Settings,
    rate: u64,
    round: usize,
) -> Result<StreamsRun> {
    let label = processor.spec.label();
    let tag = crate::unique(&format!("streams-{}-{round}", safe(&label)));
    let topics = RunTopics {
        bootstrap: bootstrap.to_string(),
        input: format!("{tag}-in"),
        output: format!("{tag}-out"),
        // `{group}-{store}-changelog`, the form Kafka Streams needs (its store is then `bank`).
        changelog: format!("{tag}-bank-changelog"),
        group: tag.clone(),
    };
    let events = s.events(rate);
    let warmup = s.warmup_events(rate);
    let say = |m: String| {
        if !s.quiet {
            eprintln!("kbench: {label} #{round}: {m}");
        }
    };
    create_topics(&topics, s.partitions).await?;

    let cpu = CpuTracker::start();
    if let Some(pid) = broker_pid {
        cpu.track("broker", pid, false);
    }
    let mut fleet = Fleet {
        slots: Vec::new(),
        done: Vec::new(),
    };
    let log_of = |i: usize, restart: usize| {
        let r = if restart == 0 {
            String::new()
        } else {
            format!("-r{restart}")
        };
        s.logs.join(format!("{tag}-i{i}{r}.log"))
    };
    for i in 0..s.instances {
        let inst = Instance::spawn(
            processor,
            &topics,
            &format!("kbench-{i}"),
            &format!("{label}/{i}"),
            &log_of(i, 0),
        )
        .await?;
        cpu.track(&format!("instance-{i}"), inst.pid, true);
        fleet.slots.push(inst);
    }
    let split = bank::wait_active(
        &mut fleet.slots,
        s.partitions as u32,
        Duration::from_secs(180),
    )
    .await
    .with_context(|| format!("starting {} instance(s) of {label}", s.instances))?;
    say(format!(
        "{} instance(s) active ({}); loading {events} events at {rate}/s",
        s.instances,
        split
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" + ")
    ));

    let reader = Reader::start(&topics, s.partitions, events, rate).await?;
    cpu.reset();
    let cpu_from = Instant::now();
    let load = bank::spawn_load(bank, &topics, events, rate, s.accounts, s.seed)?;
    let load = tokio::spawn(bank::finish_load(load));

    // While the load runs: the failover schedule and progress.
    let mut killed_at_s: Option<f64> = None;
    let mut restarted_at_s: Option<f64> = None;
    let mut t0 = reader.t0.clone();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let measured_start = |t0: i64| t0 + offset_us(warmup, rate);
    while !load.is_finished() {
        if let (Some(f), Some(t0)) = (s.failover, *t0.borrow_and_update()) {
            let now_s = (wall_us() - measured_start(t0)) as f64 / 1e6;
            if killed_at_s.is_none() && now_s >= f.kill_at_s {
                let victim = &mut fleet.slots[1];
                victim.kill().await;
                killed_at_s = Some(now_s);
                say(format!("SIGKILL to instance 1 at {now_s:.2} s"));
            } else if let (Some(k), None) = (killed_at_s, restarted_at_s) {
                if now_s >= k + f.restart_after_s {
                    let inst = Instance::spawn(
                        processor,
                        &topics,
                        "kbench-1",
                        &format!("{label}/1 (restarted)"),
                        &log_of(1, 1),
                    )
                    .await?;
                    cpu.track("instance-1-restarted", inst.pid, true);
                    let old = std::mem::replace(&mut fleet.slots[1], inst);
                    fleet.done.push(old.summary("SIGKILL".into()));
                    restarted_at_s = Some(now_s);
                    say(format!("instance 1 restarted at {now_s:.2} s"));
                }
            }
        }
        if !s.quiet && Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            say(format!("{} of {events} seqs seen", reader.distinct()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = load.await.context("the load task")??;
    say(load.line.clone());

    // Every seq, or no new one for the idle timeout; stop early if every processor died.
    let idle = Duration::from_secs_f64(s.idle_timeout_s);
    let waiting = Instant::now();
    loop {
        if reader.distinct() == events {
            break;
        }
        let since = reader.last_new().map_or(waiting, |t| t.max(waiting));
        if since.elapsed() >= idle {
            say(format!(
                "no new seq for {} s: {} of {events} seen",
                idle.as_secs(),
                reader.distinct()
            ));
            break;
        }
        let mut alive = 0;
        for inst in fleet.slots.iter_mut() {
            if inst.exited().await.is_none() {
                alive += 1;
            }
        }
        if alive == 0 {
            say("every processor instance has exited".into());
            break;
        }
        if !s.quiet && Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            say(format!("{} of {events} seqs seen", reader.distinct()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cpu.sample();
    let cpu_window_s = cpu_from.elapsed().as_secs_f64();
    let worker_cpu_s = cpu.seconds_of_prefix("instance-");
    let broker_cpu_s = broker_pid.map(|_| cpu.seconds("broker"));
    let (observed, samples) = reader.finish().await?;
    let fig = figures(&observed, &samples, rate, warmup);

    // The oracles, with the processors still running (late duplicates would show).
    say("checking the oracles (bank check)".into());
    let check_settings = CheckSettings {
        events,
        seed: s.seed,
        accounts: s.accounts,
        warmup_events: warmup,
        idle_timeout_s: s.idle_timeout_s.min(10.0),
        settle_s: s.settle_s,
        changelog_quiet_s: s.changelog_quiet_s,
    };
    let (check, check_error) = match bank::check(bank, &topics, &check_settings).await {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };

    let (oracles_ok, oracle_note) = verdict(processor.spec.peer, check.as_ref());
    let output_markers = output_markers(
        &topics,
        s.partitions,
        check.as_ref().and_then(|c| c.count("b", "records")),
    )
    .await;

    let mut unexpected_exits = Vec::new();
    for inst in fleet.slots.iter_mut() {
        if inst.exited_unexpectedly() {
            unexpected_exits.push(format!("{}: {}", inst.name, inst.tail(5)));
        }
    }
    let stops = futures_util::future::join_all(
        fleet
            .slots
            .iter_mut()
            .map(|i| i.stop(Duration::from_secs(20))),
    )
    .await;
    let mut processes = std::mem::take(&mut fleet.done);
    for (inst, exit) in fleet.slots.iter().zip(stops) {
        processes.push(inst.summary(exit));
    }
    let mut transactions: Option<u64> = None;
    let mut lower_bound = false;
    for p in &processes {
        match p.counters.get("transactions") {
            Some(n) => *transactions.get_or_insert(0) += n,
            None => lower_bound |= p.killed,
        }
    }
    let (baseline, recovery_s) = recovery(&fig.timeline, killed_at_s);
    let failover = s.failover.map(|_| FailoverResult {
        killed_at_s,
        restarted_at_s,
        baseline_p99_ms: baseline,
        recovery_s,
    });
    let _ = fig.measured_start_us;
    let per_10k = |c: f64| c / (events as f64 / 1e4);
    Ok(StreamsRun {
        client: label,
        round,
        rate,
        events,
        warmup_events: warmup,
        instances: s.instances,
        topics,
        active_split: split,
        seen: observed.distinct,
        complete: observed.distinct == events,
        reader_duplicates: observed.duplicates,
        output_rate: fig.output_rate,
        latency_ms: fig.latency,
        backlog: fig.backlog,
        send_lag_ms: load.max_send_lag_ms,
        load: Some(load.line),
        cpu_window_s,
        worker_cpu_s,
        worker_cpu_s_per_10k: per_10k(worker_cpu_s),
        broker_cpu_s,
        broker_cpu_s_per_10k: broker_cpu_s.map(per_10k),
        transactions,
        transactions_lower_bound: lower_bound && transactions.is_some(),
        check,
        check_error,
        oracles_ok,
        oracle_note,
        output_markers,
        failover,
        timeline: fig.timeline,
        unexpected_exits,
        processes,
    })
}

/// The rates of `--max-rate`: doubling from the start until a rate is not backlog-stable (or
/// the limit is reached), then `refine` bisections between the highest stable rate and the
/// lowest unstable one (rounded to 500 events/s).
#[derive(Debug, Clone)]
struct RateSearch {
    /// The rate to run next.
    next: Option<u64>,
    /// The highest stable rate and the lowest unstable one so far.
    lo: Option<u64>,
    hi: Option<u64>,
    limit: u64,
    refine: u32,
}

impl RateSearch {
    const GRAIN: u64 = 500;

    fn new(start: u64, limit: u64, refine: u32) -> RateSearch {
        RateSearch {
            next: Some(start.min(limit)),
            lo: None,
            hi: None,
            limit,
            refine,
        }
    }

    fn record(&mut self, rate: u64, stable: bool) {
        if stable {
            self.lo = Some(self.lo.map_or(rate, |l| l.max(rate)));
        } else {
            self.hi = Some(self.hi.map_or(rate, |h| h.min(rate)));
        }
        self.next = match (self.lo, self.hi) {
            (_, None) if rate >= self.limit => None,
            (_, None) => Some(rate.saturating_mul(2).min(self.limit)),
            (None, Some(_)) => None,
            (Some(l), Some(h)) => {
                let mid = (l + h) / 2 / Self::GRAIN * Self::GRAIN;
                if self.refine == 0 || mid <= l || mid >= h {
                    None
                } else {
                    self.refine -= 1;
                    Some(mid)
                }
            }
        };
    }

    /// Why the search stops (or where it is).
    fn describe(&self) -> String {
        match (self.lo, self.hi) {
            (_, None) => format!("stable up to --rate-limit {}", self.limit),
            (None, Some(h)) => format!("not stable at the first rate, {h}/s"),
            (Some(l), Some(h)) => format!("stable at {l}/s, the backlog grew at {h}/s"),
        }
    }
}

/// What one invocation writes to JSON.
#[derive(Serialize)]
struct Report<'a> {
    mode: &'a str,
    target: &'a str,
    settings: &'a Settings,
    clients: Vec<String>,
    runs: &'a [StreamsRun],
    failures: &'a [String],
    max_rate: Vec<MaxRate>,
    processor_settings: Vec<(String, Vec<String>)>,
}

/// The result of `--max-rate` for one client and round.
#[derive(Debug, Clone, Serialize)]
struct MaxRate {
    client: String,
    round: usize,
    /// The highest rate whose backlog stayed stable and whose oracles held.
    sustainable: Option<u64>,
    /// Why the steps stopped.
    stopped: String,
}

pub async fn run(a: StreamsArgs) -> Result<()> {
    let mut a = a;
    if a.smoke {
        a.warmup = 1.0;
        a.duration = 4.0;
        a.settle = 2.0;
        a.changelog_quiet = 1.0;
        a.idle_timeout = 30.0;
    }
    if a.rate == 0 || a.partitions < 1 || a.runs == 0 || a.clients.is_empty() {
        bail!("--rate, --partitions, --runs and --clients must be positive / non-empty");
    }
    for (flag, v) in [
        ("--warmup", a.warmup),
        ("--duration", a.duration),
        ("--idle-timeout", a.idle_timeout),
        ("--settle", a.settle),
        ("--changelog-quiet", a.changelog_quiet),
        ("--kill-at", a.kill_at),
        ("--restart-after", a.restart_after),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{flag} must be a number of seconds >= 0, not {v}");
        }
    }
    if a.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    if a.failover && a.max_rate {
        bail!("--failover and --max-rate are separate modes");
    }
    let instances = a.instances.unwrap_or(if a.failover { 2 } else { 1 });
    if instances == 0 || instances > a.partitions as usize {
        bail!(
            "--instances must be 1 to {} (each instance needs a partition)",
            a.partitions
        );
    }
    if a.failover {
        if instances < 2 {
            bail!("--failover needs at least 2 instances (the second is killed)");
        }
        if a.kill_at + a.restart_after >= a.duration {
            bail!(
                "--kill-at {} + --restart-after {} must fall inside --duration {}",
                a.kill_at,
                a.restart_after,
                a.duration
            );
        }
    }
    if a.max_rate && a.rate_limit < a.rate {
        bail!("--max-rate needs --rate-limit >= --rate");
    }
    let quiet = a.common.quiet;
    let paths = Paths::detect();
    let logs = a.out.join("streams-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let settings = Settings {
        rate: a.rate,
        warmup_s: a.warmup,
        duration_s: a.duration,
        partitions: a.partitions,
        instances,
        accounts: a.accounts,
        seed: a.seed,
        failover: a.failover.then_some(Failover {
            kill_at_s: a.kill_at,
            restart_after_s: a.restart_after,
        }),
        idle_timeout_s: a.idle_timeout,
        settle_s: a.settle,
        changelog_quiet_s: a.changelog_quiet,
        quiet,
        logs: logs.clone(),
    };

    // Every client must be there: an unavailable one fails the invocation, saying why.
    let bank = bank::bank_binary(&paths, a.bank_bin.as_deref(), quiet).await?;
    let mut processors = Vec::new();
    for spec in &a.clients {
        let p = bank::prepare(spec, &paths, &bank, quiet)
            .await
            .with_context(|| format!("{spec} is unavailable"))?;
        processors.push(p);
    }
    let target = crate::connect(&a.common, quiet).await?;
    let mode = if a.failover {
        "failover"
    } else if a.max_rate {
        "max-rate"
    } else {
        "latency"
    };

    let mut runs: Vec<StreamsRun> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut max_rates: Vec<MaxRate> = Vec::new();
    for round in 1..=a.runs {
        for p in &processors {
            let label = p.spec.label();
            if !a.max_rate {
                match run_once(
                    p,
                    &bank,
                    &target.bootstrap,
                    target.broker_pid,
                    &settings,
                    a.rate,
                    round,
                )
                .await
                {
                    Ok(r) => {
                        if !quiet {
                            eprintln!("kbench: {}", one_line(&r));
                        }
                        runs.push(r);
                    }
                    Err(e) => {
                        eprintln!("kbench: {label} round {round} FAILED: {e:#}");
                        failures.push(format!("{label} round {round}: {e:#}"));
                    }
                }
                continue;
            }
            let mut search = RateSearch::new(a.rate, a.rate_limit, a.refine);
            let mut stopped = String::new();
            while let Some(rate) = search.next {
                let r = run_once(
                    p,
                    &bank,
                    &target.bootstrap,
                    target.broker_pid,
                    &settings,
                    rate,
                    round,
                )
                .await;
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{label} round {round} at {rate}/s: {e:#}"));
                        stopped = format!("the run at {rate}/s failed");
                        break;
                    }
                };
                if !quiet {
                    eprintln!("kbench: {}", one_line(&r));
                }
                let stable = r.backlog.as_ref().is_some_and(|b| b.stable);
                let ok = r.ok();
                runs.push(r);
                if !ok {
                    stopped = format!("oracles or completeness failed at {rate}/s");
                    break;
                }
                search.record(rate, stable);
                stopped = search.describe();
            }
            let sustainable = search.lo;
            max_rates.push(MaxRate {
                client: label,
                round,
                sustainable,
                stopped,
            });
        }
    }

    println!(
        "kbench streams ({mode}): BANK.md, {} partitions, {} instance(s), rate {}/s, {} s warm-up + \
         {} s measured, {} accounts, seed {}; target: {}",
        settings.partitions,
        settings.instances,
        a.rate,
        settings.warmup_s,
        settings.duration_s,
        settings.accounts,
        settings.seed,
        target.description
    );
    print_runs(&runs);
    if a.runs > 1 && !a.max_rate {
        print_summary(&runs, &a.clients);
    }
    for r in &runs {
        if a.failover || a.timeline {
            print_timeline(r);
        }
    }
    for m in &max_rates {
        println!(
            "max sustainable rate: {} round {}: {} ({})",
            m.client,
            m.round,
            m.sustainable
                .map_or("none".to_string(), |r| format!("{r} events/s")),
            m.stopped
        );
    }
    let mut processor_settings = Vec::new();
    for p in &processors {
        let label = p.spec.label();
        if let Some(r) = runs.iter().find(|r| r.client == label) {
            let head = r
                .processes
                .first()
                .map(|p| p.settings.clone())
                .unwrap_or_default();
            println!(
                "  {label}: {}",
                bank::settings_line(&head).cloned().unwrap_or_default()
            );
            processor_settings.push((label, head));
        }
    }
    for f in &failures {
        let first = f.lines().next().unwrap_or("");
        println!("  failed: {first}");
    }
    let json = a
        .common
        .json
        .clone()
        .unwrap_or_else(|| a.out.join(format!("streams-{mode}.json")));
    crate::write_json(
        &json,
        &Report {
            mode,
            target: &target.description,
            settings: &settings,
            clients: a.clients.iter().map(ClientSpec::label).collect(),
            runs: &runs,
            failures: &failures,
            max_rate: max_rates,
            processor_settings,
        },
    )?;
    println!(
        "wrote {} (processor logs in {})",
        json.display(),
        logs.display()
    );
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{} round {} at {}/s", r.client, r.round, r.rate))
        .collect();
    if !failures.is_empty() {
        bail!("{} run(s) failed", failures.len());
    }
    if !bad.is_empty() {
        bail!(
            "the oracles did not hold (or the output was incomplete) in: {}",
            bad.join(", ")
        );
    }
    Ok(())
}

fn f2(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn one_line(r: &StreamsRun) -> String {
    let l = r.latency_ms;
    format!(
        "{} #{} at {}/s: {} of {} seqs, out {}/s, e2e p50 {} p99 {} p99.9 {} max {} ms, worker \
         cpu {:.2} s, oracles {}",
        r.client,
        r.round,
        r.rate,
        r.seen,
        r.events,
        r.output_rate.map_or("-".into(), |v| format!("{v:.0}")),
        f2(l.map(|l| l.p50)),
        f2(l.map(|l| l.p99)),
        f2(l.map(|l| l.p999)),
        f2(l.map(|l| l.max)),
        r.worker_cpu_s,
        oracle_word(r)
    )
}

fn oracle_word(r: &StreamsRun) -> String {
    if r.oracles_ok && r.oracle_note.is_some() {
        return "ok*".into();
    }
    match (&r.check, &r.check_error) {
        (Some(c), _) => {
            let failed: Vec<&str> = c
                .oracles
                .iter()
                .filter(|o| !o.ok)
                .map(|o| o.name.as_str())
                .collect();
            if failed.is_empty() && c.ok {
                "ok".into()
            } else if failed.is_empty() {
                "FAILED".into()
            } else {
                format!("FAILED ({})", failed.join(","))
            }
        }
        (None, Some(_)) => "check error".into(),
        (None, None) => "-".into(),
    }
}

fn print_runs(runs: &[StreamsRun]) {
    println!(
        "{:<22} {:>3} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>4} {:>5} {:>5} {:>8} {:>5} {:>9}",
        "client",
        "run",
        "rate",
        "out/s",
        "p50",
        "p99",
        "p99.9",
        "max",
        "lag",
        "txns",
        "markers",
        "cpu s",
        "cpu/10k",
        "brk cpu",
        "missing",
        "dup",
        "order",
        "value",
        "backlog",
        "slope",
        "oracles"
    );
    for r in runs {
        let l = r.latency_ms;
        let opt = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        println!(
            "{:<22} {:>3} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7} {:>8.2} {:>8.3} {:>8} {:>7} {:>4} {:>5} {:>5} {:>8} {:>5} {:>9}",
            r.client,
            r.round,
            r.rate,
            r.output_rate.map_or("-".into(), |v| format!("{v:.0}")),
            f2(l.map(|l| l.p50)),
            f2(l.map(|l| l.p99)),
            f2(l.map(|l| l.p999)),
            f2(l.map(|l| l.max)),
            r.send_lag_ms.map_or("-".into(), |v| format!("{v:.0}")),
            match r.transactions {
                Some(t) if r.transactions_lower_bound => format!(">={t}"),
                Some(t) => t.to_string(),
                None => "-".into(),
            },
            opt(r.output_markers),
            r.worker_cpu_s,
            r.worker_cpu_s_per_10k,
            r.broker_cpu_s.map_or("-".into(), |v| format!("{v:.2}")),
            opt(r.count("b", "missing")),
            opt(r.count("b", "duplicates")),
            opt(r.count("b", "order_violations")),
            opt(r
                .count("b", "value_mismatches")
                .zip(r.count("a", "changelog_mismatches"))
                .map(|(a, b)| a + b)),
            r.backlog
                .as_ref()
                .map_or("-".into(), |b| format!("{:.2}s", b.final_s)),
            r.backlog
                .as_ref()
                .map_or("-".into(), |b| format!("{:.0}%", b.slope_fraction * 100.0)),
            oracle_word(r)
        );
        if let Some(e) = &r.check_error {
            println!("    check error: {}", e.lines().next().unwrap_or(""));
        }
        if let Some(n) = &r.oracle_note {
            println!("    *: {n}");
        }
        for e in &r.unexpected_exits {
            println!(
                "    exited unexpectedly: {}",
                e.lines().next().unwrap_or("")
            );
        }
        if let Some(c) = r.check.as_ref().filter(|_| !r.oracles_ok) {
            for o in c.oracles.iter().filter(|o| !o.ok) {
                for e in o.examples.iter().take(3) {
                    println!("    oracle {}: e.g. {e}", o.name);
                }
            }
        }
    }
    println!(
        "(latency ms from the intended send time to the first read_committed sight; lag: the \
         driver's max send lag, ms; txns: transactions the processors reported at their stop; markers: offsets of the output a \
         read_committed reader skips (commit markers, about one per partition per transaction, \
         and aborted records); cpu s: the \
         processors' CPU from the load's start until every seq was seen, cpu/10k per 10,000 \
         events; brk cpu: the broker's in the same window; missing/dup/order/value: bank check's \
         counts (value = output value + changelog mismatches); backlog: events due minus seen at \
         the end of the sends, in seconds of input; slope: its growth as a share of the rate)"
    );
}

fn print_summary(runs: &[StreamsRun], clients: &[ClientSpec]) {
    println!("median (min-max) over rounds:");
    println!(
        "{:<22} {:>4} {:>18} {:>18} {:>18} {:>18} {:>16} {:>8}",
        "client", "runs", "out/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu/10k", "oracles"
    );
    for c in clients {
        let label = c.label();
        let mine: Vec<&StreamsRun> = runs.iter().filter(|r| r.client == label).collect();
        if mine.is_empty() {
            continue;
        }
        let stat = |f: &dyn Fn(&StreamsRun) -> Option<f64>, prec: usize| {
            let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
            Stat::of(&v).map_or("-".into(), |s| {
                format!("{:.prec$} ({:.prec$}-{:.prec$})", s.median, s.min, s.max)
            })
        };
        let ok = mine.iter().filter(|r| r.ok()).count();
        println!(
            "{:<22} {:>4} {:>18} {:>18} {:>18} {:>18} {:>16} {:>8}",
            label,
            mine.len(),
            stat(&|r| r.output_rate, 0),
            stat(&|r| r.latency_ms.map(|l| l.p50), 1),
            stat(&|r| r.latency_ms.map(|l| l.p99), 1),
            stat(&|r| r.latency_ms.map(|l| l.p999), 1),
            stat(&|r| Some(r.worker_cpu_s_per_10k), 3),
            format!("{ok}/{}", mine.len())
        );
    }
}

fn print_timeline(r: &StreamsRun) {
    println!("timeline of {} round {} (seconds of the measured window; n: events intended in that second and seen, out: first seen during it; ms):", r.client, r.round);
    if let Some(f) = &r.failover {
        println!(
            "  killed at {} s, restarted at {} s; baseline p99 {} ms; p99 within 2x baseline {} after the kill",
            f2(f.killed_at_s),
            f2(f.restarted_at_s),
            f2(f.baseline_p99_ms),
            f.recovery_s
                .map_or("never".to_string(), |v| format!("{v:.0} s"))
        );
    }
    println!(
        "  {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}",
        "second", "n", "out", "p50", "p99", "max"
    );
    for s in &r.timeline {
        println!(
            "  {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}",
            s.second,
            s.n,
            s.out,
            f2(s.p50_ms),
            f2(s.p99_ms),
            f2(s.max_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(rate: u64, events: u64, lat_us: impl Fn(u64) -> Option<i64>) -> Observed {
        let t0 = 1_000_000_000_000i64;
        let mut o = Observed {
            rate,
            intended: vec![0; events as usize],
            seen: vec![0; events as usize],
            distinct: 0,
            duplicates: 0,
            undecodable: 0,
            out_of_range: 0,
            last_new: None,
            t0_us: Some(t0),
        };
        for i in 0..events {
            let intended = t0 + offset_us(i, rate);
            if let Some(l) = lat_us(i) {
                o.intended[i as usize] = intended;
                o.seen[i as usize] = intended + l;
                o.distinct += 1;
            }
        }
        o
    }

    fn samples(o: &Observed, every_us: i64) -> Vec<(i64, u64)> {
        let t0 = o.t0_us.unwrap();
        let end = o.seen.iter().copied().max().unwrap_or(t0);
        let mut out = Vec::new();
        let mut t = t0;
        while t <= end {
            out.push((
                t,
                o.seen.iter().filter(|s| **s != 0 && **s <= t).count() as u64,
            ));
            t += every_us;
        }
        out
    }

    #[test]
    fn offsets_match_the_load_schedule() {
        assert_eq!(offset_us(0, 2000), 0);
        assert_eq!(offset_us(1, 2000), 500);
        assert_eq!(offset_us(3, 3000), 1000);
        assert_eq!(offset_us(1, 3000), 333);
    }

    #[test]
    fn a_steady_processor_has_flat_backlog_and_exact_percentiles() {
        // 1000/s for 12 s, 2 s warm-up, every event seen 20 ms late.
        let o = observed(1000, 12_000, |_| Some(20_000));
        let f = figures(&o, &samples(&o, 1_000_000), 1000, 2000);
        let l = f.latency.unwrap();
        assert_eq!(l.n, 10_000);
        assert_eq!((l.p50, l.p99, l.max), (20.0, 20.0, 20.0));
        let b = f.backlog.unwrap();
        assert!(b.stable, "{b:?}");
        assert!(b.final_events <= 21, "{b:?}");
        assert!((f.output_rate.unwrap() - 1000.0).abs() < 5.0);
        assert_eq!(f.timeline.len(), 10);
        assert!(f.timeline.iter().all(|s| s.n == 1000));
    }

    #[test]
    fn a_slow_processor_has_a_growing_backlog() {
        // It handles 800 of every 1000 events per second: event i is seen at i / 800 s.
        let o = observed(1000, 20_000, |i| {
            Some((i as i64 * 1_000_000 / 800) - offset_us(i, 1000))
        });
        let f = figures(&o, &samples(&o, 1_000_000), 1000, 2000);
        let b = f.backlog.unwrap();
        assert!(!b.stable, "{b:?}");
        assert!((b.slope_fraction - 0.2).abs() < 0.02, "{b:?}");
        assert!(f.output_rate.unwrap() < 850.0);
    }

    #[test]
    fn missing_events_and_recovery_after_a_stall() {
        // 20 s at 1000/s, no warm-up; events intended in seconds 10-11 wait until 14 s, and
        // seq 5 is never seen.
        let o = observed(1000, 20_000, |i| match i {
            5 => None,
            10_000..=11_999 => Some(14_000_000 - offset_us(i, 1000)),
            _ => Some(10_000),
        });
        let f = figures(&o, &samples(&o, 1_000_000), 1000, 0);
        assert_eq!(f.latency.unwrap().n, 19_999);
        assert_eq!(f.timeline[0].n, 999);
        let stalled = &f.timeline[10];
        assert!(stalled.p99_ms.unwrap() > 3000.0);
        assert_eq!(f.timeline[14].out, 1000 + 2000);
        let (base, rec) = recovery(&f.timeline, Some(10.0));
        assert_eq!(base, Some(10.0));
        assert_eq!(rec, Some(2.0), "seconds 12.. are back to 10 ms");
        assert_eq!(recovery(&f.timeline, None), (None, None));
    }

    #[test]
    fn gkes_markers_are_set_aside_only_when_the_balances_hold() {
        let text = |a: &str| {
            format!(
                "oracle a: {a}\n\
                 oracle b: ok records=10 missing=0 duplicates=0\n\
                 oracle g: ok negative_outputs=0 negative_changelog=0\n"
            )
        };
        let markers = bank::parse_check(&text(
            "FAILED accounts=10 changelog_records=16 changelog_mismatches=0 output_mismatches=0 \
             changelog_undecodable=0 changelog_unknown_keys=6 changelog_wrong_partitions=5",
        ));
        let (ok, note) = verdict(Peer::Gkes, Some(&markers));
        assert!(ok);
        assert!(note.unwrap().contains("changelog_unknown_keys=6"));
        // The same counts from any other client fail.
        assert_eq!(verdict(Peer::Ours, Some(&markers)), (false, None));
        assert_eq!(verdict(Peer::KafkaStreams, Some(&markers)), (false, None));
        // A wrong balance fails GKES too.
        let wrong = bank::parse_check(&text(
            "FAILED accounts=10 changelog_mismatches=1 output_mismatches=0 \
             changelog_undecodable=0 changelog_unknown_keys=6",
        ));
        assert_eq!(verdict(Peer::Gkes, Some(&wrong)), (false, None));
        let clean = bank::parse_check(&text("ok accounts=10 changelog_mismatches=0"));
        assert_eq!(verdict(Peer::Ours, Some(&clean)), (true, None));
        assert_eq!(verdict(Peer::Ours, None), (false, None));
    }

    #[test]
    fn the_rate_search_doubles_then_bisects() {
        let mut s = RateSearch::new(2000, 160_000, 2);
        let mut tried = Vec::new();
        // Stable up to 23,000/s.
        while let Some(r) = s.next {
            tried.push(r);
            s.record(r, r <= 23_000);
        }
        assert_eq!(tried, [2000, 4000, 8000, 16000, 32000, 24000, 20000]);
        assert_eq!((s.lo, s.hi), (Some(20000), Some(24000)));
        assert!(s.describe().contains("stable at 20000/s"));
        // Stable everywhere: stops at the limit.
        let mut s = RateSearch::new(50_000, 120_000, 2);
        let mut tried = Vec::new();
        while let Some(r) = s.next {
            tried.push(r);
            s.record(r, true);
        }
        assert_eq!(tried, [50_000, 100_000, 120_000]);
        assert!(s.describe().contains("--rate-limit"));
        // Unstable at once.
        let mut s = RateSearch::new(2000, 160_000, 2);
        s.record(2000, false);
        assert_eq!((s.next, s.lo), (None, None));
    }

    #[test]
    fn quantiles_are_exact() {
        let v: Vec<i64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
