//! `kbench`: broker workloads (produce, consume, end-to-end) for our client and its peers, each
//! client in its own child process, measured in the same run against the same broker.
//!
//! ```text
//! kbench produce|consume|e2e [--client ours] [--records N --size S --partitions P ...]
//! kbench compare --workload produce-1k|produce-100b|consume|consume-group|e2e [--runs N] ...
//! kbench peers                      build every peer and say which are available
//! kbench streams [--clients ours,gkes,kafka-streams] [--failover | --max-rate] ...
//! kbench streams-restore             restore rate of a fresh event source (MemStore)
//! ```
//! Without `--bootstrap HOST:PORT` a one-broker Apache Kafka is started on loopback (testkit,
//! JVM throughput profile) and stopped at the end. See docs/benchmarks.md.
#![forbid(unsafe_code)]

mod bank;
mod cpu;
mod ours;
mod report;
mod restore;
mod runner;
mod spec;
mod streams;
mod target;
mod txn;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;

use runner::{ClientKind, Launcher, Paths, RunRecord};
use spec::{Mode, WorkerSpec, Workload};
use target::Target;

#[derive(Parser)]
#[command(
    name = "kbench",
    about = "Kafka client benchmarks: our client and its peers against one broker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Broker to use (`HOST:PORT`); default: start an embedded one-broker Kafka on loopback.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Write machine-readable results to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce N records (one client).
    Produce(Single),
    /// Read a prepared backlog from the start: direct assignment, or with `--group` in a fresh
    /// consumer group (one client).
    Consume(Single),
    /// Produce at a fixed rate and consume; end-to-end latency (one client).
    E2e(Single),
    /// Every available client, alternating runs, with a table, JSON and SVG plots.
    Compare(Compare),
    /// Consume-transform-produce (our client): transactions at several commit intervals
    /// against the same loop at least once; throughput, end-to-end and commit latency.
    Txn(TxnArgs),
    /// BANK.md's bank workload for streams implementations (ours and its variants, GKES,
    /// Kafka Streams), each as processor processes: e2e latency, throughput, CPU, the oracles;
    /// `--failover` (kill -9 and restart of one of two instances) and `--max-rate` modes.
    Streams(streams::StreamsArgs),
    /// Restore rate of a fresh streams event source from a filled changelog (MemStore).
    StreamsRestore(restore::RestoreArgs),
    /// Build every peer and report which are available.
    Peers {
        #[arg(long)]
        quiet: bool,
    },
    /// Internal: our client's worker (`--name value` pairs, see spec.rs).
    #[command(hide = true)]
    Worker {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct Single {
    /// Which client runs the workload.
    #[arg(long, value_enum, default_value = "ours")]
    client: ClientKind,
    #[command(flatten)]
    workload: Workload,
    #[command(flatten)]
    common: Common,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Preset {
    /// 1 KiB records, unlimited rate.
    #[value(name = "produce-1k")]
    Produce1k,
    /// 100 byte records, unlimited rate.
    #[value(name = "produce-100b")]
    Produce100b,
    /// Read a 1 KiB-record backlog (direct assignment).
    Consume,
    /// Read the same backlog through a fresh consumer group (subscribe, earliest, no
    /// commits); the join is inside the measured time.
    #[value(name = "consume-group")]
    ConsumeGroup,
    /// 1 KiB records at a fixed rate, produce and consume in one process.
    E2e,
}

impl Preset {
    fn name(self) -> &'static str {
        match self {
            Preset::Produce1k => "produce-1k",
            Preset::Produce100b => "produce-100b",
            Preset::Consume => "consume",
            Preset::ConsumeGroup => "consume-group",
            Preset::E2e => "e2e",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Preset::Produce1k | Preset::Produce100b => Mode::Produce,
            Preset::Consume | Preset::ConsumeGroup => Mode::Consume,
            Preset::E2e => Mode::E2e,
        }
    }

    fn workload(self) -> Workload {
        let base = Workload::default();
        match self {
            Preset::Produce1k => Workload {
                records: 300_000,
                ..base
            },
            Preset::Produce100b => Workload {
                records: 1_000_000,
                size: 100,
                ..base
            },
            Preset::Consume => Workload {
                records: 300_000,
                ..base
            },
            Preset::ConsumeGroup => Workload {
                records: 300_000,
                group: true,
                ..base
            },
            Preset::E2e => Workload {
                records: 40_000,
                rate: 2_000,
                ..base
            },
        }
    }
}

#[derive(clap::Args)]
struct TxnArgs {
    /// Input records per run.
    #[arg(long, default_value_t = 30_000)]
    records: u64,
    /// Input rate, records/s.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Value size in bytes (at least 16: the stamp).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Commit intervals in ms (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 10, 100])]
    intervals: Vec<u64>,
    /// Rounds; each runs every interval, exactly once then at least once.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Copier clients (comma-separated), alternating within each interval and mode.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![ClientKind::Ours])]
    clients: Vec<ClientKind>,
    #[command(flatten)]
    common: Common,
}

#[derive(Serialize)]
struct TxnReport<'a> {
    target: &'a str,
    workload: &'a txn::TxnWorkload,
    runs: &'a [txn::TxnRun],
}

async fn txn_bench(a: TxnArgs) -> Result<()> {
    if a.rate == 0 || a.records == 0 || a.partitions <= 0 || a.intervals.contains(&0) {
        bail!("--rate, --records, --partitions and every interval must be positive");
    }
    let w = txn::TxnWorkload {
        records: a.records,
        rate: a.rate,
        size: a.size.max(16),
        partitions: a.partitions,
    };
    let paths = Paths::detect();
    let mut launchers = Vec::new();
    for kind in &a.clients {
        if launchers.iter().any(|l: &Launcher| l.kind == *kind) {
            continue;
        }
        launchers.push(
            runner::prepare(*kind, &paths, a.common.quiet)
                .await
                .with_context(|| format!("{} is unavailable", kind.name()))?,
        );
    }
    let target = connect(&a.common, a.common.quiet).await?;
    let mut runs = Vec::new();
    for round in 0..a.runs.max(1) {
        for &ms in &a.intervals {
            for exactly_once in [true, false] {
                for launcher in &launchers {
                    let name = launcher.kind.name();
                    let tag = unique(&format!(
                        "txn-{name}-{round}-{ms}-{}",
                        u8::from(exactly_once)
                    ));
                    let mode = if exactly_once {
                        "exactly-once"
                    } else {
                        "at-least-once"
                    };
                    if !a.common.quiet {
                        eprintln!("kbench: txn {name} {mode} at {ms} ms...");
                    }
                    let r = txn::run(
                        launcher,
                        &target.bootstrap,
                        &w,
                        exactly_once,
                        std::time::Duration::from_millis(ms),
                        &tag,
                    )
                    .await
                    .with_context(|| format!("txn run of {name} {mode} at {ms} ms"))?;
                    runs.push(r);
                }
            }
        }
    }
    txn::print_table(&w, &runs);
    if let Some(path) = &a.common.json {
        write_json(
            path,
            &TxnReport {
                target: &target.bootstrap,
                workload: &w,
                runs: &runs,
            },
        )?;
    }
    Ok(())
}

#[derive(clap::Args)]
struct Compare {
    #[arg(long, value_enum)]
    workload: Preset,
    /// Rounds; each round runs every client once, in the same order (A B C A B C ...).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Clients to include (comma-separated); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    clients: Option<Vec<ClientKind>>,
    /// Override the preset's record count.
    #[arg(long)]
    records: Option<u64>,
    /// Override the preset's value size.
    #[arg(long)]
    size: Option<usize>,
    /// Override the preset's rate (records/s, 0 = unlimited).
    #[arg(long)]
    rate: Option<u64>,
    /// Override the preset's partition count.
    #[arg(long)]
    partitions: Option<i32>,
    /// Folder for the JSON and the SVG plots.
    #[arg(long, default_value = "kbench-results")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// Worker logs: the client's `tracing` events on stderr when `KBENCH_LOG` is set.
fn init_worker_logging() {
    if let Some(filter) = std::env::var("KBENCH_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
    {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kbench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async move {
        match cli.cmd {
            Cmd::Worker { args } => {
                init_worker_logging();
                worker_main(args).await
            }
            Cmd::Produce(s) => single(Mode::Produce, s).await,
            Cmd::Consume(s) => single(Mode::Consume, s).await,
            Cmd::E2e(s) => single(Mode::E2e, s).await,
            Cmd::Compare(c) => compare(c).await,
            Cmd::Txn(a) => {
                init_worker_logging();
                txn_bench(a).await
            }
            Cmd::Streams(a) => {
                init_worker_logging();
                streams::run(a).await
            }
            Cmd::StreamsRestore(a) => {
                init_worker_logging();
                restore::run(a).await
            }
            Cmd::Peers { quiet } => peers(quiet).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kbench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn worker_main(args: Vec<String>) -> Result<()> {
    if txn::TxnWorkerArgs::is_txn(&args) {
        return txn::worker_main(&args).await;
    }
    let spec = WorkerSpec::parse(&args).map_err(anyhow::Error::msg)?;
    let result = ours::run(spec).await?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

async fn connect(common: &Common, quiet: bool) -> Result<Target> {
    match &common.bootstrap {
        Some(b) => Ok(Target::external(b.clone()).await),
        None => {
            if !quiet {
                eprintln!("kbench: starting an embedded Kafka broker (JVM throughput profile)...");
            }
            Target::embedded().await
        }
    }
}

fn unique(tag: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("kbench-{tag}-{}-{t}", std::process::id())
}

fn write_json<T: Serialize>(path: &PathBuf, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// One unmeasured group read of a single record, so that the broker creates
/// `__consumer_offsets` (the first group on a fresh broker waits for it) before any measured
/// run: otherwise the first client of a group workload would pay for it alone.
async fn warm_up_groups(
    launcher: &Launcher,
    workload: &Workload,
    bootstrap: &str,
    topic: &str,
    quiet: bool,
) -> Result<()> {
    let probe = Workload {
        records: 1,
        ..workload.clone()
    };
    runner::run_worker(launcher, &probe, Mode::Consume, bootstrap, topic, 0, quiet)
        .await
        .with_context(|| format!("group warm-up with {}", launcher.kind.name()))?;
    if !quiet {
        eprintln!("kbench: group coordinator ready");
    }
    Ok(())
}

#[derive(Serialize)]
struct SingleReport<'a> {
    target: &'a str,
    mode: Mode,
    workload: &'a Workload,
    runs: &'a [RunRecord],
}

fn print_run(r: &RunRecord) {
    println!(
        "{} {}: {} records, {:.0} records/s, {:.1} MB/s, {:.2} s, CPU {:.2} s ({:.2} s/GB)",
        r.client_version,
        r.mode,
        r.records,
        r.records_per_s,
        r.mb_per_s,
        r.elapsed_s,
        r.cpu_s,
        r.cpu_s_per_gb
    );
    if let Some(p) = &r.latency_ms {
        println!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            p.p50, p.p90, p.p99, p.p999, p.max
        );
    }
    let settings: Vec<String> = r.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("  settings: {}", settings.join(" "));
}

async fn single(mode: Mode, s: Single) -> Result<()> {
    let mut workload = s.workload;
    if mode == Mode::E2e && workload.rate == 0 {
        workload.rate = 2_000;
    }
    workload.validate(mode).map_err(anyhow::Error::msg)?;
    let quiet = s.common.quiet;
    let paths = Paths::detect();
    let launcher = runner::prepare(s.client, &paths, quiet)
        .await
        .with_context(|| format!("{} is unavailable", s.client.name()))?;
    let target = connect(&s.common, quiet).await?;
    let topic = unique(mode.as_str());
    target::create_topic(&target.bootstrap, &topic, workload.partitions).await?;
    let mut runs = Vec::new();
    if mode == Mode::Consume {
        let prep = Workload {
            rate: 0,
            group: false,
            ..workload.clone()
        };
        let r = runner::run_worker(
            &launcher,
            &prep,
            Mode::Produce,
            &target.bootstrap,
            &topic,
            0,
            quiet,
        )
        .await
        .context("preparing the backlog")?;
        if !quiet {
            eprintln!("kbench: backlog of {} records ready", r.records);
        }
        if workload.group {
            warm_up_groups(&launcher, &workload, &target.bootstrap, &topic, quiet).await?;
        }
    }
    let r = runner::run_worker(
        &launcher,
        &workload,
        mode,
        &target.bootstrap,
        &topic,
        1,
        quiet,
    )
    .await?;
    println!("target: {}", target.description);
    print_run(&r);
    runs.push(r);
    if let Some(path) = &s.common.json {
        write_json(
            path,
            &SingleReport {
                target: &target.description,
                mode,
                workload: &workload,
                runs: &runs,
            },
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Availability {
    client: ClientKind,
    available: bool,
    reason: Option<String>,
}

async fn prepare_all(
    kinds: &[ClientKind],
    paths: &Paths,
    quiet: bool,
) -> (Vec<Launcher>, Vec<Availability>) {
    let mut ok = Vec::new();
    let mut avail = Vec::new();
    for &k in kinds {
        match runner::prepare(k, paths, quiet).await {
            Ok(l) => {
                ok.push(l);
                avail.push(Availability {
                    client: k,
                    available: true,
                    reason: None,
                });
            }
            Err(e) => {
                eprintln!("kbench: {} unavailable: {e:#}", k.name());
                avail.push(Availability {
                    client: k,
                    available: false,
                    reason: Some(format!("{e:#}")),
                });
            }
        }
    }
    (ok, avail)
}

async fn peers(quiet: bool) -> Result<()> {
    let (_, avail) = prepare_all(&ClientKind::ALL, &Paths::detect(), quiet).await;
    for a in &avail {
        match &a.reason {
            None => println!("{:<9} available", a.client.name()),
            Some(r) => println!(
                "{:<9} UNAVAILABLE: {}",
                a.client.name(),
                r.lines().next().unwrap_or("")
            ),
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct CompareReport<'a> {
    workload_name: &'static str,
    mode: Mode,
    target: &'a str,
    workload: &'a Workload,
    rounds: usize,
    clients: &'a [Availability],
    failures: &'a [String],
    summaries: &'a [report::Summary],
    runs: &'a [RunRecord],
}

async fn compare(c: Compare) -> Result<()> {
    let quiet = c.common.quiet;
    let preset = c.workload;
    let mode = preset.mode();
    let mut workload = preset.workload();
    if let Some(n) = c.records {
        workload.records = n;
    }
    if let Some(n) = c.size {
        workload.size = n;
    }
    if let Some(n) = c.rate {
        workload.rate = n;
    }
    if let Some(n) = c.partitions {
        workload.partitions = n;
    }
    workload.validate(mode).map_err(anyhow::Error::msg)?;
    if c.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let kinds = c
        .clients
        .clone()
        .unwrap_or_else(|| ClientKind::ALL.to_vec());
    let paths = Paths::detect();
    let (launchers, avail) = prepare_all(&kinds, &paths, quiet).await;
    if launchers.is_empty() {
        bail!("no client is available");
    }
    let target = connect(&c.common, quiet).await?;

    // consume (direct or group): one shared backlog, written once by the first available
    // client (ours first); every group run reads it in a fresh group, so from offset 0.
    let backlog = if mode == Mode::Consume {
        let topic = unique("backlog");
        target::create_topic(&target.bootstrap, &topic, workload.partitions).await?;
        let prep = Workload {
            rate: 0,
            group: false,
            ..workload.clone()
        };
        let r = runner::run_worker(
            &launchers[0],
            &prep,
            Mode::Produce,
            &target.bootstrap,
            &topic,
            0,
            quiet,
        )
        .await
        .with_context(|| format!("preparing the backlog with {}", launchers[0].kind.name()))?;
        if !quiet {
            eprintln!(
                "kbench: backlog of {} records written by {}",
                r.records,
                launchers[0].kind.name()
            );
        }
        if workload.group {
            warm_up_groups(&launchers[0], &workload, &target.bootstrap, &topic, quiet).await?;
        }
        Some(topic)
    } else {
        None
    };

    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for round in 1..=c.runs {
        for l in &launchers {
            let topic = match &backlog {
                Some(t) => t.clone(),
                None => {
                    let t = unique(&format!("{}-{}-{round}", preset.name(), l.kind.name()));
                    target::create_topic(&target.bootstrap, &t, workload.partitions).await?;
                    t
                }
            };
            match runner::run_worker(l, &workload, mode, &target.bootstrap, &topic, round, quiet)
                .await
            {
                Ok(r) => {
                    if !quiet {
                        eprintln!(
                            "kbench: {} round {round}: {:.0} records/s, {:.1} MB/s, CPU {:.2} s",
                            l.kind.name(),
                            r.records_per_s,
                            r.mb_per_s,
                            r.cpu_s
                        );
                    }
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("kbench: {} round {round} FAILED: {e:#}", l.kind.name());
                    failures.push(format!("{} round {round}: {e:#}", l.kind.name()));
                }
            }
        }
    }

    let summaries = report::summarize(&runs, &kinds);
    println!(
        "workload {} ({mode}), target: {}",
        preset.name(),
        target.description
    );
    println!(
        "records {} x {} B, partitions {}, acks {}, linger.ms {}, batch.size {}, compression {}, idempotence {}, rate {}",
        workload.records,
        workload.size,
        workload.partitions,
        workload.acks,
        workload.linger_ms,
        workload.batch_size,
        workload.compression,
        workload.idempotence,
        if workload.rate == 0 { "unlimited".to_string() } else { format!("{}/s", workload.rate) }
    );
    if workload.group {
        println!(
            "consumer group: a fresh group.id per run, auto.offset.reset earliest, no commits; \
             the time includes the group join"
        );
    }
    println!("median (min-max) over {} rounds:", c.runs);
    print!("{}", report::table(&summaries));
    for s in &summaries {
        let settings: Vec<String> = s.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {} [{}]: {}",
            s.client.name(),
            s.client_version,
            settings.join(" ")
        );
    }
    for a in avail.iter().filter(|a| !a.available) {
        println!(
            "  {} unavailable: {}",
            a.client.name(),
            a.reason
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    for f in &failures {
        // The first line says who failed; the worker's own reason is its last stderr line
        // (skipping the frames of a Java stack trace).
        let mut lines = f.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or("");
        let reason = lines.rfind(|l| !l.starts_with("at ") && !l.starts_with("..."));
        match reason {
            Some(reason) => println!("  failed: {first} {reason}"),
            None => println!("  failed: {first}"),
        }
    }

    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let json = c
        .common
        .json
        .clone()
        .unwrap_or_else(|| c.out.join(format!("{}.json", preset.name())));
    write_json(
        &json,
        &CompareReport {
            workload_name: preset.name(),
            mode,
            target: &target.description,
            workload: &workload,
            rounds: c.runs,
            clients: &avail,
            failures: &failures,
            summaries: &summaries,
            runs: &runs,
        },
    )?;
    let tp = c.out.join(format!("{}-throughput.svg", preset.name()));
    std::fs::write(
        &tp,
        report::throughput_svg(&format!("{}: throughput", preset.name()), &summaries),
    )?;
    println!("wrote {} and {}", json.display(), tp.display());
    if let Some(svg) = report::latency_svg(&format!("{}: latency", preset.name()), &summaries) {
        let lp = c.out.join(format!("{}-latency.svg", preset.name()));
        std::fs::write(&lp, svg)?;
        println!("wrote {}", lp.display());
    }
    if !failures.is_empty() {
        bail!("{} run(s) failed", failures.len());
    }
    Ok(())
}
