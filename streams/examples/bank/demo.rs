//! `bank` with no subcommand: the whole workload on one machine, bounded in time.
//!
//! Starts a 1-node Kafka (testkit), creates the topics (P = 6), spawns two processor instances
//! of this same executable (`bank run`), waits until their `active=<n>` lines add up to 6,
//! starts the output reader, loads 20,000 events at 2,000/s, kills one instance with SIGKILL
//! after 5 s of load and restarts it, then checks every oracle. Every child is killed on every
//! way out (an error, the deadline, Ctrl-C, a panic): [`Instances`] kills them on drop.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::check::{self, CheckArgs};
use crate::load::{self, LoadArgs};
use crate::model::Model;
use crate::setup::{self, SetupArgs};
use crate::BoxError;

const PARTITIONS: i32 = 6;
const INSTANCES: usize = 2;
const EVENTS: u64 = 20_000;
const RATE: u64 = 2_000;
const ACCOUNTS: u64 = 10_000;
const SEED: u64 = 42;
const INPUT: &str = "bank-input";
const OUTPUT: &str = "bank-output";
const GROUP: &str = "bank";
const CHANGELOG: &str = "bank-changelog";
/// The whole demo, cluster start included.
const DEADLINE: Duration = Duration::from_secs(180);
/// Which instance is killed, and when (from the start of the load).
const VICTIM: usize = 1;
const KILL_AFTER: Duration = Duration::from_secs(5);
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// Lines of an instance's stderr kept for error messages.
const TAIL_LINES: usize = 30;

/// Runs the demo; `Ok(true)` iff every oracle holds.
pub async fn demo() -> Result<bool, BoxError> {
    let stage = Stage::default();
    let started = Instant::now();
    let run = tokio::time::timeout(DEADLINE, run(stage.clone()));
    let interrupted = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    };
    // Whichever way this ends, `run` is dropped, and with it the instances and the cluster.
    tokio::select! {
        r = run => match r {
            Ok(r) => r,
            Err(_) => Err(format!(
                "demo: gave up after the {} s deadline while {}",
                DEADLINE.as_secs(),
                stage.get()
            )
            .into()),
        },
        sig = interrupted => Err(format!(
            "demo: {sig} after {:.1} s while {}; stopping",
            started.elapsed().as_secs_f64(),
            stage.get()
        )
        .into()),
    }
}

/// What the demo is doing, for the deadline's message.
#[derive(Clone, Default)]
struct Stage(Arc<Mutex<&'static str>>);

impl Stage {
    fn set(&self, s: &'static str) {
        *self.0.lock().unwrap() = s;
    }
    fn get(&self) -> &'static str {
        let s = *self.0.lock().unwrap();
        if s.is_empty() {
            "starting"
        } else {
            s
        }
    }
}

async fn run(stage: Stage) -> Result<bool, BoxError> {
    let t0 = Instant::now();
    let at = move || format!("[{:>5.1}s]", t0.elapsed().as_secs_f64());

    stage.set("starting Kafka");
    println!(
        "{} starting Apache Kafka {} (1 node)...",
        at(),
        testkit::dist::kafka_version()
    );
    let cluster = testkit::Cluster::start(testkit::ClusterConfig::with_brokers(1)).await?;
    let bootstrap = cluster.bootstrap();
    println!("{} bootstrap={bootstrap}", at());

    stage.set("creating the topics");
    setup::setup(&SetupArgs {
        bootstrap: bootstrap.clone(),
        input: INPUT.into(),
        output: OUTPUT.into(),
        partitions: PARTITIONS,
    })
    .await?;

    stage.set("starting the processor instances");
    let mut instances = Instances::new(&bootstrap)?;
    for i in 0..INSTANCES {
        instances.spawn(i)?;
    }
    stage.set("waiting for the instances to be active on every partition");
    let split = instances
        .wait_active(PARTITIONS as u32, Duration::from_secs(90))
        .await?;
    let split: Vec<String> = split.iter().map(u32::to_string).collect();
    println!(
        "{} {INSTANCES} instances active on {PARTITIONS} partitions ({})",
        at(),
        split.join(" + ")
    );

    let model = Arc::new(Model::new(SEED, EVENTS, ACCOUNTS));
    let check_args = CheckArgs {
        bootstrap: bootstrap.clone(),
        input: INPUT.into(),
        output: OUTPUT.into(),
        changelog: CHANGELOG.into(),
        events: EVENTS,
        seed: SEED,
        accounts: ACCOUNTS,
        warmup_events: 0,
        idle_timeout: 60.0,
        settle: 5.0,
        changelog_quiet: 3.0,
    };
    stage.set("reading the output");
    let reader = {
        let (args, model) = (check_args.clone(), model.clone());
        AbortOnDrop(tokio::spawn(async move {
            check::read_output(&args, &model).await
        }))
    };

    stage.set("loading");
    println!(
        "{} loading {EVENTS} events at {RATE}/s; bank-{VICTIM} gets SIGKILL after {} s",
        at(),
        KILL_AFTER.as_secs()
    );
    let loader = AbortOnDrop(tokio::spawn(async move {
        load::load(&LoadArgs {
            bootstrap,
            input: INPUT.into(),
            events: EVENTS,
            rate: RATE,
            accounts: ACCOUNTS,
            seed: SEED,
        })
        .await
    }));
    tokio::time::sleep(KILL_AFTER).await;
    instances.kill(VICTIM).await;
    println!("{} killed bank-{VICTIM} (SIGKILL)", at());
    tokio::time::sleep(RESTART_AFTER).await;
    instances.spawn(VICTIM)?;
    println!("{} restarted bank-{VICTIM}", at());
    let load_report = loader.join().await??;
    print!("{} ", at());
    load_report.print();

    stage.set("waiting for the output");
    let output = reader.join().await??;
    stage.set("reading the changelog");
    let changelog = check::read_changelog(&check_args, &model).await?;
    let input = check::describe_input(&check_args).await?;
    let report = check::evaluate(&model, input, &output, &changelog, t0.elapsed());
    let exited = instances.unexpected_exits();

    stage.set("stopping the instances");
    instances.stop_all(Duration::from_secs(10)).await;
    drop(cluster);

    println!();
    println!("bank demo report");
    println!(
        "  events:  {EVENTS} sent at {RATE}/s, max send lag {:.1} ms",
        load_report.max_send_lag.as_secs_f64() * 1e3
    );
    println!(
        "  outputs: {} records, {} of {EVENTS} seqs",
        report.outputs, report.distinct
    );
    match report.latency {
        Some(l) => println!(
            "  e2e:     p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (includes the kill)",
            l.p50 as f64 / 1e3,
            l.p99 as f64 / 1e3,
            l.max as f64 / 1e3
        ),
        None => println!("  e2e:     no output"),
    }
    for line in report.oracle_lines() {
        println!("  {line}");
    }
    for e in &exited {
        println!("  instance exited unexpectedly: {e}");
    }
    let ok = report.ok() && exited.is_empty();
    println!(
        "  {} in {:.1} s",
        if ok { "PASSED" } else { "FAILED" },
        t0.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// A task aborted when dropped (so a demo that gives up stops its reader and loader too).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, BoxError> {
        (&mut self.0).await.map_err(|e| e.to_string().into())
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One running `bank run` process.
struct Instance {
    child: Child,
    /// Last lines of its stderr.
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Set when its stderr reached end of file.
    stderr_done: watch::Receiver<bool>,
    /// Killed or stopped by us: its exit is expected.
    stopped: bool,
}

/// The processor instances. Dropping this kills every child still running.
struct Instances {
    bootstrap: String,
    slots: Vec<Option<Instance>>,
    /// The latest `active=<n>` of each instance (0 until its first line, and after a restart).
    active: watch::Sender<Vec<u32>>,
}

impl Instances {
    fn new(bootstrap: &str) -> Result<Instances, BoxError> {
        Ok(Instances {
            bootstrap: bootstrap.to_string(),
            slots: (0..INSTANCES).map(|_| None).collect(),
            active: watch::channel(vec![0; INSTANCES]).0,
        })
    }

    /// Starts (or restarts) instance `i`.
    fn spawn(&mut self, i: usize) -> Result<(), BoxError> {
        let exe = std::env::current_exe()?;
        let name = format!("bank-{i}");
        let mut child = Command::new(&exe)
            .args(["run", "--bootstrap", &self.bootstrap])
            .args(["--input", INPUT, "--output", OUTPUT, "--group", GROUP])
            .args(["--changelog", CHANGELOG, "--instance-id", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        self.active.send_modify(|a| a[i] = 0);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, stderr_done) = watch::channel(false);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(forward(stdout, name.clone(), None, None));
        tokio::spawn({
            let (active, tail) = (self.active.clone(), tail.clone());
            async move {
                forward(stderr, name, Some((i, active)), Some(tail)).await;
                let _ = done_tx.send(true);
            }
        });
        self.slots[i] = Some(Instance {
            child,
            tail,
            stderr_done,
            stopped: false,
        });
        Ok(())
    }

    /// Waits until the instances' `active=<n>` add up to `want`, each of them active on at
    /// least one partition (the first to join holds all of them for a moment: that is not the
    /// settled group); fails as soon as one exits. Returns the split.
    async fn wait_active(&mut self, want: u32, timeout: Duration) -> Result<Vec<u32>, BoxError> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.active.subscribe();
        loop {
            let split = rx.borrow_and_update().clone();
            if split.iter().sum::<u32>() == want && split.iter().all(|n| *n > 0) {
                return Ok(split);
            }
            for i in 0..self.slots.len() {
                if let Some(e) = self.exited(i).await {
                    return Err(format!("instance {i} exited: {e}").into());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the instances were not active on {want} partitions after {} s (active: \
                     {:?})",
                    timeout.as_secs(),
                    *rx.borrow()
                )
                .into());
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    /// If instance `i` has exited: its status and the tail of its stderr.
    async fn exited(&mut self, i: usize) -> Option<String> {
        let inst = self.slots[i].as_mut()?;
        let status = inst.child.try_wait().ok()??;
        // Let the forwarder take in the last lines before quoting them.
        let mut done = inst.stderr_done.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), done.wait_for(|d| *d)).await;
        let tail: Vec<String> = inst.tail.lock().unwrap().iter().cloned().collect();
        Some(format!(
            "{status}; its stderr ended with:\n{}",
            tail.join("\n")
        ))
    }

    /// Instances that exited without being killed or stopped by us.
    fn unexpected_exits(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(inst) = slot.as_mut().filter(|s| !s.stopped) {
                if let Ok(Some(status)) = inst.child.try_wait() {
                    let tail = inst.tail.lock().unwrap();
                    let last = tail.back().cloned().unwrap_or_default();
                    out.push(format!("bank-{i}: {status} (last stderr line: {last})"));
                }
            }
        }
        out
    }

    /// SIGKILL to instance `i`, and waits for it.
    async fn kill(&mut self, i: usize) {
        if let Some(inst) = self.slots[i].as_mut() {
            inst.stopped = true;
            let _ = inst.child.kill().await;
        }
    }

    /// SIGTERM to every instance; those still running after `grace` get SIGKILL.
    async fn stop_all(&mut self, grace: Duration) {
        for inst in self.slots.iter_mut().flatten() {
            inst.stopped = true;
            if let (Ok(None), Some(pid)) = (inst.child.try_wait(), inst.child.id()) {
                // tokio offers SIGKILL only; `kill -TERM <pid>` asks for the graceful exit.
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for (i, inst) in self.slots.iter_mut().enumerate() {
            let Some(inst) = inst.as_mut() else { continue };
            match tokio::time::timeout_at(deadline, inst.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => eprintln!("demo: bank-{i} ended after SIGTERM with {status}"),
                Ok(Err(e)) => eprintln!("demo: waiting for bank-{i}: {e}"),
                Err(_) => {
                    eprintln!(
                        "demo: bank-{i} still running {} s after SIGTERM; killing it",
                        grace.as_secs()
                    );
                    let _ = inst.child.kill().await;
                }
            }
        }
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        // `kill_on_drop` does this too when the children drop; being explicit covers a child
        // handle that outlives this struct.
        for inst in self.slots.iter_mut().flatten() {
            let _ = inst.child.start_kill();
        }
    }
}

/// Copies a child's output lines to our stderr, prefixed with its name. On stderr, also
/// tracks its `active=<n>` lines and keeps its last lines.
async fn forward(
    from: impl AsyncRead + Unpin,
    name: String,
    active: Option<(usize, watch::Sender<Vec<u32>>)>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut lines = BufReader::new(from).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{name}] {line}");
        if let Some((i, active)) = &active {
            if let Some(n) = parse_active(&line) {
                active.send_modify(|a| a[*i] = n);
            }
        }
        if let Some(tail) = &tail {
            let mut t = tail.lock().unwrap();
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// The `n` of a line that is exactly `active=<n>` (BANK.md).
fn parse_active(line: &str) -> Option<u32> {
    line.trim().strip_prefix("active=")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_active;

    #[test]
    fn active_lines() {
        assert_eq!(parse_active("active=3"), Some(3));
        assert_eq!(parse_active("active=0\r"), Some(0));
        assert_eq!(parse_active("  active=12  "), Some(12));
        assert_eq!(parse_active("active="), None);
        assert_eq!(parse_active("inactive=3"), None);
        assert_eq!(parse_active("INFO active=3 standby=1"), None);
    }
}
