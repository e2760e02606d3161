//! Chained ETL, exactly once: `kfk copy --transactional` processes copy t1 -> t2 -> t3 -> t4 on a
//! private 3-node cluster (6 partitions, RF 3, min ISR 2) while copiers join and leave in waves,
//! are killed with SIGKILL, are paused past their session timeout (zombies that must be fenced),
//! and while brokers die and client connections are cut. A read_committed reader then checks
//! every level: every key exactly once, values, headers and timestamps intact, the same
//! partition as in t1 and the same order within each partition.
//!
//! `KFK_ETL_RECORDS` sets the number of records; `KFK_ETL_LONG=1` makes the fault test longer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_client::admin::NewTopic;
use kafka_client::config::ProducerConfig;
use kafka_client::config::{AutoOffsetReset, ClientConfig, ConsumerConfig, IsolationLevel};
use kafka_client::kafka_wire::messages::find_coordinator::FindCoordinatorRequest;
use kafka_client::TopicPartition;
use kafka_client::{Admin, Consumer, Header, Offset, Producer, ProducerRecord, Purpose};
use testkit::{Cluster, ClusterConfig};

const PARTITIONS: i32 = 6;
const LEVELS: usize = 3;
const SESSION_TIMEOUT_MS: u64 = 6000;
/// Copiers exit after this many seconds without input.
const IDLE_EXIT_SECS: u64 = 20;

fn elapsed(t0: Instant) -> String {
    format!("{:>6.1}s", t0.elapsed().as_secs_f64())
}

fn topic(level: usize) -> String {
    format!("t{level}")
}

fn records_from_env(default: usize) -> usize {
    match std::env::var("KFK_ETL_RECORDS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("KFK_ETL_RECORDS={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The last `max` bytes of a file, lossily.
fn tail(path: &PathBuf, max: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let from = data.len().saturating_sub(max);
    String::from_utf8_lossy(&data[from..]).into_owned()
}

/// One `kfk copy` process.
struct Copier {
    name: String,
    level: usize,
    txn_id: String,
    child: Child,
    stderr: PathBuf,
    /// Set once it ended (by itself or killed).
    status: Option<ExitStatus>,
    /// Killed or paused by the test (a non-zero exit is expected).
    faulted: bool,
}

impl Copier {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
        self.status.is_none()
    }

    fn kill9(&mut self) {
        self.faulted = true;
        let _ = self.child.kill();
        if let Ok(s) = self.child.wait() {
            self.status = Some(s);
        }
    }

    /// The numbers of its `kfk: copied N records in T transactions (A aborted)` line.
    fn summary(&self) -> Option<(u64, u64, u64)> {
        let text = tail(&self.stderr, 1 << 20);
        let line = text.lines().rev().find(|l| l.starts_with("kfk: copied "))?;
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        match nums[..] {
            [n, t, a] => Some((n, t, a)),
            _ => None,
        }
    }
}

/// Every copier process of a test; kills the ones still running when dropped (also on panic).
struct Fleet {
    bootstrap: String,
    dir: PathBuf,
    copiers: Vec<Copier>,
    next: usize,
    t0: Instant,
}

impl Fleet {
    fn new(bootstrap: String, label: &str, t0: Instant) -> Fleet {
        let dir = std::env::temp_dir().join(format!("kfk-etl-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("stderr folder");
        Fleet {
            bootstrap,
            dir,
            copiers: Vec::new(),
            next: 0,
            t0,
        }
    }

    /// Starts a copier of `level` (t{level} -> t{level+1}); `txn_id` reuses a transactional id.
    fn start(&mut self, level: usize, txn_id: Option<String>) -> usize {
        self.next += 1;
        let name = format!("L{level}-c{}", self.next);
        let txn_id = txn_id.unwrap_or_else(|| format!("etl-{name}"));
        let stderr = self.dir.join(format!("{name}.err"));
        let file = File::create(&stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_kfk"))
            .arg("-b")
            .arg(&self.bootstrap)
            .args(["copy", &topic(level), &topic(level + 1)])
            .args(["--group", &format!("etl-level-{level}")])
            .args(["--transactional", "--transactional-id", &txn_id])
            .args(["--from-beginning", "--commit-interval", "100"])
            .args(["--idle-exit", &IDLE_EXIT_SECS.to_string()])
            .args(["-X", &format!("session.timeout.ms={SESSION_TIMEOUT_MS}")])
            .args(["-X", "heartbeat.interval.ms=500"])
            .args(["-X", "transaction.timeout.ms=5000"])
            .args(["-X", "request.timeout.ms=8000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("kfk copy starts");
        println!(
            "{} start {name} (pid {}, transactional id {txn_id})",
            elapsed(self.t0),
            child.id()
        );
        self.copiers.push(Copier {
            name,
            level,
            txn_id,
            child,
            stderr,
            status: None,
            faulted: false,
        });
        self.copiers.len() - 1
    }

    /// Indexes of the running copiers of `level`, oldest first.
    fn running(&mut self, level: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, c) in self.copiers.iter_mut().enumerate() {
            if c.level == level && c.running() {
                out.push(i);
            }
        }
        out
    }

    fn kill9(&mut self, i: usize) {
        let c = &mut self.copiers[i];
        c.kill9();
        println!("{} kill -9 {} (pid {})", elapsed(self.t0), c.name, c.pid());
    }

    fn signal(&mut self, i: usize, sig: &str) {
        let c = &mut self.copiers[i];
        c.faulted = true;
        let pid = c.pid().to_string();
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(st.success(), "kill {sig} {pid} failed");
        println!("{} kill {sig} {} (pid {pid})", elapsed(self.t0), c.name);
    }

    /// The stderr tails of every copier, for failure messages.
    fn tails(&mut self) -> String {
        let mut out = String::new();
        for c in &mut self.copiers {
            c.running();
            out.push_str(&format!(
                "\n--- {} (level {}, {}, status {:?}, faulted {}) stderr tail:\n{}",
                c.name,
                c.level,
                c.txn_id,
                c.status,
                c.faulted,
                tail(&c.stderr, 1500)
            ));
        }
        out
    }

    /// Waits until every copier ended (they exit after `IDLE_EXIT_SECS` without input).
    async fn wait_all(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let live: Vec<String> = self
                .copiers
                .iter_mut()
                .filter_map(|c| c.running().then(|| c.name.clone()))
                .collect();
            if live.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let tails = self.tails();
                panic!("copiers {live:?} did not exit within {within:?}{tails}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Prints every copier's outcome; returns the total aborted transactions per level.
    fn report(&mut self) -> [u64; LEVELS + 1] {
        let mut aborted = [0u64; LEVELS + 1];
        for c in &mut self.copiers {
            c.running();
            let s = c.summary();
            if let Some((_, _, a)) = s {
                aborted[c.level] += a;
            }
            println!(
                "  {:<8} {:<16} exit {:<24} faulted {:<5} summary {}",
                c.name,
                c.txn_id,
                format!("{:?}", c.status),
                c.faulted,
                s.map_or("-".to_string(), |(n, t, a)| format!(
                    "{n} copied, {t} transactions, {a} aborted"
                ))
            );
        }
        aborted
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.copiers {
            if c.status.is_none() {
                // A paused one must be resumed for SIGKILL to reap it promptly.
                let _ = Command::new("kill")
                    .args(["-CONT", &c.pid().to_string()])
                    .status();
                let _ = c.child.kill();
                let _ = c.child.wait();
            }
        }
    }
}

fn servers(cluster: &Cluster) -> Vec<String> {
    cluster.bootstrap().split(',').map(str::to_string).collect()
}

async fn admin(cluster: &Cluster) -> Admin {
    let mut cfg = ClientConfig::default();
    cfg.bootstrap_servers(servers(cluster))
        .client_id("etl-admin".to_string())
        .request_timeout(Duration::from_secs(15));
    Admin::new(cfg).await.expect("admin connects")
}

async fn wait_full_isr(admin: &Admin, within: Duration) {
    let names: Vec<String> = (1..=LEVELS + 1).map(topic).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let deadline = Instant::now() + within;
    loop {
        let state = admin.describe_topics(&names).await;
        if let Ok(d) = &state {
            if d.iter().all(|t| {
                t.partitions
                    .iter()
                    .all(|p| p.leader >= 0 && p.isr.len() == 3)
            }) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the ISR did not recover within {within:?}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn start_cluster(t0: Instant) -> (Cluster, Admin) {
    let cluster = Cluster::start(ClusterConfig::with_brokers(3))
        .await
        .expect("the 3-node cluster must start");
    println!("{} cluster up: {}", elapsed(t0), cluster.bootstrap());
    let admin = admin(&cluster).await;
    let topics: Vec<NewTopic> = (1..=LEVELS + 1)
        .map(|l| {
            NewTopic::new(topic(l), PARTITIONS, 3)
                .config("min.insync.replicas", "2")
                .config("retention.ms", "-1")
                .config("unclean.leader.election.enable", "false")
        })
        .collect();
    admin.create_topics(&topics).await.expect("create topics");
    wait_full_isr(&admin, Duration::from_secs(60)).await;
    (cluster, admin)
}

fn value_of(i: usize) -> Bytes {
    Bytes::from(i.to_string())
}

fn headers_of(i: usize) -> Vec<Header> {
    let mut h = vec![Header {
        key: "src".to_string(),
        value: Some(Bytes::from(format!("h{i}"))),
    }];
    if i % 2 == 0 {
        h.push(Header {
            key: "even".to_string(),
            value: (i % 4 == 0).then(|| Bytes::copy_from_slice(&(i as u64).to_be_bytes())),
        });
    }
    h
}

/// Writes `n` keyed records to t1, `chunk` at a time with `pause` between chunks (so the copy
/// overlaps the membership changes and faults).
async fn produce(cluster_servers: Vec<String>, n: usize, chunk: usize, pause: Duration) {
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(cluster_servers)
        .client_id("etl-source".to_string())
        .request_timeout(Duration::from_secs(8));
    cfg.linger(Duration::from_millis(5))
        .delivery_timeout(Duration::from_secs(120));
    let producer = Producer::new(cfg).await.expect("source producer");
    let mut pending = Vec::with_capacity(chunk);
    for i in 0..n {
        let mut r = ProducerRecord::new(topic(1))
            .key(Bytes::from(format!("k{i:07}")))
            .value(value_of(i));
        r.headers = headers_of(i);
        pending.push(producer.send(r).await.expect("send to t1"));
        if pending.len() == chunk || i + 1 == n {
            for d in pending.drain(..) {
                d.await.expect("a t1 record is acknowledged");
            }
            tokio::time::sleep(pause).await;
        }
    }
    tokio::time::timeout(Duration::from_secs(60), producer.close())
        .await
        .expect("the source producer closes")
        .expect("close");
}

/// One record as read back: key, value, headers, timestamp.
type Rec = (Bytes, Bytes, Vec<Header>, i64);

/// Reads all of `topic(level)` with `isolation`, up to its end; per partition, in offset order.
async fn read_level(
    cluster: &Cluster,
    admin: &Admin,
    level: usize,
    isolation: IsolationLevel,
) -> Vec<Vec<Rec>> {
    let name = topic(level);
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(name.clone(), p))
        .collect();
    let queries: Vec<(TopicPartition, Offset)> =
        tps.iter().map(|tp| (tp.clone(), Offset::Latest)).collect();
    // With no transaction open any more, the last stable offset is the high watermark. Open
    // transactions of killed copiers end by the transaction timeout.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ends = loop {
        let hw = admin
            .list_offsets(&queries, IsolationLevel::ReadUncommitted)
            .await
            .expect("high watermarks");
        let lso = admin
            .list_offsets(&queries, IsolationLevel::ReadCommitted)
            .await
            .expect("last stable offsets");
        let settled = tps.iter().all(|tp| hw[tp].offset == lso[tp].offset);
        if settled {
            break hw;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: transactions still open 60 s after the copiers ended: \
             high watermarks {hw:?}, last stable offsets {lso:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut cfg = ConsumerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(servers(cluster))
        .client_id(format!("etl-reader-{level}"));
    cfg.auto_offset_reset(AutoOffsetReset::None)
        .enable_auto_commit(false)
        .max_poll_records(10_000)
        .isolation_level(isolation);
    let consumer = Consumer::new(cfg).await.expect("reader starts");
    consumer.assign(tps.clone()).await.expect("assign");
    for tp in &tps {
        consumer.seek(tp, Offset::Earliest).await.expect("seek");
    }
    let mut out: Vec<Vec<Rec>> = vec![Vec::new(); PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if tps
            .iter()
            .all(|tp| consumer.position(tp) >= Some(ends[tp].offset))
        {
            break;
        }
        if Instant::now() >= deadline {
            let pos: Vec<_> = tps.iter().map(|tp| consumer.position(tp)).collect();
            panic!("{isolation:?} reader of {name} did not reach {ends:?} in time: at {pos:?}");
        }
        for r in consumer.poll(Duration::from_secs(1)).await.expect("poll") {
            out[r.partition as usize].push((
                r.key.clone().unwrap_or_default(),
                r.value.clone().unwrap_or_default(),
                r.headers.clone(),
                r.timestamp,
            ));
        }
    }
    consumer.close().await;
    out
}

/// Compares a copy level with the source; returns a description of every difference.
fn differences(level: usize, src: &[Vec<Rec>], copy: &[Vec<Rec>]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut where_src: HashMap<&Bytes, (usize, &Rec)> = HashMap::new();
    for (p, recs) in src.iter().enumerate() {
        for r in recs {
            where_src.insert(&r.0, (p, r));
        }
    }
    let mut seen: HashMap<&Bytes, usize> = HashMap::new();
    let (mut dups, mut moved, mut altered, mut unknown) = (0u64, 0u64, 0u64, 0u64);
    for (p, recs) in copy.iter().enumerate() {
        for r in recs {
            *seen.entry(&r.0).or_default() += 1;
            match where_src.get(&r.0) {
                None => unknown += 1,
                Some((sp, sr)) => {
                    if *sp != p {
                        moved += 1;
                    }
                    if *sr != r {
                        altered += 1;
                        if altered <= 3 {
                            problems.push(format!(
                                "t{level}: record {:?} altered: {r:?} vs source {sr:?}",
                                r.0
                            ));
                        }
                    }
                }
            }
        }
    }
    for (k, n) in &seen {
        if *n > 1 {
            dups += (*n - 1) as u64;
            if dups <= 5 {
                problems.push(format!("t{level}: key {k:?} {n} times"));
            }
        }
    }
    let lost: Vec<&&Bytes> = where_src
        .keys()
        .filter(|k| !seen.contains_key(**k))
        .collect();
    for k in lost.iter().take(5) {
        problems.push(format!("t{level}: key {k:?} lost"));
    }
    let mut misordered = Vec::new();
    for p in 0..src.len() {
        let a: Vec<&Bytes> = src[p].iter().map(|r| &r.0).collect();
        let b: Vec<&Bytes> = copy[p].iter().map(|r| &r.0).collect();
        if a != b {
            misordered.push(p);
        }
    }
    let total: usize = copy.iter().map(Vec::len).sum();
    println!(
        "  t{level}: {total} records read_committed; {dups} duplicates, {} lost, {moved} on \
         another partition, {altered} altered, {unknown} unknown; partitions differing in \
         order/content: {misordered:?}",
        lost.len()
    );
    if dups + moved + altered + unknown > 0 || !lost.is_empty() || !misordered.is_empty() {
        problems.push(format!(
            "t{level}: {dups} duplicates, {} lost, {moved} moved, {altered} altered, {unknown} \
             unknown, partitions {misordered:?} differ from t1",
            lost.len()
        ));
    }
    problems
}

/// Reads t1 and checks it is the `n` records produced; then checks every level against it.
async fn verify(cluster: &Cluster, admin: &Admin, fleet: &mut Fleet, n: usize, t0: Instant) {
    let src = read_level(cluster, admin, 1, IsolationLevel::ReadCommitted).await;
    let total: usize = src.iter().map(Vec::len).sum();
    assert_eq!(total, n, "t1 holds the {n} records produced");
    let mut by_key: BTreeMap<Bytes, ()> = BTreeMap::new();
    for recs in &src {
        for r in recs {
            let i: usize = std::str::from_utf8(&r.1).unwrap().parse().unwrap();
            assert_eq!(r.0, Bytes::from(format!("k{i:07}")), "t1 key of value {i}");
            assert_eq!(r.2, headers_of(i), "t1 headers of {i}");
            by_key.insert(r.0.clone(), ());
        }
    }
    assert_eq!(by_key.len(), n, "t1 keys are unique");
    println!("{} t1 verified: {n} records", elapsed(t0));
    let mut problems = Vec::new();
    for level in 2..=LEVELS + 1 {
        let copy = read_level(cluster, admin, level, IsolationLevel::ReadCommitted).await;
        problems.extend(differences(level, &src, &copy));
    }
    let uncommitted: usize = read_level(cluster, admin, 2, IsolationLevel::ReadUncommitted)
        .await
        .iter()
        .map(Vec::len)
        .sum();
    println!(
        "{} t2: read_uncommitted sees {uncommitted} records (aborted ones included), \
         read_committed {n} expected",
        elapsed(t0)
    );
    if uncommitted < n {
        problems.push(format!(
            "t2: read_uncommitted sees {uncommitted} < {n} records"
        ));
    }
    if !problems.is_empty() {
        let tails = fleet.tails();
        panic!("exactly-once violated:\n{}\n{tails}", problems.join("\n"));
    }
}

/// SIGKILLs the oldest running copier of `level`; returns its transactional id.
fn kill_oldest(fleet: &mut Fleet, level: usize) -> Option<String> {
    let i = *fleet.running(level).first()?;
    fleet.kill9(i);
    Some(fleet.copiers[i].txn_id.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_copy_exactly_once_with_waves() {
    let t0 = Instant::now();
    let n = records_from_env(200_000);
    let _heavy = testkit::heavy_test_permit().await;
    let (cluster, admin) = start_cluster(t0).await;
    let mut fleet = Fleet::new(cluster.bootstrap(), "waves", t0);
    for level in 1..=LEVELS {
        fleet.start(level, None);
        fleet.start(level, None);
    }
    // About 25 s of input, so the waves happen while records flow.
    let chunk = (n / 100).max(100);
    let source = tokio::spawn(produce(
        servers(&cluster),
        n,
        chunk,
        Duration::from_millis(250),
    ));

    // Waves: a third member joins, the oldest dies (SIGKILL), a new one joins; level by level,
    // shifted in time.
    for wave in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for level in 1..=LEVELS {
            fleet.start(level, None);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for level in 1..=LEVELS {
            if (wave + level) % 2 == 0 {
                kill_oldest(&mut fleet, level);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for level in 1..=LEVELS {
            if (wave + level) % 2 == 1 {
                kill_oldest(&mut fleet, level);
            }
        }
        for level in 1..=LEVELS {
            while fleet.running(level).len() > 2 {
                kill_oldest(&mut fleet, level);
            }
            while fleet.running(level).len() < 2 {
                fleet.start(level, None);
            }
        }
        println!("{} wave {wave} done", elapsed(t0));
    }
    match tokio::time::timeout(Duration::from_secs(240), source).await {
        Err(_) => panic!("the source producer did not finish within 240 s"),
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Ok(Ok(())) => {}
    }
    println!("{} t1 written: {n} records", elapsed(t0));
    fleet.wait_all(Duration::from_secs(300)).await;
    let copy_time = t0.elapsed();
    println!("{} every copier exited; outcomes:", elapsed(t0));
    let aborted = fleet.report();
    for c in &fleet.copiers {
        if !c.faulted {
            assert!(
                c.status.is_some_and(|s| s.success()),
                "copier {} ended with {:?}: {}",
                c.name,
                c.status,
                tail(&c.stderr, 2000)
            );
        }
    }
    println!(
        "{} copied {n} records through {LEVELS} levels in {:.1}s; aborted transactions per \
         level {:?}",
        elapsed(t0),
        copy_time.as_secs_f64(),
        &aborted[1..]
    );
    verify(&cluster, &admin, &mut fleet, n, t0).await;
    println!(
        "{} chained_copy_exactly_once_with_waves passed",
        elapsed(t0)
    );
}

/// The node hosting the transaction coordinator of `txn_id` (FindCoordinator, key type 1).
async fn txn_coordinator(admin: &Admin, txn_id: &str) -> Result<i32, String> {
    let id = txn_id.to_string();
    // Versions 4+ take a list of keys, older ones a single key.
    let build = move |version: i16| {
        let mut req = FindCoordinatorRequest {
            key_type: 1,
            ..Default::default()
        };
        if version >= 4 {
            req.coordinator_keys = vec![id.as_str().into()];
        } else {
            req.key = id.as_str().into();
        }
        req
    };
    let resp = admin
        .client()
        .send_any(Purpose::Group, build)
        .await
        .map_err(|e| format!("FindCoordinator: {e}"))?;
    let (code, node) = match resp.coordinators.first() {
        Some(c) => (c.error_code, c.node_id),
        None => (resp.error_code, resp.node_id),
    };
    if code == 0 {
        Ok(node)
    } else {
        Err(format!("FindCoordinator error code {code}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_copy_exactly_once_under_faults() {
    let t0 = Instant::now();
    let long = std::env::var("KFK_ETL_LONG").is_ok_and(|v| v == "1");
    let n = records_from_env(if long { 200_000 } else { 50_000 });
    let rounds = if long { 3 } else { 1 };
    let _heavy = testkit::heavy_test_permit().await;
    let (cluster, admin) = start_cluster(t0).await;
    let mut fleet = Fleet::new(cluster.bootstrap(), "faults", t0);
    for level in 1..=LEVELS {
        fleet.start(level, None);
        fleet.start(level, None);
    }
    // Input spread over the fault schedule (~20 s per round).
    let chunk = (n / (60 * rounds)).max(100);
    let source = tokio::spawn(produce(
        servers(&cluster),
        n,
        chunk,
        Duration::from_millis(300),
    ));

    for round in 0..rounds {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // (a) SIGKILL a copier; its replacement reuses the transactional id (InitProducerId
        // aborts what it left open).
        let level = 1 + round % LEVELS;
        if let Some(id) = kill_oldest(&mut fleet, level) {
            fleet.start(level, Some(id));
        }

        // (b) SIGKILL the broker hosting the transaction coordinator of a copier; restart it.
        let level = 1 + (round + 1) % LEVELS;
        let running = fleet.running(level);
        let id = fleet.copiers[running[0]].txn_id.clone();
        let mut found = txn_coordinator(&admin, &id).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while found.is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            found = txn_coordinator(&admin, &id).await;
        }
        let victim = match found {
            Ok(node) => node,
            Err(e) => {
                println!(
                    "{} no coordinator found for {id} ({e}); killing node 1",
                    elapsed(t0)
                );
                1
            }
        };
        let node = cluster
            .node(victim as usize)
            .expect("coordinator is a node");
        println!(
            "{} kill -9 node {victim} (transaction coordinator of {id})",
            elapsed(t0)
        );
        node.kill();
        tokio::time::sleep(Duration::from_secs(4)).await;
        node.restart().await.expect("killed node restarts");
        println!("{} node {victim} back", elapsed(t0));

        // (c) Cut every client connection, a few times.
        for i in 0..6u64 {
            for node in cluster.nodes() {
                node.proxy().cut();
            }
            tokio::time::sleep(Duration::from_millis(300 + (i * 137) % 400)).await;
        }
        println!("{} connection cuts done", elapsed(t0));

        // (d) Pause a copier past its session timeout: the group moves on without it, and when
        // it resumes it is a zombie that must be fenced.
        let level = 1 + (round + 2) % LEVELS;
        let running = fleet.running(level);
        let zombie = running[running.len() - 1];
        fleet.signal(zombie, "-STOP");
        tokio::time::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 4000)).await;
        fleet.signal(zombie, "-CONT");

        // (e) Another kill -9 and a new member with a new transactional id.
        tokio::time::sleep(Duration::from_secs(2)).await;
        kill_oldest(&mut fleet, 1 + (round + 1) % LEVELS);
        for level in 1..=LEVELS {
            while fleet.running(level).len() < 2 {
                fleet.start(level, None);
            }
        }
        wait_full_isr(&admin, Duration::from_secs(90)).await;
        println!("{} fault round {round} done", elapsed(t0));
    }
    match tokio::time::timeout(Duration::from_secs(300), source).await {
        Err(_) => {
            let tails = fleet.tails();
            panic!("the source producer did not finish within 300 s{tails}");
        }
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Ok(Ok(())) => {}
    }
    println!("{} t1 written: {n} records", elapsed(t0));
    // Copiers that ended early (an idle exit while a fault stalled the chain, or fenced) are
    // replaced while records still flow.
    for level in 1..=LEVELS {
        if fleet.running(level).is_empty() {
            fleet.start(level, None);
        }
    }
    fleet.wait_all(Duration::from_secs(300)).await;
    let copy_time = t0.elapsed();
    println!("{} every copier exited; outcomes:", elapsed(t0));
    let aborted = fleet.report();
    println!(
        "{} copied {n} records through {LEVELS} levels in {:.1}s under faults; aborted \
         transactions per level {:?}",
        elapsed(t0),
        copy_time.as_secs_f64(),
        &aborted[1..]
    );
    verify(&cluster, &admin, &mut fleet, n, t0).await;
    println!(
        "{} chained_copy_exactly_once_under_faults passed",
        elapsed(t0)
    );
}
