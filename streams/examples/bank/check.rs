//! `bank check`: reads the output and the changelog read_committed from the start and checks
//! BANK.md's oracles against the model: (a) final balances, (b) exactly once in order, (g) no
//! negative balance, and measures (c) end-to-end latency (meaningful when the check runs while
//! the load does). Exit 0 iff (a), (b) and (g) hold.
//!
//! The output is read until every `seq` appeared, or no new `seq` came for `--idle-timeout`;
//! then `--settle` more to catch late duplicates. The changelog is read until
//! `--changelog-quiet` passes without records, keeping the last value per key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use kafka_client::config::{ConsumerConfig, IsolationLevel};
use kafka_client::kafka_wire::ErrorCode;
use kafka_client::offsets::list_offsets;
use kafka_client::{Consumer, ConsumerRecord, Offset, TopicPartition};

use crate::load::now_us;
use crate::model::{partition_of, Model};
use crate::wire::{account_key, decode_balance, parse_account_key, BalanceUpdate};
use crate::BoxError;

/// `bank check` flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Bootstrap servers (`HOST:PORT[,HOST:PORT...]`).
    #[arg(long)]
    pub bootstrap: String,
    /// The input topic (its partition count and size are reported).
    #[arg(long)]
    pub input: String,
    /// The output topic.
    #[arg(long)]
    pub output: String,
    /// The processor's changelog topic.
    #[arg(long)]
    pub changelog: String,
    /// Events the load sent (N).
    #[arg(long)]
    pub events: u64,
    /// The SplitMix64 seed (S).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Accounts (A), at most 100,000.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Events below this `seq` are the warm-up: checked, but not in the latency.
    #[arg(long, default_value_t = 0)]
    pub warmup_events: u64,
    /// Stop waiting for the output after this many seconds without a new `seq`.
    #[arg(long, default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// Seconds to keep reading the output after the last `seq` appeared (late duplicates).
    #[arg(long, default_value_t = 10.0)]
    pub settle: f64,
    /// The changelog is read until this many seconds pass without a record.
    #[arg(long, default_value_t = 3.0)]
    pub changelog_quiet: f64,
}

impl CheckArgs {
    fn validate(&self) -> Result<(), BoxError> {
        if !(1..=100_000).contains(&self.accounts) {
            return Err(format!("--accounts must be 1 to 100000, not {}", self.accounts).into());
        }
        for (flag, v) in [
            ("--idle-timeout", self.idle_timeout),
            ("--settle", self.settle),
            ("--changelog-quiet", self.changelog_quiet),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{flag} must be a number of seconds >= 0, not {v}").into());
            }
        }
        Ok(())
    }
}

/// Reads the output and the changelog and evaluates the oracles.
pub async fn check(args: &CheckArgs) -> Result<CheckReport, BoxError> {
    args.validate()?;
    let started = Instant::now();
    let model = Arc::new(Model::new(args.seed, args.events, args.accounts));
    let output = read_output(args, &model).await?;
    let changelog = read_changelog(args, &model).await?;
    // After the output: when the check runs alongside the load, the input is complete now.
    let input = describe_input(args).await?;
    Ok(evaluate(
        &model,
        input,
        &output,
        &changelog,
        started.elapsed(),
    ))
}

/// A count of one kind of problem, with the first few instances described.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub n: u64,
    examples: Vec<String>,
}

impl Tally {
    const EXAMPLES: usize = 5;

    fn add(&mut self, describe: impl FnOnce() -> String) {
        self.n += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(describe());
        }
    }
}

/// A read_committed consumer of every partition of `topic`, from the log start, and the
/// topic's partition count; `None` if the topic does not exist.
async fn reader(bootstrap: &str, topic: &str) -> Result<Option<(Consumer, i32)>, BoxError> {
    let mut cfg = ConsumerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(crate::servers(bootstrap));
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    cfg.enable_auto_commit(false);
    // BANK.md (c): min bytes 1 and max wait 500 ms.
    cfg.fetch_min_bytes(1usize);
    cfg.fetch_max_wait(Duration::from_millis(500));
    let consumer = Consumer::new(cfg).await?;
    let result = async {
        let meta = match consumer.client().topic(topic).await {
            Ok(m) => m,
            Err(e) if e.broker_code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let tps: Vec<TopicPartition> = meta
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect();
        consumer.assign(tps.clone()).await?;
        for tp in &tps {
            consumer.seek(tp, Offset::Earliest).await?;
        }
        Ok(Some(tps.len() as i32))
    }
    .await;
    match result {
        Ok(Some(n)) => Ok(Some((consumer, n))),
        Ok(None) => {
            consumer.close().await;
            Ok(None)
        }
        Err(e) => {
            consumer.close().await;
            Err(format!("reading {topic}: {e}").into())
        }
    }
}

/// The input topic's partition count and its number of offsets (for the report).
#[derive(Debug, Clone, Copy)]
pub struct InputInfo {
    pub partitions: i32,
    pub offsets: i64,
}

pub async fn describe_input(args: &CheckArgs) -> Result<Option<InputInfo>, BoxError> {
    let mut cfg = kafka_client::config::ClientConfig::default();
    cfg.bootstrap_servers(crate::servers(&args.bootstrap));
    let client = kafka_client::Client::connect(cfg).await?;
    let result: Result<Option<InputInfo>, BoxError> = async {
        let meta = match client.topic(&args.input).await {
            Ok(m) => m,
            Err(e) if e.broker_code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let at = |to: Offset| -> Vec<(TopicPartition, Offset)> {
            meta.partitions
                .iter()
                .map(|p| (TopicPartition::new(args.input.as_str(), p.partition), to))
                .collect()
        };
        let uncommitted = IsolationLevel::ReadUncommitted;
        let lo = list_offsets(&client, &at(Offset::Earliest), uncommitted).await?;
        let hi = list_offsets(&client, &at(Offset::Latest), uncommitted).await?;
        let offsets = hi
            .iter()
            .map(|(tp, h)| h.offset - lo.get(tp).map_or(0, |l| l.offset))
            .sum();
        Ok(Some(InputInfo {
            partitions: meta.partition_count() as i32,
            offsets,
        }))
    }
    .await;
    client.close();
    result
}

/// What the output reader saw.
pub struct OutputLog {
    pub partitions: i32,
    /// Data records read (all of them, duplicates included).
    pub records: u64,
    /// Distinct `seq`s in [0, N) seen.
    pub distinct: u64,
    /// Whether every `seq` appeared (else the reader gave up after the idle timeout).
    pub complete: bool,
    /// How often each `seq` appeared.
    seen: Vec<u32>,
    account_partition: Vec<i32>,
    last_seq: Vec<Option<u64>>,
    last_balance: Vec<Option<i64>>,
    pub duplicates: Tally,
    pub order_violations: Tally,
    pub value_mismatches: Tally,
    pub key_mismatches: Tally,
    pub undecodable: Tally,
    pub unknown_seqs: Tally,
    pub wrong_partitions: Tally,
    pub negative: Tally,
    /// First-seen wall time minus `intended_us`, µs, for `seq`s at or after the warm-up.
    pub latency: Histogram<u64>,
    warmup: u64,
    started: Instant,
    first_record: Option<Instant>,
    last_new: Option<Instant>,
}

impl OutputLog {
    fn new(model: &Model, partitions: i32, warmup: u64) -> OutputLog {
        OutputLog {
            partitions,
            records: 0,
            distinct: 0,
            complete: false,
            seen: vec![0; model.events() as usize],
            account_partition: (0..model.accounts())
                .map(|a| partition_of(account_key(a).as_bytes(), partitions))
                .collect(),
            last_seq: vec![None; model.accounts() as usize],
            last_balance: vec![None; model.accounts() as usize],
            duplicates: Tally::default(),
            order_violations: Tally::default(),
            value_mismatches: Tally::default(),
            key_mismatches: Tally::default(),
            undecodable: Tally::default(),
            unknown_seqs: Tally::default(),
            wrong_partitions: Tally::default(),
            negative: Tally::default(),
            latency: Histogram::new_with_bounds(1, 24 * 3600 * 1_000_000, 3)
                .expect("valid histogram bounds"),
            warmup,
            started: Instant::now(),
            first_record: None,
            last_new: None,
        }
    }

    /// Checks one output record, first returned by the reader at `seen_us`.
    fn observe(&mut self, model: &Model, r: &ConsumerRecord, seen_us: i64, now: Instant) {
        self.records += 1;
        self.first_record.get_or_insert(now);
        let at = || format!("{}@{}", r.partition, r.offset);
        let key = r.key.as_deref().unwrap_or_default();
        let account = parse_account_key(key).filter(|a| *a < model.accounts());
        let want_partition = match account {
            Some(a) => self.account_partition[a as usize],
            None => partition_of(key, self.partitions),
        };
        if r.partition != want_partition {
            self.wrong_partitions.add(|| {
                format!(
                    "{} at {}, belongs on partition {want_partition}",
                    String::from_utf8_lossy(key),
                    at()
                )
            });
        }
        let update = match r.value.as_deref().map(BalanceUpdate::decode) {
            Some(Ok(u)) => u,
            Some(Err(e)) => return self.undecodable.add(|| format!("{}: {e}", at())),
            None => return self.undecodable.add(|| format!("{}: null value", at())),
        };
        let seq = update.seq;
        if update.balance < 0 {
            self.negative
                .add(|| format!("seq {seq} at {}: balance {}", at(), update.balance));
        }
        match account {
            Some(a) => {
                let last = &mut self.last_seq[a as usize];
                if let Some(prev) = *last {
                    if seq <= prev {
                        self.order_violations.add(|| {
                            format!("{}: seq {seq} at {} after seq {prev}", account_key(a), at())
                        });
                    }
                }
                *last = Some(seq);
                self.last_balance[a as usize] = Some(update.balance);
            }
            None => self.key_mismatches.add(|| {
                format!(
                    "seq {seq} at {}: key {:?} is not an account",
                    at(),
                    String::from_utf8_lossy(key)
                )
            }),
        }
        let Some(expected) = model.expected(seq) else {
            return self
                .unknown_seqs
                .add(|| format!("seq {seq} at {} (N = {})", at(), model.events()));
        };
        let count = &mut self.seen[seq as usize];
        *count += 1;
        if *count == 1 {
            self.distinct += 1;
            self.last_new = Some(now);
            if seq >= self.warmup {
                let us = seen_us.saturating_sub(update.intended_us).max(0) as u64;
                self.latency.saturating_record(us);
            }
        } else {
            let n = *count;
            self.duplicates
                .add(|| format!("seq {seq} at {} (appearance {n})", at()));
        }
        let want_account = u64::from(expected.account);
        if account.is_some_and(|a| a != want_account) {
            self.key_mismatches.add(|| {
                format!(
                    "seq {seq} at {}: key {}, model {}",
                    at(),
                    String::from_utf8_lossy(key),
                    account_key(want_account)
                )
            });
        }
        let want = expected.update(seq, update.intended_us);
        if update != want {
            self.value_mismatches
                .add(|| format!("seq {seq} at {}: got {update:?}, model {want:?}", at()));
        }
    }

    /// `seq`s in [0, N) never seen, and the first few of them.
    fn missing(&self) -> (u64, Vec<u64>) {
        let mut first = Vec::new();
        let mut n = 0;
        for (seq, c) in self.seen.iter().enumerate() {
            if *c == 0 {
                n += 1;
                if first.len() < Tally::EXAMPLES {
                    first.push(seq as u64);
                }
            }
        }
        (n, first)
    }

    /// From the first record read to the last new `seq`.
    fn output_span(&self) -> Option<Duration> {
        Some(self.last_new? - self.first_record?)
    }
}

/// Reads the output from the start until every `seq` appeared (or no new one came for the
/// idle timeout), then for the settle time more.
pub async fn read_output(args: &CheckArgs, model: &Model) -> Result<OutputLog, BoxError> {
    let Some((consumer, partitions)) = reader(&args.bootstrap, &args.output).await? else {
        return Err(format!("the output topic {} does not exist", args.output).into());
    };
    let idle = Duration::from_secs_f64(args.idle_timeout);
    let settle = Duration::from_secs_f64(args.settle);
    let mut log = OutputLog::new(model, partitions, args.warmup_events);
    let result: Result<(), BoxError> = async {
        let mut last_progress = Instant::now();
        let mut settle_from: Option<Instant> = None;
        let mut next_report = Instant::now() + Duration::from_secs(10);
        loop {
            let now = Instant::now();
            if settle_from.is_none() {
                if log.distinct == model.events() {
                    log.complete = true;
                    settle_from = Some(now);
                } else if now - last_progress >= idle {
                    eprintln!(
                        "check: no new seq for {:.0} s, giving up on the {} missing",
                        idle.as_secs_f64(),
                        model.events() - log.distinct
                    );
                    settle_from = Some(now);
                }
            }
            if settle_from.is_some_and(|t| now - t >= settle) {
                return Ok(());
            }
            if settle_from.is_none() && now >= next_report {
                eprintln!(
                    "check: {} of {} seqs in the output after {:.0} s",
                    log.distinct,
                    model.events(),
                    log.started.elapsed().as_secs_f64()
                );
                next_report = now + Duration::from_secs(10);
            }
            let records = consumer.poll(Duration::from_millis(200)).await?;
            if records.is_empty() {
                continue;
            }
            let (seen_us, now) = (now_us(), Instant::now());
            let before = log.distinct;
            for r in &records {
                log.observe(model, r, seen_us, now);
            }
            if log.distinct > before {
                last_progress = now;
            }
        }
    }
    .await;
    consumer.close().await;
    result.map_err(|e| format!("reading the output {}: {e}", args.output))?;
    Ok(log)
}

/// What the changelog reader saw: the last value per account.
pub struct ChangelogLog {
    pub exists: bool,
    pub partitions: i32,
    pub records: u64,
    last: Vec<Option<i64>>,
    pub undecodable: Tally,
    pub unknown_keys: Tally,
    pub wrong_partitions: Tally,
    pub negative: Tally,
}

/// Reads the changelog from the start until the quiet time passes without a record.
pub async fn read_changelog(args: &CheckArgs, model: &Model) -> Result<ChangelogLog, BoxError> {
    let mut log = ChangelogLog {
        exists: false,
        partitions: 0,
        records: 0,
        last: vec![None; model.accounts() as usize],
        undecodable: Tally::default(),
        unknown_keys: Tally::default(),
        wrong_partitions: Tally::default(),
        negative: Tally::default(),
    };
    let Some((consumer, partitions)) = reader(&args.bootstrap, &args.changelog).await? else {
        return Ok(log);
    };
    log.exists = true;
    log.partitions = partitions;
    let quiet = Duration::from_secs_f64(args.changelog_quiet);
    let result: Result<(), BoxError> = async {
        let mut last_record = Instant::now();
        while last_record.elapsed() < quiet {
            let records = consumer.poll(Duration::from_millis(200)).await?;
            if !records.is_empty() {
                last_record = Instant::now();
            }
            for r in &records {
                log.records += 1;
                let at = || format!("{}@{}", r.partition, r.offset);
                let key = r.key.as_deref().unwrap_or_default();
                if r.partition != partition_of(key, partitions) {
                    log.wrong_partitions
                        .add(|| format!("{} at {}", String::from_utf8_lossy(key), at()));
                }
                let Some(a) = parse_account_key(key).filter(|a| *a < model.accounts()) else {
                    log.unknown_keys
                        .add(|| format!("{:?} at {}", String::from_utf8_lossy(key), at()));
                    continue;
                };
                // A tombstone: the account is absent (0) again.
                let Some(value) = r.value.as_deref() else {
                    log.last[a as usize] = None;
                    continue;
                };
                match decode_balance(value) {
                    Ok(b) => {
                        if b < 0 {
                            log.negative
                                .add(|| format!("{} at {}: {b}", account_key(a), at()));
                        }
                        log.last[a as usize] = Some(b);
                    }
                    Err(e) => log.undecodable.add(|| format!("{}: {e}", at())),
                }
            }
        }
        Ok(())
    }
    .await;
    consumer.close().await;
    result.map_err(|e| format!("reading the changelog {}: {e}", args.changelog))?;
    Ok(log)
}

/// One oracle's verdict and counts.
#[derive(Debug, Clone)]
pub struct Oracle {
    pub name: char,
    pub ok: bool,
    pub counts: Vec<(&'static str, u64)>,
    pub examples: Vec<String>,
}

impl Oracle {
    /// Problems quoted under a failed oracle, at most.
    const EXAMPLES: usize = 8;

    fn new(name: char, counts: Vec<(&'static str, u64)>, tallies: &[&Tally]) -> Oracle {
        // The first two of each kind, then the rest, up to the limit.
        let mut examples: Vec<String> = Vec::new();
        for (skip, take) in [(0, 2), (2, Tally::EXAMPLES)] {
            for t in tallies {
                for e in t.examples.iter().skip(skip).take(take) {
                    if examples.len() < Self::EXAMPLES {
                        examples.push(e.clone());
                    }
                }
            }
        }
        Oracle {
            name,
            ok: true,
            counts,
            examples,
        }
    }

    /// `oracle a: ok accounts=10000 changelog_mismatches=0 ...`
    pub fn line(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "oracle {}: {} {}",
            self.name,
            if self.ok { "ok" } else { "FAILED" },
            counts.join(" ")
        )
    }
}

/// The latency of measured events, in µs.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub n: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The check's result.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub events: u64,
    pub outputs: u64,
    pub distinct: u64,
    pub oracles: Vec<Oracle>,
    pub latency: Option<Latency>,
    pub notes: Vec<String>,
    /// Distinct `seq`s per second, from the first output record read to the last new `seq`:
    /// the processor's output rate when the check reads alongside the load, only the reading
    /// speed when it reads a finished run.
    pub output_rate: Option<f64>,
    pub took: Duration,
}

impl CheckReport {
    /// Whether every oracle holds.
    pub fn ok(&self) -> bool {
        self.oracles.iter().all(|o| o.ok)
    }

    /// The oracle lines (with the first few problems under a failed one).
    pub fn oracle_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.oracles {
            out.push(o.line());
            if !o.ok {
                out.extend(o.examples.iter().map(|e| format!("    e.g. {e}")));
            }
        }
        out
    }

    pub fn latency_line(&self) -> String {
        let ms = |us: u64| us as f64 / 1e3;
        match self.latency {
            Some(l) => format!(
                "oracle c: measured events={} p50={:.1}ms p99={:.1}ms p99.9={:.1}ms max={:.1}ms",
                l.n,
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            ),
            None => "oracle c: no measured event was seen".to_string(),
        }
    }

    pub fn print(&self) {
        for n in &self.notes {
            println!("note: {n}");
        }
        println!(
            "output: {} records, {} of {} seqs{}",
            self.outputs,
            self.distinct,
            self.events,
            self.output_rate
                .map(|r| format!(", new seqs read at {r:.0}/s"))
                .unwrap_or_default()
        );
        for line in self.oracle_lines() {
            println!("{line}");
        }
        println!("{}", self.latency_line());
        let failed: Vec<String> = self
            .oracles
            .iter()
            .filter(|o| !o.ok)
            .map(|o| o.name.to_string())
            .collect();
        if failed.is_empty() {
            println!("check: ok in {:.1} s", self.took.as_secs_f64());
        } else {
            println!(
                "check: FAILED (oracle {}) in {:.1} s",
                failed.join(", "),
                self.took.as_secs_f64()
            );
        }
    }
}

/// The oracles over what was read.
pub fn evaluate(
    model: &Model,
    input: Option<InputInfo>,
    output: &OutputLog,
    changelog: &ChangelogLog,
    took: Duration,
) -> CheckReport {
    let mut notes = Vec::new();
    match input {
        None => notes.push("the input topic does not exist".to_string()),
        Some(i) => {
            if i.partitions != output.partitions {
                notes.push(format!(
                    "the input has {} partitions, the output {}",
                    i.partitions, output.partitions
                ));
            }
            if i.offsets != model.events() as i64 {
                notes.push(format!(
                    "the input holds {} offsets, not N = {}",
                    i.offsets,
                    model.events()
                ));
            }
        }
    }
    if !changelog.exists {
        notes.push("the changelog topic does not exist".to_string());
    } else if changelog.partitions != output.partitions {
        notes.push(format!(
            "the changelog has {} partitions, the output {}",
            changelog.partitions, output.partitions
        ));
    }
    if !output.complete {
        notes.push("the output reader gave up after the idle timeout".to_string());
    }

    // (a) Final balances.
    let mut changelog_mismatch = Tally::default();
    let mut output_mismatch = Tally::default();
    for (a, want) in model.finals().iter().enumerate() {
        let got = changelog.last[a].unwrap_or(0);
        if got != *want {
            changelog_mismatch
                .add(|| format!("{}: changelog {got}, model {want}", account_key(a as u64)));
        }
        let got = output.last_balance[a].unwrap_or(0);
        if got != *want {
            output_mismatch.add(|| {
                format!(
                    "{}: last output balance {got}, model {want}",
                    account_key(a as u64)
                )
            });
        }
    }
    let mut a = Oracle::new(
        'a',
        vec![
            ("accounts", model.accounts()),
            ("changelog_records", changelog.records),
            ("changelog_mismatches", changelog_mismatch.n),
            ("output_mismatches", output_mismatch.n),
            ("changelog_undecodable", changelog.undecodable.n),
            ("changelog_unknown_keys", changelog.unknown_keys.n),
            ("changelog_wrong_partitions", changelog.wrong_partitions.n),
        ],
        &[
            &changelog_mismatch,
            &output_mismatch,
            &changelog.undecodable,
            &changelog.unknown_keys,
            &changelog.wrong_partitions,
        ],
    );
    a.ok = changelog.exists && a.counts.iter().skip(2).all(|(_, n)| *n == 0);
    if !changelog.exists {
        a.examples
            .insert(0, "the changelog topic does not exist".to_string());
    }

    // (b) Exactly once, in order.
    let (missing, first_missing) = output.missing();
    let mut b = Oracle::new(
        'b',
        vec![
            ("records", output.records),
            ("missing", missing),
            ("duplicates", output.duplicates.n),
            ("order_violations", output.order_violations.n),
            ("value_mismatches", output.value_mismatches.n),
            ("key_mismatches", output.key_mismatches.n),
            ("undecodable", output.undecodable.n),
            ("unknown_seqs", output.unknown_seqs.n),
            ("wrong_partitions", output.wrong_partitions.n),
        ],
        &[
            &output.duplicates,
            &output.order_violations,
            &output.value_mismatches,
            &output.key_mismatches,
            &output.undecodable,
            &output.unknown_seqs,
            &output.wrong_partitions,
        ],
    );
    b.ok = b.counts.iter().skip(1).all(|(_, n)| *n == 0);
    if missing > 0 {
        let list: Vec<String> = first_missing.iter().map(u64::to_string).collect();
        b.examples.insert(
            0,
            format!(
                "missing seqs {}{}",
                list.join(", "),
                if missing > first_missing.len() as u64 {
                    ", ..."
                } else {
                    ""
                }
            ),
        );
    }

    // (g) No negative balance.
    let mut g = Oracle::new(
        'g',
        vec![
            ("negative_outputs", output.negative.n),
            ("negative_changelog", changelog.negative.n),
        ],
        &[&output.negative, &changelog.negative],
    );
    g.ok = g.counts.iter().all(|(_, n)| *n == 0);

    let h = &output.latency;
    let latency = (!h.is_empty()).then(|| Latency {
        n: h.len(),
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    });
    let output_rate = output
        .output_span()
        .filter(|d| !d.is_zero())
        .map(|d| output.distinct as f64 / d.as_secs_f64());
    CheckReport {
        events: model.events(),
        outputs: output.records,
        distinct: output.distinct,
        oracles: vec![a, b, g],
        latency,
        notes,
        output_rate,
        took,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_client::TimestampType;

    const P: i32 = 6;

    fn record(partition: i32, offset: i64, key: &str, value: &[u8]) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("out"),
            partition,
            offset,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Vec::new(),
            leader_epoch: None,
        }
    }

    /// The records a correct processor writes, in the order a reader may see them.
    fn correct_output(model: &Model) -> Vec<ConsumerRecord> {
        let mut next_offset = [0i64; P as usize];
        (0..model.events())
            .map(|seq| {
                let e = model.expected(seq).unwrap();
                let key = account_key(u64::from(e.account));
                let p = partition_of(key.as_bytes(), P);
                let o = next_offset[p as usize];
                next_offset[p as usize] += 1;
                record(p, o, &key, &e.update(seq, 1_000 + seq as i64).encode())
            })
            .collect()
    }

    fn changelog_of(model: &Model) -> ChangelogLog {
        ChangelogLog {
            exists: true,
            partitions: P,
            records: model.accounts(),
            last: model.finals().iter().map(|b| Some(*b)).collect(),
            undecodable: Tally::default(),
            unknown_keys: Tally::default(),
            wrong_partitions: Tally::default(),
            negative: Tally::default(),
        }
    }

    fn run(model: &Model, records: &[ConsumerRecord], changelog: &ChangelogLog) -> CheckReport {
        let mut log = OutputLog::new(model, P, 0);
        for r in records {
            log.observe(model, r, 2_000_000, Instant::now());
        }
        log.complete = log.distinct == model.events();
        let input = Some(InputInfo {
            partitions: P,
            offsets: model.events() as i64,
        });
        evaluate(model, input, &log, changelog, Duration::ZERO)
    }

    fn count(report: &CheckReport, oracle: char, name: &str) -> u64 {
        let o = report.oracles.iter().find(|o| o.name == oracle).unwrap();
        o.counts.iter().find(|(k, _)| *k == name).unwrap().1
    }

    #[test]
    fn a_correct_run_passes_every_oracle() {
        let model = Model::new(42, 3000, 50);
        let report = run(&model, &correct_output(&model), &changelog_of(&model));
        assert!(report.ok(), "{:#?}", report.oracle_lines());
        assert_eq!(report.distinct, 3000);
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        // Seen at 2 s, intended at 1000 + seq µs.
        let l = report.latency.unwrap();
        assert_eq!(l.n, 3000);
        assert!((1_990_000..=2_000_000).contains(&l.max), "{l:?}");
    }

    #[test]
    fn nothing_read_is_every_seq_missing() {
        let model = Model::new(42, 100, 10);
        let empty = ChangelogLog {
            exists: false,
            last: vec![None; 10],
            records: 0,
            ..changelog_of(&model)
        };
        let report = run(&model, &[], &empty);
        assert!(!report.ok());
        assert_eq!(count(&report, 'b', "missing"), 100);
        assert!(!report.oracles[0].ok, "no changelog: (a) fails");
        assert!(report.oracles[2].ok, "nothing negative");
        assert!(report.latency.is_none());
    }

    #[test]
    fn duplicates_reorders_and_bad_values_are_counted() {
        let model = Model::new(42, 2000, 20);
        let mut records = correct_output(&model);
        // A replay of seq 5 later in its partition: a duplicate and an order violation.
        let mut dup = records[5].clone();
        dup.offset = 1_000_000;
        records.push(dup);
        // seq 10 lost; seq 11's value altered (balance + 1).
        let lost = records.remove(10);
        let mut bad = BalanceUpdate::decode(records[10].value.as_deref().unwrap()).unwrap();
        assert_eq!(bad.seq, 11);
        bad.balance += 1;
        records[10].value = Some(Bytes::copy_from_slice(&bad.encode()));
        // seq 12 on a wrong partition.
        records[11].partition = (records[11].partition + 1) % P;
        // A 24-byte value in the output (on its key's partition).
        let p = partition_of(b"acct-00000", P);
        records.push(record(p, 2_000_000, "acct-00000", &[0; 24]));
        let report = run(&model, &records, &changelog_of(&model));
        assert!(!report.ok());
        assert_eq!(count(&report, 'b', "missing"), 1);
        assert_eq!(count(&report, 'b', "duplicates"), 1);
        assert!(count(&report, 'b', "order_violations") >= 1);
        assert_eq!(
            count(&report, 'b', "value_mismatches"),
            1,
            "{:#?}",
            report.oracle_lines()
        );
        assert_eq!(count(&report, 'b', "wrong_partitions"), 1);
        assert_eq!(count(&report, 'b', "undecodable"), 1);
        let examples = report.oracle_lines().join("\n");
        assert!(examples.contains("missing seqs 10"), "{examples}");
        let _ = lost;
    }

    #[test]
    fn final_balances_and_negatives() {
        let model = Model::new(42, 500, 5);
        let mut changelog = changelog_of(&model);
        let want = model.finals()[3];
        changelog.last[3] = Some(want + 7);
        let mut records = correct_output(&model);
        // The last record of some account, with a negative balance.
        let last = records.pop().unwrap();
        let mut u = BalanceUpdate::decode(last.value.as_deref().unwrap()).unwrap();
        u.balance = -1;
        records.push(record(
            last.partition,
            last.offset,
            "acct-00000",
            &u.encode(),
        ));
        let report = run(&model, &records, &changelog);
        assert_eq!(count(&report, 'a', "changelog_mismatches"), 1);
        assert_eq!(count(&report, 'g', "negative_outputs"), 1);
        assert!(!report.oracles[0].ok && !report.oracles[2].ok);
    }
}
