//! KIP-848 consumer groups (`group.protocol=consumer`) against a real broker: join, scaling out
//! and in while a 12-partition topic is consumed, a member crashing (its partitions move after
//! the session timeout), unsubscribe / resubscribe, fatal assignor errors, and the duration of a
//! rebalance (a fourth member joining three) for the classic protocol and KIP-848, printed.
//! Ownership is checked in the rebalance hooks: no partition is owned by two members at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_client::config::{ConsumerConfig, GroupProtocol, ProducerConfig};
use kafka_client::consumer::RebalanceHooks;
use kafka_client::group::BoxFuture;
use kafka_client::{Consumer, Error, Producer, TopicPartition};
use kafka_wire::ErrorCode;

use crate::consumer::{bootstrap, consumer_config, create_topic};
use crate::group::{produce_range, producer, unique, value_of};

fn kip848_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    let mut c = consumer_config(bootstrap);
    c.group_id(group.to_string());
    c.group_protocol(GroupProtocol::Consumer);
    c
}

// Fields are read through `Debug` in failure messages.
#[allow(dead_code)]
#[derive(Debug, Clone)]
enum Ev {
    Assigned(usize, Vec<TopicPartition>),
    Revoked(usize, Vec<TopicPartition>),
    Lost(usize, Vec<TopicPartition>),
}

#[derive(Default)]
struct World {
    owners: HashMap<TopicPartition, usize>,
    violations: Vec<String>,
    events: Vec<Ev>,
}

impl World {
    fn owned_by(&self, id: usize) -> usize {
        self.owners.values().filter(|o| **o == id).count()
    }

    /// Every one of `partitions` partitions owned, by exactly `members` distinct members.
    fn covers(&self, partitions: usize, members: usize) -> bool {
        let owners: HashSet<usize> = self.owners.values().copied().collect();
        self.owners.len() == partitions && owners.len() == members
    }
}

struct Hooks {
    id: usize,
    world: Arc<Mutex<World>>,
    commit_on_revoke: bool,
}

impl RebalanceHooks for Hooks {
    fn on_assigned<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut w = self.world.lock().unwrap();
            for tp in partitions {
                if let Some(other) = w.owners.insert(tp.clone(), self.id) {
                    let v = format!("{tp} assigned to {} while owned by {other}", self.id);
                    w.violations.push(v);
                }
            }
            w.events.push(Ev::Assigned(self.id, partitions.to_vec()));
        })
    }

    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.commit_on_revoke {
                if let Err(e) = consumer.commit_polled().await {
                    let v = format!("member {} commit on revoke: {e}", self.id);
                    self.world.lock().unwrap().violations.push(v);
                }
            }
            let mut w = self.world.lock().unwrap();
            for tp in partitions {
                match w.owners.remove(tp) {
                    Some(o) if o == self.id => {}
                    o => {
                        let v = format!("{tp} revoked from {} but owned by {o:?}", self.id);
                        w.violations.push(v);
                    }
                }
            }
            w.events.push(Ev::Revoked(self.id, partitions.to_vec()));
        })
    }

    fn on_lost<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut w = self.world.lock().unwrap();
            for tp in partitions {
                if w.owners.get(tp) == Some(&self.id) {
                    w.owners.remove(tp);
                }
            }
            w.events.push(Ev::Lost(self.id, partitions.to_vec()));
        })
    }
}

#[derive(Default)]
struct Seen {
    /// (partition, offset) -> value
    records: HashMap<(i32, i64), u64>,
    duplicates: Vec<String>,
}

/// Waits (polling every 50 ms) until `cond` holds; fails with `what` after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Running {
    consumer: Consumer,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// A subscribed member polling in the background into `seen`.
async fn start_member(
    cfg: ConsumerConfig,
    id: usize,
    topic: &str,
    world: &Arc<Mutex<World>>,
    seen: &Arc<Mutex<Seen>>,
) -> Running {
    let c = Consumer::new(cfg).await.expect("consumer");
    c.set_rebalance_hooks(Arc::new(Hooks {
        id,
        world: world.clone(),
        commit_on_revoke: true,
    }));
    c.subscribe([topic.to_string()]).await.expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let c = c.clone();
        let seen = seen.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let records = match c.poll(Duration::from_millis(200)).await {
                    Ok(r) => r,
                    Err(e) => panic!("member {id} poll: {e}"),
                };
                let mut s = seen.lock().unwrap();
                for r in records {
                    let v = value_of(&r);
                    if let Some(old) = s.records.insert((r.partition, r.offset), v) {
                        s.duplicates.push(format!(
                            "member {id} re-read {}@{} (value {old})",
                            r.partition, r.offset
                        ));
                    }
                }
            }
        })
    };
    Running {
        consumer: c,
        stop,
        task,
    }
}

async fn stop_member(m: Running) {
    m.stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), m.task)
        .await
        .expect("poll loop ends")
        .expect("poll loop");
    tokio::time::timeout(Duration::from_secs(70), m.consumer.close())
        .await
        .expect("close within 70 s");
}

/// Three KIP-848 members join one at a time while records are produced, then two leave; every
/// record is consumed exactly once (commits in the revoke hooks) and no partition is ever
/// owned twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_scale_out_and_in() {
    const P: i32 = 12;
    const N: u64 = 2400;
    let bootstrap = bootstrap().await;
    let topic = unique("g848-scale");
    let group = unique("g848-scale");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    let world = Arc::new(Mutex::new(World::default()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let produced = Arc::new(AtomicU64::new(0));
    let producing = {
        let (p, topic, produced) = (p.clone(), topic.clone(), produced.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while i < N {
                produce_range(&p, &topic, P, i, i + 40).await;
                i += 40;
                produced.store(i, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut members = Vec::new();
    for id in 0..3 {
        let cfg = kip848_config(&bootstrap, &group);
        members.push(start_member(cfg, id, &topic, &world, &seen).await);
        wait_until(
            Duration::from_secs(90),
            &format!("member {id} got no partition"),
            || world.lock().unwrap().owned_by(id) > 0,
        )
        .await;
    }
    wait_until(
        Duration::from_secs(90),
        "three members never shared all 12 partitions",
        || world.lock().unwrap().covers(P as usize, 3),
    )
    .await;
    {
        let w = world.lock().unwrap();
        let counts: Vec<usize> = (0..3).map(|id| w.owned_by(id)).collect();
        eprintln!("kip848 scale-out: partitions per member {counts:?}");
    }
    let consumed = |seen: &Arc<Mutex<Seen>>| seen.lock().unwrap().records.len() as u64;
    wait_until(
        Duration::from_secs(90),
        "consumption stalled before the scale-in",
        || consumed(&seen) >= N / 3,
    )
    .await;

    // Scale in: members 0 and 1 leave, one after the other.
    for m in members.drain(..2) {
        stop_member(m).await;
    }
    wait_until(
        Duration::from_secs(90),
        "the last member never took over every partition",
        || world.lock().unwrap().covers(P as usize, 1),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(120), producing)
        .await
        .expect("producer finishes")
        .expect("producer task");
    assert_eq!(produced.load(Ordering::SeqCst), N);
    wait_until(
        Duration::from_secs(90),
        "not every record was consumed",
        || consumed(&seen) >= N,
    )
    .await;
    stop_member(members.pop().expect("last member")).await;
    p.close().await.unwrap();

    let s = seen.lock().unwrap();
    assert!(s.duplicates.is_empty(), "duplicates: {:?}", s.duplicates);
    let values: HashSet<u64> = s.records.values().copied().collect();
    assert_eq!(values.len() as u64, N, "every record consumed once");
    let w = world.lock().unwrap();
    assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    assert!(w.owners.is_empty(), "owned after leaving: {:?}", w.owners);
    let lost: Vec<&Ev> = w
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Lost(..)))
        .collect();
    assert!(lost.is_empty(), "partitions lost: {lost:?}");
    assert!(
        w.events.iter().any(|e| matches!(e, Ev::Revoked(..))),
        "scaling revoked nothing: {:#?}",
        w.events
    );
}

/// A member crashes (its runtime is dropped: no leave heartbeat); after the broker's session
/// timeout its partitions move to the two survivors, and every record is consumed (at least
/// once: the crashed member's uncommitted progress is read again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_member_crash_moves_partitions_after_the_session_timeout() {
    const P: i32 = 12;
    const N: u64 = 1200;
    let bootstrap = bootstrap().await;
    let topic = unique("g848-crash");
    let group = unique("g848-crash");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    produce_range(&p, &topic, P, 0, N / 2).await;
    let world = Arc::new(Mutex::new(World::default()));
    let seen = Arc::new(Mutex::new(Seen::default()));

    let mut members = Vec::new();
    for id in 0..2 {
        let cfg = kip848_config(&bootstrap, &group);
        members.push(start_member(cfg, id, &topic, &world, &seen).await);
    }
    // Member 2 runs on a runtime of its own, so it can die without a word.
    let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
    let crashed = {
        let (bootstrap, group, topic) = (bootstrap.clone(), group.clone(), topic.clone());
        let (world, seen) = (world.clone(), seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let cfg = kip848_config(&bootstrap, &group);
                let m = start_member(cfg, 2, &topic, &world, &seen).await;
                loop {
                    if crash_rx.try_recv().is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Keep the handle alive until the runtime dies with it.
                std::mem::forget(m);
            });
            rt.shutdown_background();
        })
    };
    wait_until(
        Duration::from_secs(90),
        "three members never shared all 12 partitions",
        || world.lock().unwrap().covers(P as usize, 3),
    )
    .await;
    let victim: BTreeSet<TopicPartition> = {
        let w = world.lock().unwrap();
        w.owners
            .iter()
            .filter(|(_, o)| **o == 2)
            .map(|(tp, _)| tp.clone())
            .collect()
    };
    crash_tx.send(()).expect("crash signal");
    crashed.join().expect("crashed member's thread");
    let crashed_at = Instant::now();
    {
        // The process is gone: nobody owns its partitions until the broker notices.
        let mut w = world.lock().unwrap();
        w.owners.retain(|_, o| *o != 2);
    }
    produce_range(&p, &topic, P, N / 2, N).await;
    // The broker's session timeout (45 s by default) then one or two heartbeats.
    wait_until(
        Duration::from_secs(120),
        "the crashed member's partitions never moved",
        || {
            let w = world.lock().unwrap();
            victim.iter().all(|tp| w.owners.contains_key(tp)) && w.covers(P as usize, 2)
        },
    )
    .await;
    println!(
        "kip848 crash: {} partitions moved {:?} after the crash",
        victim.len(),
        crashed_at.elapsed()
    );
    wait_until(
        Duration::from_secs(90),
        "not every record was consumed after the crash",
        || {
            let s = seen.lock().unwrap();
            let values: HashSet<u64> = s.records.values().copied().collect();
            values.len() as u64 >= N
        },
    )
    .await;
    for m in members {
        stop_member(m).await;
    }
    p.close().await.unwrap();
    let w = world.lock().unwrap();
    assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    assert!(!victim.is_empty(), "the crashed member owned nothing");
}

/// Unsubscribe revokes everything through the hooks, leaves and stops fetching; subscribing
/// again joins anew and consumes from the committed offsets. For both protocols.
async fn unsubscribe_then_resubscribe(protocol: GroupProtocol) {
    const P: i32 = 3;
    let bootstrap = bootstrap().await;
    let topic = unique("g848-unsub");
    let group = unique("g848-unsub");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    produce_range(&p, &topic, P, 0, 30).await;
    let world = Arc::new(Mutex::new(World::default()));
    let mut cfg = kip848_config(&bootstrap, &group);
    cfg.group_protocol(protocol);
    let c = Consumer::new(cfg).await.expect("consumer");
    c.set_rebalance_hooks(Arc::new(Hooks {
        id: 0,
        world: world.clone(),
        commit_on_revoke: true,
    }));
    c.subscribe([topic.clone()]).await.expect("subscribe");
    let mut values = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "only {} of 30 records",
            values.len()
        );
        for r in c.poll(Duration::from_millis(200)).await.expect("poll") {
            values.insert(value_of(&r));
        }
    }
    c.unsubscribe().await.expect("unsubscribe");
    {
        let w = world.lock().unwrap();
        assert!(
            w.owners.is_empty(),
            "owned after unsubscribe: {:?}",
            w.owners
        );
        assert!(
            matches!(w.events.last(), Some(Ev::Revoked(0, ps)) if ps.len() == P as usize),
            "unsubscribe revokes everything: {:?}",
            w.events
        );
    }
    assert!(c.assignment().is_empty());
    assert!(c.subscription().is_empty());
    produce_range(&p, &topic, P, 30, 60).await;
    // Nothing is fetched while unsubscribed.
    assert!(c
        .poll(Duration::from_millis(500))
        .await
        .expect("poll")
        .is_empty());
    c.subscribe([topic.clone()]).await.expect("subscribe again");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut again = Vec::new();
    while again.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "only {} of 30 new records",
            again.len()
        );
        for r in c.poll(Duration::from_millis(200)).await.expect("poll") {
            again.push(value_of(&r));
        }
    }
    again.sort();
    assert_eq!(
        again,
        (30..60).collect::<Vec<u64>>(),
        "resumed at the commits"
    );
    c.close().await;
    p.close().await.unwrap();
    let w = world.lock().unwrap();
    assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    assert!(w.owners.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_unsubscribe_then_resubscribe() {
    unsubscribe_then_resubscribe(GroupProtocol::Consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classic_unsubscribe_then_resubscribe() {
    unsubscribe_then_resubscribe(GroupProtocol::Classic).await;
}

/// An assignor the broker does not know is a fatal, typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_unknown_assignor_is_fatal() {
    let bootstrap = bootstrap().await;
    let topic = unique("g848-assignor");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, 1).await;
    let mut cfg = kip848_config(&bootstrap, &unique("g848-assignor"));
    cfg.group_remote_assignor("no-such-assignor");
    let c = Consumer::new(cfg).await.expect("consumer");
    c.subscribe([topic]).await.expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no error within 30 s");
        match c.poll(Duration::from_millis(200)).await {
            Ok(_) => continue,
            Err(e) => {
                assert_eq!(
                    e.broker_code(),
                    Some(ErrorCode::UNSUPPORTED_ASSIGNOR),
                    "{e}"
                );
                break;
            }
        }
    }
    c.close().await;
    p.close().await.unwrap();
}

/// `partition.assignment.strategy` with an unknown name is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_assignment_strategy_is_a_config_error() {
    let bootstrap = bootstrap().await;
    let mut cfg = consumer_config(&bootstrap);
    cfg.group_id("g".to_string());
    cfg.apply_property("partition.assignment.strategy", "range,no-such")
        .unwrap();
    match Consumer::new(cfg).await {
        Err(Error::Config(_)) => {}
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
    // A known list works, and classic groups use it.
    let mut cfg = consumer_config(&bootstrap);
    cfg.group_id(unique("g-strategy"));
    cfg.apply_property("partition.assignment.strategy", "roundrobin")
        .unwrap();
    let c = Consumer::new(cfg).await.expect("consumer");
    c.subscribe(["x"]).await.expect("subscribe");
    c.close().await;
}

/// One measurement: three members settle on `topic`, then a fourth subscribes; the time until
/// all four own partitions and together own every partition.
async fn fourth_member_rebalance(protocol: GroupProtocol, run: usize) -> Duration {
    const P: i32 = 12;
    let bootstrap = bootstrap().await;
    let topic = unique(&format!("g848-measure-{run}"));
    let group = unique(&format!("g848-measure-{run}"));
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    p.close().await.unwrap();
    let world = Arc::new(Mutex::new(World::default()));
    let mut consumers = Vec::new();
    let subscribe = |id: usize| {
        let mut cfg = kip848_config(&bootstrap, &group);
        cfg.group_protocol(protocol);
        let world = world.clone();
        let topic = topic.clone();
        async move {
            let c = Consumer::new(cfg).await.expect("consumer");
            c.set_rebalance_hooks(Arc::new(Hooks {
                id,
                world,
                commit_on_revoke: false,
            }));
            c.subscribe([topic]).await.expect("subscribe");
            c
        }
    };
    for id in 0..3 {
        consumers.push(subscribe(id).await);
    }
    wait_until(
        Duration::from_secs(120),
        "three members never settled",
        || world.lock().unwrap().covers(P as usize, 3),
    )
    .await;
    let start = Instant::now();
    consumers.push(subscribe(3).await);
    wait_until(
        Duration::from_secs(120),
        "the fourth member's rebalance never settled",
        || world.lock().unwrap().covers(P as usize, 4),
    )
    .await;
    let took = start.elapsed();
    for c in consumers {
        tokio::time::timeout(Duration::from_secs(70), c.close())
            .await
            .expect("close");
    }
    let w = world.lock().unwrap();
    assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    took
}

/// Rebalance duration for a fourth member joining three, classic (cooperative-sticky, default
/// settings) against KIP-848 (broker defaults), three runs each; printed, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_duration_classic_vs_kip848() {
    let mut results = Vec::new();
    for (name, protocol) in [
        ("classic", GroupProtocol::Classic),
        ("kip848", GroupProtocol::Consumer),
    ] {
        let mut runs = Vec::new();
        for run in 0..3 {
            let d = fourth_member_rebalance(protocol, run).await;
            println!("rebalance {name} run {run}: {d:?}");
            runs.push(d);
        }
        runs.sort();
        println!("rebalance {name}: median {:?} of {runs:?}", runs[1]);
        results.push((name, runs[1]));
    }
    println!("rebalance medians (4th member joining 3, 12 partitions): {results:?}");
}

/// A KIP-848 group on a private 3-node cluster (fast broker-side heartbeats and sessions) while
/// the group coordinator's node is killed and restarted: the members find the new coordinator,
/// keep their epochs and partitions, and every record is consumed; no partition is ever owned
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kip848_survives_a_coordinator_kill_on_three_nodes() {
    const P: i32 = 12;
    const N: u64 = 1800;
    let _heavy = testkit::heavy_test_permit().await;
    let mut cc = testkit::ClusterConfig::with_brokers(3);
    cc.property("group.consumer.heartbeat.interval.ms", "1000")
        .property("group.consumer.min.heartbeat.interval.ms", "500")
        .property("group.consumer.session.timeout.ms", "10000")
        .property("group.consumer.min.session.timeout.ms", "6000");
    let cluster = testkit::Cluster::start(cc)
        .await
        .expect("the 3-node cluster must start");
    let bootstrap = cluster.bootstrap();
    let servers: Vec<String> = bootstrap.split(',').map(str::to_string).collect();
    let mut acfg = kafka_client::config::ClientConfig::default();
    acfg.bootstrap_servers(servers.clone())
        .request_timeout(Duration::from_secs(8));
    let admin = kafka_client::Admin::new(acfg).await.expect("admin");
    let topic = unique("g848-3node");
    let group = unique("g848-3node");
    admin
        .create_topic(
            &kafka_client::admin::NewTopic::new(&topic, P, 3).config("min.insync.replicas", "2"),
        )
        .await
        .expect("create topic");
    let mut pcfg = ProducerConfig::default();
    pcfg.client_mut()
        .bootstrap_servers(servers)
        .request_timeout(Duration::from_secs(8))
        .metadata_min_refresh_interval(Duration::from_millis(500));
    pcfg.delivery_timeout(Duration::from_secs(60));
    let p = Producer::new(pcfg).await.expect("producer");
    let world = Arc::new(Mutex::new(World::default()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let producing = {
        let (p, topic) = (p.clone(), topic.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while i < N {
                produce_range(&p, &topic, P, i, i + 30).await;
                i += 30;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let config = || {
        let mut c = kip848_config(&bootstrap, &group);
        c.client_mut()
            .request_timeout(Duration::from_secs(8))
            .metadata_min_refresh_interval(Duration::from_millis(500));
        c
    };
    let mut members = Vec::new();
    for id in 0..3 {
        members.push(start_member(config(), id, &topic, &world, &seen).await);
    }
    wait_until(
        Duration::from_secs(90),
        "three members never shared all 12 partitions",
        || world.lock().unwrap().covers(P as usize, 3),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let coord = loop {
        if let Ok(n) = admin.find_group_coordinator(&group).await {
            break n;
        }
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let node = cluster.node(coord as usize).expect("coordinator is a node");
    node.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    node.restart()
        .await
        .expect("the coordinator's node restarts");
    tokio::time::timeout(Duration::from_secs(180), producing)
        .await
        .expect("producer finishes")
        .expect("producer task");
    wait_until(
        Duration::from_secs(120),
        "not every record was consumed after the coordinator kill",
        || {
            let s = seen.lock().unwrap();
            let values: HashSet<u64> = s.records.values().copied().collect();
            values.len() as u64 >= N
        },
    )
    .await;
    wait_until(
        Duration::from_secs(60),
        "the group did not settle after the coordinator kill",
        || world.lock().unwrap().covers(P as usize, 3),
    )
    .await;
    println!(
        "kip848 3-node: settled {:?} after the kill",
        killed.elapsed()
    );
    for m in members {
        stop_member(m).await;
    }
    p.close().await.unwrap();
    let w = world.lock().unwrap();
    assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    assert!(w.owners.is_empty(), "owned after leaving: {:?}", w.owners);
}
