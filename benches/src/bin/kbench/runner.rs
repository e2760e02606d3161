//! Clients under test: how each is built, how its worker is started, and one measured run of a
//! worker as a child process (wall time, records, and the child's CPU time).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::resource::{getrusage, UsageWho};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::spec::{Mode, Percentiles, WorkerResult, Workload, PROGRESS_PREFIX};

/// A client kbench can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// This project's client (`kbench worker`).
    Ours,
    /// The Apache Kafka Java client (the broker's own version).
    Java,
    /// franz-go (Go).
    FranzGo,
    /// librdkafka through the `rdkafka` crate.
    Rdkafka,
    /// The pure-Rust `krafka` crate.
    Krafka,
    /// The pure-Rust `kacrab` crate.
    Kacrab,
}

impl ClientKind {
    pub const ALL: [ClientKind; 6] = [
        ClientKind::Ours,
        ClientKind::Java,
        ClientKind::FranzGo,
        ClientKind::Rdkafka,
        ClientKind::Krafka,
        ClientKind::Kacrab,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Ours => "ours",
            ClientKind::Java => "java",
            ClientKind::FranzGo => "franz-go",
            ClientKind::Rdkafka => "rdkafka",
            ClientKind::Krafka => "krafka",
            ClientKind::Kacrab => "kacrab",
        }
    }
}

/// Where sources and build outputs live.
pub struct Paths {
    /// `benches/peers` of the checkout kbench was built from.
    pub peers: PathBuf,
    /// Build outputs of the peers: `<cargo target dir>/kbench-peers`.
    pub out: PathBuf,
    /// The cargo target dir (where `cargo build --release` puts the workspace's binaries).
    pub target: PathBuf,
    /// The workspace's `Cargo.toml`.
    pub workspace_manifest: PathBuf,
}

impl Paths {
    pub fn detect() -> Paths {
        let benches = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        // `$CARGO_TARGET_DIR`, else the target folder kbench itself runs from
        // (`<target>/<profile>/kbench`), else the checkout's `target/`.
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let dir = exe.parent()?.parent()?;
                dir.join("CACHEDIR.TAG").exists().then(|| dir.to_path_buf())
            })
            .unwrap_or_else(|| benches.join("..").join("target"));
        let target = std::path::absolute(&target).unwrap_or(target);
        Paths {
            peers: benches.join("peers"),
            out: target.join("kbench-peers"),
            workspace_manifest: benches.join("..").join("Cargo.toml"),
            target,
        }
    }
}

/// A built client: the program and the arguments before the workload's.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub kind: ClientKind,
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

/// Builds (if needed) `kind` and tells how to start its worker, or why it is unavailable.
pub async fn prepare(kind: ClientKind, paths: &Paths, quiet: bool) -> Result<Launcher> {
    std::fs::create_dir_all(&paths.out)
        .with_context(|| format!("creating {}", paths.out.display()))?;
    let say = |what: &str| {
        if !quiet {
            eprintln!("kbench: building {} peer ({what})", kind.name());
        }
    };
    match kind {
        ClientKind::Ours => {
            let exe = std::env::current_exe().context("locating the kbench executable")?;
            Ok(Launcher {
                kind,
                program: exe,
                prefix: vec!["worker".into()],
            })
        }
        ClientKind::Java => {
            let src = paths.peers.join("java").join("KBenchPeer.java");
            let out = paths.out.join("java");
            std::fs::create_dir_all(&out)?;
            let version = testkit::dist::kafka_version();
            let cp = tokio::task::spawn_blocking(move || testkit::dist::classpath(&version))
                .await?
                .map_err(|e| anyhow!("Kafka client jars: {e}"))?;
            let class = out.join("KBenchPeer.class");
            let fresh = match (mtime(&class), mtime(&src)) {
                (Some(c), Some(s)) => c >= s,
                _ => false,
            };
            if !fresh {
                say("javac");
                let mut cmd = Command::new("javac");
                cmd.arg("-cp")
                    .arg(&cp)
                    .arg("-d")
                    .arg(&out)
                    .arg("-nowarn")
                    .arg(&src);
                build(cmd, &paths.out.join("java.build.log")).await?;
            }
            Ok(Launcher {
                kind,
                program: "java".into(),
                prefix: vec![
                    "-Xms512m".into(),
                    "-Xmx1g".into(),
                    "-cp".into(),
                    format!("{}:{cp}", out.display()),
                    "KBenchPeer".into(),
                ],
            })
        }
        ClientKind::FranzGo => {
            let dir = paths.peers.join("franz-go");
            let bin = paths.out.join("kbench-franz-go");
            say("go build");
            let mut cmd = Command::new("go");
            cmd.current_dir(&dir)
                .arg("build")
                .arg("-o")
                .arg(&bin)
                .arg(".");
            build(cmd, &paths.out.join("franz-go.build.log")).await?;
            Ok(Launcher {
                kind,
                program: bin,
                prefix: vec![],
            })
        }
        ClientKind::Rdkafka | ClientKind::Krafka | ClientKind::Kacrab => {
            let name = kind.name();
            let manifest = paths.peers.join(name).join("Cargo.toml");
            let target = paths.out.join(name);
            say("cargo build --release; the first build takes minutes");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.arg("build")
                .arg("--release")
                .arg("--quiet")
                .arg("--manifest-path")
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", &target);
            build(cmd, &paths.out.join(format!("{name}.build.log"))).await?;
            Ok(Launcher {
                kind,
                program: target.join("release").join(format!("kbench-peer-{name}")),
                prefix: vec![],
            })
        }
    }
}

pub(crate) fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).ok()?.modified().ok()
}

/// Runs a build command, its output into `log`; on failure the error quotes the log's tail.
pub(crate) async fn build(mut cmd: Command, log: &Path) -> Result<()> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let file2 = file.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(file2));
    let status = cmd
        .status()
        .await
        .map_err(|e| anyhow!("cannot start {:?}: {e}", cmd.as_std().get_program()))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "build failed ({status}); see {}:\n{}",
            log.display(),
            tail.join("\n")
        );
    }
    Ok(())
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub client: ClientKind,
    /// What the worker called itself (name and version).
    pub client_version: String,
    pub mode: Mode,
    pub run: usize,
    pub records: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    /// 10^6 bytes of values per second.
    pub mb_per_s: f64,
    pub latency_ms: Option<Percentiles>,
    /// The worker's user + system CPU time (getrusage of the reaped child).
    pub cpu_s: f64,
    /// CPU seconds per 10^9 value bytes.
    pub cpu_s_per_gb: f64,
    pub settings: std::collections::BTreeMap<String, String>,
}

pub(crate) fn children_cpu() -> Result<f64> {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// Runs one worker to completion, shows its progress, checks its result.
pub async fn run_worker(
    launcher: &Launcher,
    workload: &Workload,
    mode: Mode,
    bootstrap: &str,
    topic: &str,
    run: usize,
    quiet: bool,
) -> Result<RunRecord> {
    let mut cmd = Command::new(&launcher.program);
    cmd.args(&launcher.prefix)
        .args(workload.worker_args(mode, bootstrap, topic))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(workload.records)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>22} [{bar:30}] {human_pos}/{human_len} {per_sec} {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {} #{run}", launcher.kind.name(), mode));

    // Only children that have been waited for count in RUSAGE_CHILDREN; the embedded broker is
    // never reaped while kbench runs, so the delta is this worker's CPU time.
    let cpu_before = children_cpu()?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", launcher.program.display()))?;
    let stdout = child.stdout.take().context("worker stdout")?;
    let stderr = child.stderr.take().context("worker stderr")?;
    let bar2 = bar.clone();
    let err_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: VecDeque<String> = VecDeque::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line.strip_prefix(PROGRESS_PREFIX) {
                if let Ok(n) = n.trim().parse::<u64>() {
                    bar2.set_position(n);
                }
                continue;
            }
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail
    });
    let out_task = collect_lines(stdout);
    let limit = Duration::from_secs(workload.timeout_s.saturating_add(60));
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s.context("waiting for the worker")?,
        Err(_) => {
            let _ = child.kill().await;
            bar.abandon();
            bail!(
                "{} worker did not finish within {} s; killed",
                launcher.kind.name(),
                limit.as_secs()
            );
        }
    };
    let cpu_s = (children_cpu()? - cpu_before).max(0.0);
    let tail = err_task.await.unwrap_or_default();
    let out = out_task.await.unwrap_or_default();
    bar.finish_and_clear();
    let tail_text = tail.iter().cloned().collect::<Vec<_>>().join("\n");
    if !status.success() {
        bail!(
            "{} worker failed ({status}); its last stderr lines:\n{tail_text}",
            launcher.kind.name()
        );
    }
    let line = out
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| {
            anyhow!(
                "{} worker printed no result line; stderr:\n{tail_text}",
                launcher.kind.name()
            )
        })?;
    let r: WorkerResult = serde_json::from_str(line)
        .with_context(|| format!("{} worker result {line:?}", launcher.kind.name()))?;
    if r.records < workload.records || r.mode != mode {
        bail!(
            "{} worker reported {} {} records, expected {} {}",
            launcher.kind.name(),
            r.records,
            r.mode,
            workload.records,
            mode
        );
    }
    let elapsed = r.elapsed_s.max(1e-9);
    Ok(RunRecord {
        client: launcher.kind,
        client_version: r.client,
        mode,
        run,
        records: r.records,
        bytes: r.bytes,
        elapsed_s: r.elapsed_s,
        records_per_s: r.records as f64 / elapsed,
        mb_per_s: r.bytes as f64 / 1e6 / elapsed,
        latency_ms: r.latency_ms,
        cpu_s,
        cpu_s_per_gb: if r.bytes > 0 {
            cpu_s / (r.bytes as f64 / 1e9)
        } else {
            0.0
        },
        settings: r.settings,
    })
}

/// Reads a worker's stdout to the end in a task; its lines once the worker exits.
pub(crate) fn collect_lines(
    stdout: tokio::process::ChildStdout,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    })
}
