//! The processes of `kbench streams`: the bank binary (BANK.md's driver and checker, and our
//! processor), the processor of each client (ours, GKES, Kafka Streams), and running instances
//! of a processor with their `active=<n>` lines.
//!
//! Why processes and not shared code: the bank example (`streams/examples/bank/`) already is
//! BANK.md's driver (`bank load`: the deterministic stream on its schedule) and checker (`bank
//! check`: the model and oracles (a), (b), (g)). Running that binary keeps one implementation of
//! the model and the oracles for the tests, the demo and the benchmark, and needs nothing from
//! the example's internals. kbench adds what a benchmark needs around it: fresh topics, the
//! processes, its own read_committed reader for latency (first-seen time, per second), the
//! backlog, CPU time, failover and the rate steps.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::runner::{build, Paths};

/// A streams implementation of BANK.md's processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// Ours: the bank example (`bank run`).
    Ours,
    /// GKES (Go), `benches/peers/gkes`.
    Gkes,
    /// Kafka Streams (Java), `benches/peers/kafka-streams`.
    KafkaStreams,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::Gkes => "gkes",
            Peer::KafkaStreams => "kafka-streams",
        }
    }
}

/// A variant option: `key` (or `key=value`) after the client's name, and the processor flag it
/// becomes. BANK.md's command line has `--pool-size`, `--linger-ms` and `--at-least-once`; a
/// processor that cannot do what a flag asks must refuse it (exit non-zero, saying why), and
/// kbench then fails the run with the processor's own message.
struct VariantKey {
    key: &'static str,
    flag: &'static str,
    /// Takes a positive integer value.
    numeric: bool,
    help: &'static str,
}

const VARIANT_KEYS: &[VariantKey] = &[
    VariantKey {
        key: "pool",
        flag: "--pool-size",
        numeric: true,
        help: "transactional producers in the pool (ours: the library's default, 3, without it)",
    },
    VariantKey {
        key: "linger",
        flag: "--linger-ms",
        numeric: true,
        help:
            "how long a transaction stays open for more events, ms (Kafka Streams: commit interval)",
    },
    VariantKey {
        key: "alo",
        flag: "--at-least-once",
        numeric: false,
        help: "at least once instead of exactly once",
    },
    VariantKey {
        key: "eager",
        flag: "--eager-when-idle",
        numeric: false,
        help: "close the open transaction as soon as no older one is committing (STREAMS.md \
               3.4, `eager_when_idle`)",
    },
];

/// A client with its variant: `ours`, `ours:pool=3`, `ours:alo`, `gkes:linger=5`,
/// `ours:pool=1:linger=5` (options separated by `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub peer: Peer,
    /// `(key, value)` in the order given.
    pub options: Vec<(String, Option<u64>)>,
}

impl ClientSpec {
    /// The label in tables and JSON: the spec as written (canonical order kept).
    pub fn label(&self) -> String {
        let mut s = self.peer.name().to_string();
        for (k, v) in &self.options {
            s.push(':');
            s.push_str(k);
            if let Some(v) = v {
                s.push_str(&format!("={v}"));
            }
        }
        s
    }

    /// The processor flags of the options.
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.options {
            if let Some(vk) = VARIANT_KEYS.iter().find(|vk| vk.key == k) {
                out.push(vk.flag.to_string());
                if let Some(v) = v {
                    out.push(v.to_string());
                }
            }
        }
        out
    }

    /// What `--clients` accepts, for error messages and `--help`.
    pub fn grammar() -> String {
        let keys: Vec<String> = VARIANT_KEYS
            .iter()
            .map(|k| {
                if k.numeric {
                    format!("{}=N ({})", k.key, k.help)
                } else {
                    format!("{} ({})", k.key, k.help)
                }
            })
            .collect();
        format!(
            "CLIENT[:OPTION...] with CLIENT ours, gkes or kafka-streams and OPTION one of: {}",
            keys.join("; ")
        )
    }
}

impl fmt::Display for ClientSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for ClientSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.trim().split(':');
        let name = parts.next().unwrap_or_default();
        let peer = match name {
            "ours" => Peer::Ours,
            "gkes" => Peer::Gkes,
            "kafka-streams" => Peer::KafkaStreams,
            other => {
                return Err(format!(
                    "unknown streams client {other:?} in {s:?}; expected {}",
                    ClientSpec::grammar()
                ))
            }
        };
        let mut options: Vec<(String, Option<u64>)> = Vec::new();
        for opt in parts {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let Some(vk) = VARIANT_KEYS.iter().find(|vk| vk.key == key) else {
                return Err(format!(
                    "unknown option {key:?} in {s:?}; expected {}",
                    ClientSpec::grammar()
                ));
            };
            let value = match (vk.numeric, value) {
                (true, Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(format!(
                            "{key}={v} in {s:?}: a positive integer is expected"
                        ))
                    }
                },
                (true, None) => return Err(format!("{key} in {s:?} needs a value: {key}=N")),
                (false, Some(v)) => {
                    return Err(format!("{key} in {s:?} takes no value (got ={v})"))
                }
                (false, None) => None,
            };
            if options.iter().any(|(k, _)| k == key) {
                return Err(format!("{key} given twice in {s:?}"));
            }
            options.push((key.to_string(), value));
        }
        Ok(ClientSpec { peer, options })
    }
}

/// How to start one processor instance: `program prefix... run --bootstrap ...`.
#[derive(Debug, Clone)]
pub struct Processor {
    pub spec: ClientSpec,
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

/// Builds the bank example (`cargo build --release -p streams --example bank`; cargo decides
/// whether anything is stale) or takes `given`; returns the binary.
pub async fn bank_binary(paths: &Paths, given: Option<&Path>, quiet: bool) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--bank-bin {} does not exist", p.display());
        }
        return Ok(p.to_path_buf());
    }
    std::fs::create_dir_all(&paths.out)
        .with_context(|| format!("creating {}", paths.out.display()))?;
    if !quiet {
        eprintln!("kbench: cargo build --release -p streams --example bank");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "streams",
        "--example",
        "bank",
    ])
    .arg("--manifest-path")
    .arg(&paths.workspace_manifest)
    .env("CARGO_TARGET_DIR", &paths.target);
    build(cmd, &paths.out.join("bank.build.log"))
        .await
        .context("building the bank example")?;
    let bin = paths.target.join("release").join("examples").join("bank");
    if !bin.is_file() {
        bail!("the build succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// Builds (if needed) the processor of `spec` and tells how to start it, or why it cannot.
pub async fn prepare(
    spec: &ClientSpec,
    paths: &Paths,
    bank: &Path,
    quiet: bool,
) -> Result<Processor> {
    let say = |what: &str| {
        if !quiet {
            eprintln!(
                "kbench: building the {} processor ({what})",
                spec.peer.name()
            );
        }
    };
    let (program, prefix) = match spec.peer {
        Peer::Ours => (bank.to_path_buf(), vec![]),
        Peer::Gkes => {
            let dir = paths.peers.join("gkes");
            let has_go = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.path().extension().is_some_and(|x| x == "go"))
                })
                .unwrap_or(false);
            if !dir.join("go.mod").is_file() || !has_go {
                bail!(
                    "the GKES peer is missing: {} needs a Go module (go.mod and the main \
                     package's .go files) whose binary takes BANK.md's `run --bootstrap ...` \
                     command line; kbench builds it with `go build -o <out> .` there",
                    dir.display()
                );
            }
            let bin = paths.out.join("kbench-gkes");
            say("go build");
            let mut cmd = Command::new("go");
            cmd.current_dir(&dir)
                .arg("build")
                .arg("-o")
                .arg(&bin)
                .arg(".");
            build(cmd, &paths.out.join("gkes.build.log")).await?;
            (bin, vec![])
        }
        Peer::KafkaStreams => {
            // benches/peers/kafka-streams/README.md: "Build" and "Launch".
            let dir = paths.peers.join("kafka-streams");
            let pom = dir.join("pom.xml");
            if !pom.is_file() {
                bail!(
                    "the Kafka Streams peer is missing: {} does not exist (a Maven project \
                     whose program takes BANK.md's `run --bootstrap ...` command line; its \
                     README.md gives the build and launch commands)",
                    pom.display()
                );
            }
            let out = paths.out.join("kafka-streams");
            say("mvn package; the first build downloads Kafka Streams and takes minutes");
            let mut cmd = Command::new("mvn");
            cmd.args(["-B", "-q", "-f"])
                .arg(&pom)
                .arg("package")
                .arg(format!(
                    "-Dkafka.version={}",
                    testkit::dist::kafka_version()
                ))
                .arg(format!("-Dpeer.build.dir={}", out.display()));
            build(cmd, &paths.out.join("kafka-streams.build.log")).await?;
            let jar = out.join("kbench-kafka-streams.jar");
            if !jar.is_file() {
                bail!("mvn package succeeded but {} is missing", jar.display());
            }
            (
                PathBuf::from("java"),
                vec![
                    "-Xms512m".into(),
                    "-Xmx1g".into(),
                    "-jar".into(),
                    jar.display().to_string(),
                ],
            )
        }
    };
    Ok(Processor {
        spec: spec.clone(),
        program,
        prefix,
    })
}

/// The topics and group of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunTopics {
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub changelog: String,
    pub group: String,
}

/// What an instance printed that kbench keeps.
#[derive(Default)]
struct InstanceLog {
    /// The lines before its first `active=` (its effective settings, BANK.md).
    head: Vec<String>,
    tail: VecDeque<String>,
    seen_active: bool,
    /// The last value of each `name=<integer>` token it printed (`transactions=`, ...).
    counters: BTreeMap<String, u64>,
}

const TAIL_LINES: usize = 40;
const HEAD_LINES: usize = 8;

/// One running processor process.
pub struct Instance {
    pub name: String,
    pub instance_id: String,
    child: Child,
    pub pid: u32,
    active: watch::Receiver<u32>,
    log: Arc<Mutex<InstanceLog>>,
    stderr_done: watch::Receiver<bool>,
    /// Killed or stopped by kbench.
    expected_exit: bool,
    /// Killed with SIGKILL (its counters are lost).
    pub killed: bool,
    pub log_path: PathBuf,
}

/// What is left of an instance once it ended.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceSummary {
    pub name: String,
    pub instance_id: String,
    pub killed: bool,
    pub exit: String,
    pub settings: Vec<String>,
    pub counters: BTreeMap<String, u64>,
    pub log: String,
}

impl Instance {
    /// Starts `processor run ...` for `topics` with `instance_id`; its stderr goes to
    /// `log_path`.
    pub async fn spawn(
        processor: &Processor,
        topics: &RunTopics,
        instance_id: &str,
        name: &str,
        log_path: &Path,
    ) -> Result<Instance> {
        let mut args: Vec<String> = vec![
            "run".into(),
            "--bootstrap".into(),
            topics.bootstrap.clone(),
            "--input".into(),
            topics.input.clone(),
            "--output".into(),
            topics.output.clone(),
            "--group".into(),
            topics.group.clone(),
            "--changelog".into(),
            topics.changelog.clone(),
            "--instance-id".into(),
            instance_id.to_string(),
        ];
        args.extend(processor.spec.flags());
        let mut child = Command::new(&processor.program)
            .args(&processor.prefix)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", processor.program.display()))?;
        let pid = child.id().context("the processor's pid")?;
        let mut file = tokio::fs::File::create(log_path)
            .await
            .with_context(|| format!("creating {}", log_path.display()))?;
        let cmdline = format!(
            "# {} {} {}\n",
            processor.program.display(),
            processor.prefix.join(" "),
            args.join(" ")
        );
        let _ = file.write_all(cmdline.as_bytes()).await;
        let (active_tx, active) = watch::channel(0u32);
        let (done_tx, stderr_done) = watch::channel(false);
        let log: Arc<Mutex<InstanceLog>> = Arc::default();
        let stdout = child.stdout.take().context("processor stdout")?;
        let stderr = child.stderr.take().context("processor stderr")?;
        let file = Arc::new(tokio::sync::Mutex::new(file));
        tokio::spawn(follow(stdout, file.clone(), None, None));
        {
            let log = log.clone();
            tokio::spawn(async move {
                follow(stderr, file, Some(active_tx), Some(log)).await;
                let _ = done_tx.send(true);
            });
        }
        Ok(Instance {
            name: name.to_string(),
            instance_id: instance_id.to_string(),
            child,
            pid,
            active,
            log,
            stderr_done,
            expected_exit: false,
            killed: false,
            log_path: log_path.to_path_buf(),
        })
    }

    /// Its latest `active=<n>`.
    pub fn active(&self) -> u32 {
        *self.active.borrow()
    }

    /// If it has exited: its status and the end of its stderr.
    pub async fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok()??;
        let mut done = self.stderr_done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), done.wait_for(|d| *d)).await;
        Some(format!(
            "{} exited ({status}); its stderr ended with:\n{}",
            self.name,
            self.tail(15)
        ))
    }

    /// Whether it exited without kbench asking.
    pub fn exited_unexpectedly(&mut self) -> bool {
        !self.expected_exit && matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.tail.len().saturating_sub(n);
        log.tail
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL, and waits for the process.
    pub async fn kill(&mut self) {
        self.expected_exit = true;
        self.killed = true;
        let _ = self.child.kill().await;
    }

    /// SIGTERM (BANK.md: commit, leave the group, exit 0); SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> String {
        self.expected_exit = true;
        if let Ok(Some(status)) = self.child.try_wait() {
            return format!("had exited: {status}");
        }
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let exit = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => status.to_string(),
            Ok(Err(e)) => format!("wait failed: {e}"),
            Err(_) => {
                let _ = self.child.kill().await;
                self.killed = true;
                format!("still running {} s after SIGTERM: killed", grace.as_secs())
            }
        };
        let mut done = self.stderr_done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), done.wait_for(|d| *d)).await;
        exit
    }

    pub fn summary(&self, exit: String) -> InstanceSummary {
        let log = self.log.lock().unwrap();
        InstanceSummary {
            name: self.name.clone(),
            instance_id: self.instance_id.clone(),
            killed: self.killed,
            exit,
            settings: log.head.clone(),
            counters: log.counters.clone(),
            log: self.log_path.display().to_string(),
        }
    }
}

/// Copies a child's output to its log file. On stderr also tracks `active=<n>`, the head, the
/// tail and the `name=<integer>` counters.
async fn follow(
    from: impl AsyncRead + Unpin,
    file: Arc<tokio::sync::Mutex<tokio::fs::File>>,
    active: Option<watch::Sender<u32>>,
    log: Option<Arc<Mutex<InstanceLog>>>,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        {
            let mut f = file.lock().await;
            let _ = f.write_all(line.as_bytes()).await;
            let _ = f.write_all(b"\n").await;
        }
        let n = parse_active(&line);
        if let (Some(n), Some(active)) = (n, &active) {
            let _ = active.send(n);
        }
        if let Some(log) = &log {
            let mut l = log.lock().unwrap();
            if n.is_some() {
                l.seen_active = true;
            } else if !l.seen_active && l.head.len() < HEAD_LINES && !line.trim().is_empty() {
                l.head.push(line.clone());
            }
            for (k, v) in counters_of(&line) {
                l.counters.insert(k, v);
            }
            if l.tail.len() == TAIL_LINES {
                l.tail.pop_front();
            }
            l.tail.push_back(line);
        }
    }
    let _ = file.lock().await.flush().await;
}

/// The line of `head` that names the most settings (`name=value` tokens): the processor's
/// effective settings line among its first lines (log lines may come before it).
pub fn settings_line(head: &[String]) -> Option<&String> {
    head.iter()
        .filter(|l| l.contains('='))
        .max_by_key(|l| l.split_whitespace().filter(|t| t.contains('=')).count())
}

/// The `n` of a line that is exactly `active=<n>` (BANK.md).
pub fn parse_active(line: &str) -> Option<u32> {
    line.trim().strip_prefix("active=")?.parse().ok()
}

/// The `name=<integer>` tokens of a line.
fn counters_of(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace()
        .filter_map(|tok| {
            let (k, v) = tok.split_once('=')?;
            let v = v.trim_end_matches([',', ';']);
            let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            ok.then(|| v.parse().ok().map(|v| (k.to_string(), v)))?
        })
        .collect()
}

/// Waits until `instances` are active on `partitions` partitions together, each on at least
/// one (the first to join holds all of them for a moment: that is not the settled group).
pub async fn wait_active(
    instances: &mut [Instance],
    partitions: u32,
    timeout: Duration,
) -> Result<Vec<u32>> {
    let deadline = Instant::now() + timeout;
    loop {
        let split: Vec<u32> = instances.iter().map(Instance::active).collect();
        if split.iter().sum::<u32>() == partitions && split.iter().all(|n| *n > 0) {
            return Ok(split);
        }
        for inst in instances.iter_mut() {
            if let Some(e) = inst.exited().await {
                bail!("{e}");
            }
        }
        if Instant::now() >= deadline {
            let tails: Vec<String> = instances
                .iter()
                .map(|i| format!("{} (log {}):\n{}", i.name, i.log_path.display(), i.tail(8)))
                .collect();
            bail!(
                "the instances were not active on {partitions} partitions after {} s (active: \
                 {split:?}); their last lines:\n{}",
                timeout.as_secs(),
                tails.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `bank load` reported.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub line: String,
    /// The largest delay between an event's intended send time and its hand-over, ms.
    pub max_send_lag_ms: Option<f64>,
}

/// Starts `bank load` (the deterministic stream on its schedule).
pub fn spawn_load(
    bank: &Path,
    topics: &RunTopics,
    events: u64,
    rate: u64,
    accounts: u64,
    seed: u64,
) -> Result<Child> {
    Command::new(bank)
        .arg("load")
        .args(["--bootstrap", &topics.bootstrap, "--input", &topics.input])
        .args(["--events", &events.to_string(), "--rate", &rate.to_string()])
        .args([
            "--accounts",
            &accounts.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} load", bank.display()))
}

/// Waits for `bank load` and reads its report line.
pub async fn finish_load(child: Child) -> Result<LoadResult> {
    let out = child
        .wait_with_output()
        .await
        .context("waiting for bank load")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "bank load failed ({}):\n{}{}",
            out.status,
            stdout.trim_end(),
            stderr.trim_end()
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("load:"))
        .ok_or_else(|| anyhow!("bank load printed no report line:\n{stdout}{stderr}"))?
        .to_string();
    let max_send_lag_ms = line
        .split("max send lag ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    Ok(LoadResult {
        line,
        max_send_lag_ms,
    })
}

/// One oracle as `bank check` printed it.
#[derive(Debug, Clone, Serialize)]
pub struct OracleResult {
    pub name: String,
    pub ok: bool,
    pub counts: BTreeMap<String, u64>,
    /// The problems it quoted (`e.g. ...` lines).
    pub examples: Vec<String>,
}

/// What `bank check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Exit 0 and every oracle line ok.
    pub ok: bool,
    pub oracles: Vec<OracleResult>,
    pub notes: Vec<String>,
    pub summary: String,
}

impl CheckResult {
    /// A count of an oracle (`b`, `missing`), if printed.
    pub fn count(&self, oracle: &str, key: &str) -> Option<u64> {
        self.oracles
            .iter()
            .find(|o| o.name == oracle)
            .and_then(|o| o.counts.get(key).copied())
    }
}

/// Settings of a `bank check`.
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub events: u64,
    pub seed: u64,
    pub accounts: u64,
    pub warmup_events: u64,
    pub idle_timeout_s: f64,
    pub settle_s: f64,
    pub changelog_quiet_s: f64,
}

/// Runs `bank check` (oracles (a), (b), (g) against the model) and parses its lines.
pub async fn check(bank: &Path, topics: &RunTopics, s: &CheckSettings) -> Result<CheckResult> {
    let child = Command::new(bank)
        .arg("check")
        .args(["--bootstrap", &topics.bootstrap, "--input", &topics.input])
        .args(["--output", &topics.output, "--changelog", &topics.changelog])
        .args([
            "--events",
            &s.events.to_string(),
            "--seed",
            &s.seed.to_string(),
        ])
        .args(["--accounts", &s.accounts.to_string()])
        .args(["--warmup-events", &s.warmup_events.to_string()])
        .args(["--idle-timeout", &s.idle_timeout_s.to_string()])
        .args(["--settle", &s.settle_s.to_string()])
        .args(["--changelog-quiet", &s.changelog_quiet_s.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} check", bank.display()))?;
    let limit =
        Duration::from_secs_f64(s.idle_timeout_s + s.settle_s + s.changelog_quiet_s + 180.0);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("bank check did not finish within {} s", limit.as_secs()))?
        .context("waiting for bank check")?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let parsed = parse_check(&stdout);
    if parsed.oracles.is_empty() {
        bail!(
            "bank check ({}) printed no oracle line:\n{stdout}{stderr}",
            out.status
        );
    }
    let all_ok = parsed.oracles.iter().all(|o| o.ok);
    Ok(CheckResult {
        ok: out.status.success() && all_ok,
        ..parsed
    })
}

/// Parses `bank check`'s stdout: `oracle X: ok|FAILED k=v ...`, `    e.g. ...`, `note: ...`,
/// `check: ...`.
pub fn parse_check(stdout: &str) -> CheckResult {
    let mut oracles: Vec<OracleResult> = Vec::new();
    let mut notes = Vec::new();
    let mut summary = String::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("oracle ") {
            let Some((name, rest)) = rest.split_once(':') else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let verdict = words.next().unwrap_or_default();
            if verdict != "ok" && verdict != "FAILED" {
                continue; // oracle c: the latency line, not a verdict
            }
            let counts = words
                .filter_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            oracles.push(OracleResult {
                name: name.trim().to_string(),
                ok: verdict == "ok",
                counts,
                examples: Vec::new(),
            });
        } else if let Some(e) = line.trim_start().strip_prefix("e.g. ") {
            if let Some(o) = oracles.last_mut() {
                o.examples.push(e.to_string());
            }
        } else if let Some(n) = line.strip_prefix("note: ") {
            notes.push(n.to_string());
        } else if line.starts_with("check: ") {
            summary = line.to_string();
        }
    }
    CheckResult {
        ok: !oracles.is_empty() && oracles.iter().all(|o| o.ok),
        oracles,
        notes,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_specs_parse_and_map_to_flags() {
        let s: ClientSpec = "ours".parse().unwrap();
        assert_eq!(s.peer, Peer::Ours);
        assert!(s.flags().is_empty());
        assert_eq!(s.label(), "ours");
        let s: ClientSpec = "ours:pool=3:linger=5".parse().unwrap();
        assert_eq!(s.flags(), ["--pool-size", "3", "--linger-ms", "5"]);
        assert_eq!(s.label(), "ours:pool=3:linger=5");
        let s: ClientSpec = "ours:alo".parse().unwrap();
        assert_eq!(s.flags(), ["--at-least-once"]);
        let s: ClientSpec = "kafka-streams:linger=10".parse().unwrap();
        assert_eq!(s.peer, Peer::KafkaStreams);
        let s: ClientSpec = "gkes".parse().unwrap();
        assert_eq!(s.peer, Peer::Gkes);
        let s: ClientSpec = "ours:eager".parse().unwrap();
        assert_eq!(s.flags(), ["--eager-when-idle"]);
        for (bad, why) in [
            ("theirs", "unknown streams client"),
            ("ours:pool", "needs a value"),
            ("ours:pool=0", "positive integer"),
            ("ours:pool=x", "positive integer"),
            ("ours:alo=1", "takes no value"),
            ("ours:turbo", "unknown option \"turbo\""),
            ("ours:pool=1:pool=2", "given twice"),
        ] {
            let e = bad.parse::<ClientSpec>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_missing_peer_says_what_is_missing() {
        let root = std::env::temp_dir().join(format!("kbench-peers-{}", std::process::id()));
        let paths = Paths {
            peers: root.join("peers"),
            out: root.join("out"),
            target: root.join("target"),
            workspace_manifest: root.join("Cargo.toml"),
        };
        std::fs::create_dir_all(paths.peers.join("gkes")).unwrap();
        std::fs::write(paths.peers.join("gkes").join("go.mod"), "module x\n").unwrap();
        let bank = root.join("bank");
        let gkes: ClientSpec = "gkes".parse().unwrap();
        let e = prepare(&gkes, &paths, &bank, true).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("the GKES peer is missing") && e.contains(".go files"),
            "{e}"
        );
        let ks: ClientSpec = "kafka-streams".parse().unwrap();
        let e = format!("{:#}", prepare(&ks, &paths, &bank, true).await.unwrap_err());
        assert!(
            e.contains("the Kafka Streams peer is missing") && e.contains("pom.xml"),
            "{e}"
        );
        // Ours needs no build here: the bank binary is given.
        let ours = prepare(&"ours:pool=1".parse().unwrap(), &paths, &bank, true)
            .await
            .unwrap();
        assert_eq!(ours.program, bank);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_settings_line_is_the_one_with_most_settings() {
        let head: Vec<String> = [
            "2026-12-06T03:16:03Z WARN streams::source: replication factor below 3 replicas=1",
            "bank run: input=a output=b group=g pool_size=1 linger_ms=10",
            "something else",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(settings_line(&head), Some(&head[1]));
        assert_eq!(settings_line(&[]), None);
    }

    #[test]
    fn active_lines_and_counters() {
        assert_eq!(parse_active("active=3"), Some(3));
        assert_eq!(parse_active(" active=0 "), Some(0));
        assert_eq!(parse_active("active=x"), None);
        assert_eq!(parse_active("inactive=3"), None);
        let c = counters_of(
            "bank run: stopped: events=130000 transactions=2104 committed_events=130000 \
             restored_records=0 healthy=true x=-1",
        );
        let c: BTreeMap<String, u64> = c.into_iter().collect();
        assert_eq!(c.get("transactions"), Some(&2104));
        assert_eq!(c.get("events"), Some(&130000));
        assert!(!c.contains_key("healthy") && !c.contains_key("x"));
    }

    #[test]
    fn check_output_parses() {
        let text = "note: the input holds 5 offsets, not N = 4\n\
            output: 130000 records, 130000 of 130000 seqs, new seqs read at 2000/s\n\
            oracle a: ok accounts=10000 changelog_records=80000 changelog_mismatches=0 output_mismatches=0\n\
            oracle b: FAILED records=130001 missing=0 duplicates=1 order_violations=1 value_mismatches=0\n\
            \x20   e.g. seq 5 at 1@7 (appearance 2)\n\
            oracle g: ok negative_outputs=0 negative_changelog=0\n\
            oracle c: measured events=120000 p50=30.1ms p99=40.0ms p99.9=50.0ms max=60.0ms\n\
            check: FAILED (oracle b) in 14.2 s\n";
        let r = parse_check(text);
        assert!(!r.ok);
        assert_eq!(r.oracles.len(), 3);
        assert_eq!(r.count("b", "duplicates"), Some(1));
        assert_eq!(r.count("a", "changelog_mismatches"), Some(0));
        assert_eq!(r.oracles[1].examples, ["seq 5 at 1@7 (appearance 2)"]);
        assert_eq!(r.notes.len(), 1);
        assert!(r.summary.starts_with("check: FAILED"));
        assert!(parse_check("nothing").oracles.is_empty());
    }
}
