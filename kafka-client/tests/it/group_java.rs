//! A mixed classic consumer group: two of our consumers and two Java `KafkaConsumer`s (separate
//! JVMs running `tests/java/GroupMember.java`), all cooperative-sticky, on one 12-partition topic
//! with records produced throughout. Then one Java member leaves and the others take its share.
//!
//! Both sides stamp every rebalance event with the wall clock (microseconds since the epoch, one
//! clock: same machine): assignments at the start of the hook, revocations at its end (after the
//! commit it makes). Ownership is replayed in time order afterwards and must never have two
//! holders at once. The only tolerance is the one KIP-429 documents: a cooperative owner gives a
//! partition up (revoke hook, then JoinGroup) strictly before the coordinator can hand it to its
//! next owner, so in time order the revocation always comes first; the replay accepts nothing
//! else (a `Lost` is excused afterwards, because an evicted member learns of it late, but this
//! test also asserts no partition was lost).
//!
//! This module also holds the recording machinery `group_migration` and `group_faults` share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_client::config::ConsumerConfig;
use kafka_client::consumer::RebalanceHooks;
use kafka_client::group::balancer::Balancer;
use kafka_client::group::BoxFuture;
use kafka_client::{Admin, Consumer, Producer, ProducerRecord, TopicPartition};

use crate::consumer::{bootstrap, consumer_config, create_topic};
use crate::group::{producer, unique};
use crate::jvm;

/// Wall-clock microseconds since the epoch (the clock the Java side prints).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Heartbeat interval of every member in these tests (ours and Java's).
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(300);

/// Our members' config: fast rebalances (members learn of one at their next heartbeat).
pub(crate) fn member_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    let mut c = consumer_config(bootstrap);
    c.group_id(group.to_string());
    c.heartbeat_interval(HEARTBEAT);
    c.session_timeout(Duration::from_secs(10));
    c.rebalance_timeout(Duration::from_secs(20));
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Assigned,
    Revoked,
    Lost,
}

/// One rebalance event of one member.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub t: u64,
    pub member: String,
    pub kind: Kind,
    pub parts: Vec<i32>,
}

/// One record handed to one member.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub t: u64,
    pub member: String,
    /// The member's generation right after the poll that returned it (-1: unknown).
    pub generation: i32,
    pub partition: i32,
    pub offset: i64,
    pub value: u64,
}

/// Everything every member did, in arrival order.
#[derive(Default)]
pub(crate) struct Log {
    pub events: Vec<Ev>,
    /// Live view (arrival order) for the test's waits; the verdict comes from [`replay`].
    pub live: BTreeMap<i32, String>,
    pub deliveries: Vec<Delivery>,
    /// Per member: the end of every poll cycle that returned without error (µs).
    pub polls: HashMap<String, Vec<u64>>,
    /// Commit and poll failures, with the member.
    pub errors: Vec<String>,
}

pub(crate) type Shared = Arc<Mutex<Log>>;

impl Log {
    pub fn event(&mut self, ev: Ev) {
        for p in &ev.parts {
            match ev.kind {
                Kind::Assigned => {
                    self.live.insert(*p, ev.member.clone());
                }
                Kind::Revoked | Kind::Lost => {
                    if self.live.get(p) == Some(&ev.member) {
                        self.live.remove(p);
                    }
                }
            }
        }
        self.events.push(ev);
    }

    /// How many partitions each member holds now (live view).
    pub fn shares(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in self.live.values() {
            *out.entry(m.clone()).or_default() += 1;
        }
        out
    }

    pub fn consumed_values(&self) -> BTreeSet<u64> {
        self.deliveries.iter().map(|d| d.value).collect()
    }
}

/// Replays the events in time order: returns every moment a partition had two holders (unless
/// the earlier holder reports it `Lost` later: it was evicted and learns so late) and every
/// revocation of a partition the member did not hold.
pub(crate) fn replay(events: &[Ev]) -> Vec<String> {
    let mut sorted: Vec<&Ev> = events.iter().collect();
    sorted.sort_by_key(|e| e.t);
    let mut holders: BTreeMap<i32, BTreeMap<String, u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, e) in sorted.iter().enumerate() {
        for p in &e.parts {
            let h = holders.entry(*p).or_default();
            match e.kind {
                Kind::Assigned => {
                    for (other, since) in h.iter() {
                        if *other == e.member {
                            continue;
                        }
                        let lost_later = sorted[i + 1..].iter().any(|l| {
                            l.kind == Kind::Lost && l.member == *other && l.parts.contains(p)
                        });
                        if !lost_later {
                            out.push(format!(
                                "partition {p} assigned to {} at {} while {other} held it since {since}",
                                e.member, e.t
                            ));
                        }
                    }
                    h.insert(e.member.clone(), e.t);
                }
                Kind::Revoked | Kind::Lost => {
                    if h.remove(&e.member).is_none() && e.kind == Kind::Revoked {
                        out.push(format!(
                            "partition {p} revoked from {} at {} which did not hold it",
                            e.member, e.t
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Rebalance hooks recording into the log; revocations commit what was polled first.
pub(crate) struct RecHooks {
    pub member: String,
    pub log: Shared,
}

fn numbers(partitions: &[TopicPartition]) -> Vec<i32> {
    partitions.iter().map(|tp| tp.partition).collect()
}

impl RebalanceHooks for RecHooks {
    fn on_assigned<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.log.lock().unwrap().event(Ev {
                t: now_us(),
                member: self.member.clone(),
                kind: Kind::Assigned,
                parts: numbers(partitions),
            });
        })
    }

    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = consumer.commit_polled().await {
                let msg = format!("{} commit on revoke of {partitions:?}: {e}", self.member);
                self.log.lock().unwrap().errors.push(msg);
            }
            self.log.lock().unwrap().event(Ev {
                t: now_us(),
                member: self.member.clone(),
                kind: Kind::Revoked,
                parts: numbers(partitions),
            });
        })
    }

    fn on_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.log.lock().unwrap().event(Ev {
                t: now_us(),
                member: self.member.clone(),
                kind: Kind::Lost,
                parts: numbers(partitions),
            });
        })
    }
}

pub(crate) fn value_of(r: &kafka_client::ConsumerRecord) -> u64 {
    std::str::from_utf8(r.value.as_deref().expect("value"))
        .expect("utf-8")
        .parse()
        .expect("number")
}

/// One of our consumers with its poll loop.
pub(crate) struct RustMember {
    pub name: String,
    pub consumer: Consumer,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RustMember {
    /// Subscribes to `topic` with `balancers` (none: the default) and polls until closed.
    pub async fn start(
        name: &str,
        cfg: ConsumerConfig,
        balancers: Option<Vec<Arc<dyn Balancer>>>,
        topic: &str,
        log: &Shared,
    ) -> RustMember {
        let consumer = Consumer::new(cfg).await.expect("consumer");
        if let Some(b) = balancers {
            consumer.set_balancers(b).expect("set_balancers");
        }
        consumer.set_rebalance_hooks(Arc::new(RecHooks {
            member: name.to_string(),
            log: log.clone(),
        }));
        consumer
            .subscribe([topic.to_string()])
            .await
            .expect("subscribe");
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (c, stop, log, name) = (
                consumer.clone(),
                stop.clone(),
                log.clone(),
                name.to_string(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let res = c.poll(Duration::from_millis(200)).await;
                    let generation = c.group_generation().map_or(-1, |g| g.1);
                    let t = now_us();
                    let failed = {
                        let mut l = log.lock().unwrap();
                        match res {
                            Ok(records) => {
                                l.polls.entry(name.clone()).or_default().push(t);
                                for r in records {
                                    l.deliveries.push(Delivery {
                                        t,
                                        member: name.clone(),
                                        generation,
                                        partition: r.partition,
                                        offset: r.offset,
                                        value: value_of(&r),
                                    });
                                }
                                false
                            }
                            Err(e) => {
                                l.errors.push(format!("{name} poll: {e}"));
                                true
                            }
                        }
                    };
                    if failed {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        };
        RustMember {
            name: name.to_string(),
            consumer,
            stop,
            task,
        }
    }

    /// Stops polling, then closes (revoking everything through the hooks, which commit).
    pub async fn close(self) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap_or_else(|_| panic!("{}: poll loop did not end in 30 s", self.name))
            .expect("poll loop");
        tokio::time::timeout(Duration::from_secs(40), self.consumer.close())
            .await
            .unwrap_or_else(|_| panic!("{}: close did not end in 40 s", self.name));
    }
}

/// A Java `KafkaConsumer` in its own JVM, its output parsed into the log.
pub(crate) struct JavaMember {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
    closed: Arc<AtomicBool>,
}

impl JavaMember {
    pub fn start(
        name: &str,
        bootstrap: &str,
        topic: &str,
        group: &str,
        strategy: &str,
        log: &Shared,
    ) -> JavaMember {
        let mut child = jvm::command("GroupMember")
            .args([bootstrap, topic, group, name, strategy])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("java must be installed to run this test");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let closed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (log, name, closed) = (log.clone(), name.to_string(), closed.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    parse_java_line(&name, &line, &log, &closed);
                }
            })
        };
        JavaMember {
            name: name.to_string(),
            child,
            stdin,
            reader: Some(reader),
            closed,
        }
    }

    /// Asks the JVM to close its consumer (revoking and committing) and waits for it to exit.
    pub async fn close(mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, "close");
            let _ = s.flush();
        }
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for java") {
                assert!(status.success(), "{} exited with {status}", self.name);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not close within 45 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(r) = self.reader.take() {
            r.join().expect("java reader thread");
        }
        assert!(
            self.closed.load(Ordering::SeqCst),
            "{} exited without CLOSED",
            self.name
        );
    }
}

impl Drop for JavaMember {
    fn drop(&mut self) {
        // A failed test must not leave its JVM behind: kill our own child by its handle.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_java_line(name: &str, line: &str, log: &Shared, closed: &AtomicBool) {
    let mut it = line.splitn(3, ' ');
    let (Some(t), Some(kind)) = (it.next(), it.next()) else {
        return;
    };
    let Ok(t) = t.parse::<u64>() else {
        return; // not ours (logging)
    };
    let rest = it.next().unwrap_or("");
    let parts = || -> Vec<i32> {
        rest.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("partition number"))
            .collect()
    };
    let mut l = log.lock().unwrap();
    let ev = |kind| Ev {
        t,
        member: name.to_string(),
        kind,
        parts: parts(),
    };
    match kind {
        "ASSIGNED" => l.event(ev(Kind::Assigned)),
        "REVOKED" => l.event(ev(Kind::Revoked)),
        "LOST" => l.event(ev(Kind::Lost)),
        "R" => {
            let f: Vec<&str> = rest.split(' ').collect();
            l.deliveries.push(Delivery {
                t,
                member: name.to_string(),
                generation: -1,
                partition: f[0].parse().expect("partition"),
                offset: f[1].parse().expect("offset"),
                value: f[2].parse().expect("value"),
            });
            l.polls.entry(name.to_string()).or_default().push(t);
        }
        "CLOSED" => closed.store(true, Ordering::SeqCst),
        _ => {}
    }
}

/// Produces records (value = index, partition = index mod `partitions`) in steps of `step`
/// every `pause` until `stop`; `produced` counts the acknowledged ones (all of `0..produced`).
pub(crate) fn produce_until(
    p: Producer,
    topic: String,
    partitions: i32,
    step: u64,
    pause: Duration,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut deliveries = Vec::new();
            for n in i..i + step {
                let rec = ProducerRecord::new(topic.clone())
                    .partition((n % partitions as u64) as i32)
                    .key(format!("k-{n}"))
                    .value(n.to_string());
                deliveries.push(p.send(rec).await.expect("send"));
            }
            for d in deliveries {
                d.await.expect("delivery");
            }
            i += step;
            produced.store(i, Ordering::SeqCst);
            tokio::time::sleep(pause).await;
        }
    })
}

/// Waits until `ok` holds for the log, failing with `what` and the live ownership after `within`.
pub(crate) async fn wait_log(
    log: &Shared,
    what: &str,
    within: Duration,
    ok: impl Fn(&Log) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        {
            let l = log.lock().unwrap();
            if ok(&l) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {within:?}; owners {:?}; shares {:?}; errors {:?}",
                l.live,
                l.shares(),
                l.errors
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the coordinator describes `group` as Stable with `protocol` (the balancer name).
pub(crate) async fn wait_protocol(admin: &Admin, group: &str, protocol: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let d = admin.describe_groups(&[group]).await;
        if let Ok(d) = &d {
            if d[0].state == "Stable" && d[0].protocol == protocol {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "group {group} not Stable on {protocol} within {within:?}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until each of `members` has been handed a record after now.
pub(crate) async fn wait_consuming(log: &Shared, members: &[&str], within: Duration) {
    let mark = now_us();
    wait_log(log, &format!("{members:?} consume"), within, |l| {
        members.iter().all(|m| {
            l.deliveries
                .iter()
                .rev()
                .any(|d| d.member == *m && d.t > mark)
        })
    })
    .await;
}

/// Whether exactly `members` hold `each` partitions apiece (live view).
pub(crate) fn balanced(l: &Log, members: &[&str], each: usize) -> bool {
    let s = l.shares();
    s.len() == members.len() && members.iter().all(|m| s.get(*m) == Some(&each))
}

/// Duplicate (partition, offset) deliveries: (first, second).
pub(crate) fn duplicates(deliveries: &[Delivery]) -> Vec<(Delivery, Delivery)> {
    let mut first: HashMap<(i32, i64), &Delivery> = HashMap::new();
    let mut out = Vec::new();
    for d in deliveries {
        if let Some(f) = first.get(&(d.partition, d.offset)) {
            out.push(((*f).clone(), d.clone()));
        } else {
            first.insert((d.partition, d.offset), d);
        }
    }
    out
}

const JAVA_COOP: &str = "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_group_with_java_consumers() {
    const P: i32 = 12;
    let t0 = Instant::now();
    let bootstrap = bootstrap().await;
    let topic = unique("group-java");
    let group = unique("g-java");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    let log: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = produce_until(
        p.clone(),
        topic.clone(),
        P,
        24,
        Duration::from_millis(50),
        stop.clone(),
        produced.clone(),
    );

    let cfg = || member_config(&bootstrap, &group);
    let r0 = RustMember::start("r0", cfg(), None, &topic, &log).await;
    let j0 = JavaMember::start("j0", &bootstrap, &topic, &group, JAVA_COOP, &log);
    let r1 = RustMember::start("r1", cfg(), None, &topic, &log).await;
    let j1 = JavaMember::start("j1", &bootstrap, &topic, &group, JAVA_COOP, &log);
    wait_log(
        &log,
        "four members with 3 partitions each",
        Duration::from_secs(60),
        |l| balanced(l, &["r0", "r1", "j0", "j1"], 3),
    )
    .await;
    println!(
        "{:>5.1}s balanced over 4 members",
        t0.elapsed().as_secs_f64()
    );
    // Everyone consumes for a while in the stable group.
    let mark = now_us();
    wait_log(
        &log,
        "every member consumes",
        Duration::from_secs(30),
        |l| {
            ["r0", "r1", "j0", "j1"]
                .iter()
                .all(|m| l.deliveries.iter().any(|d| d.member == *m && d.t > mark))
        },
    )
    .await;
    assert!(
        balanced(&log.lock().unwrap(), &["r0", "r1", "j0", "j1"], 3),
        "the stable group moved partitions without a membership change"
    );

    // One Java member leaves: its three partitions go to the three others.
    j1.close().await;
    println!("{:>5.1}s j1 closed", t0.elapsed().as_secs_f64());
    wait_log(
        &log,
        "three members with 4 partitions each",
        Duration::from_secs(60),
        |l| balanced(l, &["r0", "r1", "j0"], 4),
    )
    .await;
    println!(
        "{:>5.1}s balanced over 3 members",
        t0.elapsed().as_secs_f64()
    );
    let mark = now_us();
    wait_log(
        &log,
        "every remaining member consumes",
        Duration::from_secs(30),
        |l| {
            ["r0", "r1", "j0"]
                .iter()
                .all(|m| l.deliveries.iter().any(|d| d.member == *m && d.t > mark))
        },
    )
    .await;

    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), producing)
        .await
        .expect("producer stops")
        .expect("producer task");
    let n = produced.load(Ordering::SeqCst);
    wait_log(
        &log,
        "every record consumed",
        Duration::from_secs(60),
        |l| l.consumed_values().len() as u64 == n,
    )
    .await;
    j0.close().await;
    r0.close().await;
    r1.close().await;
    p.close().await.unwrap();

    let l = log.lock().unwrap();
    let values = l.consumed_values();
    assert_eq!(values.len() as u64, n, "every record consumed");
    assert!(
        values.iter().all(|v| *v < n),
        "values beyond those produced"
    );
    let violations = replay(&l.events);
    assert!(
        violations.is_empty(),
        "double ownership: {violations:#?}\nevents {:#?}",
        l.events
    );
    let lost: Vec<&Ev> = l.events.iter().filter(|e| e.kind == Kind::Lost).collect();
    assert!(lost.is_empty(), "partitions lost: {lost:?}");
    assert!(l.errors.is_empty(), "errors: {:?}", l.errors);
    let dups = duplicates(&l.deliveries);
    assert!(dups.is_empty(), "records delivered twice: {dups:#?}");
    assert!(l.live.is_empty(), "owned after everyone left: {:?}", l.live);
    println!(
        "{:>5.1}s {n} records, {} events, {} deliveries",
        t0.elapsed().as_secs_f64(),
        l.events.len(),
        l.deliveries.len()
    );
}
