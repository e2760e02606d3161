//! BANK.md "Fault runs": the bank app on 3 brokers (topics RF 3, `min.insync.replicas=2`),
//! its instances as separate `bank run` processes with stable instance ids, under faults while
//! the load runs, then `bank check` must report oracles (a), (b) and (g) holding, and a Java
//! read_committed consumer must read the same output topic as ours, record for record.
//!
//! The faults, one phase after another while `bank load` sends:
//! 1. kill -9 of a random instance every 5-15 s, restarted 0.5-3 s later (same instance id);
//! 2. a zombie evicted: SIGSTOP of one instance past its session timeout (15 s, bank run's
//!    default; it has no flag for it) until the others own its partitions, then SIGCONT: it
//!    must either exit or rejoin, and nothing it commits after the eviction may be visible
//!    (oracle (b) counts the duplicates that would make);
//! 3. a zombie replaced: SIGSTOP, a new process with the same instance id takes over (its
//!    transactional id fences the old producer), SIGCONT: the zombie must exit;
//! 4. fault-proxy cuts of one instance's connections only (each instance reaches the brokers
//!    through a listener of its own, behind its own proxies: `ClusterConfig::proxied_listeners`);
//! 5. kill -9 of the broker coordinating one instance's transactional id
//!    (`{group}-{instance_id}-{slot}`, found with FindCoordinator key type 1), then its restart;
//! 6. scaling 3 -> 4 -> 2 instances (the two leaving ones get SIGTERM and must exit 0).
//!
//! Environment:
//! - `STREAMS_LONG=1`: 2,000,000 events, and the phases repeat until the load has ended;
//! - `STREAMS_POOL_SIZE` (default 1): `bank run --pool-size`;
//! - `STREAMS_FAULTS_SEED`: the seed of the fault schedule (default: from the clock; printed);
//! - `STREAMS_FAULTS_EVENTS`, `STREAMS_FAULTS_RATE`: override the load's size and rate;
//! - `STREAMS_FAULTS_PHASES`: which phases run, in which order (a name may repeat), to
//!   reproduce one that failed. Default `kills,cuts,scale`; with `STREAMS_FAULTS_ALL=1` or
//!   `STREAMS_LONG=1` all six (`kills,evict,replace,cuts,coordinator,scale`).
//!
//! **Open bugs** (why `evict`, `replace` and `coordinator` are not in the default run yet; each
//! failed runs here, the test asserts the correct behaviour, and the project's issue notes give
//! seeds and logs): after an evicted zombie, its partitions were at times not picked up by the
//! new owners; a revoke drain waited out the session timeout while the group sat in
//! PreparingRebalance (both instances then failed); after a transaction-coordinator failover an
//! instance was fenced on its own transactional id; after a coordinator kill an instance whose
//! pool failed ("the previous transaction is still ending") did not exit.
//! - `STREAMS_LOG`: the instances' log filter (default here `warn,streams=info`).
//!
//! The default run (200,000 events at 1,700/s, one cycle of the phases) takes about 150 s here
//! (2 cores), Kafka's start included. The check runs after the load, so its latency line (c)
//! measures nothing useful.
//!
//! Every process (brokers, instances, loader, checker, Java) is killed on every way out, and
//! every wait has a deadline. Each process's stderr goes to a file in a log directory that is
//! kept, and named in the failure message, when the test fails.

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use streams::kafka_client::admin::{Admin, AlterConfigOp, ConfigResource};
use streams::kafka_client::config::{ClientConfig, ConsumerConfig, IsolationLevel};
use streams::kafka_client::kafka_wire::messages::FindCoordinatorRequest;
use streams::kafka_client::kafka_wire::KString;
use streams::kafka_client::offsets::list_offsets;
use streams::kafka_client::{Client, Consumer, Offset, Purpose, TopicPartition};
use support::Proc;

const PARTITIONS: u32 = 6;
const BROKERS: usize = 3;
/// Instances at the start (and at the start of every cycle of phases).
const INSTANCES: usize = 3;
/// Instance slots: the scaling phase goes up to 4.
const SLOTS: usize = 4;
/// `bank run`'s session timeout (streams' default; `bank run` has no flag to change it).
const SESSION_TIMEOUT: Duration = Duration::from_secs(15);
const GROUP: &str = "bank";
const INPUT: &str = "bank-input";
const OUTPUT: &str = "bank-output";
const CHANGELOG: &str = "bank-changelog";
/// Stderr lines of each process quoted in a failure message.
const TAIL: usize = 25;

/// The fault phases, in their default order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Kills,
    Evict,
    Replace,
    Cuts,
    Coordinator,
    Scale,
}

impl Phase {
    const ALL: [(Phase, &'static str); 6] = [
        (Phase::Kills, "kills"),
        (Phase::Evict, "evict"),
        (Phase::Replace, "replace"),
        (Phase::Cuts, "cuts"),
        (Phase::Coordinator, "coordinator"),
        (Phase::Scale, "scale"),
    ];

    /// `STREAMS_FAULTS_PHASES=evict,evict,cuts`: these phases in this order (to repeat one
    /// that failed); by default the phases without open bugs.
    fn from_env() -> Vec<Phase> {
        let Ok(list) = std::env::var("STREAMS_FAULTS_PHASES") else {
            let all = ["STREAMS_FAULTS_ALL", "STREAMS_LONG"]
                .iter()
                .any(|v| std::env::var(v).is_ok_and(|v| v == "1"));
            if all {
                return Phase::ALL.iter().map(|(p, _)| *p).collect();
            }
            // See "Open bugs" in the module docs.
            return vec![Phase::Kills, Phase::Cuts, Phase::Scale];
        };
        list.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                Phase::ALL
                    .iter()
                    .find(|(_, name)| *name == n)
                    .map(|(p, _)| *p)
                    .unwrap_or_else(|| {
                        let names: Vec<&str> = Phase::ALL.iter().map(|(_, n)| *n).collect();
                        panic!("STREAMS_FAULTS_PHASES: no phase {n:?} (phases: {names:?})")
                    })
            })
            .collect()
    }
}

/// The run's size and knobs, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    events: u64,
    rate: u64,
    pool_size: usize,
    seed: u64,
    long: bool,
    phases: Vec<Phase>,
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
    )
}

impl Settings {
    fn from_env() -> Settings {
        let long = std::env::var("STREAMS_LONG").is_ok_and(|v| v == "1");
        let (events, rate) = if long {
            (2_000_000, 3_000)
        } else {
            // 200,000 at 1,700/s: 118 s of load, about what the phases take (96 s to 115 s,
            // with the random waits).
            (200_000, 1_700)
        };
        let seed = env_u64("STREAMS_FAULTS_SEED").unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Settings {
            events: env_u64("STREAMS_FAULTS_EVENTS").unwrap_or(events),
            rate: env_u64("STREAMS_FAULTS_RATE").unwrap_or(rate).max(1),
            pool_size: env_u64("STREAMS_POOL_SIZE").unwrap_or(1).max(1) as usize,
            seed,
            long,
            phases: Phase::from_env(),
        }
    }

    fn load_time(&self) -> Duration {
        Duration::from_secs_f64(self.events as f64 / self.rate as f64)
    }

    /// The whole scenario after the cluster's start: the load, 4 minutes of phases beyond it,
    /// and the reading at the end.
    fn deadline(&self) -> Duration {
        self.load_time() + Duration::from_secs(420) + Duration::from_millis(self.events / 4)
    }
}

/// SplitMix64: the fault schedule's random numbers, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A duration uniformly in [lo, hi] seconds.
    fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(lo + (hi - lo) * unit)
    }

    fn pick(&mut self, from: &[usize]) -> usize {
        from[self.below(from.len())]
    }
}

/// Prints timeline lines, `[  12.3s] ...`, and remembers what the test is doing (for the
/// deadline's message).
#[derive(Clone)]
struct Clock {
    t0: Instant,
    stage: Arc<Mutex<String>>,
}

impl Clock {
    fn log(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>6.1}s] {}",
            self.t0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    fn stage(&self, s: impl Into<String>) {
        let s = s.into();
        self.log(format!("-- {s}"));
        *self.stage.lock().unwrap() = s;
    }

    fn current(&self) -> String {
        self.stage.lock().unwrap().clone()
    }
}

/// The instances (and the loader), each a process killed when this drops.
struct Fleet {
    bin_args: Vec<String>,
    /// Per slot: the bootstrap of its own proxied listener.
    bootstraps: Vec<String>,
    slots: Vec<Option<Proc>>,
    /// Processes out of their slot but alive or kept for their output (zombies, retired).
    others: Vec<Proc>,
    loader: Option<Proc>,
    starts: usize,
    log_dir: PathBuf,
}

fn slot_name(slot: usize) -> String {
    format!("bank-{slot}")
}

fn listener_name(slot: usize) -> String {
    format!("BANK{slot}")
}

impl Fleet {
    /// Starts (or restarts) the instance of `slot`, with instance id `bank-<slot>`.
    fn start(&mut self, slot: usize) -> Result<u32, String> {
        self.starts += 1;
        let name = slot_name(slot);
        let log = self.log_dir.join(format!("{:02}-{name}.log", self.starts));
        let mut args = vec![
            "run".to_string(),
            "--bootstrap".into(),
            self.bootstraps[slot].clone(),
            "--instance-id".into(),
            name.clone(),
        ];
        args.extend(self.bin_args.iter().cloned());
        let proc = Proc::start(&name, &args, Some(&log))
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let pid = proc.pid();
        if let Some(old) = self.slots[slot].replace(proc) {
            self.others.push(old);
        }
        Ok(pid)
    }

    /// Takes the process out of its slot (it no longer counts for the group's split).
    fn take(&mut self, slot: usize) -> Option<Proc> {
        self.slots[slot].take()
    }

    fn live(&mut self) -> Vec<usize> {
        (0..SLOTS)
            .filter(|&i| self.slots[i].as_mut().is_some_and(|p| p.exited().is_none()))
            .collect()
    }

    fn free(&mut self) -> Vec<usize> {
        (0..SLOTS).filter(|&i| self.slots[i].is_none()).collect()
    }

    /// An instance that exited without being told to.
    fn unexpected_exit(&mut self) -> Option<String> {
        for slot in 0..SLOTS {
            let Some(p) = self.slots[slot].as_mut() else {
                continue;
            };
            if let Some(status) = p.exited() {
                p.wait_exit(Duration::from_secs(1));
                return Some(format!(
                    "{} (pid {}) exited by itself: {status}; its stderr ended with:\n{}",
                    p.name(),
                    p.pid(),
                    p.stderr_tail(TAIL)
                ));
            }
        }
        None
    }

    /// `bank-0=2 bank-1=2 bank-2=- ...` for the live instances.
    fn split(&mut self) -> String {
        let mut s = Vec::new();
        for slot in self.live() {
            let a = self.slots[slot].as_ref().and_then(Proc::active);
            s.push(format!(
                "{}={}",
                slot_name(slot),
                a.map_or("-".to_string(), |n| n.to_string())
            ));
        }
        s.join(" ")
    }

    /// The live instances own every partition between them, each at least one.
    fn settled(&mut self) -> bool {
        let live = self.live();
        if live.is_empty() {
            return false;
        }
        let mut sum = 0;
        for slot in live {
            match self.slots[slot].as_ref().and_then(Proc::active) {
                Some(n) if n > 0 => sum += n,
                _ => return false,
            }
        }
        sum == PARTITIONS
    }

    /// Every process's stderr tail, for a failure message.
    fn tails(&mut self) -> String {
        let mut s = String::new();
        let procs = self
            .slots
            .iter()
            .flatten()
            .chain(self.others.iter())
            .chain(self.loader.iter());
        for p in procs {
            s.push_str(&format!(
                "--- {} (pid {}, log {}):\n{}",
                p.name(),
                p.pid(),
                p.log().map_or("-".into(), |l| l.display().to_string()),
                p.stderr_tail(TAIL)
            ));
        }
        s
    }
}

/// Starts the cluster: 3 nodes, and a proxied listener per instance slot.
async fn start_cluster() -> testkit::Cluster {
    let mut cfg = testkit::ClusterConfig::with_brokers(BROKERS);
    // Kept for a failure's message; the test removes it when it passes.
    cfg.keep_run_dir = true;
    for slot in 0..SLOTS {
        cfg.proxied_listener(listener_name(slot));
    }
    match testkit::Cluster::start(cfg).await {
        Ok(c) => c,
        Err(e) => panic!("the 3-node Kafka cluster must start: {e}"),
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    cfg
}

/// Runs a short `bank` command to its end within `limit`; its stdout, or why it failed.
async fn bank_to_end(
    name: &str,
    args: &[String],
    log: &Path,
    limit: Duration,
) -> Result<String, String> {
    let mut p = Proc::start(name, args, Some(log)).map_err(|e| format!("{name}: {e}"))?;
    let status = wait_exit(&mut p, limit).await;
    let out = p.stdout_text();
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!(
            "{name} failed ({s}):\n{out}{}",
            p.stderr_tail(TAIL * 2)
        )),
        None => Err(format!(
            "{name} did not end within {limit:?}:\n{out}{}",
            p.stderr_tail(TAIL * 2)
        )),
    }
}

/// [`Proc::wait_exit`] without blocking the runtime.
async fn wait_exit(p: &mut Proc, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while p.exited().is_none() {
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.wait_exit(Duration::from_secs(1))
}

/// Sets `min.insync.replicas=2` on the three topics and checks it took, with RF 3 everywhere.
async fn configure_topics(bootstrap: &str, clock: &Clock) -> Result<(), String> {
    let admin = Admin::new(client_config(bootstrap))
        .await
        .map_err(|e| format!("admin: {e}"))?;
    let result = async {
        for topic in [INPUT, OUTPUT, CHANGELOG] {
            let resource = ConfigResource::Topic(topic.to_string());
            admin
                .alter_configs(&resource, &[AlterConfigOp::set("min.insync.replicas", "2")])
                .await
                .map_err(|e| format!("setting min.insync.replicas on {topic}: {e}"))?;
        }
        // Brokers apply a change from the metadata log shortly after it commits.
        let deadline = Instant::now() + Duration::from_secs(30);
        for topic in [INPUT, OUTPUT, CHANGELOG] {
            let resource = ConfigResource::Topic(topic.to_string());
            loop {
                let entries = admin
                    .describe_configs(&resource)
                    .await
                    .map_err(|e| format!("describing {topic}: {e}"))?;
                let isr = entries
                    .iter()
                    .find(|e| e.name == "min.insync.replicas")
                    .and_then(|e| e.value.clone());
                if isr.as_deref() == Some("2") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!("{topic}: min.insync.replicas is {isr:?}, not 2"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let described = admin
            .describe_topics(&[INPUT, OUTPUT, CHANGELOG])
            .await
            .map_err(|e| format!("describing the topics: {e}"))?;
        for t in &described {
            let rf: Vec<usize> = t.partitions.iter().map(|p| p.replicas.len()).collect();
            if t.partitions.len() != PARTITIONS as usize || rf.iter().any(|r| *r != 3) {
                return Err(format!(
                    "{}: {} partitions with replication factors {rf:?}; want {PARTITIONS} \
                     with 3",
                    t.name,
                    t.partitions.len()
                ));
            }
        }
        clock.log(format!(
            "topics {INPUT}, {OUTPUT}, {CHANGELOG}: {PARTITIONS} partitions, RF 3, \
             min.insync.replicas=2"
        ));
        Ok(())
    }
    .await;
    admin.client().close();
    result
}

/// The node coordinating `transactional_id` (FindCoordinator, key type 1).
async fn txn_coordinator(bootstrap: &str, transactional_id: &str) -> Result<i32, String> {
    let client = Client::connect(client_config(bootstrap))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        let sent = client
            .send_any(Purpose::Control, |v| {
                if v >= 4 {
                    FindCoordinatorRequest {
                        key_type: 1,
                        coordinator_keys: vec![KString::from(transactional_id)],
                        ..Default::default()
                    }
                } else {
                    FindCoordinatorRequest {
                        key: KString::from(transactional_id),
                        key_type: 1,
                        ..Default::default()
                    }
                }
            })
            .await;
        let why = match sent {
            Ok(resp) => {
                let (code, node) = match resp.coordinators.first() {
                    Some(c) => (c.error_code, c.node_id),
                    None => (resp.error_code, resp.node_id),
                };
                if code == 0 && node >= 0 {
                    break Ok(node);
                }
                format!("error code {code}")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            break Err(format!(
                "no coordinator for {transactional_id} within 30 s: {why}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    client.close();
    result
}

/// The group as its coordinator sees it: state, and each member's instance id and assigned
/// partitions (for failure messages).
async fn describe_group(bootstrap: &str) -> String {
    let admin = match Admin::new(client_config(bootstrap)).await {
        Ok(a) => a,
        Err(e) => return format!("(cannot describe the group: {e})"),
    };
    let described =
        tokio::time::timeout(Duration::from_secs(15), admin.describe_groups(&[GROUP])).await;
    let offsets =
        tokio::time::timeout(Duration::from_secs(15), admin.list_group_offsets(GROUP)).await;
    admin.client().close();
    let groups = match described {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return format!("(cannot describe the group: {e})"),
        Err(_) => return "(describing the group took over 15 s)".into(),
    };
    let mut out = String::new();
    for g in groups {
        out.push_str(&format!("group {} {}:", g.group_id, g.state));
        for m in g.members {
            let mut ps: Vec<i32> = m.assignment.iter().map(|tp| tp.partition).collect();
            ps.sort_unstable();
            out.push_str(&format!(
                " {}={ps:?}",
                m.group_instance_id.as_deref().unwrap_or(&m.member_id)
            ));
        }
    }
    match offsets {
        Ok(Ok(offsets)) => {
            let list: Vec<String> = offsets
                .iter()
                .map(|(tp, o)| format!("{}={o}", tp.partition))
                .collect();
            out.push_str(&format!("; committed offsets {}", list.join(" ")));
        }
        Ok(Err(e)) => out.push_str(&format!("; committed offsets unreadable: {e}")),
        Err(_) => out.push_str("; committed offsets: no answer within 15 s"),
    }
    out.push_str(&open_transactions(bootstrap).await);
    out
}

/// Partitions of the output and the changelog whose last stable offset is below their end (an
/// open transaction holds them), as `; open transactions: output 3: 100 < 120 ...`.
async fn open_transactions(bootstrap: &str) -> String {
    let client = match Client::connect(client_config(bootstrap)).await {
        Ok(c) => c,
        Err(e) => return format!("; (no client for the offsets: {e})"),
    };
    let mut out = String::new();
    for topic in [OUTPUT, CHANGELOG] {
        let tps: Vec<(TopicPartition, Offset)> = (0..PARTITIONS as i32)
            .map(|p| (TopicPartition::new(topic, p), Offset::Latest))
            .collect();
        let read = async {
            let end = list_offsets(&client, &tps, IsolationLevel::ReadUncommitted).await?;
            let stable = list_offsets(&client, &tps, IsolationLevel::ReadCommitted).await?;
            Ok::<_, streams::kafka_client::Error>((end, stable))
        };
        match tokio::time::timeout(Duration::from_secs(15), read).await {
            Ok(Ok((end, stable))) => {
                for (tp, _) in &tps {
                    if let (Some(e), Some(s)) = (end.get(tp), stable.get(tp)) {
                        if s.offset < e.offset {
                            out.push_str(&format!(
                                " {topic} {}: {} < {}",
                                tp.partition, s.offset, e.offset
                            ));
                        }
                    }
                }
            }
            Ok(Err(e)) => out.push_str(&format!(" {topic}: offsets unreadable: {e}")),
            Err(_) => out.push_str(&format!(" {topic}: no offsets within 15 s")),
        }
    }
    client.close();
    if out.is_empty() {
        "; no open transaction on the output or the changelog".into()
    } else {
        format!("; open transactions (last stable < end):{out}")
    }
}

/// The fault scenario's state.
struct Scenario<'a> {
    s: &'a Settings,
    cluster: &'a testkit::Cluster,
    fleet: &'a mut Fleet,
    rng: Rng,
    clock: Clock,
    /// What happened to the zombies, for the report.
    notes: Vec<String>,
}

impl Scenario<'_> {
    /// Sleeps `d`, failing early if an instance exits by itself.
    async fn sleep(&mut self, d: Duration) -> Result<(), String> {
        let until = Instant::now() + d;
        loop {
            if let Some(e) = self.fleet.unexpected_exit() {
                return Err(e);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
        }
    }

    /// Waits until the live instances own every partition, each at least one.
    async fn settle(&mut self, limit: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(e) = self.fleet.unexpected_exit() {
                return Err(e);
            }
            if self.fleet.settled() {
                let split = self.fleet.split();
                self.clock.log(format!(
                    "settled in {:.1} s: {split}",
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if started.elapsed() >= limit {
                let split = self.fleet.split();
                let group = describe_group(&self.cluster.bootstrap()).await;
                return Err(format!(
                    "the group did not settle within {limit:?} (active: {split}; the \
                     coordinator's view: {group})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn loading(&mut self) -> bool {
        self.fleet
            .loader
            .as_mut()
            .is_some_and(|l| l.exited().is_none())
    }

    /// Starts instances in free slots until `n` run.
    async fn ensure(&mut self, n: usize) -> Result<(), String> {
        let mut started = false;
        while self.fleet.live().len() < n {
            let Some(&slot) = self.fleet.free().first() else {
                return Err("no free instance slot".into());
            };
            let pid = self.fleet.start(slot)?;
            self.clock
                .log(format!("started {} (pid {pid})", slot_name(slot)));
            started = true;
        }
        if started {
            self.settle(Duration::from_secs(90)).await?;
        }
        Ok(())
    }

    /// Phase 1: kill -9 of a random instance every 5-15 s, restarted 0.5-3 s later.
    async fn kills(&mut self, rounds: usize) -> Result<(), String> {
        self.clock
            .stage(format!("kill -9 of instances, {rounds} rounds"));
        for _ in 0..rounds {
            let wait = self.rng.secs(5.0, 15.0);
            self.sleep(wait).await?;
            let live = self.fleet.live();
            let slot = self.rng.pick(&live);
            let mut victim = self.fleet.take(slot).expect("a live slot");
            let pid = victim.pid();
            victim.kill();
            self.fleet.others.push(victim);
            self.clock
                .log(format!("kill -9 {} (pid {pid})", slot_name(slot)));
            let down = self.rng.secs(0.5, 3.0);
            self.sleep(down).await?;
            let pid = self.fleet.start(slot)?;
            self.clock.log(format!(
                "restarted {} (pid {pid}) after {:.1} s",
                slot_name(slot),
                down.as_secs_f64()
            ));
        }
        self.settle(Duration::from_secs(90)).await
    }

    /// Phase 2: SIGSTOP past the session timeout, until the others own its partitions; then
    /// SIGCONT. It must exit (then it is restarted) or rejoin.
    async fn zombie_evicted(&mut self) -> Result<(), String> {
        self.clock
            .stage("zombie: SIGSTOP past the session timeout, then SIGCONT");
        let live = self.fleet.live();
        let slot = self.rng.pick(&live);
        let name = slot_name(slot);
        let mut z = self.fleet.take(slot).expect("a live slot");
        if !z.signal("STOP") {
            return Err(format!("cannot SIGSTOP {name}"));
        }
        let stopped = Instant::now();
        self.clock.log(format!("SIGSTOP {name} (pid {})", z.pid()));
        // The others own its partitions only once the coordinator has evicted it.
        let limit = SESSION_TIMEOUT + Duration::from_secs(45);
        loop {
            if let Some(e) = self.fleet.unexpected_exit() {
                z.signal("CONT");
                self.fleet.others.push(z);
                return Err(e);
            }
            if self.fleet.settled() {
                break;
            }
            if stopped.elapsed() >= limit {
                let split = self.fleet.split();
                let group = describe_group(&self.cluster.bootstrap()).await;
                z.signal("CONT");
                self.fleet.others.push(z);
                return Err(format!(
                    "{name} stopped {limit:?} ago, and the others do not own its partitions \
                     (active: {split}; the coordinator's view: {group})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let evicted = stopped.elapsed();
        self.clock.log(format!(
            "the others own every partition {:.1} s after the SIGSTOP: {}",
            evicted.as_secs_f64(),
            self.fleet.split()
        ));
        if evicted < SESSION_TIMEOUT {
            self.notes.push(format!(
                "{name}'s partitions moved {evicted:?} after its SIGSTOP, before the session \
                 timeout"
            ));
        }
        let (lines_before, active_before) = {
            let e = z.stderr();
            (e.count, e.active_lines)
        };
        z.signal("CONT");
        self.clock.log(format!(
            "SIGCONT {name} after {:.1} s stopped",
            stopped.elapsed().as_secs_f64()
        ));
        let resumed = Instant::now();
        let outcome = loop {
            if let Some(e) = self.fleet.unexpected_exit() {
                let since = since_lines(&z, lines_before);
                self.fleet.others.push(z);
                return Err(format!(
                    "{e}\n(while the zombie {name} was resumed; its stderr since its SIGCONT:\n\
                     {since})"
                ));
            }
            if let Some(status) = z.exited() {
                z.wait_exit(Duration::from_secs(1));
                break format!("exited ({status})");
            }
            let rejoined = {
                let e = z.stderr();
                e.active_lines > active_before && e.active.is_some_and(|n| n > 0)
            };
            if rejoined {
                break format!("rejoined (active={})", z.active().unwrap_or(0));
            }
            if resumed.elapsed() >= Duration::from_secs(40) {
                let since = since_lines(&z, lines_before);
                self.fleet.others.push(z);
                return Err(format!(
                    "{name} neither exited nor rejoined within 40 s of its SIGCONT; its \
                     stderr since:\n{since}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let since = since_lines(&z, lines_before);
        self.clock.log(format!(
            "zombie {name} {outcome} {:.1} s after SIGCONT; its stderr since:\n{since}",
            resumed.elapsed().as_secs_f64()
        ));
        self.notes
            .push(format!("zombie (evicted) {name}: {outcome}"));
        if z.exited().is_some() {
            self.fleet.others.push(z);
            let pid = self.fleet.start(slot)?;
            self.clock.log(format!("restarted {name} (pid {pid})"));
        } else {
            self.fleet.slots[slot] = Some(z);
        }
        self.settle(Duration::from_secs(90)).await
    }

    /// Phase 3: SIGSTOP, a replacement with the same instance id takes over, SIGCONT: the
    /// zombie is fenced and must exit.
    async fn zombie_replaced(&mut self) -> Result<(), String> {
        self.clock
            .stage("zombie: SIGSTOP, a replacement with its instance id, SIGCONT");
        let live = self.fleet.live();
        let slot = self.rng.pick(&live);
        let name = slot_name(slot);
        let mut z = self.fleet.take(slot).expect("a live slot");
        if !z.signal("STOP") {
            return Err(format!("cannot SIGSTOP {name}"));
        }
        self.clock.log(format!("SIGSTOP {name} (pid {})", z.pid()));
        let pid = self.fleet.start(slot)?;
        self.clock
            .log(format!("started a replacement {name} (pid {pid})"));
        let settled = self.settle(Duration::from_secs(90)).await;
        let lines_before = z.stderr().count;
        z.signal("CONT");
        self.clock.log(format!("SIGCONT the zombie {name}"));
        settled?;
        let resumed = Instant::now();
        let status = loop {
            if let Some(e) = self.fleet.unexpected_exit() {
                let since = since_lines(&z, lines_before);
                self.fleet.others.push(z);
                return Err(format!(
                    "{e}\n(while the zombie {name} was resumed; its stderr since its SIGCONT:\n\
                     {since})"
                ));
            }
            if z.exited().is_some() || resumed.elapsed() >= Duration::from_secs(40) {
                break z.wait_exit(Duration::ZERO);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let since = since_lines(&z, lines_before);
        self.fleet.others.push(z);
        match status {
            Some(status) => {
                self.clock.log(format!(
                    "the zombie {name} exited ({status}); its stderr since SIGCONT:\n{since}"
                ));
                self.notes
                    .push(format!("zombie (replaced) {name}: exited ({status})"));
            }
            None => {
                return Err(format!(
                    "the zombie {name} still runs 40 s after its SIGCONT, though a replacement \
                     has its instance id; its stderr since:\n{since}"
                ))
            }
        }
        self.settle(Duration::from_secs(60)).await
    }

    /// Phase 4: cuts of one instance's connections (through its own proxies only).
    async fn cuts(&mut self, n: usize) -> Result<(), String> {
        self.clock.stage(format!(
            "proxy cuts of one instance's connections, {n} times"
        ));
        let live = self.fleet.live();
        let slot = self.rng.pick(&live);
        let name = slot_name(slot);
        let listener = listener_name(slot);
        let mut cut_any = 0;
        for _ in 0..n {
            let wait = self.rng.secs(0.5, 2.0);
            self.sleep(wait).await?;
            let nodes: Vec<&testkit::Node> = if self.rng.below(2) == 0 {
                self.cluster.nodes().iter().collect()
            } else {
                let i = self.rng.below(BROKERS);
                vec![&self.cluster.nodes()[i]]
            };
            let mut open = 0;
            for node in &nodes {
                let proxy = node.listener_proxy(&listener).expect("the slot's listener");
                open += proxy.active();
                proxy.cut();
            }
            cut_any += open;
            let ids: Vec<i32> = nodes.iter().map(|n| n.id()).collect();
            self.clock
                .log(format!("cut {name}'s {open} connections to nodes {ids:?}"));
        }
        if cut_any == 0 {
            return Err(format!(
                "{name} had no connection through its listener {listener} at any cut: the \
                 test's wiring is wrong"
            ));
        }
        self.settle(Duration::from_secs(60)).await
    }

    /// Phase 5: kill -9 of the broker coordinating one instance's transactional id, then its
    /// restart.
    async fn coordinator_kill(&mut self) -> Result<(), String> {
        self.clock
            .stage("kill -9 of a transaction coordinator's broker, then its restart");
        let live = self.fleet.live();
        let slot = self.rng.pick(&live);
        let pool_slot = self.rng.below(self.s.pool_size);
        let txn_id = format!("{GROUP}-{}-{pool_slot}", slot_name(slot));
        let node_id = txn_coordinator(&self.cluster.bootstrap(), &txn_id).await?;
        let node = self
            .cluster
            .node(node_id as usize)
            .ok_or_else(|| format!("the coordinator {node_id} is not a node of the cluster"))?;
        node.kill();
        self.clock.log(format!(
            "kill -9 node {node_id}, the coordinator of {txn_id}"
        ));
        let down = self.rng.secs(3.0, 8.0);
        self.sleep(down).await?;
        let node = self.cluster.node(node_id as usize).expect("the node");
        match tokio::time::timeout(Duration::from_secs(120), node.restart()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("node {node_id} did not restart: {e}")),
            Err(_) => return Err(format!("node {node_id} not back within 120 s")),
        }
        self.clock.log(format!(
            "node {node_id} back after {:.1} s down",
            down.as_secs_f64()
        ));
        self.settle(Duration::from_secs(90)).await
    }

    /// Phase 6: scaling up to 4 instances, then down to 2 (SIGTERM, which must exit 0).
    async fn scale(&mut self) -> Result<(), String> {
        self.clock.stage("scaling 3 -> 4 -> 2");
        self.ensure(4).await?;
        let mut live = self.fleet.live();
        let mut leaving = Vec::new();
        while live.len() > 2 {
            let i = self.rng.below(live.len());
            leaving.push(live.remove(i));
        }
        let mut procs = Vec::new();
        for slot in &leaving {
            let mut p = self.fleet.take(*slot).expect("a live slot");
            p.signal("TERM");
            self.clock
                .log(format!("SIGTERM {} (pid {})", slot_name(*slot), p.pid()));
            procs.push(p);
        }
        let t = Instant::now();
        let mut failed = None;
        for p in &mut procs {
            match wait_exit(p, Duration::from_secs(30)).await {
                Some(s) if s.success() => self.clock.log(format!(
                    "{} exited 0, {:.1} s after SIGTERM",
                    p.name(),
                    t.elapsed().as_secs_f64()
                )),
                other => {
                    failed.get_or_insert_with(|| {
                        format!(
                            "{} did not exit 0 within 30 s of SIGTERM ({other:?}); its stderr \
                             ended with:\n{}",
                            p.name(),
                            p.stderr_tail(TAIL)
                        )
                    });
                }
            }
        }
        self.fleet.others.extend(procs);
        if let Some(e) = failed {
            return Err(e);
        }
        // Static members send no LeaveGroup: their partitions move after the session timeout.
        self.settle(SESSION_TIMEOUT + Duration::from_secs(60)).await
    }

    /// One round of the phases.
    async fn cycle(&mut self) -> Result<(), String> {
        self.ensure(INSTANCES).await?;
        for phase in &self.s.phases {
            match *phase {
                Phase::Kills => self.kills(3).await?,
                Phase::Evict => self.zombie_evicted().await?,
                Phase::Replace => self.zombie_replaced().await?,
                Phase::Cuts => self.cuts(6).await?,
                Phase::Coordinator => self.coordinator_kill().await?,
                Phase::Scale => self.scale().await?,
            }
        }
        Ok(())
    }

    async fn run(&mut self, bootstrap: &str) -> Result<String, String> {
        let s = self.s;
        let log_dir = self.fleet.log_dir.clone();
        self.clock.stage("creating the topics");
        let setup: Vec<String> = [
            "setup",
            "--bootstrap",
            bootstrap,
            "--input",
            INPUT,
            "--output",
            OUTPUT,
            "--partitions",
            &PARTITIONS.to_string(),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let out = bank_to_end(
            "bank setup",
            &setup,
            &log_dir.join("setup.log"),
            Duration::from_secs(60),
        )
        .await?;
        self.clock.log(out.trim());

        self.clock.stage(format!("starting {INSTANCES} instances"));
        for slot in 0..INSTANCES {
            let pid = self.fleet.start(slot)?;
            self.clock
                .log(format!("started {} (pid {pid})", slot_name(slot)));
        }
        self.settle(Duration::from_secs(120)).await?;
        // The changelog exists now (the instances create it).
        configure_topics(bootstrap, &self.clock).await?;

        self.clock.stage(format!(
            "loading {} events at {}/s ({:.0} s)",
            s.events,
            s.rate,
            s.load_time().as_secs_f64()
        ));
        let load: Vec<String> = [
            "load".to_string(),
            "--bootstrap".into(),
            bootstrap.into(),
            "--input".into(),
            INPUT.into(),
            "--events".into(),
            s.events.to_string(),
            "--rate".into(),
            s.rate.to_string(),
        ]
        .into();
        self.fleet.loader = Some(
            Proc::start("bank load", &load, Some(&log_dir.join("load.log")))
                .map_err(|e| format!("bank load: {e}"))?,
        );
        let load_started = Instant::now();
        let mut cycles = 0;
        loop {
            self.cycle().await?;
            cycles += 1;
            if !(s.long && self.loading()) {
                break;
            }
        }
        if !self.loading() {
            self.notes.push(format!(
                "the load ended before the phases did ({:.0} s into it): the last faults hit \
                 an idle group",
                load_started.elapsed().as_secs_f64()
            ));
        }
        self.clock.stage("waiting for the load to end");
        let left = s.load_time().saturating_sub(load_started.elapsed());
        let loader = self.fleet.loader.as_mut().expect("the loader");
        let status = wait_exit(loader, left + Duration::from_secs(120)).await;
        let load_out = loader.stdout_text();
        match status {
            Some(st) if st.success() => self.clock.log(load_out.trim()),
            other => {
                return Err(format!(
                    "bank load failed ({other:?}):\n{load_out}{}",
                    loader.stderr_tail(TAIL)
                ))
            }
        }

        self.clock.stage("checking the oracles");
        let check: Vec<String> = [
            "check",
            "--bootstrap",
            bootstrap,
            "--input",
            INPUT,
            "--output",
            OUTPUT,
            "--changelog",
            CHANGELOG,
            "--events",
            &s.events.to_string(),
            "--idle-timeout",
            "90",
            "--settle",
            "3",
            "--changelog-quiet",
            "3",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let limit = Duration::from_secs(240) + Duration::from_millis(s.events / 5);
        let report = bank_to_end("bank check", &check, &log_dir.join("check.log"), limit)
            .await
            .map_err(|e| format!("the check failed:\n{e}"))?;
        if let Some(e) = self.fleet.unexpected_exit() {
            return Err(format!("{e}\nthe check's report:\n{report}"));
        }
        for oracle in ["oracle a: ok", "oracle b: ok", "oracle g: ok"] {
            if !report.contains(oracle) {
                return Err(format!("no {oracle:?} in the check's report:\n{report}"));
            }
        }
        self.clock.log(format!(
            "{cycles} cycle(s) of faults; check report:\n{report}"
        ));

        self.clock.stage("stopping the instances (SIGTERM)");
        let live = self.fleet.live();
        for slot in &live {
            if let Some(p) = self.fleet.slots[*slot].as_mut() {
                p.signal("TERM");
            }
        }
        for slot in live {
            let mut p = self.fleet.take(slot).expect("a live slot");
            let status = wait_exit(&mut p, Duration::from_secs(30)).await;
            let ok = status.is_some_and(|s| s.success());
            let tail = p.stderr_tail(TAIL);
            self.fleet.others.push(p);
            if !ok {
                return Err(format!(
                    "{} did not exit 0 within 30 s of SIGTERM ({status:?}):\n{tail}",
                    slot_name(slot)
                ));
            }
        }

        self.clock
            .stage("comparing the output with a Java read_committed consumer");
        let compared = compare_with_java(bootstrap, OUTPUT, &log_dir, s.events).await?;
        self.clock.log(&compared);
        Ok(report)
    }
}

/// The stderr lines of `p` after the first `skip` it printed, indented.
fn since_lines(p: &Proc, skip: u64) -> String {
    let e = p.stderr();
    let kept_from = e.count - e.lines.len() as u64;
    let from = skip.saturating_sub(kept_from) as usize;
    let mut s = String::new();
    for l in e.lines.iter().skip(from) {
        s.push_str("    ");
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn java_binary() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").is_file() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    }
}

fn hex(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

/// Reads `topic` read_committed with the Java client (streams/tests/java/ReadCommitted.java)
/// and with ours, partition by partition from the log start to the last stable offset, and
/// compares record for record: partition, offset, key and value.
async fn compare_with_java(
    bootstrap: &str,
    topic: &str,
    dir: &Path,
    events: u64,
) -> Result<String, String> {
    let version = testkit::dist::kafka_version();
    let classpath = {
        let v = version.clone();
        tokio::task::spawn_blocking(move || testkit::dist::classpath(&v))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the Kafka {version} jars: {e}"))?
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/ReadCommitted.java");
    let dump = dir.join("java-read-committed.txt");
    let stderr_path = dir.join("java.log");
    let stderr = File::create(&stderr_path).map_err(|e| e.to_string())?;
    let limit = Duration::from_secs(120) + Duration::from_millis(events / 10);
    let t = Instant::now();
    let mut java = KillOnDrop(
        Command::new(java_binary())
            .arg("-cp")
            .arg(&classpath)
            .arg(&source)
            .arg(bootstrap)
            .arg(topic)
            .arg(&dump)
            .arg(limit.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", java_binary().display()))?,
    );
    let status = loop {
        if let Some(s) = java.0.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if t.elapsed() > limit + Duration::from_secs(30) {
            return Err(format!(
                "the Java consumer did not end within {limit:?}; see {}",
                stderr_path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let java_took = t.elapsed();
    if !status.success() {
        return Err(format!(
            "the Java consumer failed ({status}):\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        ));
    }

    let mut lines = BufReader::new(File::open(&dump).map_err(|e| e.to_string())?).lines();
    let mut cfg = ConsumerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    cfg.isolation_level(IsolationLevel::ReadCommitted);
    cfg.enable_auto_commit(false);
    let consumer = Consumer::new(cfg).await.map_err(|e| e.to_string())?;
    let t = Instant::now();
    let result: Result<u64, String> = async {
        let meta = consumer
            .client()
            .topic(topic)
            .await
            .map_err(|e| e.to_string())?;
        let mut partitions: Vec<i32> = meta.partitions.iter().map(|p| p.partition).collect();
        partitions.sort_unstable();
        let mut n = 0u64;
        for p in partitions {
            let tp = TopicPartition::new(topic, p);
            consumer
                .assign([tp.clone()])
                .await
                .map_err(|e| e.to_string())?;
            consumer
                .seek(&tp, Offset::Earliest)
                .await
                .map_err(|e| e.to_string())?;
            let lso = list_offsets(
                consumer.client(),
                &[(tp.clone(), Offset::Latest)],
                IsolationLevel::ReadCommitted,
            )
            .await
            .map_err(|e| e.to_string())?
            .get(&tp)
            .map(|o| o.offset)
            .ok_or("no last stable offset")?;
            while consumer.position(&tp).is_none_or(|pos| pos < lso) {
                if t.elapsed() > limit {
                    return Err(format!(
                        "our consumer is at {:?} of {tp} after {limit:?}, below its last stable \
                         offset {lso}",
                        consumer.position(&tp)
                    ));
                }
                let records = consumer
                    .poll(Duration::from_millis(500))
                    .await
                    .map_err(|e| e.to_string())?;
                for r in records {
                    let ours = format!(
                        "{} {} {} {}",
                        r.partition,
                        r.offset,
                        hex(r.key.as_deref()),
                        hex(r.value.as_deref())
                    );
                    n += 1;
                    let theirs = match lines.next() {
                        Some(l) => l.map_err(|e| e.to_string())?,
                        None => {
                            return Err(format!(
                                "record {n}: ours {ours:?}, but the Java consumer read no more"
                            ))
                        }
                    };
                    if ours != theirs {
                        return Err(format!(
                            "record {n} differs: ours {ours:?}, Java's {theirs:?}"
                        ));
                    }
                }
            }
        }
        if let Some(extra) = lines.next() {
            return Err(format!(
                "the Java consumer read more after our {n} records, first {:?}",
                extra.unwrap_or_default()
            ));
        }
        Ok(n)
    }
    .await;
    consumer.close().await;
    let n = result.map_err(|e| format!("{e} (the Java dump: {})", dump.display()))?;
    Ok(format!(
        "the Java consumer ({:.1} s) and ours ({:.1} s) read the same {n} records of {topic}, \
         in the same order per partition",
        java_took.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ))
}

#[test]
fn the_bank_keeps_every_oracle_under_faults_on_3_brokers() {
    let s = Settings::from_env();
    // Built (or found fresh) before anything starts, so a build does not eat the deadlines.
    let bin = support::bank_binary();
    println!("bank binary: {}", bin.display());
    println!(
        "faults: {} events at {}/s, pool size {}, phases {:?}, seed {} (STREAMS_FAULTS_SEED={} \
         reproduces the schedule){}",
        s.events,
        s.rate,
        s.pool_size,
        s.phases,
        s.seed,
        s.seed,
        if s.long { ", long" } else { "" }
    );
    let started = Instant::now();
    let log_dir =
        std::env::temp_dir().join(format!("streams-faults-{}-{}", std::process::id(), s.seed));
    std::fs::create_dir_all(&log_dir).expect("a log directory");
    let clock = Clock {
        t0: started,
        stage: Arc::new(Mutex::new("starting Kafka".into())),
    };
    if std::env::var_os("STREAMS_LOG").is_none() {
        // The instances inherit it: streams' own lines (restored, revoked, outcome resolved).
        std::env::set_var("STREAMS_LOG", "warn,streams=info");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let outcome = rt.block_on(async {
        clock.stage(format!("starting Kafka ({BROKERS} nodes)"));
        let cluster = start_cluster().await;
        let broker_dir = cluster.run_dir().to_path_buf();
        let bootstrap = cluster.bootstrap();
        clock.log(format!("bootstrap {bootstrap}"));
        let mut fleet = Fleet {
            bin_args: vec![
                "--input".into(),
                INPUT.into(),
                "--output".into(),
                OUTPUT.into(),
                "--group".into(),
                GROUP.into(),
                "--changelog".into(),
                CHANGELOG.into(),
                "--pool-size".into(),
                s.pool_size.to_string(),
            ],
            bootstraps: (0..SLOTS)
                .map(|i| {
                    cluster
                        .listener_bootstrap(&listener_name(i))
                        .expect("the slot's listener")
                })
                .collect(),
            slots: (0..SLOTS).map(|_| None).collect(),
            others: Vec::new(),
            loader: None,
            starts: 0,
            log_dir: log_dir.clone(),
        };
        let mut scenario = Scenario {
            s: &s,
            cluster: &cluster,
            fleet: &mut fleet,
            rng: Rng(s.seed),
            clock: clock.clone(),
            notes: Vec::new(),
        };
        let ran = tokio::time::timeout(s.deadline(), scenario.run(&bootstrap)).await;
        let notes = std::mem::take(&mut scenario.notes);
        drop(scenario);
        let result = match ran {
            Ok(Ok(report)) => Ok((report, notes)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "gave up after the {:?} deadline while {}",
                s.deadline(),
                clock.current()
            )),
        };
        match result {
            Ok((report, notes)) => Ok((report, notes, broker_dir)),
            Err(e) => Err(format!(
                "{e}\n\nwhile: {}\nprocesses:\n{}\nlogs kept in {} (brokers: {}); seed {}",
                clock.current(),
                fleet.tails(),
                log_dir.display(),
                cluster.run_dir().display(),
                s.seed
            )),
        }
        // `fleet` drops here (every process killed), then `cluster` (every broker killed).
    });
    match outcome {
        Ok((_, notes, broker_dir)) => {
            for n in notes {
                println!("note: {n}");
            }
            println!(
                "faults: passed in {:.1} s (seed {})",
                started.elapsed().as_secs_f64(),
                s.seed
            );
            let _ = std::fs::remove_dir_all(&log_dir);
            let _ = std::fs::remove_dir_all(&broker_dir);
        }
        Err(e) => panic!("the bank under faults failed (seed {}): {e}", s.seed),
    }
}
