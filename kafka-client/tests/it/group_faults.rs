//! A cooperative-sticky group under faults, on a private 3-node cluster (topic: 12 partitions,
//! RF 3, min ISR 2). Members join and leave in waves while the group coordinator's broker is
//! killed (SIGKILL) and restarted and while every client connection is cut through the fault
//! proxies. Records are produced throughout.
//!
//! Checked from the recorded hooks and polls (see `group_java` for the recording):
//! - ownership replayed in time order never has two holders (a holder that later reports the
//!   partition `Lost` is excused: it was evicted and learns so late);
//! - no record is handed out twice within one generation (twice across generations is counted
//!   and printed: it follows a `Lost`, where nothing could be committed);
//! - every acknowledged record is consumed;
//! - availability across rebalances: for a member that keeps a partition through a rebalance
//!   (cooperative-sticky: it is neither revoked nor re-assigned), the gap between its
//!   consecutive successful poll cycles spanning the rebalance stays below
//!   `GAP_BOUND = heartbeat interval + fetch.max.wait.ms + GAP_SLACK`: the member learns of the
//!   rebalance at a heartbeat and its fetches are not interrupted, so a poll cycle is at most one
//!   fetch wait plus scheduling. Gaps that overlap a coordinator outage (from the kill until the
//!   group is balanced again after the restart) are excluded and counted: with the coordinator
//!   gone no rebalance can complete, and partitions led by the dead broker stall until their
//!   leadership moves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_client::admin::NewTopic;
use kafka_client::config::{ClientConfig, ConsumerConfig, ProducerConfig};
use kafka_client::{Admin, Producer, ProducerRecord};
use testkit::{Cluster, ClusterConfig};

use crate::group::unique;
use crate::group_java::{
    member_config, now_us, replay, wait_consuming, wait_log, Ev, Kind, Log, RustMember, Shared,
    HEARTBEAT,
};

const P: i32 = 12;
/// `fetch.max.wait.ms` of the members (the default).
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Scheduling slack on a small shared machine (two cores, three brokers, the test).
const GAP_SLACK: Duration = Duration::from_secs(2);
const GAP_BOUND: Duration = Duration::from_millis(
    HEARTBEAT.as_millis() as u64 + FETCH_MAX_WAIT.as_millis() as u64 + GAP_SLACK.as_millis() as u64,
);

fn servers(cluster: &Cluster) -> Vec<String> {
    cluster.bootstrap().split(',').map(str::to_string).collect()
}

fn config(cluster: &Cluster, group: &str) -> ConsumerConfig {
    let mut c = member_config(&cluster.bootstrap(), group);
    c.fetch_max_wait(FETCH_MAX_WAIT);
    c.client_mut()
        .request_timeout(Duration::from_secs(8))
        .metadata_min_refresh_interval(Duration::from_millis(500));
    c
}

/// Whether exactly `members` hold every partition, as evenly as possible.
fn even(l: &Log, members: &[&str]) -> bool {
    let s = l.shares();
    let lo = P as usize / members.len();
    let hi = lo + usize::from(P as usize % members.len() != 0);
    s.values().sum::<usize>() == P as usize
        && s.len() == members.len()
        && members
            .iter()
            .all(|m| s.get(*m).is_some_and(|n| *n >= lo && *n <= hi))
}

/// Produces records (value = index) round-robin over the partitions until `stop`; returns the
/// acknowledged values and the number of failed deliveries.
fn produce(
    p: Producer,
    topic: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let mut deliveries = Vec::new();
            for n in i..i + 24 {
                let rec = ProducerRecord::new(topic.clone())
                    .partition((n % P as u64) as i32)
                    .value(n.to_string());
                match p.send(rec).await {
                    Ok(d) => deliveries.push((n, d)),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            for (n, d) in deliveries {
                match tokio::time::timeout(Duration::from_secs(120), d).await {
                    Ok(Ok(_)) => {
                        acked.lock().unwrap().insert(n);
                    }
                    Ok(Err(_)) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => panic!("delivery of {n} never resolved"),
                }
            }
            i += 24;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

async fn coordinator(admin: &Admin, group: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(n) = admin.find_group_coordinator(group).await {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no coordinator for {group} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Holdings of `member` just after time `t` (its own events up to `t`, in time order).
fn holdings(sorted: &[&Ev], member: &str, t: u64) -> BTreeSet<i32> {
    let mut h = BTreeSet::new();
    for e in sorted.iter().take_while(|e| e.t <= t) {
        if e.member != member {
            continue;
        }
        for p in &e.parts {
            match e.kind {
                Kind::Assigned => {
                    h.insert(*p);
                }
                Kind::Revoked | Kind::Lost => {
                    h.remove(p);
                }
            }
        }
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_survives_coordinator_kills_and_cuts() {
    let t0 = Instant::now();
    let secs = move || format!("{:>6.1}s", t0.elapsed().as_secs_f64());
    let _heavy = testkit::heavy_test_permit().await;
    let cluster = Cluster::start(ClusterConfig::with_brokers(3))
        .await
        .expect("the 3-node cluster must start");
    println!("{} cluster up", secs());
    let mut acfg = ClientConfig::default();
    acfg.bootstrap_servers(servers(&cluster))
        .request_timeout(Duration::from_secs(8));
    let admin = Admin::new(acfg).await.expect("admin");
    let topic = unique("group-faults");
    let group = unique("g-faults");
    admin
        .create_topic(&NewTopic::new(&topic, P, 3).config("min.insync.replicas", "2"))
        .await
        .expect("create topic");

    let mut pcfg = ProducerConfig::default();
    pcfg.client_mut()
        .bootstrap_servers(servers(&cluster))
        .request_timeout(Duration::from_secs(8))
        .metadata_min_refresh_interval(Duration::from_millis(500));
    pcfg.delivery_timeout(Duration::from_secs(60));
    let p = Producer::new(pcfg).await.expect("producer");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let producing = produce(
        p.clone(),
        topic.clone(),
        stop.clone(),
        acked.clone(),
        failed.clone(),
    );

    let log: Shared = Arc::default();
    // Coordinator outages: (kill, group balanced again after the restart), µs.
    let mut outages: Vec<(u64, u64)> = Vec::new();
    let mut members: BTreeMap<&str, RustMember> = BTreeMap::new();
    let within = Duration::from_secs(60);

    // Wave 1: three members join.
    for name in ["m0", "m1", "m2"] {
        let m = RustMember::start(name, config(&cluster, &group), None, &topic, &log).await;
        members.insert(name, m);
    }
    wait_log(&log, "m0-m2 balanced", within, |l| {
        even(l, &["m0", "m1", "m2"])
    })
    .await;
    wait_consuming(&log, &["m0", "m1", "m2"], Duration::from_secs(30)).await;
    println!("{} m0-m2 balanced", secs());

    // Wave 2: two members join while the coordinator is dead.
    let coord = coordinator(&admin, &group).await;
    let node = cluster.node(coord as usize).expect("coordinator is a node");
    let killed = now_us();
    node.kill();
    println!("{} killed coordinator {coord}", secs());
    for name in ["m3", "m4"] {
        let m = RustMember::start(name, config(&cluster, &group), None, &topic, &log).await;
        members.insert(name, m);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.restart()
        .await
        .expect("the coordinator's node restarts");
    println!("{} node {coord} back", secs());
    let five = ["m0", "m1", "m2", "m3", "m4"];
    wait_log(&log, "m0-m4 balanced", within, |l| even(l, &five)).await;
    outages.push((killed, now_us()));
    wait_consuming(&log, &five, Duration::from_secs(30)).await;
    println!("{} m0-m4 balanced", secs());

    // Wave 3: two members leave and one joins while every connection is cut again and again
    // (for at least four seconds).
    let cutting = {
        let stop_cuts = Arc::new(AtomicBool::new(false));
        let proxies: Vec<_> = cluster.nodes().iter().map(|n| n.proxy()).collect();
        let s = stop_cuts.clone();
        let task = tokio::spawn(async move {
            let mut cuts = 0u32;
            while !s.load(Ordering::SeqCst) {
                for p in &proxies {
                    p.cut();
                }
                cuts += 1;
                tokio::time::sleep(Duration::from_millis(250 + u64::from(cuts % 4) * 100)).await;
            }
            cuts
        });
        (stop_cuts, task)
    };
    let cuts_from = Instant::now();
    for name in ["m0", "m1"] {
        members.remove(name).expect("member").close().await;
    }
    let m = RustMember::start("m6", config(&cluster, &group), None, &topic, &log).await;
    members.insert("m6", m);
    let four = ["m2", "m3", "m4", "m6"];
    wait_log(&log, "m2-m4, m6 balanced under cuts", within, |l| {
        even(l, &four)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(cuts_from.elapsed())).await;
    cutting.0.store(true, Ordering::SeqCst);
    let cuts = cutting.1.await.expect("cutter");
    println!("{} m2-m4, m6 balanced after {cuts} cuts", secs());
    wait_log(&log, "m2-m4, m6 balanced after the cuts", within, |l| {
        even(l, &four)
    })
    .await;
    wait_consuming(&log, &four, Duration::from_secs(30)).await;

    // Wave 4: one leaves and one joins while the (maybe new) coordinator is dead.
    let coord = coordinator(&admin, &group).await;
    let node = cluster.node(coord as usize).expect("coordinator is a node");
    let killed = now_us();
    node.kill();
    println!("{} killed coordinator {coord}", secs());
    members.remove("m2").expect("m2").close().await;
    let m = RustMember::start("m5", config(&cluster, &group), None, &topic, &log).await;
    members.insert("m5", m);
    tokio::time::sleep(Duration::from_secs(2)).await;
    node.restart()
        .await
        .expect("the coordinator's node restarts");
    println!("{} node {coord} back", secs());
    let last = ["m3", "m4", "m5", "m6"];
    wait_log(&log, "m3-m6 balanced", within, |l| even(l, &last)).await;
    outages.push((killed, now_us()));
    wait_consuming(&log, &last, Duration::from_secs(30)).await;
    println!("{} m3-m6 balanced", secs());

    stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(150), producing)
        .await
        .expect("producer stops")
        .expect("producer task");
    let want: BTreeSet<u64> = acked.lock().unwrap().clone();
    wait_log(&log, "every acknowledged record consumed", within, |l| {
        let got = l.consumed_values();
        want.iter().all(|v| got.contains(v))
    })
    .await;
    for (_, m) in std::mem::take(&mut members) {
        m.close().await;
    }
    p.close().await.expect("producer close");
    cluster.shutdown(Duration::from_secs(30)).await;
    println!(
        "{} {} records acknowledged, {} failed deliveries",
        secs(),
        want.len(),
        failed.load(Ordering::SeqCst)
    );

    let l = log.lock().unwrap();
    let violations = replay(&l.events);
    assert!(violations.is_empty(), "double ownership: {violations:#?}");
    let lost: Vec<&Ev> = l.events.iter().filter(|e| e.kind == Kind::Lost).collect();
    println!("lost events: {lost:?}");
    println!("poll and commit errors: {:?}", l.errors);

    // No record twice within a generation; across generations counted.
    let mut by_record: HashMap<(i32, i64), Vec<(&str, i32)>> = HashMap::new();
    for d in &l.deliveries {
        by_record
            .entry((d.partition, d.offset))
            .or_default()
            .push((d.member.as_str(), d.generation));
    }
    let mut same_gen = Vec::new();
    let mut across = 0;
    for (rec, ds) in &by_record {
        if ds.len() < 2 {
            continue;
        }
        let gens: BTreeSet<i32> = ds.iter().map(|d| d.1).collect();
        if gens.len() < ds.len() {
            same_gen.push((rec, ds.clone()));
        } else {
            across += 1;
        }
    }
    println!("records delivered again in a later generation: {across}");
    // Every member commits in its revoke hook (also when it closes while the coordinator is
    // down: it finds the coordinator again first), so a record comes back only after a `Lost`
    // or a failed commit.
    let commit_failed = l.errors.iter().any(|e| e.contains("commit"));
    assert!(
        across == 0 || !lost.is_empty() || commit_failed,
        "{across} records delivered again without a lost partition or a failed commit"
    );
    assert!(
        same_gen.is_empty(),
        "records delivered twice within a generation: {same_gen:?}"
    );

    // Availability of kept partitions across rebalances.
    let mut sorted: Vec<&Ev> = l.events.iter().collect();
    sorted.sort_by_key(|e| e.t);
    let points: Vec<u64> = sorted.iter().map(|e| e.t).collect();
    let mut checked = 0;
    let mut excluded = 0;
    let mut worst = 0u64;
    let mut too_long = Vec::new();
    for (member, polls) in &l.polls {
        for w in polls.windows(2) {
            let (a, b) = (w[0], w[1]);
            if !points.iter().any(|r| a < *r && *r < b) {
                continue;
            }
            let own_moves: BTreeSet<i32> = sorted
                .iter()
                .filter(|e| e.member == *member && e.t > a && e.t < b && e.kind != Kind::Assigned)
                .flat_map(|e| e.parts.iter().copied())
                .collect();
            let kept: Vec<i32> = holdings(&sorted, member, a)
                .intersection(&holdings(&sorted, member, b))
                .filter(|p| !own_moves.contains(p))
                .copied()
                .collect();
            if kept.is_empty() {
                continue;
            }
            if outages.iter().any(|(s, e)| a < *e && b > *s) {
                excluded += 1;
                continue;
            }
            checked += 1;
            worst = worst.max(b - a);
            if Duration::from_micros(b - a) > GAP_BOUND {
                too_long.push(format!(
                    "{member} kept {kept:?} but did not poll for {:?} (from {a})",
                    Duration::from_micros(b - a)
                ));
            }
        }
    }
    println!(
        "{checked} poll gaps across rebalances checked ({excluded} in coordinator outages \
         excluded), longest {:?}, bound {GAP_BOUND:?}",
        Duration::from_micros(worst)
    );
    assert!(checked > 0, "no poll gap spanned a rebalance");
    assert!(
        too_long.is_empty(),
        "stalled across rebalances: {too_long:#?}"
    );
    println!("{} done", secs());
}
