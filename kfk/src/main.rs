//! `kfk`: a command-line tool for Kafka, built on `kafka-client`.
//!
//! ```text
//! kfk -b 127.0.0.1:9092 metadata
//! kfk -b ... topic create events --partitions 12 --rf 1
//! seq 1 1000 | kfk -b ... produce events --compression zstd
//! kfk -b ... consume events --from-beginning --count 1000 --format '%p %o %k %v'
//! kfk -b ... consume events --group readers --from earliest --idle-exit 5
//! kfk -b ... offsets events --records
//! kfk -b ... group list
//! kfk -b ... group describe my-group
//! kfk -b ... group offsets my-group
//! kfk -b ... copy events events-copy --group copiers --transactional
//! ```
//!
//! Exit codes: 0 success, 1 failure (a broker or connection error, a record not acknowledged),
//! 2 bad usage (from the argument parser), 130 / 143 after SIGINT / SIGTERM (`produce`,
//! `consume` and `copy` finish gracefully on the first: see [`signals`]). Security and tuning
//! settings are Java-style properties given with `-X key=value` or `--config-file`.
#![forbid(unsafe_code)]

mod format;
mod signals;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use kafka_client::admin::{Admin, ConfigResource, NewTopic};
use kafka_client::config::{
    ClientConfig, ConfigError, ConsumerConfig, IsolationLevel, ProducerConfig,
};
use kafka_client::consumer::{Consumer, RebalanceHooks};
use kafka_client::group::BoxFuture;
use kafka_client::offsets::list_offsets;
use kafka_client::producer::{DeliveryFuture, Producer, ProducerRecord};
use kafka_client::transact::TransactSession;
use kafka_client::{Client, Offset, TopicPartition};
use tokio::io::AsyncBufReadExt;

#[derive(Parser, Debug)]
#[command(name = "kfk", version, about = "A command-line tool for Kafka")]
struct Cli {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(short = 'b', long, env = "KAFKA_BOOTSTRAP", global = true)]
    bootstrap: Option<String>,
    /// A client property, Java style (`security.protocol=SASL_SSL`, `linger.ms=10`, ...).
    /// Repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    props: Vec<String>,
    /// A properties file (`key=value` lines), applied before `-X`.
    #[arg(long, value_name = "FILE", global = true)]
    config_file: Option<PathBuf>,
    /// Log the client's events at this level (error, warn, info, debug, trace) on stderr.
    /// `KFK_LOG` takes a full filter instead.
    #[arg(long, default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Brokers, controller and topics of the cluster.
    Metadata,
    /// Create, delete or describe a topic.
    Topic {
        #[command(subcommand)]
        cmd: TopicCmd,
    },
    /// Produce one record per line of standard input.
    Produce(ProduceArgs),
    /// Print records of a topic, one per line.
    Consume(ConsumeArgs),
    /// Earliest and latest offsets of each partition of a topic, and how many offsets lie
    /// between them. Offsets are not records: transaction markers take an offset each, and
    /// compaction leaves gaps; `--records` counts the records.
    Offsets {
        /// Topic name.
        topic: String,
        /// Also read every partition from its earliest to its latest offset and count the data
        /// records: `records` (read_uncommitted: every record, including those of aborted and
        /// open transactions), `committed` (what a read_committed consumer sees) and
        /// `non-record` (offsets without a data record: transaction markers, compacted-away
        /// records). Reads the whole topic twice.
        #[arg(long)]
        records: bool,
    },
    /// List consumer groups, describe one, or show its committed offsets and lag.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Copy a topic to another as a member of a consumer group; with --transactional, exactly
    /// once (outputs and input offsets commit together).
    Copy(CopyArgs),
}

#[derive(clap::Args, Debug)]
struct CopyArgs {
    /// Source topic.
    src: String,
    /// Destination topic. A record goes to the partition it came from when both topics have
    /// the same number of partitions, else it is partitioned by key.
    dst: String,
    /// The consumer group the copiers share (several copiers split the partitions).
    #[arg(long)]
    group: String,
    /// Exactly once: the copied records and the input offsets are committed in one
    /// transaction; the input is read with read_committed. Without it: at least once (the
    /// offsets are committed after the copies are acknowledged).
    #[arg(long)]
    transactional: bool,
    /// The transactional id (default: the group name plus a random suffix; KIP-447 fences
    /// zombies through the group generation, so it need not be stable).
    #[arg(long, requires = "transactional")]
    transactional_id: Option<String>,
    /// Commit (end the transaction) this often, in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS")]
    commit_interval: u64,
    /// Where partitions without a committed offset start: `earliest` (the default),
    /// `latest`, or a time in milliseconds since the epoch (the first record at or after it).
    #[arg(long, value_name = "earliest|latest|MS", value_parser = parse_start,
          conflicts_with = "from_beginning")]
    from: Option<StartAt>,
    /// Alias of `--from earliest`.
    #[arg(long, hide = true)]
    from_beginning: bool,
    /// Exit after this many seconds without an input record.
    #[arg(long, value_name = "SECS")]
    idle_exit: Option<f64>,
}

/// Where a partition starts when nothing else says (`--from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartAt {
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the epoch); the end if none.
    Timestamp(i64),
}

impl StartAt {
    /// `--from` if given, else `--from-beginning`, else `default`.
    fn pick(from: Option<StartAt>, from_beginning: bool, default: StartAt) -> StartAt {
        match (from, from_beginning) {
            (Some(s), _) => s,
            (None, true) => StartAt::Earliest,
            (None, false) => default,
        }
    }

    fn offset(self) -> Offset {
        match self {
            StartAt::Earliest => Offset::Earliest,
            StartAt::Latest => Offset::Latest,
            StartAt::Timestamp(ts) => Offset::Timestamp(ts),
        }
    }

    /// The `auto.offset.reset` of a group member starting here. A timestamp is sought by
    /// [`GroupHooks::on_assigned`]; earliest is the fallback when that lookup fails (reading
    /// more, never skipping).
    fn auto_offset_reset(self) -> &'static str {
        match self {
            StartAt::Latest => "latest",
            StartAt::Earliest | StartAt::Timestamp(_) => "earliest",
        }
    }
}

fn parse_start(s: &str) -> Result<StartAt, String> {
    match s {
        "earliest" | "beginning" => Ok(StartAt::Earliest),
        "latest" | "end" => Ok(StartAt::Latest),
        _ => match s.parse::<i64>() {
            Ok(ts) if ts >= 0 => Ok(StartAt::Timestamp(ts)),
            _ => Err(format!(
                "expected earliest, latest or a time in milliseconds since the epoch, got {s:?}"
            )),
        },
    }
}

#[derive(Subcommand, Debug)]
enum GroupCmd {
    /// Every group the brokers know: id, type, state, protocol type.
    List,
    /// State, protocol and members (with their assigned partitions) of a group.
    Describe {
        /// Group id.
        group: String,
    },
    /// Committed offset, log end offset and lag of each partition the group committed.
    Offsets {
        /// Group id.
        group: String,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCmd {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        rf: i16,
        /// A topic configuration, `key=value`. Repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Succeed if the topic exists already.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Delete a topic.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Partitions, leaders, replicas, ISR and non-default configs of a topic.
    Describe {
        /// Topic name.
        name: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AcksArg {
    #[value(name = "all")]
    All,
    #[value(name = "-1")]
    MinusOne,
    #[value(name = "1")]
    One,
    #[value(name = "0")]
    Zero,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Isolation {
    #[value(name = "read_committed")]
    ReadCommitted,
    #[value(name = "read_uncommitted")]
    ReadUncommitted,
}

#[derive(clap::Args, Debug)]
struct ProduceArgs {
    /// Topic name.
    topic: String,
    /// Each line is `KEY<TAB>VALUE`.
    #[arg(long)]
    keyed: bool,
    /// Compression codec.
    #[arg(long, value_enum, default_value = "none")]
    compression: Compression,
    /// Acknowledgements: all (-1), 1 or 0. Idempotence (the default) needs `all`; other values
    /// turn it off.
    #[arg(long, value_enum, default_value = "all", allow_hyphen_values = true)]
    acks: AcksArg,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long)]
    partition: Option<i32>,
}

#[derive(clap::Args, Debug)]
struct ConsumeArgs {
    /// Topic name.
    topic: String,
    /// Where to start: `earliest`, `latest` (the default: only new records) or a time in
    /// milliseconds since the epoch (the first record at or after it). With `--group`: where
    /// partitions without a committed offset start.
    #[arg(long, value_name = "earliest|latest|MS", value_parser = parse_start,
          conflicts_with = "from_beginning")]
    from: Option<StartAt>,
    /// Alias of `--from earliest`.
    #[arg(long)]
    from_beginning: bool,
    /// Isolation level.
    #[arg(long, value_enum, default_value = "read_uncommitted")]
    isolation: Isolation,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Exit after this many seconds without a record.
    #[arg(long, value_name = "SECS")]
    idle_exit: Option<f64>,
    /// Only this partition.
    #[arg(long, conflicts_with = "group")]
    partition: Option<i32>,
    /// Consume as a member of this consumer group: partitions are shared with the group's other
    /// members, reading starts at the group's committed offsets (at `--from` for partitions
    /// without one), and the offsets of the records printed are committed as they are printed,
    /// at a rebalance and at exit (also after SIGINT / SIGTERM).
    #[arg(long)]
    group: Option<String>,
    /// Output format: %t topic, %p partition, %o offset, %T timestamp (ms), %k key, %v value,
    /// %h headers (k=v,...), %% a percent sign; \t \n \\ escapes.
    #[arg(long, default_value = "%v")]
    format: String,
}

/// An error for the user: what failed, and the client error behind it.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type CliResult<T = ()> = Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kfk: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (result, stop) = runtime.block_on(run(cli));
    // Do not wait for the blocking thread that may still be reading standard input.
    runtime.shutdown_background();
    if let Err(Failure(msg)) = &result {
        eprintln!("kfk: {msg}");
    }
    match (stop.requested(), result) {
        (Some(code), _) => ExitCode::from(code),
        (None, Ok(())) => ExitCode::SUCCESS,
        (None, Err(_)) => ExitCode::FAILURE,
    }
}

/// Whether log lines on stderr may use ANSI colours: only on a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
fn use_ansi(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("KFK_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Runs the command; also returns the stop that a signal may have triggered (its exit code
/// wins over the result's).
async fn run(cli: Cli) -> (CliResult, signals::Stop) {
    let long_running = matches!(cli.cmd, Cmd::Produce(_) | Cmd::Consume(_) | Cmd::Copy(_));
    let stop = if long_running {
        match signals::Stop::on_signals() {
            Ok(s) => s,
            Err(e) => {
                let e = Failure(format!("cannot install the signal handlers: {e}"));
                return (Err(e), signals::Stop::never());
            }
        }
    } else {
        signals::Stop::never()
    };
    let result = dispatch(cli, &stop).await;
    (result, stop)
}

async fn dispatch(cli: Cli, stop: &signals::Stop) -> CliResult {
    let props = properties(&cli)?;
    match cli.cmd {
        Cmd::Metadata => metadata(client_config(&props)?).await,
        Cmd::Topic { cmd } => topic(client_config(&props)?, cmd).await,
        Cmd::Produce(args) => produce(&props, args, stop).await,
        Cmd::Consume(args) => consume(&props, args, stop).await,
        Cmd::Offsets { topic, records } => offsets(&props, &topic, records).await,
        Cmd::Group { cmd } => group(client_config(&props)?, cmd).await,
        Cmd::Copy(args) => copy(&props, args, stop).await,
    }
}

/// The properties from the command line: bootstrap, then the file, then `-X`.
fn properties(cli: &Cli) -> CliResult<Vec<(String, String)>> {
    let mut props = Vec::new();
    if let Some(path) = &cli.config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))?;
        let parsed = kafka_client::config::parse_properties(&text)
            .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
        props.extend(parsed);
    }
    for p in &cli.props {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Failure(format!("-X {p}: expected KEY=VALUE")));
        };
        props.push((k.trim().to_string(), v.trim().to_string()));
    }
    match &cli.bootstrap {
        Some(b) => props.push(("bootstrap.servers".into(), b.clone())),
        None if props.iter().any(|(k, _)| k == "bootstrap.servers") => {}
        None => {
            return Err(Failure(
                "no bootstrap servers: pass -b HOST:PORT (or set KAFKA_BOOTSTRAP)".into(),
            ))
        }
    }
    Ok(props)
}

/// Applies `props` to a config; keys that belong to the other kinds of config (a producer key
/// given to `kfk consume`) are ignored, unknown keys are an error.
fn build<C: Default>(
    props: &[(String, String)],
    apply: impl Fn(&mut C, &str, &str) -> Result<(), ConfigError>,
) -> CliResult<C> {
    let mut cfg = C::default();
    for (k, v) in props {
        match apply(&mut cfg, k, v) {
            Ok(()) => {}
            Err(ConfigError::UnknownKey { .. }) if known_elsewhere(k, v) => {}
            Err(e) => return Err(Failure(format!("configuration: {e}"))),
        }
    }
    Ok(cfg)
}

fn known_elsewhere(k: &str, v: &str) -> bool {
    let p = ProducerConfig::default().apply_property(k, v).is_ok();
    let c = ConsumerConfig::default().apply_property(k, v).is_ok();
    p || c
}

fn client_config(props: &[(String, String)]) -> CliResult<ClientConfig> {
    build(props, |c: &mut ClientConfig, k, v| c.apply_property(k, v))
}

async fn metadata(cfg: ClientConfig) -> CliResult {
    let client = Client::connect(cfg).await?;
    client.set_all_topics(true);
    let meta = client.refresh_metadata().await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "cluster {}  controller {}",
        meta.cluster_id.as_deref().unwrap_or("?"),
        meta.controller_id
    )?;
    writeln!(out, "brokers:")?;
    for b in meta.brokers.values() {
        let rack = b
            .rack
            .as_deref()
            .map(|r| format!("  rack {r}"))
            .unwrap_or_default();
        writeln!(out, "  {}  {}{rack}", b.id, b.addr())?;
    }
    let mut topics: Vec<_> = meta.topics.values().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    writeln!(out, "topics:")?;
    for t in topics {
        let err = t.error.map(|e| format!("  error {e}")).unwrap_or_default();
        let internal = if t.is_internal { "  (internal)" } else { "" };
        writeln!(
            out,
            "  {}  partitions {}{internal}{err}",
            t.name,
            t.partitions.len()
        )?;
    }
    client.close();
    Ok(())
}

async fn topic(cfg: ClientConfig, cmd: TopicCmd) -> CliResult {
    let admin = Admin::new(cfg).await?;
    let result = match cmd {
        TopicCmd::Create {
            name,
            partitions,
            rf,
            configs,
            if_not_exists,
        } => {
            let mut t = NewTopic::new(&name, partitions, rf);
            for c in configs {
                let Some((k, v)) = c.split_once('=') else {
                    return Err(Failure(format!("--config {c}: expected KEY=VALUE")));
                };
                t = t.config(k, v);
            }
            if if_not_exists {
                let created = admin.create_topic_if_absent(&t).await?;
                if created {
                    println!("created topic {name}");
                } else {
                    println!("topic {name} exists already");
                }
            } else {
                let c = admin.create_topic(&t).await?;
                println!(
                    "created topic {} with {} partitions, replication factor {}",
                    c.name, c.partitions, c.replication_factor
                );
            }
            Ok(())
        }
        TopicCmd::Delete { name } => {
            for (t, r) in admin.delete_topics(&[name.as_str()]).await? {
                r.map_err(|e| Failure(format!("cannot delete {t}: {e}")))?;
                println!("deleted topic {t}");
            }
            Ok(())
        }
        TopicCmd::Describe { name } => describe(&admin, &name).await,
    };
    admin.client().close();
    result
}

async fn describe(admin: &Admin, name: &str) -> CliResult {
    let topics = admin.describe_topics(&[name]).await?;
    let configs = admin
        .describe_configs(&ConfigResource::Topic(name.to_string()))
        .await?;
    let mut out = std::io::stdout().lock();
    for t in topics {
        writeln!(
            out,
            "topic {}  id {}  partitions {}",
            t.name,
            format::uuid(t.topic_id.0),
            t.partitions.len()
        )?;
        for p in &t.partitions {
            writeln!(
                out,
                "  partition {}  leader {}  epoch {}  replicas {:?}  isr {:?}",
                p.partition, p.leader, p.leader_epoch, p.replicas, p.isr
            )?;
        }
    }
    let set: Vec<_> = configs.iter().filter(|c| !c.is_default).collect();
    if !set.is_empty() {
        writeln!(out, "configs:")?;
        for c in set {
            let v = if c.is_sensitive {
                "(sensitive)".to_string()
            } else {
                c.value.clone().unwrap_or_else(|| "(null)".into())
            };
            writeln!(out, "  {}={v}", c.name)?;
        }
    }
    Ok(())
}

async fn produce(props: &[(String, String)], args: ProduceArgs, stop: &signals::Stop) -> CliResult {
    let mut props = props.to_vec();
    let codec = match args.compression {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    };
    props.push(("compression.type".into(), codec.into()));
    let acks = match args.acks {
        AcksArg::All | AcksArg::MinusOne => "all",
        AcksArg::One => "1",
        AcksArg::Zero => "0",
    };
    props.push(("acks".into(), acks.into()));
    if acks != "all" && !props.iter().any(|(k, _)| k == "enable.idempotence") {
        props.push(("enable.idempotence".into(), "false".into()));
    }
    let cfg = build(&props, |c: &mut ProducerConfig, k, v| {
        c.apply_property(k, v)
    })?;
    let producer = Producer::new(cfg).await?;
    // Make an unknown topic fail before reading any input.
    producer.client().topic(&args.topic).await?;

    // Delivery futures are awaited by a collector in send order, so a slow broker applies
    // back-pressure through the producer's buffer, not through this channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, DeliveryFuture)>(100_000);
    let collector = tokio::spawn(async move {
        let (mut ok, mut failed, mut shown) = (0u64, 0u64, 0u32);
        while let Some((line, fut)) = rx.recv().await {
            match fut.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    if shown < 10 {
                        eprintln!("kfk: record from line {line} not acknowledged: {e}");
                        shown += 1;
                    }
                }
            }
        }
        (ok, failed)
    });

    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut lines = stdin.split(b'\n');
    let mut n = 0u64;
    let mut input_error = None;
    loop {
        // A signal stops the reading; what was read is still sent and flushed below.
        let line = tokio::select! {
            biased;
            _ = stop.wait() => break,
            line = lines.next_segment() => match line? {
                Some(line) => line,
                None => break,
            },
        };
        n += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(&line).to_vec();
        let mut record = ProducerRecord::new(args.topic.clone());
        if args.keyed {
            let Some(tab) = line.iter().position(|&b| b == b'\t') else {
                input_error = Some(format!("line {n} has no TAB between key and value"));
                break;
            };
            record = record
                .key(Bytes::copy_from_slice(&line[..tab]))
                .value(Bytes::copy_from_slice(&line[tab + 1..]));
        } else {
            record = record.value(Bytes::from(line));
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        match producer.send(record).await {
            Ok(fut) => {
                if tx.send((n, fut)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                input_error = Some(format!("line {n}: {e}"));
                break;
            }
        }
    }
    drop(tx);
    let flushed = producer.flush().await;
    let (ok, failed) = collector
        .await
        .map_err(|e| Failure(format!("internal error: {e}")))?;
    let _ = producer.close().await;
    eprintln!("kfk: {ok} records acknowledged, {failed} failed");
    if let Some(e) = input_error {
        return Err(Failure(e));
    }
    flushed?;
    if failed > 0 {
        return Err(Failure(format!("{failed} records were not acknowledged")));
    }
    Ok(())
}

async fn consume(props: &[(String, String)], args: ConsumeArgs, stop: &signals::Stop) -> CliResult {
    let mut props = props.to_vec();
    props.push((
        "isolation.level".into(),
        match args.isolation {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
        .into(),
    ));
    props.push(("enable.auto.commit".into(), "false".into()));
    let start = StartAt::pick(args.from, args.from_beginning, StartAt::Latest);
    if let Some(g) = &args.group {
        props.push(("group.id".into(), g.clone()));
        props.push(("auto.offset.reset".into(), start.auto_offset_reset().into()));
    }
    let fmt = format::Format::parse(&args.format).map_err(Failure)?;
    let cfg = build(&props, |c: &mut ConsumerConfig, k, v| {
        c.apply_property(k, v)
    })?;
    let consumer = Consumer::new(cfg).await?;
    let meta = consumer.client().topic(&args.topic).await?;
    let printed_upto = Arc::new(Mutex::new(BTreeMap::new()));
    if let Some(group) = &args.group {
        consumer.set_rebalance_hooks(Arc::new(GroupHooks::new(
            group,
            start,
            Some(printed_upto.clone()),
        )));
        consumer.subscribe([args.topic.clone()]).await?;
    }
    let partitions: Vec<TopicPartition> = match args.partition {
        Some(p) => {
            if meta.partition(p).is_none() {
                return Err(Failure(format!(
                    "topic {} has no partition {p} (it has {})",
                    args.topic,
                    meta.partition_count()
                )));
            }
            vec![TopicPartition::new(&args.topic, p)]
        }
        None => meta
            .partitions
            .iter()
            .map(|p| TopicPartition::new(&args.topic, p.partition))
            .collect(),
    };
    if args.group.is_none() {
        consumer.assign(partitions.clone()).await?;
        for tp in &partitions {
            consumer.seek(tp, start.offset()).await?;
        }
    }
    let idle = args
        .idle_exit
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    if args.idle_exit.is_some() && idle.is_none() {
        return Err(Failure("--idle-exit needs a non-negative number".into()));
    }
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    let result: CliResult = loop {
        if args.count.is_some_and(|c| printed >= c) {
            break Ok(());
        }
        let wait = match idle {
            Some(idle) => {
                let left = idle.saturating_sub(last_record.elapsed());
                if left.is_zero() {
                    break Ok(());
                }
                left.min(Duration::from_millis(500))
            }
            None => Duration::from_millis(500),
        };
        let polled = tokio::select! {
            biased;
            _ = stop.wait() => break Ok(()),
            r = consumer.poll(wait) => r,
        };
        let records = match polled {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        for r in &records {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            line.clear();
            fmt.render(r, &mut line);
            line.push(b'\n');
            if let Err(e) = out.write_all(&line) {
                return finish_output(e, &consumer, &printed_upto).await;
            }
            printed += 1;
            printed_upto.lock().unwrap().insert(
                TopicPartition::new(r.topic.as_ref(), r.partition),
                r.offset + 1,
            );
        }
        if let Err(e) = out.flush() {
            return finish_output(e, &consumer, &printed_upto).await;
        }
        if args.group.is_some() && !records.is_empty() {
            // In the background; a failure is logged, and the final commit covers it.
            let offsets = printed_upto.lock().unwrap().clone();
            drop(consumer.commit_async(offsets));
        }
    };
    let _ = out.flush();
    let committed = commit_printed(&consumer, &printed_upto).await;
    consumer.close().await;
    result.and(committed)
}

/// The record `r` of the source as a record of `dst` (key, value, headers and timestamp kept;
/// the same partition when `same_partition`).
fn copied(r: &kafka_client::ConsumerRecord, dst: &str, same_partition: bool) -> ProducerRecord {
    let mut out = ProducerRecord::new(dst.to_string()).timestamp(r.timestamp);
    if let Some(k) = &r.key {
        out = out.key(k.clone());
    }
    if let Some(v) = &r.value {
        out = out.value(v.clone());
    }
    out.headers = r.headers.clone();
    if same_partition {
        out = out.partition(r.partition);
    }
    out
}

async fn copy(props: &[(String, String)], args: CopyArgs, stop: &signals::Stop) -> CliResult {
    let mut props = props.to_vec();
    props.push(("group.id".into(), args.group.clone()));
    props.push(("enable.auto.commit".into(), "false".into()));
    props.push(("isolation.level".into(), "read_committed".into()));
    let start = StartAt::pick(args.from, args.from_beginning, StartAt::Earliest);
    props.push(("auto.offset.reset".into(), start.auto_offset_reset().into()));
    if args.transactional {
        let id = args.transactional_id.clone().unwrap_or_else(|| {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}-{}-{:x}", args.group, std::process::id(), n)
        });
        props.push(("transactional.id".into(), id));
    }
    let ccfg = build(&props, |c: &mut ConsumerConfig, k, v| {
        c.apply_property(k, v)
    })?;
    let pcfg = build(&props, |c: &mut ProducerConfig, k, v| {
        c.apply_property(k, v)
    })?;
    let idle = args
        .idle_exit
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    if args.idle_exit.is_some() && idle.is_none() {
        return Err(Failure("--idle-exit needs a non-negative number".into()));
    }
    let interval = Duration::from_millis(args.commit_interval.max(1));
    let mut stats = CopyStats::default();
    let copy = CopyJob {
        args: &args,
        hooks: Arc::new(GroupHooks::new(&args.group, start, None)),
        idle,
        interval,
        stop,
    };
    let result = if args.transactional {
        copy_transactional(ccfg, pcfg, &copy, &mut stats).await
    } else {
        copy_at_least_once(ccfg, pcfg, &copy, &mut stats).await
    };
    eprintln!(
        "kfk: copied {} records in {} transactions ({} aborted)",
        stats.copied, stats.commits, stats.aborts
    );
    result
}

/// What both kinds of copy loop need.
struct CopyJob<'a> {
    args: &'a CopyArgs,
    hooks: Arc<GroupHooks>,
    idle: Option<Duration>,
    interval: Duration,
    stop: &'a signals::Stop,
}

#[derive(Default)]
struct CopyStats {
    copied: u64,
    commits: u64,
    aborts: u64,
}

/// Whether the two topics have the same partition count.
async fn same_partitions(client: &Client, src: &str, dst: &str) -> CliResult<bool> {
    let a = client.topic(src).await?;
    let b = client.topic(dst).await?;
    if let Some(e) = a.error.or(b.error) {
        return Err(Failure(format!("{src} -> {dst}: {e}")));
    }
    Ok(a.partition_count() == b.partition_count())
}

/// How long to poll before the next commit or idle check; `None` once idle long enough.
fn next_wait(
    idle: Option<Duration>,
    last_record: Instant,
    txn_started: Option<Instant>,
    interval: Duration,
) -> Option<Duration> {
    let mut wait = txn_started.map_or(interval, |t| interval.saturating_sub(t.elapsed()));
    if let Some(idle) = idle {
        let left = idle.saturating_sub(last_record.elapsed());
        if left.is_zero() && txn_started.is_none() {
            return None;
        }
        wait = wait.min(left.max(Duration::from_millis(1)));
    }
    Some(wait.max(Duration::from_millis(1)))
}

async fn copy_transactional(
    ccfg: ConsumerConfig,
    pcfg: ProducerConfig,
    copy: &CopyJob<'_>,
    stats: &mut CopyStats,
) -> CliResult {
    let CopyJob {
        args,
        idle,
        interval,
        stop,
        ..
    } = *copy;
    let session = TransactSession::new(ccfg, pcfg).await?;
    let same = same_partitions(session.producer().client(), &args.src, &args.dst).await?;
    session.set_rebalance_hooks(copy.hooks.clone());
    session.subscribe([args.src.clone()]).await?;
    let mut last_record = Instant::now();
    // When the open transaction read its first record (it ends `interval` later).
    let mut txn_started: Option<Instant> = None;
    let mut pending = 0u64;
    let result: CliResult = loop {
        let Some(wait) = next_wait(idle, last_record, txn_started, interval) else {
            break Ok(());
        };
        // After a signal: every record polled has been sent; the open transaction is
        // committed below and the session closed (leaving the group).
        let polled = tokio::select! {
            biased;
            _ = stop.wait() => break Ok(()),
            r = session.poll(wait) => r,
        };
        let records = match polled {
            Ok(r) => r,
            Err(e) => break Err(e.into()),
        };
        if !records.is_empty() {
            last_record = Instant::now();
            txn_started.get_or_insert_with(Instant::now);
        }
        let mut failed = None;
        for r in &records {
            if let Err(e) = session.send(copied(r, &args.dst, same)).await {
                failed = Some(e);
                break;
            }
        }
        pending += records.len() as u64;
        if let Some(e) = &failed {
            if e.is_fatal() {
                break Err(e.into());
            }
            eprintln!("kfk: send failed, aborting the transaction: {e}");
        }
        let due = txn_started.is_some_and(|t| t.elapsed() >= interval);
        if due || failed.is_some() {
            match session.end(failed.is_none()).await {
                Ok(true) => {
                    stats.copied += pending;
                    stats.commits += 1;
                }
                Ok(false) => stats.aborts += 1,
                Err(e) => break Err(e.into()),
            }
            pending = 0;
            txn_started = None;
        }
    };
    if result.is_ok() && pending > 0 {
        if session.end(true).await? {
            stats.copied += pending;
            stats.commits += 1;
        } else {
            stats.aborts += 1;
        }
    }
    let closed = session.close().await;
    result?;
    closed.map_err(Into::into)
}

async fn copy_at_least_once(
    ccfg: ConsumerConfig,
    pcfg: ProducerConfig,
    copy: &CopyJob<'_>,
    stats: &mut CopyStats,
) -> CliResult {
    let CopyJob {
        args,
        idle,
        interval,
        stop,
        ..
    } = *copy;
    let producer = Producer::new(pcfg).await?;
    let consumer = Consumer::new(ccfg).await?;
    let same = same_partitions(producer.client(), &args.src, &args.dst).await?;
    consumer.set_rebalance_hooks(copy.hooks.clone());
    consumer.subscribe([args.src.clone()]).await?;
    let mut last_record = Instant::now();
    let mut batch_started: Option<Instant> = None;
    let mut deliveries = Vec::new();
    let mut offsets: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let result: CliResult = async {
        loop {
            let wait = next_wait(idle, last_record, batch_started, interval);
            let mut stopped = false;
            let records = match wait {
                Some(w) => tokio::select! {
                    biased;
                    _ = stop.wait() => {
                        stopped = true;
                        Vec::new()
                    }
                    r = consumer.poll(w) => r?,
                },
                None => Vec::new(),
            };
            // Idle long enough, or a signal: flush, commit and end.
            let finishing = wait.is_none() || stopped;
            if !records.is_empty() {
                last_record = Instant::now();
                batch_started.get_or_insert_with(Instant::now);
            }
            for r in &records {
                deliveries.push(producer.send(copied(r, &args.dst, same)).await?);
                offsets.insert(
                    TopicPartition::new(r.topic.as_ref(), r.partition),
                    r.offset + 1,
                );
            }
            let due = batch_started.is_some_and(|t| t.elapsed() >= interval);
            if due || (finishing && !deliveries.is_empty()) {
                producer.flush().await?;
                for d in deliveries.drain(..) {
                    d.await?;
                    stats.copied += 1;
                }
                consumer.commit(std::mem::take(&mut offsets)).await?;
                stats.commits += 1;
                batch_started = None;
            }
            if finishing {
                return Ok(());
            }
        }
    }
    .await;
    consumer.close().await;
    let closed = producer.close().await;
    result?;
    closed.map_err(Into::into)
}

/// Commits what was printed (a group member only): the offsets after the last record printed of
/// each partition still owned.
async fn commit_printed(
    consumer: &Consumer,
    printed: &Mutex<BTreeMap<TopicPartition, i64>>,
) -> CliResult {
    let offsets = printed.lock().unwrap().clone();
    if offsets.is_empty() || consumer.subscription().is_empty() {
        return Ok(());
    }
    consumer.commit(offsets).await.map_err(|e| {
        Failure(format!(
            "committing the offsets of the records printed: {e}"
        ))
    })
}

/// The rebalance hooks of a group member (`consume --group`, `copy`): where partitions without
/// a committed offset start (`--from`), and, for `consume --group`, committing at a revocation
/// what was printed from the partitions given up.
struct GroupHooks {
    group: String,
    start: StartAt,
    /// `consume --group`: the offset after the last record printed, per partition.
    printed: Option<Arc<Mutex<BTreeMap<TopicPartition, i64>>>>,
    /// Partitions already reported as starting at the latest offset.
    reported: Arc<Mutex<std::collections::BTreeSet<TopicPartition>>>,
}

/// How long an assignment hook waits for the group's committed offsets.
const COMMITTED_LOOKUP: Duration = Duration::from_secs(5);

impl GroupHooks {
    fn new(
        group: &str,
        start: StartAt,
        printed: Option<Arc<Mutex<BTreeMap<TopicPartition, i64>>>>,
    ) -> GroupHooks {
        GroupHooks {
            group: group.to_string(),
            start,
            printed,
            reported: Default::default(),
        }
    }
}

/// `t-0, t-1, t-2` (at most 12, then how many more).
fn partition_list(tps: &[TopicPartition]) -> String {
    let mut s: Vec<String> = tps.iter().take(12).map(ToString::to_string).collect();
    if tps.len() > 12 {
        s.push(format!("and {} more", tps.len() - 12));
    }
    s.join(", ")
}

impl RebalanceHooks for GroupHooks {
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self.start {
                // auto.offset.reset does it.
                StartAt::Earliest => {}
                StartAt::Latest => {
                    // Only a notice: looked up beside the group's own fetch, not holding the
                    // rebalance up.
                    let consumer = consumer.clone();
                    let tps = partitions.to_vec();
                    let reported = self.reported.clone();
                    let group = self.group.clone();
                    tokio::spawn(async move {
                        let Ok(Ok(committed)) =
                            tokio::time::timeout(COMMITTED_LOOKUP, consumer.committed(&tps)).await
                        else {
                            return;
                        };
                        let fresh: Vec<TopicPartition> = {
                            let mut reported = reported.lock().unwrap();
                            committed
                                .into_iter()
                                .filter(|(_, o)| o.is_none())
                                .map(|(tp, _)| tp)
                                .filter(|tp| reported.insert(tp.clone()))
                                .collect()
                        };
                        if !fresh.is_empty() {
                            eprintln!(
                                "kfk: group {group} has no committed offset for {}; starting at the latest offset (use --from earliest to read existing records)",
                                partition_list(&fresh)
                            );
                        }
                    });
                }
                StartAt::Timestamp(ts) => {
                    // Seeking a pending partition here starts it there instead of at its
                    // committed offset, so only those without one are sought.
                    let lookup =
                        tokio::time::timeout(COMMITTED_LOOKUP, consumer.committed(partitions))
                            .await;
                    let committed = match lookup {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            eprintln!("kfk: warning: cannot look up the committed offsets of {} ({e}); those without one start at the earliest offset", partition_list(partitions));
                            return;
                        }
                        Err(_) => {
                            eprintln!("kfk: warning: no committed offsets of {} within {COMMITTED_LOOKUP:?}; those without one start at the earliest offset", partition_list(partitions));
                            return;
                        }
                    };
                    for (tp, offset) in committed {
                        if offset.is_none() {
                            if let Err(e) = consumer.seek(&tp, Offset::Timestamp(ts)).await {
                                eprintln!("kfk: warning: cannot start {tp} at time {ts} ({e}); it starts at the earliest offset");
                            }
                        }
                    }
                }
            }
        })
    }

    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(printed) = &self.printed else {
                return;
            };
            let offsets: Vec<(TopicPartition, i64)> = {
                let mut printed = printed.lock().unwrap();
                partitions
                    .iter()
                    .filter_map(|tp| printed.remove(tp).map(|o| (tp.clone(), o)))
                    .collect()
            };
            if !offsets.is_empty() {
                if let Err(e) = consumer.commit(offsets).await {
                    eprintln!("kfk: warning: commit at revocation failed: {e}");
                }
            }
        })
    }

    fn on_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(printed) = &self.printed {
                let mut printed = printed.lock().unwrap();
                for tp in partitions {
                    printed.remove(tp);
                }
            }
        })
    }
}

/// A closed stdout (`kfk consume ... | head`) ends the command quietly.
async fn finish_output(
    e: std::io::Error,
    consumer: &Consumer,
    printed: &Mutex<BTreeMap<TopicPartition, i64>>,
) -> CliResult {
    let _ = commit_printed(consumer, printed).await;
    consumer.close().await;
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Failure(format!("cannot write output: {e}")))
    }
}

async fn offsets(props: &[(String, String)], topic: &str, records: bool) -> CliResult {
    let client = Client::connect(client_config(props)?).await?;
    let meta = client.topic(topic).await?;
    let partitions: Vec<TopicPartition> = meta
        .partitions
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    // ListOffsets takes one lookup per partition: earliest and latest are two requests.
    let lookup = |to: Offset| -> Vec<(TopicPartition, Offset)> {
        partitions.iter().map(|tp| (tp.clone(), to)).collect()
    };
    let uncommitted = IsolationLevel::ReadUncommitted;
    let lo = list_offsets(&client, &lookup(Offset::Earliest), uncommitted).await?;
    let hi = list_offsets(&client, &lookup(Offset::Latest), uncommitted).await?;
    let mut ranges = BTreeMap::new();
    for tp in &partitions {
        let (Some(l), Some(h)) = (lo.get(tp), hi.get(tp)) else {
            return Err(Failure(format!("no offsets returned for {tp}")));
        };
        ranges.insert(tp.clone(), (l.offset, h.offset));
    }
    let counts = if records {
        // The last stable offset: where a read_committed reader stops.
        let lso = list_offsets(
            &client,
            &lookup(Offset::Latest),
            IsolationLevel::ReadCommitted,
        )
        .await?;
        let all = count_records(props, &ranges, IsolationLevel::ReadUncommitted, |tp| {
            ranges[tp].1
        })
        .await?;
        let committed = count_records(props, &ranges, IsolationLevel::ReadCommitted, |tp| {
            lso.get(tp).map_or(ranges[tp].1, |o| o.offset)
        })
        .await?;
        Some((all, committed))
    } else {
        None
    };
    client.close();

    let mut out = std::io::stdout().lock();
    match &counts {
        None => writeln!(out, "partition\tearliest\tlatest\toffsets")?,
        Some(_) => writeln!(
            out,
            "partition\tearliest\tlatest\toffsets\trecords\tcommitted\tnon-record"
        )?,
    }
    let (mut total, mut total_records, mut total_committed) = (0i64, 0u64, 0u64);
    for (tp, (l, h)) in &ranges {
        let n = (h - l).max(0);
        total += n;
        write!(out, "{}\t{l}\t{h}\t{n}", tp.partition)?;
        if let Some((all, committed)) = &counts {
            let (a, c) = (all[tp], committed[tp]);
            total_records += a;
            total_committed += c;
            write!(out, "\t{a}\t{c}\t{}", n - a as i64)?;
        }
        writeln!(out)?;
    }
    write!(out, "total\t\t\t{total}")?;
    if counts.is_some() {
        write!(
            out,
            "\t{total_records}\t{total_committed}\t{}",
            total - total_records as i64
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// Reads each partition of `ranges` (earliest, latest) from its earliest offset up to
/// `end(tp)` with `isolation` and counts the data records (control batches are not records).
/// A partition also counts as read once nothing has come for [`COUNT_QUIET`] (its last offsets
/// are then transaction markers that the consumer's position does not step over).
async fn count_records(
    props: &[(String, String)],
    ranges: &BTreeMap<TopicPartition, (i64, i64)>,
    isolation: IsolationLevel,
    end: impl Fn(&TopicPartition) -> i64,
) -> CliResult<BTreeMap<TopicPartition, u64>> {
    let mut cfg = build(props, |c: &mut ConsumerConfig, k, v| c.apply_property(k, v))?;
    cfg.isolation_level(isolation);
    cfg.enable_auto_commit(false);
    let consumer = Consumer::new(cfg).await?;
    let mut counts: BTreeMap<TopicPartition, u64> =
        ranges.keys().map(|tp| (tp.clone(), 0)).collect();
    let todo: Vec<TopicPartition> = ranges
        .iter()
        .filter(|(tp, (l, _))| end(tp) > *l)
        .map(|(tp, _)| tp.clone())
        .collect();
    let result: CliResult = async {
        if todo.is_empty() {
            return Ok(());
        }
        consumer.assign(todo.clone()).await?;
        for tp in &todo {
            consumer.seek(tp, Offset::At(ranges[tp].0)).await?;
        }
        let mut last_record = Instant::now();
        loop {
            let done = todo
                .iter()
                .all(|tp| consumer.position(tp).is_some_and(|p| p >= end(tp)));
            if done || last_record.elapsed() >= COUNT_QUIET {
                return Ok(());
            }
            let records = consumer.poll(Duration::from_millis(200)).await?;
            if !records.is_empty() {
                last_record = Instant::now();
            }
            for r in records {
                let tp = TopicPartition::new(r.topic.as_ref(), r.partition);
                if r.offset < end(&tp) {
                    *counts.entry(tp).or_default() += 1;
                }
            }
        }
    }
    .await;
    consumer.close().await;
    result.map(|()| counts)
}

/// See [`count_records`].
const COUNT_QUIET: Duration = Duration::from_secs(3);

async fn group(cfg: ClientConfig, cmd: GroupCmd) -> CliResult {
    let admin = Admin::new(cfg).await?;
    let result = match cmd {
        GroupCmd::List => group_list(&admin).await,
        GroupCmd::Describe { group } => group_describe(&admin, &group).await,
        GroupCmd::Offsets { group } => group_offsets(&admin, &group).await,
    };
    admin.client().close();
    result
}

async fn group_list(admin: &Admin) -> CliResult {
    let groups = admin.list_groups().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "group\ttype\tstate\tprotocol type")?;
    for g in groups {
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            g.group_id,
            g.group_type.as_deref().unwrap_or("?"),
            g.state.as_deref().unwrap_or("?"),
            g.protocol_type
        )?;
    }
    Ok(())
}

async fn group_describe(admin: &Admin, group: &str) -> CliResult {
    let Some(g) = admin.describe_groups(&[group]).await?.pop() else {
        return Err(Failure(format!(
            "no description returned for group {group}"
        )));
    };
    let mut out = std::io::stdout().lock();
    let kind = if g.is_consumer_protocol {
        "consumer (KIP-848)"
    } else {
        "classic"
    };
    writeln!(out, "group {}  {kind}  state {}", g.group_id, g.state)?;
    writeln!(
        out,
        "protocol type {}  protocol {}",
        g.protocol_type, g.protocol
    )?;
    writeln!(out, "members: {}", g.members.len())?;
    for m in &g.members {
        let instance = m
            .group_instance_id
            .as_deref()
            .map(|i| format!("  instance {i}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}  client {}  host {}{instance}",
            m.member_id, m.client_id, m.host
        )?;
        let parts: Vec<String> = m.assignment.iter().map(|tp| tp.to_string()).collect();
        writeln!(out, "    assigned: {}", parts.join(" "))?;
    }
    Ok(())
}

async fn group_offsets(admin: &Admin, group: &str) -> CliResult {
    let committed = admin.list_group_offsets(group).await?;
    let latest: Vec<_> = committed
        .keys()
        .map(|tp| (tp.clone(), Offset::Latest))
        .collect();
    let ends = list_offsets(admin.client(), &latest, Default::default()).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "topic\tpartition\tcommitted\tend\tlag")?;
    let mut total = 0i64;
    for (tp, offset) in &committed {
        let (end, lag) = match ends.get(tp) {
            Some(e) => {
                let lag = (e.offset - offset).max(0);
                total += lag;
                (e.offset.to_string(), lag.to_string())
            }
            None => ("?".to_string(), "?".to_string()),
        };
        writeln!(
            out,
            "{}\t{}\t{offset}\t{end}\t{lag}",
            tp.topic, tp.partition
        )?;
    }
    writeln!(out, "total lag\t\t\t\t{total}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        // NO_COLOR set to the empty string counts as unset (no-color.org).
        assert!(use_ansi(true, Some(OsStr::new(""))));
        assert!(!use_ansi(true, Some(OsStr::new("1"))));
        assert!(!use_ansi(false, None));
        assert!(!use_ansi(false, Some(OsStr::new(""))));
        assert!(!use_ansi(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn start_positions_parse_and_default() {
        assert_eq!(parse_start("earliest"), Ok(StartAt::Earliest));
        assert_eq!(parse_start("latest"), Ok(StartAt::Latest));
        assert_eq!(
            parse_start("1700000000000"),
            Ok(StartAt::Timestamp(1_700_000_000_000))
        );
        assert!(parse_start("-5").is_err());
        assert!(parse_start("yesterday").is_err());
        assert_eq!(
            StartAt::pick(None, false, StartAt::Earliest),
            StartAt::Earliest
        );
        assert_eq!(StartAt::pick(None, false, StartAt::Latest), StartAt::Latest);
        assert_eq!(
            StartAt::pick(None, true, StartAt::Latest),
            StartAt::Earliest
        );
        assert_eq!(
            StartAt::pick(Some(StartAt::Latest), false, StartAt::Earliest),
            StartAt::Latest
        );
        // A timestamp falls back to earliest (never skipping) if it cannot be sought.
        assert_eq!(StartAt::Timestamp(5).auto_offset_reset(), "earliest");
        assert_eq!(StartAt::Latest.auto_offset_reset(), "latest");
    }

    #[test]
    fn copy_and_consume_parse_from_and_its_alias() {
        let copy = |extra: &[&str]| {
            let mut argv = vec!["kfk", "-b", "x:1", "copy", "a", "b", "--group", "g"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let Cmd::Copy(a) = copy(&["--from", "latest"]).unwrap().cmd else {
            panic!("copy")
        };
        assert_eq!(a.from, Some(StartAt::Latest));
        let Cmd::Copy(a) = copy(&["--from-beginning"]).unwrap().cmd else {
            panic!("copy")
        };
        assert!(a.from_beginning && a.from.is_none());
        assert!(copy(&["--from", "latest", "--from-beginning"]).is_err());
        assert!(copy(&["--from", "soon"]).is_err());
        let c = Cli::try_parse_from(["kfk", "consume", "t", "--group", "g", "--from", "42"]);
        let Cmd::Consume(a) = c.unwrap().cmd else {
            panic!("consume")
        };
        assert_eq!(a.from, Some(StartAt::Timestamp(42)));
    }
}
