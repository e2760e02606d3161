//! Consumer groups (classic protocol) against a real broker: subscribe, commit and resume; members
//! joining and leaving in waves while records are produced, with ownership invariants checked in
//! the rebalance hooks, for cooperative-sticky (the default) and an eager balancer (range).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_client::config::{ConsumerConfig, ProducerConfig};
use kafka_client::consumer::RebalanceHooks;
use kafka_client::group::balancer::{Balancer, RangeBalancer};
use kafka_client::group::BoxFuture;
use kafka_client::{Consumer, Error, Producer, ProducerRecord, TopicPartition};

use crate::consumer::{bootstrap, consumer_config, create_topic};

pub(crate) fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{n}")
}

pub(crate) fn group_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    let mut c = consumer_config(bootstrap);
    c.group_id(group.to_string());
    // Fast rebalances: members learn about a rebalance at their next heartbeat.
    c.heartbeat_interval(Duration::from_millis(300));
    c.session_timeout(Duration::from_secs(10));
    c.rebalance_timeout(Duration::from_secs(20));
    c
}

pub(crate) async fn producer(bootstrap: &str) -> Producer {
    let mut cfg = ProducerConfig::default();
    cfg.client_mut()
        .bootstrap_servers(bootstrap.split(',').map(str::to_string).collect::<Vec<_>>());
    Producer::new(cfg).await.expect("producer")
}

/// Writes records `from..to` (value = the index) spread over `partitions` partitions.
pub(crate) async fn produce_range(p: &Producer, topic: &str, partitions: i32, from: u64, to: u64) {
    let mut deliveries = Vec::new();
    for i in from..to {
        let rec = ProducerRecord::new(topic.to_string())
            .partition((i % partitions as u64) as i32)
            .key(format!("k-{i}"))
            .value(i.to_string());
        deliveries.push(p.send(rec).await.expect("send"));
    }
    p.flush().await.expect("flush");
    for d in deliveries {
        d.await.expect("delivery");
    }
}

pub(crate) fn value_of(r: &kafka_client::ConsumerRecord) -> u64 {
    std::str::from_utf8(r.value.as_deref().expect("value"))
        .expect("utf-8")
        .parse()
        .expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribe_without_group_id_is_a_config_error() {
    let bootstrap = bootstrap().await;
    let c = Consumer::new(consumer_config(&bootstrap)).await.unwrap();
    match c.subscribe(["t"]).await {
        Err(Error::Config(_)) => {}
        other => panic!("expected a config error, got {other:?}"),
    }
    c.close().await;
}

/// One member consumes part of a backlog, commits what it polled and closes; a second member of
/// the same group resumes exactly there: together they read every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_from_committed_offsets() {
    const N: u64 = 1200;
    const P: i32 = 12;
    let bootstrap = bootstrap().await;
    let topic = unique("group-resume");
    let group = unique("g-resume");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    produce_range(&p, &topic, P, 0, N).await;

    let mut seen: HashSet<(i32, i64)> = HashSet::new();
    let mut values: HashSet<u64> = HashSet::new();
    let c1 = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    c1.subscribe([topic.clone()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (values.len() as u64) < N / 2 {
        assert!(
            Instant::now() < deadline,
            "first member read {} of {N} in 60 s",
            values.len()
        );
        for r in c1.poll(Duration::from_millis(500)).await.unwrap() {
            assert!(seen.insert((r.partition, r.offset)), "read twice: {r:?}");
            assert!(values.insert(value_of(&r)), "value twice: {r:?}");
        }
    }
    c1.commit_polled().await.expect("commit_polled");
    let tps: Vec<TopicPartition> = (0..P).map(|i| TopicPartition::new(&topic, i)).collect();
    let committed = c1.committed(&tps).await.expect("committed");
    for tp in &tps {
        assert_eq!(
            committed[tp],
            c1.position(tp),
            "committed offset of {tp} is the position"
        );
    }
    c1.close().await;
    let first = values.len();

    let c2 = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    c2.subscribe([topic.clone()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (values.len() as u64) < N {
        assert!(
            Instant::now() < deadline,
            "second member: {} of {N} read in 60 s",
            values.len()
        );
        for r in c2.poll(Duration::from_millis(500)).await.unwrap() {
            assert!(
                seen.insert((r.partition, r.offset)),
                "re-read after resume: {r:?}"
            );
            assert!(values.insert(value_of(&r)), "value twice: {r:?}");
        }
    }
    assert!(first > 0 && values.len() as u64 == N);
    // Nothing more arrives.
    let extra = c2.poll(Duration::from_secs(1)).await.unwrap();
    assert!(extra.is_empty(), "records beyond the backlog: {extra:?}");
    c2.close().await;
    p.close().await.unwrap();
}

#[derive(Debug, Clone)]
enum Ev {
    Assigned(usize, Vec<TopicPartition>),
    Revoked(usize, Vec<TopicPartition>, bool),
    // Read through `Debug` in the failure message.
    #[allow(dead_code)]
    Lost(usize, Vec<TopicPartition>),
}

#[derive(Default)]
struct World {
    owners: HashMap<TopicPartition, usize>,
    violations: Vec<String>,
    events: Vec<Ev>,
}

struct Hooks {
    id: usize,
    world: Arc<Mutex<World>>,
    leaving: Arc<AtomicBool>,
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
            // Commit what was handed out before anyone else can own these partitions.
            if let Err(e) = consumer.commit_polled().await {
                let v = format!("member {} commit on revoke: {e}", self.id);
                self.world.lock().unwrap().violations.push(v);
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
            let leaving = self.leaving.load(Ordering::SeqCst);
            w.events
                .push(Ev::Revoked(self.id, partitions.to_vec(), leaving));
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
                w.owners.remove(tp);
            }
            w.events.push(Ev::Lost(self.id, partitions.to_vec()));
        })
    }
}

struct Seen {
    /// (partition, offset) -> value
    records: HashMap<(i32, i64), u64>,
    duplicates: Vec<String>,
}

/// Three members join in a wave, two leave in a wave, while records are produced; checks
/// ownership in the hooks and that every record is consumed exactly once.
async fn waves(name: &str, balancer: Option<Arc<dyn Balancer>>, cooperative: bool) {
    const P: i32 = 12;
    const N: u64 = 3000;
    let bootstrap = bootstrap().await;
    let topic = unique(&format!("group-waves-{name}"));
    let group = unique(&format!("g-waves-{name}"));
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;

    let world = Arc::new(Mutex::new(World::default()));
    let seen = Arc::new(Mutex::new(Seen {
        records: HashMap::new(),
        duplicates: Vec::new(),
    }));
    let produced = Arc::new(AtomicU64::new(0));

    // The producer writes N records in small steps through the whole test.
    let producing = {
        let p = p.clone();
        let topic = topic.clone();
        let produced = produced.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while i < N {
                produce_range(&p, &topic, P, i, i + 50).await;
                i += 50;
                produced.store(i, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };

    let mut members = Vec::new();
    for id in 0..3 {
        let cfg = group_config(&bootstrap, &group);
        let c = Consumer::new(cfg).await.unwrap();
        if let Some(b) = &balancer {
            c.set_balancers(vec![b.clone()]).unwrap();
        }
        let leaving = Arc::new(AtomicBool::new(false));
        c.set_rebalance_hooks(Arc::new(Hooks {
            id,
            world: world.clone(),
            leaving: leaving.clone(),
        }));
        c.subscribe([topic.clone()]).await.unwrap();
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
        members.push((c, stop, leaving, task));
        // Join one at a time, each once the group has settled with the previous ones, so
        // every join moves partitions away from members that stay.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !world.lock().unwrap().owners.values().any(|o| *o == id) {
            assert!(
                Instant::now() < deadline,
                "member {id} got no partition within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let consumed = |seen: &Arc<Mutex<Seen>>| seen.lock().unwrap().records.len() as u64;
    // Every member owns something once the join wave has settled.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owners: HashSet<usize> = world.lock().unwrap().owners.values().copied().collect();
        if owners.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three members never all owned partitions: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed(&seen) < N / 3 {
        assert!(
            Instant::now() < deadline,
            "consumption stalled before the leave wave"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Leave wave: members 0 and 1 close, one after the other, while production goes on.
    for (c, stop, leaving, task) in members.drain(..2) {
        stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("poll loop ends")
            .expect("poll loop");
        leaving.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(40), c.close())
            .await
            .expect("close within 40 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    tokio::time::timeout(Duration::from_secs(120), producing)
        .await
        .expect("producer finishes")
        .expect("producer task");
    assert_eq!(produced.load(Ordering::SeqCst), N);
    let deadline = Instant::now() + Duration::from_secs(90);
    while consumed(&seen) < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} records consumed",
            consumed(&seen)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (c, stop, leaving, task) = members.pop().expect("last member");
    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("poll loop ends")
        .expect("poll loop");
    leaving.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(40), c.close())
        .await
        .expect("close within 40 s");
    p.close().await.unwrap();

    let s = seen.lock().unwrap();
    assert!(s.duplicates.is_empty(), "duplicates: {:?}", s.duplicates);
    let values: HashSet<u64> = s.records.values().copied().collect();
    assert_eq!(values.len() as u64, N, "every record consumed once");
    let w = world.lock().unwrap();
    assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    assert!(
        w.owners.is_empty(),
        "owned after everyone left: {:?}",
        w.owners
    );
    let lost: Vec<&Ev> = w
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Lost(..)))
        .collect();
    assert!(lost.is_empty(), "partitions lost: {lost:?}");
    let moves = w
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Revoked(_, _, false)))
        .count();
    assert!(moves > 0, "the join wave revoked nothing: {:#?}", w.events);
    if cooperative {
        // A partition revoked from a member that stays must move to another member.
        for (i, e) in w.events.iter().enumerate() {
            let Ev::Revoked(m, ps, false) = e else {
                continue;
            };
            for tp in ps {
                let next = w.events[i + 1..].iter().find_map(|e| match e {
                    Ev::Assigned(to, ps2) if ps2.contains(tp) => Some(*to),
                    _ => None,
                });
                assert!(
                    next.is_some_and(|to| to != *m),
                    "{tp} revoked from {m} without moving (next owner {next:?}); events {:#?}",
                    w.events
                );
            }
        }
    }
    let by_member: BTreeMap<usize, usize> = w.events.iter().fold(BTreeMap::new(), |mut m, e| {
        if let Ev::Assigned(id, ps) = e {
            *m.entry(*id).or_default() += ps.len();
        }
        m
    });
    eprintln!(
        "{name}: {} events, assigned per member {by_member:?}",
        w.events.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waves_cooperative_sticky() {
    waves("coop", None, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waves_eager_range() {
    waves("range", Some(Arc::new(RangeBalancer)), false).await;
}

/// Explicit commits (sync and async) are what `committed` reads back and where a new member
/// starts; with auto-commit, closing commits everything polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explicit_commits_and_auto_commit_on_close() {
    const P: i32 = 3;
    let bootstrap = bootstrap().await;
    let topic = unique("group-commits");
    let group = unique("g-commits");
    let p = producer(&bootstrap).await;
    create_topic(p.client(), &topic, P).await;
    produce_range(&p, &topic, P, 0, 30).await;
    let tp = |i: i32| TopicPartition::new(&topic, i);

    let c1 = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    c1.subscribe([topic.clone()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c1.group_generation().is_none() || c1.assignment().len() != P as usize {
        assert!(Instant::now() < deadline, "no assignment within 60 s");
        c1.poll(Duration::from_millis(200)).await.unwrap();
    }
    c1.commit([(tp(0), 3)]).await.expect("commit");
    c1.commit_async([(tp(1), 4)]).await.expect("commit_async");
    let committed = c1.committed(&[tp(0), tp(1), tp(2)]).await.unwrap();
    assert_eq!(
        committed,
        BTreeMap::from([(tp(0), Some(3)), (tp(1), Some(4)), (tp(2), None)])
    );
    c1.close().await;

    let mut cfg = group_config(&bootstrap, &group);
    cfg.enable_auto_commit(true);
    cfg.auto_commit_interval(Duration::from_millis(200));
    let c2 = Consumer::new(cfg).await.unwrap();
    c2.subscribe([topic.clone()]).await.unwrap();
    let mut got: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.values().map(Vec::len).sum::<usize>() < 23 {
        assert!(Instant::now() < deadline, "second member read {got:?}");
        for r in c2.poll(Duration::from_millis(200)).await.unwrap() {
            got.entry(r.partition).or_default().push(r.offset);
        }
    }
    assert_eq!(
        got[&0],
        (3..10).collect::<Vec<_>>(),
        "resumed at the commit"
    );
    assert_eq!(
        got[&1],
        (4..10).collect::<Vec<_>>(),
        "resumed at the commit"
    );
    assert_eq!(got[&2], (0..10).collect::<Vec<_>>(), "auto.offset.reset");
    c2.close().await;

    // Another consumer of the group, not subscribed, reads the commits of the close.
    let c3 = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    let committed = c3.committed(&[tp(0), tp(1), tp(2)]).await.unwrap();
    assert_eq!(
        committed,
        BTreeMap::from([(tp(0), Some(10)), (tp(1), Some(10)), (tp(2), Some(10))])
    );
    c3.close().await;
    p.close().await.unwrap();
}

struct SlowAssign;

impl RebalanceHooks for SlowAssign {
    fn on_assigned<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(tokio::time::sleep(Duration::from_millis(1500)))
    }
}

/// While a rebalance hook runs, the consumer says which one and for how long (the "hook is
/// blocking" signal); once it returns, nothing is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_hook_is_reported_while_it_blocks() {
    let bootstrap = bootstrap().await;
    let topic = unique("slow-hook");
    let c = Consumer::new(group_config(&bootstrap, &unique("slow-hook-group")))
        .await
        .unwrap();
    create_topic(c.client(), &topic, 2).await;
    assert!(c.running_rebalance_hook().is_none());
    c.set_rebalance_hooks(Arc::new(SlowAssign));
    c.subscribe([topic.clone()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        assert!(
            Instant::now() < deadline,
            "no hook reported running within 30 s"
        );
        if let Some((kind, running)) = c.running_rebalance_hook() {
            break (kind, running);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen.0, "on_assigned");
    // It clears once the hook returns (1.5 s), and the partitions are then owned.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.running_rebalance_hook().is_some() || c.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "the hook never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.close().await;
}

/// With block_rebalance_on_poll, a member that polled records keeps its partitions until it
/// allows the rebalance: the joining member gets nothing meanwhile, then its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn block_rebalance_on_poll_holds_the_revocation_until_allowed() {
    let bootstrap = bootstrap().await;
    let topic = unique("gate");
    let group = unique("gate-group");
    let a = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    create_topic(a.client(), &topic, 2).await;
    let p = producer(&bootstrap).await;
    produce_range(&p, &topic, 2, 0, 100).await;
    a.block_rebalance_on_poll(true);
    a.subscribe([topic.clone()]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.poll(Duration::from_millis(200)).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "A polled nothing within 30 s");
    }
    assert_eq!(a.assignment().len(), 2);

    let b = Consumer::new(group_config(&bootstrap, &group))
        .await
        .unwrap();
    b.subscribe([topic.clone()]).await.unwrap();
    // A's revocation starts and waits for the application.
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.running_rebalance_hook().map(|(k, _)| k) != Some("on_revoked") {
        assert!(Instant::now() < deadline, "A's revocation never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            b.assignment().is_empty(),
            "B got partitions while A held its polled records"
        );
        assert_eq!(
            a.assignment().len(),
            2,
            "A gave up partitions before allowing it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.allow_rebalance();
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.assignment().len() != 1 || b.assignment().len() != 1 {
        assert!(
            Instant::now() < deadline,
            "no 1/1 split after allowing: A {:?}, B {:?}",
            a.assignment(),
            b.assignment()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.close().await;
    b.close().await;
    p.close().await.unwrap();
}
